package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cflog "github.com/cloudflare/cfssl/log"
)

func TestMain(m *testing.M) {
	cflog.Level = cflog.LevelFatal
	os.Exit(m.Run())
}

func newRoot(t testing.TB, p RootProfile) *Root {
	t.Helper()
	r, _, err := CreateRoot(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mint(t testing.TB, iss Issuer, p Profile) *Bundle {
	t.Helper()
	b, err := Mint(context.Background(), iss, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCreateRoot(t *testing.T) {
	now := time.Now()
	r, keyPEM, err := CreateRoot(DefaultRootProfile("Example"), now)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Error("root is not a CA")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 || c.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Errorf("key usage %b lacks certSign/cRLSign", c.KeyUsage)
	}
	if c.MaxPathLen != -1 || c.MaxPathLenZero {
		t.Errorf("root pathlen = %d (zero=%v), want unlimited", c.MaxPathLen, c.MaxPathLenZero)
	}
	if len(c.SubjectKeyId) == 0 || !bytes.Equal(c.SubjectKeyId, c.AuthorityKeyId) {
		t.Errorf("SKI %x / AKI %x: want both, equal", c.SubjectKeyId, c.AuthorityKeyId)
	}
	if c.SerialNumber.BitLen() < 100 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits, want a 128-bit random number", c.SerialNumber.BitLen())
	}
	if got := c.NotAfter.Sub(now); got < 3649*24*time.Hour {
		t.Errorf("root lasts %s, want 10 years", got)
	}
	if c.Subject.CommonName != "Root CA" || c.Subject.Organization[0] != "Example" {
		t.Errorf("subject %s", c.Subject)
	}
	if _, err := ParseRoot(EncodeCertificatesPEM(c), keyPEM, now); err != nil {
		t.Fatalf("created root does not parse back: %v", err)
	}
	if _, _, err := CreateRoot(RootProfile{Subject: c.Subject, TTL: time.Hour, MaxPathLen: 0}, now); !errors.Is(err, ErrPathLenZero) {
		t.Errorf("pathlen 0 root: got %v, want ErrPathLenZero", err)
	}
}

// TestMintProfile checks the intermediate against Istio's contract and the profile.
func TestMintProfile(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	before := time.Now()
	b := mint(t, NewLocalIssuer(root), IntermediateProfile("east", "Example"))
	c := b.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: CA=%v pathlen=%d zero=%v, want CA:true pathlen:0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; c.KeyUsage != want {
		t.Errorf("key usage %b, want %b", c.KeyUsage, want)
	}
	if len(c.ExtKeyUsage) != 0 || len(c.UnknownExtKeyUsage) != 0 {
		t.Errorf("EKU %v: an intermediate must carry none (istiod checks serverAuth)", c.ExtKeyUsage)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != DefaultIstiodSAN {
		t.Errorf("SANs %v, want [%s]", c.DNSNames, DefaultIstiodSAN)
	}
	if c.Subject.CommonName != "Intermediate CA" || c.Subject.Organization[0] != "Example" || c.Subject.Locality[0] != "east" {
		t.Errorf("subject %s, want O=Example, CN=Intermediate CA, L=east", c.Subject)
	}
	if d := c.NotAfter.Sub(before); d < DefaultIntermediateTTL-time.Minute || d > DefaultIntermediateTTL+time.Minute {
		t.Errorf("lifetime %s, want %s", d, DefaultIntermediateTTL)
	}
	if c.SerialNumber.BitLen() > 128 || c.SerialNumber.BitLen() < 100 {
		t.Errorf("serial has %d bits", c.SerialNumber.BitLen())
	}
	if !bytes.Equal(c.AuthorityKeyId, root.Cert.SubjectKeyId) || len(c.SubjectKeyId) == 0 {
		t.Error("SKI/AKI missing or AKI is not the root's SKI")
	}
	if _, ok := b.Key.(*ecdsa.PrivateKey); !ok || DescribeKey(c.PublicKey) != "ECDSA P-256" {
		t.Errorf("key %s, want ECDSA P-256 by default", DescribeKey(c.PublicKey))
	}
	if len(b.Chain) != 2 || !b.Chain[0].Equal(c) || !b.Chain[1].Equal(root.Cert) {
		t.Error("cert-chain must be intermediate then root")
	}
	files, err := b.Files(FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	if rep := Verify(files, VerifyOptions{}); len(rep.Problems) != 0 {
		t.Errorf("minted bundle has problems: %v", rep.Problems)
	}
	if !bytes.HasPrefix(files[CAKeyFile], []byte("-----BEGIN EC PRIVATE KEY-----")) {
		t.Errorf("ca-key.pem should be SEC 1 PEM")
	}
	if !bytes.Equal(files[CertChainFile], append(append([]byte{}, files[CACertFile]...), files[RootCertFile]...)) {
		t.Error("cert-chain.pem != ca-cert.pem + root-cert.pem")
	}
}

func TestMintKeyTypesAndOptions(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	iss := NewLocalIssuer(root)
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			if testing.Short() && (kt == RSA4096 || kt == RSA3072) {
				t.Skip("slow key generation")
			}
			p := IntermediateProfile("c1", "")
			p.KeyType = kt
			b := mint(t, iss, p)
			want := map[KeyType]string{ECDSAP256: "ECDSA P-256", ECDSAP384: "ECDSA P-384", RSA2048: "RSA 2048", RSA3072: "RSA 3072", RSA4096: "RSA 4096"}[kt]
			if got := DescribeKey(b.Cert.PublicKey); got != want {
				t.Errorf("key %s, want %s", got, want)
			}
			if _, ok := b.Key.(*rsa.PrivateKey); ok {
				files, _ := b.Files(FormatIstio)
				if !bytes.HasPrefix(files[CAKeyFile], []byte("-----BEGIN RSA PRIVATE KEY-----")) {
					t.Error("RSA key should be PKCS #1 PEM")
				}
			}
		})
	}
	t.Run("pathlen-1-sans-ttl", func(t *testing.T) {
		p := IntermediateProfile("c2", "")
		p.MaxPathLen, p.DNSNames, p.TTL = 1, []string{"a.example", "b.example"}, 48*time.Hour
		b := mint(t, iss, p)
		if b.Cert.MaxPathLen != 1 || strings.Join(b.Cert.DNSNames, ",") != "a.example,b.example" {
			t.Errorf("pathlen %d SANs %v", b.Cert.MaxPathLen, b.Cert.DNSNames)
		}
		if d := time.Until(b.Cert.NotAfter); d > 48*time.Hour || d < 47*time.Hour {
			t.Errorf("ttl %s", d)
		}
	})
}

func TestProfileValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Profile)
		want string
	}{
		{"empty cluster", func(p *Profile) { p.Cluster = "" }, "cluster name is empty"},
		{"slash in cluster", func(p *Profile) { p.Cluster = "a/b" }, "only letters"},
		{"dot-dot", func(p *Profile) { p.Cluster = ".." }, "only letters"},
		{"zero ttl", func(p *Profile) { p.TTL = 0 }, "ttl must be positive"},
		{"negative pathlen", func(p *Profile) { p.MaxPathLen = -1 }, "pathlen must be 0 or more"},
		{"bad key type", func(p *Profile) { p.KeyType = "dsa" }, "unknown key type"},
		{"bad SAN", func(p *Profile) { p.DNSNames = []string{"http://x"} }, "is not a DNS name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := IntermediateProfile("ok", "")
			tc.edit(&p)
			if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTTLBeyondRoot: never truncate silently.
func TestTTLBeyondRoot(t *testing.T) {
	rp := DefaultRootProfile("")
	rp.TTL = 30 * 24 * time.Hour
	root := newRoot(t, rp)
	iss := NewLocalIssuer(root)
	p := IntermediateProfile("short", "")
	_, err := Mint(context.Background(), iss, p)
	if !errors.Is(err, ErrTTLTruncated) || !strings.Contains(err.Error(), "root expires") {
		t.Fatalf("got %v, want ErrTTLTruncated", err)
	}
	p.AllowShortTTL = true
	b := mint(t, iss, p)
	if !b.Cert.NotAfter.Equal(root.Cert.NotAfter) {
		t.Errorf("with AllowShortTTL not-after = %s, want the root's %s", b.Cert.NotAfter, root.Cert.NotAfter)
	}
}

// truncatingIssuer stands for an issuer (such as Vault) that silently cuts the TTL.
type truncatingIssuer struct{ root *Root }

func (ti truncatingIssuer) Anchor() *x509.Certificate  { return ti.root.Cert }
func (ti truncatingIssuer) Chain() []*x509.Certificate { return []*x509.Certificate{ti.root.Cert} }

func (ti truncatingIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest, p Profile) (*Issued, error) {
	p.TTL /= 2
	return NewLocalIssuer(ti.root).Issue(ctx, csr, p)
}

// wrongIssuer returns a certificate for another key.
type wrongIssuer struct{ root *Root }

func (wi wrongIssuer) Anchor() *x509.Certificate  { return wi.root.Cert }
func (wi wrongIssuer) Chain() []*x509.Certificate { return []*x509.Certificate{wi.root.Cert} }

func (wi wrongIssuer) Issue(ctx context.Context, _ *x509.CertificateRequest, p Profile) (*Issued, error) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: p.Subject}, k)
	csr, _ := x509.ParseCertificateRequest(der)
	return NewLocalIssuer(wi.root).Issue(ctx, csr, p)
}

