package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
)

// A three-level (root, org issuing CA, cluster CAs) and a four-level hierarchy:
// each bundle's cert-chain.pem runs up to the root, root-cert.pem is the root, the
// bundles pass istiod's checks and workloads of two clusters complete mTLS.
func TestSigningCAHierarchies(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	org := root.Sub(t, catest.Options{CN: "Org Issuing CA", PathLen: catest.PathLen(1)})
	org2 := root.Sub(t, catest.Options{CN: "Policy CA", PathLen: catest.PathLen(2)})
	deep := org2.Sub(t, catest.Options{CN: "Mesh CA", PathLen: catest.PathLen(1)})
	for _, tt := range []struct {
		name   string
		signer *catest.CA
		levels int // certificates in cert-chain.pem
	}{
		{"three levels", org, 3},
		{"four levels", deep, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.signer.WriteCADir(t, filepath.Join(t.TempDir(), "issuing"))
			sc, err := ca.ReadCADir(dir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if !sc.Root().Equal(root.Cert) || len(sc.Chain) != tt.levels-2 {
				t.Fatalf("root %s, chain of %d", sc.Root().Subject, len(sc.Chain))
			}
			iss := ca.NewSigningCAIssuer(sc)
			if got := ca.RootOf(iss); !got.Equal(root.Cert) {
				t.Fatalf("RootOf = %v", got)
			}
			var bundles []*ca.Bundle
			for _, cl := range []string{"east", "west"} {
				b, err := ca.Mint(context.Background(), iss, ca.IntermediateProfile(cl, "Example Corp"))
				if err != nil {
					t.Fatal(err)
				}
				if len(b.Chain) != tt.levels || !b.Chain[1].Equal(tt.signer.Cert) || !b.Chain[len(b.Chain)-1].Equal(root.Cert) {
					t.Fatalf("chain %d certs", len(b.Chain))
				}
				if len(b.Roots) != 1 || !b.Roots[0].Equal(root.Cert) {
					t.Fatalf("roots %v", b.Roots)
				}
				files, err := b.Files(ca.FormatIstio)
				if err != nil {
					t.Fatal(err)
				}
				if rep := ca.Verify(files, ca.VerifyOptions{}); !rep.OK() {
					t.Fatalf("verify: %v", rep.Problems)
				}
				bundles = append(bundles, b)
			}
			var ws []*ca.Workload
			for i, b := range bundles {
				w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", []string{"east", "west"}[i]), time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				ws = append(ws, w)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, pair := range [][2]*ca.Workload{{ws[0], ws[1]}, {ws[1], ws[0]}} {
				if err := ca.Handshake(ctx, pair[0], pair[1]); err != nil {
					t.Fatalf("mTLS %s <- %s: %v", pair[0].ID, pair[1].ID, err)
				}
			}
		})
	}
}

