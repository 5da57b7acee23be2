// Package catest builds CA hierarchies for tests with crypto/x509 alone, as an
// organisation's own PKI (not meshpki) would have made them: roots, issuing CAs
// at any depth, with the pathlen, validity, key usage and extended key usage a test
// asks for.
package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// CA is a certificate and its key, with the chain above it (nearest first, the
// root last; empty for a root).
type CA struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*CA
}

// Options shape a CA. The zero value is a CA valid for ten years from an hour ago,
// keyCertSign+cRLSign, no pathlen constraint, no extended key usage.
type Options struct {
	CN          string
	NotBefore   time.Time
	NotAfter    time.Time
	PathLen     *int // nil: unconstrained
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	NotCA       bool
	// PermittedURIDomains and ExcludedURIDomains are URI name constraints.
	PermittedURIDomains, ExcludedURIDomains []string
}

// PathLen returns a pointer to n, for Options.PathLen.
func PathLen(n int) *int { return &n }

// Root makes a self-signed root.
func Root(t testing.TB, o Options) *CA { return newCA(t, nil, o) }

// Sub makes a CA signed by parent.
func (parent *CA) Sub(t testing.TB, o Options) *CA { return newCA(t, parent, o) }

func newCA(t testing.TB, parent *CA, o Options) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.CN == "" {
		o.CN = "Test CA"
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	}
	if o.KeyUsage == 0 {
		o.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	serial, err := ca.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"Example Corp"}, CommonName: o.CN},
		NotBefore: o.NotBefore, NotAfter: o.NotAfter, KeyUsage: o.KeyUsage, ExtKeyUsage: o.ExtKeyUsage,
		BasicConstraintsValid: true, IsCA: !o.NotCA, MaxPathLen: -1,
		PermittedURIDomains: o.PermittedURIDomains, ExcludedURIDomains: o.ExcludedURIDomains,
	}
	if o.PathLen != nil {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = *o.PathLen, *o.PathLen == 0
	}
	signer, signerCert := crypto.Signer(key), tmpl
	var chain []*CA
	if parent != nil {
		signer, signerCert = parent.Key, parent.Cert
		chain = append([]*CA{parent}, parent.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, Chain: chain}
}

// CertPEM is c's certificate in PEM.
func (c *CA) CertPEM() []byte { return ca.EncodeCertificatesPEM(c.Cert) }

// KeyPEM is c's key in PEM.
func (c *CA) KeyPEM(t testing.TB) []byte {
	t.Helper()
	b, err := ca.MarshalPrivateKeyPEM(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ChainPEM is the chain above c, nearest first, root included.
func (c *CA) ChainPEM() []byte {
	var b []byte
	for _, p := range c.Chain {
		b = append(b, p.CertPEM()...)
	}
	return b
}

// RootCA is the root of c's hierarchy.
func (c *CA) RootCA() *CA {
	if len(c.Chain) == 0 {
		return c
	}
	return c.Chain[len(c.Chain)-1]
}

// WriteCADir writes c as a signing-CA folder for --ca-dir (ca.ReadCADir):
// ca-cert.pem, ca-key.pem (0600), cert-chain.pem (c up to the root) and
// root-cert.pem, and returns the folder.
func (c *CA) WriteCADir(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		ca.CADirCertFile:  c.CertPEM(),
		ca.CADirKeyFile:   c.KeyPEM(t),
		ca.CADirChainFile: append(c.CertPEM(), c.ChainPEM()...),
		ca.CADirRootsFile: c.RootCA().CertPEM(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