func TestCheckIssuedCatchesBadIssuers(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	p := IntermediateProfile("x", "")
	if _, err := Mint(context.Background(), truncatingIssuer{root}, p); !errors.Is(err, ErrTTLTruncated) {
		t.Errorf("truncated TTL: got %v, want ErrTTLTruncated", err)
	}
	if _, err := Mint(context.Background(), wrongIssuer{root}, p); err == nil || !strings.Contains(err.Error(), "not the CSR's") {
		t.Errorf("wrong key: got %v", err)
	}
}

// TestCrossClusterMTLS is the point of the product: workloads of two clusters whose
// intermediates share a root complete mutual TLS; with different roots they do not.
func TestCrossClusterMTLS(t *testing.T) {
	rootA := newRoot(t, DefaultRootProfile("A"))
	rootB := newRoot(t, DefaultRootProfile("B"))
	east := mint(t, NewLocalIssuer(rootA), IntermediateProfile("east", ""))
	west := mint(t, NewLocalIssuer(rootA), IntermediateProfile("west", ""))
	pw := IntermediateProfile("west", "")
	pw.KeyType = RSA2048 // mixed key types still interoperate
	westRSA := mint(t, NewLocalIssuer(rootA), pw)
	stranger := mint(t, NewLocalIssuer(rootB), IntermediateProfile("stranger", ""))

	wl := func(b *Bundle, sa string) *Workload {
		w, err := b.IssueWorkload(SPIFFEID("cluster.local", "default", sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, w, wr, s := wl(east, "east"), wl(west, "west"), wl(westRSA, "west-rsa"), wl(stranger, "stranger")
	for _, pair := range [][2]*Workload{{e, w}, {w, e}, {e, wr}, {wr, e}} {
		if err := Handshake(ctx, pair[0], pair[1]); err != nil {
			t.Errorf("same root: handshake %s <- %s failed: %v", pair[0].ID, pair[1].ID, err)
		}
	}
	for _, pair := range [][2]*Workload{{e, s}, {s, e}} {
		if err := Handshake(ctx, pair[0], pair[1]); err == nil {
			t.Errorf("different roots: handshake %s <- %s succeeded", pair[0].ID, pair[1].ID)
		} else if !strings.Contains(err.Error(), "unknown authority") && !strings.Contains(err.Error(), "bad certificate") {
			t.Errorf("different roots: unexpected error %v", err)
		}
	}
}

func TestFormatsRoundTrip(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	b := mint(t, NewLocalIssuer(root), IntermediateProfile("c", ""))
	for _, f := range []Format{FormatIstio, FormatTLS} {
		files, err := b.Files(f)
		if err != nil {
			t.Fatal(err)
		}
		got, rep, err := ParseBundle(files, VerifyOptions{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if rep.Format != f || !got.Cert.Equal(b.Cert) || !KeyMatches(got.Key, b.Cert.PublicKey) || len(got.Roots) != 1 || len(got.Chain) != 2 {
			t.Errorf("%s: round trip lost something (format %s)", f, rep.Format)
		}
	}
}

func TestSameRoots(t *testing.T) {
	a := &Report{RootFingerprints: []string{"a"}}
	a2 := &Report{RootFingerprints: []string{"a"}}
	ab := &Report{RootFingerprints: []string{"b", "a"}}
	ba := &Report{RootFingerprints: []string{"a", "b"}}
	if p := SameRoots([]string{"x", "y"}, []*Report{a, a2}); p != nil {
		t.Errorf("same roots flagged: %v", p)
	}
	if p := SameRoots([]string{"x", "y"}, []*Report{ab, ba}); p != nil {
		t.Errorf("same root set in another order flagged: %v", p)
	}
	p := SameRoots([]string{"x", "y", "z"}, []*Report{a, a2, ab})
	if p == nil || !strings.Contains(p.Message, "z trusts other roots than x") {
		t.Errorf("different roots: got %v", p)
	}
}

func TestParseKeyType(t *testing.T) {
	if k, err := ParseKeyType("RSA-4096"); err != nil || k != RSA4096 {
		t.Errorf("got %v %v", k, err)
	}
	if _, err := ParseKeyType("rsa-1024"); err == nil || !strings.Contains(err.Error(), "want one of ecdsa-p256") {
		t.Errorf("got %v", err)
	}
}

func TestRenewBefore(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: now.Add(-300 * 24 * time.Hour), NotAfter: now.Add(65 * 24 * time.Hour)} // 365d life, 65d left
	for _, tc := range []struct {
		in  string
		due bool
	}{
		{"15%", false}, {"20%", true}, {"720h", false}, {"90d", true}, {"65d1h", true}, {"64d", false},
	} {
		rb, err := ParseRenewBefore(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if due, left := rb.Due(cert, now); due != tc.due || left != 65*24*time.Hour {
			t.Errorf("%s: due=%v left=%s, want due=%v", tc.in, due, left, tc.due)
		}
	}
	if due, _ := DefaultRenewBefore().Due(cert, now); !due {
		t.Error("65 of 365 days left is under the default third of the lifetime: want due")
	}
	for _, bad := range []string{"", "0%", "150%", "soon", "-5h", "d"} {
		if _, err := ParseRenewBefore(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRenewAt: when a certificate becomes due, and Due agrees with it on either side.
func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(300 * 24 * time.Hour)}
	for _, tc := range []struct {
		rb       RenewBefore
		want     time.Time
		describe string
	}{
		{RenewBefore{}, cert.NotAfter.Add(-100 * 24 * time.Hour), "33.33% of lifetime"},
		{DefaultRenewBefore(), cert.NotAfter.Add(-100 * 24 * time.Hour), "33.33% of lifetime"},
		{RenewBefore{Duration: 30 * 24 * time.Hour}, cert.NotAfter.Add(-30 * 24 * time.Hour), "30d"},
		{RenewBefore{Duration: 12 * time.Hour}, cert.NotAfter.Add(-12 * time.Hour), "12h0m"},
		{RenewBefore{Fraction: 0.5}, cert.NotAfter.Add(-150 * 24 * time.Hour), "50% of lifetime"},
	} {
		at := tc.rb.RenewAt(cert)
		if !at.Equal(tc.want) {
			t.Errorf("%s: renew at %s, want %s", tc.rb, at, tc.want)
		}
		if due, _ := tc.rb.Due(cert, at.Add(-time.Second)); due {
			t.Errorf("%s: due a second before %s", tc.rb, at)
		}
		if due, _ := tc.rb.Due(cert, at.Add(time.Second)); !due {
			t.Errorf("%s: not due a second after %s", tc.rb, at)
		}
		if got := tc.rb.Describe(); got != tc.describe {
			t.Errorf("Describe() = %q, want %q", got, tc.describe)
		}
	}
	for _, bad := range []RenewBefore{{Duration: -time.Hour}, {Fraction: 1}, {Fraction: -0.1}} {
		if err := bad.Validate(0); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := (RenewBefore{Duration: 400 * 24 * time.Hour}).Validate(DefaultIntermediateTTL); err == nil || !strings.Contains(err.Error(), "not shorter than") {
		t.Errorf("renew-before past the lifetime: %v", err)
	}
	if err := (RenewBefore{}).Validate(DefaultIntermediateTTL); err != nil {
		t.Errorf("default: %v", err)
	}
}

// ekuIssuer signs like a foreign issuer would, adding an EKU that excludes
// serverAuth: Mint must run istiod's full chain check on it and refuse.
type ekuIssuer struct{ root *Root }

func (ei ekuIssuer) Anchor() *x509.Certificate  { return ei.root.Cert }
func (ei ekuIssuer) Chain() []*x509.Certificate { return []*x509.Certificate{ei.root.Cert} }

func (ei ekuIssuer) Issue(_ context.Context, csr *x509.CertificateRequest, p Profile) (*Issued, error) {
	serial, _ := NewSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(p.TTL),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ei.root.Cert, csr.PublicKey, ei.root.Signer)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	return &Issued{Cert: c, Roots: []*x509.Certificate{ei.root.Cert}}, err
}

func TestMintVerifiesForeignIssuers(t *testing.T) {
	root := newRoot(t, DefaultRootProfile(""))
	_, err := Mint(context.Background(), ekuIssuer{root}, IntermediateProfile("x", ""))
	if err == nil || !strings.Contains(err.Error(), "excludes serverAuth") {
		t.Fatalf("an intermediate with EKU clientAuth only was accepted: %v", err)
	}
}

// TestMintClock: Mint and the local issuer read the profile's clock, and
// IssueWorkloadAt its time, instead of time.Now.
func TestMintClock(t *testing.T) {
	root := newRoot(t, DefaultRootProfile("Istio"))
	at := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	p := IntermediateProfile("east", "")
	p.Now = func() time.Time { return at }
	b, err := Mint(context.Background(), NewLocalIssuer(root), p)
	if err != nil {
		t.Fatal(err)
	}
	if want := at.Add(-5 * time.Minute); !b.Cert.NotBefore.Equal(want) || !b.Cert.NotAfter.Equal(at.Add(p.TTL)) {
		t.Fatalf("valid %s to %s, want from %s for %s", b.Cert.NotBefore, b.Cert.NotAfter, want, p.TTL)
	}
	w, err := b.IssueWorkloadAt(SPIFFEID("cluster.local", "default", "sa"), time.Hour, at)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(w.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotBefore.Equal(at.Add(-time.Minute)) || !leaf.NotAfter.Equal(at.Add(time.Hour)) {
		t.Fatalf("workload valid %s to %s, want from %s", leaf.NotBefore, leaf.NotAfter, at.Add(-time.Minute))
	}
	// A clock past the root's life is refused as the root's expiry, before any key.
	p.Now = func() time.Time { return root.Cert.NotAfter.Add(time.Hour) }
	if _, err := Mint(context.Background(), NewLocalIssuer(root), p); !errors.Is(err, ErrTTLTruncated) {
		t.Fatalf("minting after the root's expiry: %v", err)
	}
}

// TestEmptyOrgRefused: one rule for the subject's O= of roots and intermediates: an
// empty organization is refused by both profiles' checks (the constructors choose
// "Istio" when given none).
func TestEmptyOrgRefused(t *testing.T) {
	rp := DefaultRootProfile("")
	if got := rp.Subject.Organization; len(got) != 1 || got[0] != "Istio" {
		t.Fatalf("DefaultRootProfile(\"\") O=%q, want Istio", got)
	}
	if got := IntermediateProfile("east", "").Subject.Organization; len(got) != 1 || got[0] != "Istio" {
		t.Fatalf("IntermediateProfile(east, \"\") O=%q, want Istio", got)
	}
	for _, org := range []string{"", "  "} {
		rp.Subject.Organization = []string{org}
		if _, _, err := CreateRoot(rp, time.Now()); err == nil || !strings.Contains(err.Error(), "organization") {
			t.Errorf("root with O=%q: %v, want refused naming the organization", org, err)
		}
		p := IntermediateProfile("east", "Istio")
		p.Subject.Organization = []string{org}
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "organization") {
			t.Errorf("intermediate with O=%q: %v, want refused naming the organization", org, err)
		}
	}
}

func TestParseDurationOrZero(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "0s": 0, "0m": 0, "0d": 0, "0h0m": 0, "0d0h": 0, "90m": 90 * time.Minute, "2d": 48 * time.Hour} {
		if got, err := ParseDurationOrZero(in); got != want || err != nil {
			t.Errorf("%q: %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1h", "-0m", "soon", "d"} {
		if _, err := ParseDurationOrZero(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if _, err := ParseDuration("0m"); err == nil {
		t.Error("ParseDuration took a zero duration")
	}
}

// TestSignedUnderVersusVerifiesAt: SignedUnder checks signatures only, so an
// expired intermediate is still signed under its root; VerifiesAt is crypto/x509's
// chain check at a time, which an expired (or not yet valid) one fails.
func TestSignedUnderVersusVerifiesAt(t *testing.T) {
	root := newRoot(t, DefaultRootProfile("Istio"))
	other := newRoot(t, DefaultRootProfile("Istio"))
	b := mint(t, NewLocalIssuer(root), IntermediateProfile("east", ""))
	now := time.Now()
	if !b.SignedUnder(root.Cert) || b.SignedUnder(other.Cert) {
		t.Fatalf("SignedUnder(root)=%v SignedUnder(other)=%v", b.SignedUnder(root.Cert), b.SignedUnder(other.Cert))
	}
	if !b.VerifiesAt(root.Cert, now) || b.VerifiesAt(other.Cert, now) {
		t.Fatalf("VerifiesAt(root)=%v VerifiesAt(other)=%v", b.VerifiesAt(root.Cert, now), b.VerifiesAt(other.Cert, now))
	}
	later := b.Cert.NotAfter.Add(time.Hour)
	if !b.SignedUnder(root.Cert) || b.VerifiesAt(root.Cert, later) {
		t.Fatal("after the intermediate's expiry: want signed under the root, not verifying")
	}
	if b.VerifiesAt(root.Cert, b.Cert.NotBefore.Add(-time.Hour)) {
		t.Fatal("verifies before the intermediate is valid")
	}
}

func TestContainsCertAndIsSelfSigned(t *testing.T) {
	root := newRoot(t, DefaultRootProfile("Istio"))
	other := newRoot(t, DefaultRootProfile("Istio"))
	b := mint(t, NewLocalIssuer(root), IntermediateProfile("east", ""))
	if !ContainsCert(b.Chain, root.Cert) || ContainsCert(b.Chain, other.Cert) || ContainsCert(nil, root.Cert) {
		t.Error("ContainsCert")
	}
	if !IsSelfSigned(root.Cert) || IsSelfSigned(b.Cert) || IsSelfSigned(nil) {
		t.Error("IsSelfSigned")
	}
}

// TestParseRootNamesThePart: ParseRoot's errors say whether the certificate or the
// key is at fault, which ReadRootDir and Vault's KV source turn into a file or a
// field name.
func TestParseRootNamesThePart(t *testing.T) {
	root, keyPEM, err := CreateRoot(DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey, err := CreateRoot(DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM := EncodeCertificatesPEM(root.Cert)
	for _, tc := range []struct {
		name       string
		cert, key  []byte
		part       string
		is         error
		dirMessage string
	}{
		{"garbage certificate", []byte("x"), keyPEM, RootPartCertificate, ErrNoPEM, RootCertFile + ": no PEM data"},
		{"garbage key", certPEM, []byte("x"), RootPartKey, ErrNoPEM, RootKeyFile + ": no PEM data"},
		{"key of another root", certPEM, otherKey, RootPartKey, ErrKeyMismatch, RootKeyFile + ": private key does not match the certificate " + RootCertFile},
		{"expired", EncodeCertificatesPEM(other.Cert), otherKey, RootPartCertificate, ErrExpired, RootCertFile + ": certificate has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			if tc.is == ErrExpired {
				now = other.Cert.NotAfter.Add(time.Hour)
			}
			_, err := ParseRoot(tc.cert, tc.key, now)
			var re *RootError
			if !errors.As(err, &re) || re.Part != tc.part || !errors.Is(err, tc.is) || !strings.HasPrefix(err.Error(), tc.part+": ") {
				t.Fatalf("ParseRoot: %v, want a %s error wrapping %v", err, tc.part, tc.is)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, RootCertFile), tc.cert, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, RootKeyFile), tc.key, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = ReadRootDir(dir, now)
			if err == nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), filepath.Join(dir, tc.dirMessage)) {
				t.Fatalf("ReadRootDir: %v, want %q", err, tc.dirMessage)
			}
		})
	}
}