// Bad signing CAs and chains: one clear reason naming the file, before anything
// is signed.
func TestReadCADirRefuses(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	other := catest.Root(t, catest.Options{CN: "Other Root"})
	good := root.Sub(t, catest.Options{CN: "Org Issuing CA"})
	mid := root.Sub(t, catest.Options{CN: "Middle CA"})
	under := mid.Sub(t, catest.Options{CN: "Lower CA"})
	expiredMid := root.Sub(t, catest.Options{CN: "Expired Middle", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	underExpired := expiredMid.Sub(t, catest.Options{CN: "Under Expired"})
	pathZero := root.Sub(t, catest.Options{CN: "Pathlen Zero", PathLen: catest.PathLen(0)})
	tightRoot := catest.Root(t, catest.Options{CN: "Tight Root", PathLen: catest.PathLen(1)})
	tightMid := tightRoot.Sub(t, catest.Options{CN: "Tight Middle"})
	serverOnly := root.Sub(t, catest.Options{CN: "Server Only", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	notCA := root.Sub(t, catest.Options{CN: "Not A CA", NotCA: true, KeyUsage: x509.KeyUsageDigitalSignature})
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for _, tt := range []struct {
		name                    string
		cert, key, chain, roots []byte
		want                    error
		file                    string
		msg                     string
	}{
		{"pathlen 0 issuing CA", pathZero.CertPEM(), pathZero.KeyPEM(t), root.CertPEM(), root.CertPEM(), ca.ErrPathLen, ca.CADirCertFile, "cluster's own CA"},
		{"root's pathlen leaves no room", tightMid.CertPEM(), tightMid.KeyPEM(t), tightRoot.CertPEM(), nil, ca.ErrPathLen, ca.CADirChainFile, "Tight Root"},
		{"chain missing a link", under.CertPEM(), under.KeyPEM(t), root.CertPEM(), nil, ca.ErrChainLink, ca.CADirChainFile, "Lower CA"},
		{"chain out of order", under.CertPEM(), under.KeyPEM(t), cat(root.CertPEM(), mid.CertPEM()), nil, ca.ErrChainOrder, ca.CADirChainFile, "certificate 2 (CN=Middle CA"},
		{"chain to another root", good.CertPEM(), good.KeyPEM(t), root.CertPEM(), other.CertPEM(), ca.ErrChainOtherRoot, ca.CADirRootsFile, "Offline Root"},
		{"no chain, not a root", good.CertPEM(), good.KeyPEM(t), nil, nil, ca.ErrChainNoRoot, ca.CADirChainFile, "no chain"},
		{"chain stops short of the root", under.CertPEM(), under.KeyPEM(t), mid.CertPEM(), nil, ca.ErrChainNoRoot, ca.CADirChainFile, "Middle CA"},
		{"expired middle certificate", underExpired.CertPEM(), underExpired.KeyPEM(t), cat(expiredMid.CertPEM(), root.CertPEM()), nil, ca.ErrExpired, ca.CADirChainFile, "Expired Middle"},
		{"key of another cert", good.CertPEM(), mid.KeyPEM(t), root.CertPEM(), nil, ca.ErrKeyMismatch, ca.CADirKeyFile, ""},
		{"EKU without serverAuth", serverOnly.CertPEM(), serverOnly.KeyPEM(t), root.CertPEM(), nil, ca.ErrRootEKU, ca.CADirCertFile, "clientAuth"},
		{"not a CA", notCA.CertPEM(), notCA.KeyPEM(t), root.CertPEM(), nil, ca.ErrNotCA, ca.CADirCertFile, ""},
		{"two certificates in ca-cert.pem", cat(good.CertPEM(), root.CertPEM()), good.KeyPEM(t), root.CertPEM(), nil, nil, ca.CADirCertFile, "holds 2 certificates"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range map[string][]byte{ca.CADirCertFile: tt.cert, ca.CADirKeyFile: tt.key, ca.CADirChainFile: tt.chain, ca.CADirRootsFile: tt.roots} {
				if data == nil && name != ca.CADirChainFile {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ca.ReadCADir(dir, time.Now())
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) ||
				!strings.HasPrefix(err.Error(), filepath.Join(dir, tt.file)+": ") || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v\nwant %v in %s, containing %q", err, tt.want, tt.file, tt.msg)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatal("key in error")
			}
		})
	}
}

// An intermediate may not outlive any CA above it: refused before signing,
// or cut to the earliest expiry on request.
func TestSigningCATTLWithinChain(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	short := root.Sub(t, catest.Options{CN: "Short Middle", NotAfter: time.Now().Add(200 * 24 * time.Hour)})
	signer := short.Sub(t, catest.Options{CN: "Long Issuing CA", NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour)})
	sc, err := ca.ReadCADir(signer.WriteCADir(t, t.TempDir()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	iss := ca.NewSigningCAIssuer(sc)
	p := ca.IntermediateProfile("east", "")
	if err := ca.CheckProfiles(iss.Chain(), []ca.Profile{p}, time.Now()); !errors.Is(err, ca.ErrTTLTruncated) || !strings.Contains(err.Error(), "Short Middle") {
		t.Fatalf("CheckProfiles: %v", err)
	}
	if _, err := ca.Mint(context.Background(), iss, p); !errors.Is(err, ca.ErrTTLTruncated) {
		t.Fatalf("Mint: %v", err)
	}
	p.AllowShortTTL = true
	b, err := ca.Mint(context.Background(), iss, p)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Cert.NotAfter.Equal(short.Cert.NotAfter) {
		t.Fatalf("not after %s, want the middle's %s", b.Cert.NotAfter, short.Cert.NotAfter)
	}
}

// A root given as the signing CA, with or without root-cert.pem, is the root.
func TestParseSigningCAOfARoot(t *testing.T) {
	root := catest.Root(t, catest.Options{CN: "Root"})
	other := catest.Root(t, catest.Options{CN: "Next Root"})
	sc, err := ca.ParseSigningCA(root.CertPEM(), root.KeyPEM(t), nil, append(other.CertPEM(), root.CertPEM()...), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Chain) != 0 || len(sc.Roots) != 2 || !sc.Roots[0].Equal(root.Cert) {
		t.Fatalf("chain %d roots %d", len(sc.Chain), len(sc.Roots))
	}
}
