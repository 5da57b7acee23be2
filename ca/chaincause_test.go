package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
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

// sha1Sub is a CA signed by parent with ECDSA-SHA1, which crypto/x509 (and so
// istiod) refuses to verify.
func sha1Sub(t *testing.T, parent *catest.CA) *catest.CA {
	t.Helper()
	child := parent.Sub(t, catest.Options{CN: "SHA-1 Signed"})
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "SHA-1 Signed"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: -1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm: x509.ECDSAWithSHA1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, child.Key.Public(), parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	if child.Cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return child
}

// Chain checks keep crypto/x509's own reason (issue 26, defect 5): a SHA-1
// signature or an issuer that is no CA is named as such, not as a chain "missing a
// link", "out of order" or ending "at another root"; and a CSR folder whose key was
// swapped is told that, not to have its CSR signed again.
func TestChainErrorsKeepTheCause(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Root"})
	misleading := []error{ca.ErrChainLink, ca.ErrChainOrder, ca.ErrChainOtherRoot}

	t.Run("ca-dir", func(t *testing.T) {
		notCA := root.Sub(t, catest.Options{CN: "Not A CA", NotCA: true, KeyUsage: x509.KeyUsageCertSign})
		for _, tt := range []struct {
			name string
			ca   *catest.CA
			want string
		}{
			{"SHA-1 signature", sha1Sub(t, root).Sub(t, catest.Options{CN: "Issuing"}), "insecure algorithm"},
			{"SHA-1 signature by the root", sha1Sub(t, root), "insecure algorithm"},
			{"middle CA is CA:false", notCA.Sub(t, catest.Options{CN: "Issuing"}), "cannot sign"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				dir := tt.ca.WriteCADir(t, t.TempDir())
				_, err := ca.ReadCADir(dir, time.Now())
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("got %v, want the cause %q", err, tt.want)
				}
				for _, m := range misleading {
					if errors.Is(err, m) {
						t.Fatalf("got %v: reported as %v", err, m)
					}
				}
			})
		}
	})

	t.Run("verify", func(t *testing.T) {
		mid := sha1Sub(t, root)
		cluster := mid.Sub(t, catest.Options{CN: "Cluster", PathLen: catest.PathLen(0)})
		rep := bundleOf(cluster).Check(ca.VerifyOptions{})
		var found bool
		for _, p := range rep.Problems {
			found = found || strings.Contains(p.Message, "insecure algorithm")
		}
		if !found {
			t.Fatalf("verify says %v, want the SHA-1 signature named", rep.Problems)
		}
	})

	t.Run("swapped key", func(t *testing.T) {
		out := t.TempDir()
		if _, _, err := ca.WriteCSRDirs(context.Background(), out, []ca.Profile{ca.IntermediateProfile("east", ""), ca.IntermediateProfile("west", "")}, ca.CSRWriteOptions{}); err != nil {
			t.Fatal(err)
		}
		csrPEM, err := os.ReadFile(filepath.Join(out, "east", ca.CSRFile))
		if err != nil {
			t.Fatal(err)
		}
		csr, err := ca.ParseCSRPEM(csrPEM)
		if err != nil {
			t.Fatal(err)
		}
		signed := sign(t, root, csr, nil)
		// east's key and west's key trade places.
		east, west := filepath.Join(out, "east", ca.CAKeyFile), filepath.Join(out, "west", ca.CAKeyFile)
		ek, _ := os.ReadFile(east)
		wk, _ := os.ReadFile(west)
		if err := os.WriteFile(east, wk, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(west, ek, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = ca.ImportDir(filepath.Join(out, "east"), signed, nil, root.CertPEM(), false, ca.ImportOptions{})
		if !errors.Is(err, ca.ErrKeyMismatch) || !strings.Contains(err.Error(), "swapped") || strings.Contains(err.Error(), "sign this folder") {
			t.Fatalf("got %v, want the key named as swapped", err)
		}
		if !strings.HasPrefix(err.Error(), east+": ") {
			t.Fatalf("got %v, want it to name %s", err, east)
		}
	})
}

// verify refuses a forged CRL in ca-crl.pem (issue 26, defect 6): one that names
// the cluster CA (subject and key identifier) and is signed by another key, next to
// the genuine one, as crl sync refuses it.
func TestVerifyRefusesForgedCRL(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Root"})
	cluster := root.Sub(t, catest.Options{CN: "Cluster", PathLen: catest.PathLen(0)})
	b := bundleOf(cluster)
	now := time.Now()
	var crls []*x509.RevocationList
	for _, c := range []*catest.CA{cluster, root} {
		crl, err := ca.SignCRL(c.Cert, c.Key, nil, big.NewInt(1), now, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		crls = append(crls, crl)
	}
	b.CRLFile = ca.EncodeCRLsPEM(crls...)
	if err := b.Check(ca.VerifyOptions{}).Err(); err != nil {
		t.Fatalf("genuine CRLs: %v", err)
	}
	// A CA of another key with the cluster CA's name and key identifier signs a
	// CRL with a higher number.
	impostor := catest.Root(t, catest.Options{CN: "Impostor"})
	fake := *impostor.Cert
	fake.RawSubject, fake.Subject, fake.SubjectKeyId = cluster.Cert.RawSubject, cluster.Cert.Subject, cluster.Cert.SubjectKeyId
	forged, err := ca.SignCRL(&fake, impostor.Key, nil, big.NewInt(9), now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := ca.CRLOf([]*x509.RevocationList{forged}, cluster.Cert); c != nil {
		t.Fatal("the forged CRL verifies with the cluster CA's key")
	}
	b.CRLFile = ca.EncodeCRLsPEM(append(crls, forged)...)
	rep := b.Check(ca.VerifyOptions{})
	var found bool
	for _, p := range rep.Problems {
		found = found || p.Check == "crl-forged" && p.Severity == ca.SeverityError && strings.Contains(p.Message, "CN=Cluster")
	}
	if !found {
		t.Fatalf("verify says %v, want a crl-forged error naming the cluster CA", rep.Problems)
	}
}

// A certificate after the root in a chain file is named as such (issue 26), not
// reported as a chain "missing a link".
func TestChainPastTheRoot(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Root"})
	issuing := root.Sub(t, catest.Options{CN: "Issuing"})
	extra := catest.Root(t, catest.Options{CN: "Stray"})
	_, err := ca.ParseSigningCA(issuing.CertPEM(), issuing.KeyPEM(t), append(root.CertPEM(), extra.CertPEM()...), nil, time.Now())
	if err == nil || errors.Is(err, ca.ErrChainLink) || !strings.Contains(err.Error(), "certificate 2 (CN=Stray,O=Example Corp) follows the root") {
		t.Fatalf("got %v", err)
	}
}
