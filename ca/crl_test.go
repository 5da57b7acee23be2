package ca_test

import (
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
	"github.com/meshpki/meshpki/internal/testenv"
)

func signCRL(t *testing.T, c *catest.CA, now time.Time, ttl time.Duration, revoked ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, r := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: r.SerialNumber, RevocationTime: now.Add(-time.Minute), ReasonCode: 1})
	}
	crl, err := ca.SignCRL(c.Cert, c.Key, entries, nil, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// meshPKI is a root with two cluster CAs, each with a workload leaf.
type meshPKI struct {
	root, east, west *catest.CA
	eastLeaf         *catest.CA
}

func newMeshPKI(t *testing.T) *meshPKI {
	root := catest.Root(t, catest.Options{CN: "Root CA"})
	m := &meshPKI{root: root,
		east: root.Sub(t, catest.Options{CN: "Intermediate CA east", PathLen: catest.PathLen(0)}),
		west: root.Sub(t, catest.Options{CN: "Intermediate CA west", PathLen: catest.PathLen(0)}),
	}
	m.eastLeaf = m.east.Sub(t, catest.Options{CN: "workload", NotCA: true, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	return m
}

func TestSignCRLIsV2AndRoundTrips(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	a := signCRL(t, m.root, now, time.Hour, m.east.Cert)
	b := signCRL(t, m.west, now, time.Hour)
	got, err := ca.ParseCRLsPEM(ca.EncodeCRLsPEM(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !ca.SignedBy(got[0], m.root.Cert) || !ca.SignedBy(got[1], m.west.Cert) {
		t.Fatalf("round trip: %d CRLs", len(got))
	}
	if !ca.IsRevoked(got[0], m.east.Cert.SerialNumber) || ca.IsRevoked(got[0], m.west.Cert.SerialNumber) {
		t.Error("root CRL should list east only")
	}
	if len(got[0].AuthorityKeyId) == 0 || got[0].Number == nil {
		t.Error("CRL lacks authorityKeyIdentifier or CRL number: TLS stacks match CRLs to CAs by them")
	}
	// A CA without cRLSign cannot sign one.
	noCRL := m.root.Sub(t, catest.Options{CN: "no crl sign", KeyUsage: x509.KeyUsageCertSign})
	if _, err := ca.SignCRL(noCRL.Cert, noCRL.Key, nil, nil, now, time.Hour); !errors.Is(err, ca.ErrCRLSign) {
		t.Errorf("SignCRL without cRLSign: %v, want ErrCRLSign", err)
	}
}

func TestParseCRLsPEMRefuses(t *testing.T) {
	m := newMeshPKI(t)
	good := ca.EncodeCRLsPEM(signCRL(t, m.root, time.Now(), time.Hour))
	for name, data := range map[string][]byte{
		"certificate": m.root.CertPEM(),
		"garbage":     []byte("not a crl"),
		"trailing":    append(append([]byte{}, good...), []byte("junk")...),
	} {
		if _, err := ca.ParseCRLsPEM(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if crls, err := ca.ParseCRLsPEM(nil); err != nil || len(crls) != 0 {
		t.Errorf("empty: %v, %d", err, len(crls))
	}
}

// TestOpenSSLCRLVersions: what `openssl ca -gencrl` writes without crl_extensions is
// a v1 CRL, which istiod (Go's x509.ParseRevocationList) refuses; with
// crl_extensions it is v2 and taken.
func TestOpenSSLCRLVersions(t *testing.T) {
	testenv.Tool(t, "openssl")
	m := newMeshPKI(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.pem", m.root.CertPEM())
	write("key.pem", m.root.KeyPEM(t))
	write("index.txt", nil)
	write("crlnumber", []byte("01\n"))
	// No crlnumber and no crl_extensions: openssl writes a v1 CRL; either makes it v2.
	v1conf := write("v1.cnf", []byte(`[ ca ]
default_ca = d
[ d ]
database = `+dir+`/index.txt
certificate = `+dir+`/ca.pem
private_key = `+dir+`/key.pem
default_md = sha256
default_crl_days = 7
`))
	conf := write("ca.cnf", []byte(`[ ca ]
default_ca = d
[ d ]
database = `+dir+`/index.txt
crlnumber = `+dir+`/crlnumber
certificate = `+dir+`/ca.pem
private_key = `+dir+`/key.pem
default_md = sha256
default_crl_days = 7
[ v2 ]
authorityKeyIdentifier = keyid:always
`))
	gen := func(conf string, ext ...string) []byte {
		out := filepath.Join(dir, "crl.pem")
		args := append([]string{"ca", "-batch", "-config", conf, "-gencrl", "-out", out}, ext...)
		if b, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ca.ParseCRLsPEM(gen(v1conf)); !errors.Is(err, ca.ErrCRLVersion) {
		t.Errorf("openssl v1 CRL: %v, want ErrCRLVersion", err)
	}
	crls, err := ca.ParseCRLsPEM(gen(conf, "-crlexts", "v2"))
	if err != nil || len(crls) != 1 || !ca.SignedBy(crls[0], m.root.Cert) {
		t.Errorf("openssl v2 CRL: %v", err)
	}
}

func TestCheckIstiodCRLs(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	chain := []*x509.Certificate{m.east.Cert, m.root.Cert}
	rootCRL, eastCRL, westCRL := signCRL(t, m.root, now, time.Hour), signCRL(t, m.east, now, time.Hour), signCRL(t, m.west, now, time.Hour)
	if err := ca.CheckIstiodCRLs(chain, []*x509.RevocationList{westCRL, rootCRL, eastCRL}); err != nil {
		t.Errorf("full mesh set: %v", err)
	}
	err := ca.CheckIstiodCRLs(chain, []*x509.RevocationList{rootCRL, westCRL})
	var ce *ca.CRLError
	if !errors.Is(err, ca.ErrCRLMissing) || !errors.As(err, &ce) || !strings.Contains(ce.Subject, "east") {
		t.Errorf("without east's CRL: %v, want ErrCRLMissing naming east", err)
	}
	// istiod does not look at times: a stale CRL passes its check.
	if err := ca.CheckIstiodCRLs(chain, []*x509.RevocationList{signCRL(t, m.root, now.Add(-48*time.Hour), time.Hour), eastCRL}); err != nil {
		t.Errorf("stale CRL, istiod's rule: %v", err)
	}
}

// TestCheckChainCRLsAgreesWithOpenSSL runs Envoy's rule (every CA of the chain has a
// current CRL, nothing listed) in Go and in `openssl verify -crl_check_all` (the
// X509_V_FLAG_CRL_CHECK_ALL of OpenSSL, which BoringSSL shares), and wants the same
// verdict for each case, so the Go check is the TLS stack's.
func TestCheckChainCRLsAgreesWithOpenSSL(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	leaf := m.eastLeaf.Cert
	chain := []*x509.Certificate{leaf, m.east.Cert, m.root.Cert}
	// A rotated east CA: same name, new key, and its CRL in the set as well.
	eastOld := m.root.Sub(t, catest.Options{CN: "Intermediate CA east", PathLen: catest.PathLen(0)})
	rootCRL, eastCRL, westCRL := signCRL(t, m.root, now, time.Hour), signCRL(t, m.east, now, time.Hour), signCRL(t, m.west, now, time.Hour)
	cases := []struct {
		name string
		crls []*x509.RevocationList
		want error
	}{
		{"every CA has a CRL", []*x509.RevocationList{rootCRL, eastCRL, westCRL}, nil},
		{"same-name CA of another key too", []*x509.RevocationList{signCRL(t, eastOld, now, time.Hour), rootCRL, eastCRL}, nil},
		{"east's CRL missing (the trap)", []*x509.RevocationList{rootCRL, westCRL}, ca.ErrCRLMissing},
		{"only a same-name CA's CRL", []*x509.RevocationList{rootCRL, signCRL(t, eastOld, now, time.Hour)}, ca.ErrCRLMissing},
		{"root's CRL missing", []*x509.RevocationList{eastCRL, westCRL}, ca.ErrCRLMissing},
		{"east revoked by the root", []*x509.RevocationList{signCRL(t, m.root, now, time.Hour, m.east.Cert), eastCRL}, ca.ErrRevoked},
		{"root CRL stale", []*x509.RevocationList{signCRL(t, m.root, now.Add(-48*time.Hour), time.Hour), eastCRL}, ca.ErrCRLStale},
		{"newest CRL counts", []*x509.RevocationList{signCRL(t, m.root, now.Add(-48*time.Hour), time.Hour), rootCRL, eastCRL}, nil},
	}
	openssl := testenv.Tool(t, "openssl")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ca.CheckChainCRLs(chain, tc.crls, now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckChainCRLs: %v, want %v", err, tc.want)
			}
			dir := t.TempDir()
			files := map[string][]byte{"root.pem": m.root.CertPEM(), "inter.pem": m.east.CertPEM(), "leaf.pem": m.eastLeaf.CertPEM(), "crl.pem": ca.EncodeCRLsPEM(tc.crls...)}
			for n, b := range files {
				if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, oerr := exec.Command(openssl, "verify", "-crl_check_all", "-CAfile", filepath.Join(dir, "root.pem"),
				"-untrusted", filepath.Join(dir, "inter.pem"), "-CRLfile", filepath.Join(dir, "crl.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
			if (oerr == nil) != (err == nil) {
				t.Errorf("openssl verify disagrees: openssl %v (%s), Go %v", oerr, strings.TrimSpace(string(out)), err)
			}
		})
	}
}

func TestMergeCRLsKeepsNewestPerCA(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	old := signCRL(t, m.root, now.Add(-time.Hour), 2*time.Hour)
	cur := signCRL(t, m.root, now, 2*time.Hour, m.west.Cert)
	east := signCRL(t, m.east, now, time.Hour)
	a := ca.MergeCRLs([]*x509.RevocationList{old, east}, []*x509.RevocationList{cur})
	b := ca.MergeCRLs([]*x509.RevocationList{cur, east, old})
	if len(a) != 2 || string(ca.EncodeCRLsPEM(a...)) != string(ca.EncodeCRLsPEM(b...)) {
		t.Fatalf("merge: %d CRLs, or order depends on input", len(a))
	}
	if got := ca.CRLOf(a, m.root.Cert); got == nil || got.Number.Cmp(cur.Number) != 0 {
		t.Error("merge did not keep the newest root CRL")
	}
	if !ca.NeedsRefresh(old, now, 0) || ca.NeedsRefresh(signCRL(t, m.root, now, ca.DefaultCRLTTL), now, 0) {
		t.Error("NeedsRefresh")
	}
}

// TestVerifyChecksCRLFile: verify (and so install) refuses a ca-crl.pem that istiod
// would refuse, or that would cut the cluster off.
func TestVerifyChecksCRLFile(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	b := &ca.Bundle{Cert: m.east.Cert, Key: m.east.Key, Chain: []*x509.Certificate{m.east.Cert, m.root.Cert}, Roots: []*x509.Certificate{m.root.Cert}}
	check := func(crlFile []byte) *ca.Report {
		b.CRLFile = crlFile
		files, err := b.Files(ca.FormatIstio)
		if err != nil {
			t.Fatal(err)
		}
		if string(files[ca.CRLFile]) != string(crlFile) {
			t.Fatal("Files does not carry ca-crl.pem")
		}
		return ca.Verify(files, ca.VerifyOptions{Now: now})
	}
	rootCRL, eastCRL := signCRL(t, m.root, now, ca.DefaultCRLTTL), signCRL(t, m.east, now, ca.DefaultCRLTTL)
	if rep := check(ca.EncodeCRLsPEM(rootCRL, eastCRL, signCRL(t, m.west, now, time.Hour))); !rep.OK() {
		t.Errorf("good CRL set: %v", rep.Err())
	}
	for name, tc := range map[string]struct {
		file  []byte
		check string
	}{
		"missing own CRL": {ca.EncodeCRLsPEM(rootCRL), "crl-missing"},
		"stale":           {ca.EncodeCRLsPEM(signCRL(t, m.root, now.Add(-48*time.Hour), time.Hour), eastCRL), "crl-stale"},
		"own CA revoked":  {ca.EncodeCRLsPEM(signCRL(t, m.root, now, time.Hour, m.east.Cert), eastCRL), "crl-revoked"},
		"not a CRL":       {m.root.CertPEM(), "crl"},
		"empty":           {[]byte("\n"), "crl"},
	} {
		rep := check(tc.file)
		found := false
		for _, p := range rep.Problems {
			found = found || p.Check == tc.check && p.File == ca.CRLFile && p.Severity == ca.SeverityError
		}
		if !found {
			t.Errorf("%s: want error %s on %s, got %v", name, tc.check, ca.CRLFile, rep.Problems)
		}
	}
}

func TestRootDirCRLRecordsRevocations(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	root, keyPEM, err := ca.CreateRoot(ca.DefaultRootProfile(""), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteRootDir(dir, root, keyPEM); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	opts := ca.CRLOptions{Now: func() time.Time { return now }}
	first, changed, err := ca.RootDirCRL(ctx, dir, root, nil, opts)
	if err != nil || !changed || len(first.RevokedCertificateEntries) != 0 {
		t.Fatalf("first CRL: %v changed=%v", err, changed)
	}
	again, changed, err := ca.RootDirCRL(ctx, dir, root, nil, opts)
	if err != nil || changed || again.Number.Cmp(first.Number) != 0 {
		t.Fatalf("second run should keep the current CRL: %v changed=%v", err, changed)
	}
	// Two revocations at once, from two goroutines: the folder lock keeps both.
	serials := []int64{0x1001, 0x1002}
	errs := make(chan error, 2)
	for _, s := range serials {
		go func() {
			_, _, err := ca.RootDirCRL(ctx, dir, root, []x509.RevocationListEntry{{SerialNumber: big.NewInt(s), RevocationTime: now, ReasonCode: ca.ReasonKeyCompromise}}, opts)
			errs <- err
		}()
	}
	for range serials {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	crl, err := ca.ReadRootCRL(dir, root.Cert)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range serials {
		if !ca.IsRevoked(crl, big.NewInt(s)) {
			t.Errorf("serial %x lost", s)
		}
	}
	if crl.Number.Int64() != first.Number.Int64()+2 {
		t.Errorf("CRL number %v, want %d", crl.Number, first.Number.Int64()+2)
	}
	if _, _, err := ca.RootDirCRL(ctx, dir, root, []x509.RevocationListEntry{{SerialNumber: big.NewInt(0x1001), RevocationTime: now}}, opts); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("revoking twice: %v", err)
	}
	// A year later the CRL is signed again, with the same entries.
	later := ca.CRLOptions{Now: func() time.Time { return now.Add(365 * 24 * time.Hour) }}
	re, changed, err := ca.RootDirCRL(ctx, dir, root, nil, later)
	if err != nil || !changed || len(re.RevokedCertificateEntries) != 2 {
		t.Fatalf("refresh: %v changed=%v", err, changed)
	}
	if st, _ := os.Stat(filepath.Join(dir, ca.RootCRLFile)); st.Mode().Perm() != 0o644 {
		t.Errorf("root-crl.pem mode %v", st.Mode().Perm())
	}
	// A root-crl.pem another root signed is refused, and nothing is written.
	other := catest.Root(t, catest.Options{})
	bad := ca.EncodeCRLsPEM(signCRL(t, other, now, time.Hour))
	if err := os.WriteFile(filepath.Join(dir, ca.RootCRLFile), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.RootDirCRL(ctx, dir, root, nil, opts); err == nil || !strings.Contains(err.Error(), ca.RootCRLFile) {
		t.Errorf("foreign root-crl.pem: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ca.RootCRLFile)); string(b) != string(bad) {
		t.Error("refused file was changed")
	}
}

func TestCheckMeshCRLs(t *testing.T) {
	m := newMeshPKI(t)
	now := time.Now()
	rootCRL, eastCRL, westCRL := signCRL(t, m.root, now, time.Hour), signCRL(t, m.east, now, time.Hour), signCRL(t, m.west, now, time.Hour)
	east := ca.CRLMember{Name: "east", Chain: []*x509.Certificate{m.east.Cert, m.root.Cert}}
	west := ca.CRLMember{Name: "west", Chain: []*x509.Certificate{m.west.Cert, m.root.Cert}}
	checks := func(ms ...ca.CRLMember) []string {
		var out []string
		for _, p := range ca.CheckMeshCRLs(ms, now) {
			out = append(out, p.Check)
		}
		return out
	}
	east.CRLs, west.CRLs = []*x509.RevocationList{rootCRL, eastCRL, westCRL}, []*x509.RevocationList{rootCRL, eastCRL, westCRL}
	if got := checks(east, west); len(got) != 0 {
		t.Errorf("full sets: %v", got)
	}
	// CRLs off in west while on in east: west accepts revoked CAs (an error of its
	// own); apart from that, only east's set matters.
	west.CRLs = nil
	if ps := ca.CheckMeshCRLs([]ca.CRLMember{east, west}, now); len(ps) != 1 || ps[0].Check != "mesh-crl-off" || !strings.HasPrefix(ps[0].Message, "west has no ca-crl.pem") {
		t.Errorf("CRLs off in west only: %v", ps)
	}
	checks = func(ms ...ca.CRLMember) []string {
		var out []string
		for _, p := range ca.CheckMeshCRLs(ms, now) {
			if p.Check != "mesh-crl-off" {
				out = append(out, p.Check)
			}
		}
		return out
	}
	east.CRLs = []*x509.RevocationList{rootCRL, eastCRL}
	if got := checks(east, west); len(got) != 1 || got[0] != "mesh-crl-missing" {
		t.Errorf("east lacks west's CA's CRL: %v", got)
	}
	east.CRLs = []*x509.RevocationList{signCRL(t, m.root, now.Add(-48*time.Hour), time.Hour), eastCRL, westCRL}
	if got := checks(east, west); len(got) != 1 || got[0] != "mesh-crl-stale" {
		t.Errorf("stale root CRL: %v", got)
	}
	east.CRLs = []*x509.RevocationList{signCRL(t, m.root, now, time.Hour, m.west.Cert), eastCRL}
	if got := checks(east, west); len(got) != 1 || got[0] != "mesh-crl-revoked" {
		t.Errorf("west revoked: %v", got)
	}

	// After revoke west: east holds the root's CRL number 2 revoking west's CA,
	// west (left alone, as revoke leaves a revoked cluster) still number 1. West is
	// out of the mesh: its CRL being behind is no finding (it was one, found by
	// comparing binaries, and no crl sync could clear it). A third cluster with
	// number 1 is behind.
	number := func(crl *x509.RevocationList, n int64, revoked ...*x509.Certificate) *x509.RevocationList {
		var entries []x509.RevocationListEntry
		for _, r := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: r.SerialNumber, RevocationTime: now.Add(-time.Minute), ReasonCode: 1})
		}
		out, err := ca.SignCRL(m.root.Cert, m.root.Key, entries, big.NewInt(n), now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	root1, root2 := number(rootCRL, 1), number(rootCRL, 2, m.west.Cert)
	east.CRLs = []*x509.RevocationList{root2, eastCRL, westCRL}
	west.CRLs = []*x509.RevocationList{root1, eastCRL, westCRL}
	for _, p := range ca.CheckMeshCRLs([]ca.CRLMember{east, west}, now) {
		if p.Check == "mesh-crl-behind" {
			t.Errorf("the revoked cluster is reported behind: %s", p.Message)
		}
	}
	north := ca.CRLMember{Name: "north", Chain: []*x509.Certificate{m.east.Cert, m.root.Cert}, CRLs: []*x509.RevocationList{root1, eastCRL, westCRL}}
	var behind []string
	for _, p := range ca.CheckMeshCRLs([]ca.CRLMember{east, west, north}, now) {
		if p.Check == "mesh-crl-behind" {
			behind = append(behind, p.Message)
		}
	}
	if len(behind) != 1 || !strings.HasPrefix(behind[0], "north holds") {
		t.Errorf("want north behind only: %v", behind)
	}
}
