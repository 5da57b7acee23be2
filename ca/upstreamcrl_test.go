package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
)

// TestUpstreamCRLs: the CRLs brought in for the CAs above an issuing CA are taken
// only when Envoy would take the chains they cover: one current CRL signed by each
// CA above, none revoking the path, none from elsewhere.
func TestUpstreamCRLs(t *testing.T) {
	now := time.Now()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	policy := root.Sub(t, catest.Options{CN: "Policy CA", PathLen: catest.PathLen(2)})
	issuing := policy.Sub(t, catest.Options{CN: "Issuing CA", PathLen: catest.PathLen(1)})
	other := root.Sub(t, catest.Options{CN: "Other Issuing CA", PathLen: catest.PathLen(1)})
	impostor := catest.Root(t, catest.Options{CN: "Offline Root"}) // same name, another key
	path := []*x509.Certificate{issuing.Cert, policy.Cert, root.Cert}

	rootCRL := signCRL(t, root, now, time.Hour, other.Cert) // revoking a sibling is fine
	policyCRL := signCRL(t, policy, now, time.Hour)
	newer, err := ca.SignCRL(root.Cert, root.Key, nil, new(big.Int).Add(rootCRL.Number, big.NewInt(1)), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	got, err := ca.UpstreamCRLs(path, []*x509.RevocationList{rootCRL, policyCRL, newer}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !ca.SignedBy(got[0], policy.Cert) || !ca.SignedBy(got[1], root.Cert) || got[1].Number.Cmp(newer.Number) != 0 {
		t.Fatalf("picked %d CRLs, want the policy CA's and the root's newest", len(got))
	}

	forged := signCRL(t, impostor, now, time.Hour)
	forged.AuthorityKeyId = root.Cert.SubjectKeyId // claims the root's key as well as its name
	for _, c := range []struct {
		name string
		crls []*x509.RevocationList
		want error
		msg  string
	}{
		{"none", nil, ca.ErrCRLMissing, "Policy CA"},
		{"root's missing", []*x509.RevocationList{policyCRL}, ca.ErrCRLMissing, "Offline Root"},
		{"stale", []*x509.RevocationList{policyCRL, signCRL(t, root, now.Add(-2*time.Hour), time.Hour)}, ca.ErrCRLStale, "Offline Root"},
		{"revokes the issuing CA", []*x509.RevocationList{rootCRL, signCRL(t, policy, now, time.Hour, issuing.Cert)}, ca.ErrRevoked, "Issuing CA"},
		{"revokes the policy CA", []*x509.RevocationList{policyCRL, signCRL(t, root, now, time.Hour, policy.Cert)}, ca.ErrRevoked, "Policy CA"},
		{"another CA's", []*x509.RevocationList{rootCRL, policyCRL, signCRL(t, other, now, time.Hour)}, ca.ErrUpstreamCRL, "Other Issuing CA"},
		{"the issuing CA's own", []*x509.RevocationList{rootCRL, policyCRL, signCRL(t, issuing, now, time.Hour)}, ca.ErrUpstreamCRL, "meshpki keeps itself"},
		{"same name, another key", []*x509.RevocationList{rootCRL, policyCRL, signCRL(t, impostor, now, time.Hour)}, ca.ErrUpstreamCRL, "not above"},
		{"forged", []*x509.RevocationList{rootCRL, policyCRL, forged}, ca.ErrUpstreamCRL, "is not signed by it"},
	} {
		_, err := ca.UpstreamCRLs(path, c.crls, now)
		if !errors.Is(err, c.want) || !errors.Is(err, ca.ErrUpstreamCRL) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v naming %q", c.name, err, c.want, c.msg)
		}
	}

	// The root signs for itself: nothing comes from above.
	if got, err := ca.UpstreamCRLs(path[2:], nil, now); err != nil || len(got) != 0 {
		t.Errorf("root alone: %d, %v", len(got), err)
	}
	if _, err := ca.UpstreamCRLs(path[2:], []*x509.RevocationList{rootCRL}, now); !errors.Is(err, ca.ErrUpstreamCRL) {
		t.Errorf("upstream CRLs for a root: %v", err)
	}
}

// TestReadCRLFile: a file of CRLs is read as istiod reads ca-crl.pem; errors name it.
func TestReadCRLFile(t *testing.T) {
	dir := t.TempDir()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	good := filepath.Join(dir, "root.crl")
	if err := os.WriteFile(good, ca.EncodeCRLsPEM(signCRL(t, root, time.Now(), time.Hour)), 0o644); err != nil {
		t.Fatal(err)
	}
	if crls, err := ca.ReadCRLFile(good); err != nil || len(crls) != 1 {
		t.Fatalf("%d, %v", len(crls), err)
	}
	empty := filepath.Join(dir, "empty.crl")
	certs := filepath.Join(dir, "cert.pem")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(certs, root.CertPEM(), 0o644)
	for _, name := range []string{empty, certs, filepath.Join(dir, "missing.crl"), dir} {
		if _, err := ca.ReadCRLFile(name); err == nil || !strings.Contains(err.Error(), filepath.Base(name)) {
			t.Errorf("%s: %v", filepath.Base(name), err)
		}
	}
}

// TestCADirCRL: an issuing CA's folder keeps its CRL as signing-ca-crl.pem, which
// records its revocations the way root-crl.pem does for a root.
func TestCADirCRL(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	issuing := root.Sub(t, catest.Options{CN: "Issuing CA", PathLen: catest.PathLen(1)})
	dir := issuing.WriteCADir(t, filepath.Join(t.TempDir(), "issuing"))
	cluster := issuing.Sub(t, catest.Options{CN: "east", PathLen: catest.PathLen(0)})
	auth := &ca.FolderCRL{Dir: dir, File: ca.SigningCACRLFile, Root: &ca.Root{Cert: issuing.Cert, Signer: issuing.Key}}
	crl, changed, err := auth.CRL(context.Background(), []x509.RevocationListEntry{{SerialNumber: cluster.Cert.SerialNumber, RevocationTime: time.Now()}}, ca.CRLOptions{})
	if err != nil || !changed || !ca.SignedBy(crl, issuing.Cert) || !ca.IsRevoked(crl, cluster.Cert.SerialNumber) {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ca.RootCRLFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s written in an issuing CA's folder: %v", ca.RootCRLFile, err)
	}
	again, changed, err := auth.CRL(context.Background(), nil, ca.CRLOptions{})
	if err != nil || changed || !ca.IsRevoked(again, cluster.Cert.SerialNumber) {
		t.Fatalf("second read: changed %v, %v", changed, err)
	}
	// A root's CRL put there by mistake is refused, naming the file.
	os.WriteFile(filepath.Join(dir, ca.SigningCACRLFile), ca.EncodeCRLsPEM(signCRL(t, root, time.Now(), time.Hour)), 0o644)
	if _, _, err := auth.CRL(context.Background(), nil, ca.CRLOptions{}); err == nil || !strings.Contains(err.Error(), ca.SigningCACRLFile) {
		t.Fatalf("a foreign CRL in the folder: %v", err)
	}
}
