package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
)

// bundleOf is the bundle a cluster CA made with catest would have.
func bundleOf(c *catest.CA) *ca.Bundle {
	b := &ca.Bundle{Cert: c.Cert, Key: c.Key, Chain: []*x509.Certificate{c.Cert}}
	for _, up := range c.Chain {
		b.Chain = append(b.Chain, up.Cert)
	}
	b.Roots = []*x509.Certificate{c.RootCA().Cert}
	return b
}

// handshake runs mTLS between two workloads of b, as two pods of one cluster would.
func handshake(t *testing.T, b *ca.Bundle) error {
	t.Helper()
	id := ca.SPIFFEID(ca.DefaultTrustDomain, "default", "default")
	s, err := b.IssueWorkload(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.IssueWorkload(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Handshake(context.Background(), s, c)
}

// One rule for every CA of the path (issue 26, defect 2): an extended key usage
// without clientAuth, or URI name constraints excluding the workloads' SPIFFE IDs,
// on the root, an issuing CA, a CA of --chain or the cluster CA, is refused by
// create, import and verify alike; and each bundle refused is one whose workloads
// cannot handshake, while the bundles accepted can.
func TestOneWorkloadRuleForEveryCA(t *testing.T) {
	serverOnly := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	root := catest.Root(t, catest.Options{CN: "Root"})
	serverRoot := catest.Root(t, catest.Options{CN: "ServerAuth Root", ExtKeyUsage: serverOnly})
	bothRoot := catest.Root(t, catest.Options{CN: "Both Root", ExtKeyUsage: both})
	noSpiffeRoot := catest.Root(t, catest.Options{CN: "Example URIs Root", PermittedURIDomains: []string{"example.org"}})
	exclRoot := catest.Root(t, catest.Options{CN: "Excluding Root", ExcludedURIDomains: []string{ca.DefaultTrustDomain}})
	serverMid := root.Sub(t, catest.Options{CN: "ServerAuth Middle", ExtKeyUsage: serverOnly})
	zero := catest.PathLen(0)

	t.Run("verify", func(t *testing.T) {
		for _, tt := range []struct {
			name    string
			cluster *catest.CA
			bad     string // "" for a bundle that must pass
		}{
			{"plain", root.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), ""},
			{"root serverAuth+clientAuth", bothRoot.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), ""},
			{"cluster CA serverAuth only", root.Sub(t, catest.Options{CN: "Cluster", PathLen: zero, ExtKeyUsage: serverOnly}), "CN=Cluster"},
			{"root serverAuth only", serverRoot.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), "CN=ServerAuth Root"},
			{"middle CA serverAuth only", serverMid.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), "CN=ServerAuth Middle"},
			{"root permits other URIs only", noSpiffeRoot.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), "CN=Example URIs Root"},
			{"root excludes the trust domain", exclRoot.Sub(t, catest.Options{CN: "Cluster", PathLen: zero}), "CN=Excluding Root"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				b := bundleOf(tt.cluster)
				rep := b.Check(ca.VerifyOptions{TrustDomain: ca.DefaultTrustDomain})
				mtls := handshake(t, b)
				if tt.bad == "" {
					if err := rep.Err(); err != nil || mtls != nil {
						t.Fatalf("want accepted and mTLS working: verify %v, mTLS %v", err, mtls)
					}
					return
				}
				if mtls == nil {
					t.Fatal("the workloads handshake: the case does not break mTLS")
				}
				var found bool
				for _, p := range rep.Problems {
					found = found || p.Check == "workload-path" && strings.Contains(p.Message, tt.bad) && p.Severity == ca.SeverityError
				}
				if !found {
					t.Fatalf("verify says %v, want a workload-path error naming %s (mTLS fails: %v)", rep.Problems, tt.bad, mtls)
				}
				// A trust domain not given: name constraints are a warning only.
				if strings.Contains(tt.name, "URI") || strings.Contains(tt.name, "trust domain") {
					if err := b.Check(ca.VerifyOptions{}).Err(); err != nil {
						t.Fatalf("trust domain unknown: want a warning, got %v", err)
					}
				}
			})
		}
	})

	t.Run("create", func(t *testing.T) {
		p := ca.IntermediateProfile("east", "")
		for _, tt := range []struct {
			root *catest.CA
			want error
		}{{serverRoot, ca.ErrClientAuthEKU}, {noSpiffeRoot, ca.ErrWorkloadNames}, {exclRoot, ca.ErrWorkloadNames}} {
			if err := ca.CheckProfile(tt.root.Cert, p, time.Now()); !errors.Is(err, tt.want) {
				t.Errorf("%s: CheckProfile: %v, want %v", tt.root.Cert.Subject, err, tt.want)
			}
		}
		if _, err := ca.ParseRoot(serverRoot.CertPEM(), serverRoot.KeyPEM(t), time.Now()); !errors.Is(err, ca.ErrClientAuthEKU) {
			t.Errorf("root folder with serverAuth only: %v, want %v", err, ca.ErrClientAuthEKU)
		}
		under := serverMid.Sub(t, catest.Options{CN: "Issuing"})
		dir := under.WriteCADir(t, t.TempDir())
		if _, err := ca.ReadCADir(dir, time.Now()); !errors.Is(err, ca.ErrClientAuthEKU) || !strings.Contains(err.Error(), "ServerAuth Middle") {
			t.Errorf("--ca-dir whose chain has a serverAuth-only CA: %v, want %v naming it", err, ca.ErrClientAuthEKU)
		}
		if _, err := ca.ReadCADir(serverMid.WriteCADir(t, t.TempDir()), time.Now()); !errors.Is(err, ca.ErrClientAuthEKU) {
			t.Errorf("--ca-dir that is serverAuth only: %v, want %v", err, ca.ErrClientAuthEKU)
		}
		p.TrustDomain = "example.org"
		if err := ca.CheckProfile(noSpiffeRoot.Cert, p, time.Now()); err != nil {
			t.Errorf("root permitting the mesh's own trust domain: %v", err)
		}
	})

	t.Run("import", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			issuer *catest.CA
			want   error
		}{
			{"CA of the chain serverAuth only", serverMid, ca.ErrClientAuthEKU},
			{"root serverAuth only", serverRoot, ca.ErrClientAuthEKU},
			{"root permits other URIs only", noSpiffeRoot, ca.ErrWorkloadNames},
		} {
			t.Run(tt.name, func(t *testing.T) {
				csrPEM, key, err := ca.NewCSR(ca.IntermediateProfile("east", ""))
				if err != nil {
					t.Fatal(err)
				}
				csr, err := ca.ParseCSRPEM(csrPEM)
				if err != nil {
					t.Fatal(err)
				}
				cert := sign(t, tt.issuer, csr, nil)
				chain := append(tt.issuer.CertPEM(), tt.issuer.ChainPEM()...)
				_, err = ca.ImportSigned(key, cert, chain, tt.issuer.RootCA().CertPEM(), ca.ImportOptions{})
				if err == nil || !strings.Contains(err.Error(), tt.want.Error()) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
			})
		}
	})
}
