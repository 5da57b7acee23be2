package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readCorpusRoot loads a corpus root without ReadRootDir's checks, as a caller of
// NewLocalIssuer might.
func readCorpusRoot(t *testing.T, name string) *Root {
	t.Helper()
	dir := filepath.Join("..", "testdata", "roots", name)
	certPEM, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &Root{Cert: cert, Signer: key}
}

// TestMintRefusesWhatIstiodRefuses: even a root that skipped every up-front check
// never yields a bundle istiod's chain check would reject: Mint checks the chain of
// what it signed itself too.
func TestMintRefusesWhatIstiodRefuses(t *testing.T) {
	for _, tc := range []struct{ root, want string }{
		{"root-eku-client-only", "extended key usage"},
		{"root-unknown-critical-extension", "unhandled critical extension"},
		{"root-name-constraints-exclude-san", "name constraints"},
		{"root-excluded-dns", "name constraints"},
	} {
		t.Run(tc.root, func(t *testing.T) {
			root := readCorpusRoot(t, tc.root)
			_, err := Mint(context.Background(), NewLocalIssuer(root), IntermediateProfile("c", ""))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Mint: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A root with constraints that allow the SAN still mints.
	mint(t, NewLocalIssuer(readCorpusRoot(t, "ok-name-constraints-svc")), IntermediateProfile("c", ""))
}

// TestParseDurationOverflow: a duration that does not fit is refused as too long,
// never wrapped around into a short or negative one.
func TestParseDurationOverflow(t *testing.T) {
	for _, s := range []string{"213504d", "300000d", "106752d", "106751d23h59m59s", "99999999999999999999d", "106751d9999999h"} {
		if d, err := ParseDuration(s); err == nil || !strings.Contains(err.Error(), "too long") {
			t.Errorf("ParseDuration(%q) = %s, %v; want a too-long error", s, d, err)
		}
	}
	for _, s := range []string{"2d-1h", "+3d", "-3d", "3d+1h", "d", "1dd", " 1d", "1d ", "NaN"} {
		if d, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %s, want an error", s, d)
		}
	}
	for s, want := range map[string]time.Duration{"106751d": 106751 * 24 * time.Hour, "365d": 8760 * time.Hour, "90d12h": 90*24*time.Hour + 12*time.Hour, "8760h": 8760 * time.Hour, "0d1s": time.Second} {
		if d, err := ParseDuration(s); err != nil || d != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", s, d, err, want)
		}
	}
	for _, s := range []string{"NaN%", "Inf%", "-Inf%", "0%", "100%", "1e400%"} {
		if r, err := ParseRenewBefore(s); err == nil {
			t.Errorf("ParseRenewBefore(%q) = %+v, want an error", s, r)
		}
	}
}

// TestVerifyWarnsOnDuplicates: a cert-chain.pem that repeats the root thousands of
// times still verifies, with a warning that counts the repeats.
func TestVerifyWarnsOnDuplicates(t *testing.T) {
	root := newRoot(t, DefaultRootProfile("Istio"))
	b := mint(t, NewLocalIssuer(root), IntermediateProfile("c", ""))
	files, err := b.Files(FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	files[CertChainFile] = append(EncodeCertificatesPEM(b.Cert), bytes.Repeat(EncodeCertificatesPEM(root.Cert), 8000)...)
	rep := Verify(files, VerifyOptions{})
	if !rep.OK() {
		t.Fatalf("want OK, got %v", rep.Problems)
	}
	found := false
	for _, p := range rep.Problems {
		if p.Check == "chain-duplicate" && strings.Contains(p.Message, "7999 duplicate certificates (8001 in all)") {
			found = true
		}
	}
	if !found {
		t.Errorf("no duplicate warning: %v", rep.Problems)
	}
}

// mixedMesh is a mesh in the middle of a root rotation, with odd members: bundles
// under root A trusting A, under B trusting B, under A and under B trusting A+B (in
// either order), and one whose intermediate allows serverAuth only (so its
// workloads can serve but not be clients).
func mixedMesh(t testing.TB) []*Bundle {
	a := newRoot(t, DefaultRootProfile("A"))
	b := newRoot(t, DefaultRootProfile("B"))
	la, lb := NewLocalIssuer(a), NewLocalIssuer(b)
	var out []*Bundle
	add := func(bu *Bundle, roots ...*x509.Certificate) {
		bu.Roots = roots
		out = append(out, bu)
	}
	add(mint(t, la, IntermediateProfile("a1", "")), a.Cert)
	add(mint(t, la, IntermediateProfile("a2", "")), a.Cert)
	add(mint(t, lb, IntermediateProfile("b1", "")), b.Cert)
	add(mint(t, la, IntermediateProfile("ra", "")), a.Cert, b.Cert)
	add(mint(t, lb, IntermediateProfile("rb", "")), a.Cert, b.Cert)
	add(mint(t, lb, IntermediateProfile("rb2", "")), b.Cert, a.Cert)
	// serverAuth-only intermediate under A, signed by hand.
	key, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := NewSerial()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "server-only"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.Signer)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := x509.ParseCertificate(der)
	add(&Bundle{Cert: sc, Key: key, Chain: []*x509.Certificate{sc, a.Cert}}, a.Cert)
	return out
}

// TestMeshMTLSSameVerdictsAsAllPairs: the per-class check gives, for every ordered
// pair of a mixed mesh, the verdict a real handshake between that pair gives.
func TestMeshMTLSSameVerdictsAsAllPairs(t *testing.T) {
	ctx := context.Background()
	var ws []*Workload
	for i, b := range mixedMesh(t) {
		w, err := b.IssueWorkload(SPIFFEID("cluster.local", "default", fmt.Sprint("w", i)), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	m, err := CheckMeshMTLS(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	n, pairs, okPairs, failPairs := len(ws), 0, 0, 0
	for i := range ws {
		for j := range ws {
			if i == j {
				continue
			}
			real := Handshake(ctx, ws[i], ws[j])
			got := m.Verdict(i, j)
			if (real == nil) != (got == nil) {
				t.Errorf("server %d, client %d: handshake says %v, class check says %v", i, j, real, got)
			}
			if real == nil {
				okPairs++
			} else {
				failPairs++
			}
		}
	}
	for _, r := range m.Results {
		pairs += r.Pairs
	}
	if pairs != n*(n-1) {
		t.Errorf("results stand for %d pairs, want %d", pairs, n*(n-1))
	}
	if okPairs == 0 || failPairs == 0 {
		t.Errorf("the mesh should mix accepted and refused pairs: %d ok, %d failed", okPairs, failPairs)
	}
	if len(m.Results) >= n*(n-1) {
		t.Errorf("%d real handshakes for %d workloads: no fewer than all pairs", len(m.Results), n)
	}
	t.Logf("%d workloads, %d classes, %d handshakes for %d pairs (%d ok)", n, len(m.Classes), len(m.Results), pairs, okPairs)
}
