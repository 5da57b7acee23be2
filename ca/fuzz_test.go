package ca

import (
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary bundle files to Verify and ParseBundle: they must never
// panic, and whatever they accept must really be a usable bundle.
func FuzzVerify(f *testing.F) {
	dirs, _ := filepath.Glob(filepath.Join("..", "testdata", "bundles", "*"))
	for _, d := range dirs {
		files, err := ReadDir(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(files[CACertFile], files[CAKeyFile], files[CertChainFile], files[RootCertFile])
	}
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, cert, key, chain, root []byte) {
		files := map[string][]byte{CACertFile: cert, CAKeyFile: key, CertChainFile: chain, RootCertFile: root}
		rep := Verify(files, VerifyOptions{Now: now})
		b, rep2, err := ParseBundle(files, VerifyOptions{Now: now})
		if rep.OK() != (err == nil) || len(rep.Problems) != len(rep2.Problems) {
			t.Fatalf("Verify and ParseBundle disagree: %v vs %v", rep.Problems, err)
		}
		if err != nil {
			return
		}
		if !b.Cert.IsCA || !KeyMatches(b.Key, b.Cert.PublicKey) || len(b.Roots) == 0 {
			t.Fatal("accepted a bundle that is not a CA with its key and a root")
		}
	})
}

// FuzzParsePEM: the PEM readers never panic and never accept trailing garbage.
func FuzzParsePEM(f *testing.F) {
	for _, name := range []string{"ok-ecdsa/root-cert.pem", "ok-ecdsa/root-key.pem", "ok-crlf/root-cert.pem", "two-certs/root-cert.pem"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "roots", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatesPEM(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
		if err == nil {
			// Re-encoding what was accepted must parse to the same certificates.
			again, err := ParseCertificatesPEM(EncodeCertificatesPEM(certs...))
			if err != nil || len(again) != len(certs) {
				t.Fatalf("re-encoded certificates do not parse: %v", err)
			}
		}
		_, _ = ParsePrivateKeyPEM(data)
	})
}

// FuzzParseDuration: ParseDuration never panics, never returns a non-positive
// duration, and what it returns is exactly the days plus the Go duration written,
// with no wrap-around; ParseRenewBefore never accepts a fraction outside (0, 1).
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"8760h", "365d", "90d12h", "106751d", "213504d", "2d-1h", "1.5h", "0d1ns", "33%", "NaN%"} {
		f.Add(s)
	}
	nsPerDay := big.NewInt(int64(24 * time.Hour))
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseRenewBefore(s); err == nil && r.Duration == 0 && !(r.Fraction > 0 && r.Fraction < 1) {
			t.Fatalf("ParseRenewBefore(%q) = fraction %v", s, r.Fraction)
		}
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d <= 0 {
			t.Fatalf("ParseDuration(%q) = %s, not positive", s, d)
		}
		want := new(big.Int)
		rest := s
		if days, r, ok := strings.Cut(s, "d"); ok {
			n, ok := new(big.Int).SetString(days, 10)
			if !ok || n.Sign() < 0 {
				t.Fatalf("ParseDuration(%q) accepted days %q", s, days)
			}
			want.Mul(n, nsPerDay)
			rest = r
		}
		if rest != "" {
			gd, err := time.ParseDuration(rest)
			if err != nil || gd < 0 {
				t.Fatalf("ParseDuration(%q) accepted %q, which time.ParseDuration reads as %s, %v", s, rest, gd, err)
			}
			want.Add(want, big.NewInt(int64(gd)))
		}
		if want.Cmp(big.NewInt(int64(d))) != 0 {
			t.Fatalf("ParseDuration(%q) = %d ns, want %s ns", s, d, want)
		}
	})
}
