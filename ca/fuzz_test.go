package ca

import (
	"os"
	"path/filepath"
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
