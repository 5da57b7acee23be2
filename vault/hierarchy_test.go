package vault

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

// Vault's recommended layout, on the real test Vault: a root mount, and an
// intermediate mount whose issuer (signed by the root mount through
// sign-intermediate, imported with its chain) does the work. The issuer's Chain
// reaches the root, and every bundle's cert-chain.pem runs cluster CA, Vault's
// issuing CA, root.
func TestPKIIntermediateMountChain(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	rootMount, root := newPKIRoot(t, v, admin, 10*365*24*time.Hour)
	intMount := v.Unique("pki-int")
	l := admin.Logical()
	if _, err := l.WriteWithContext(ctx, "sys/mounts/"+intMount, map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "43800h"}}); err != nil {
		t.Fatal(err)
	}
	gen, err := l.WriteWithContext(ctx, intMount+"/intermediate/generate/internal", map[string]any{"common_name": "Vault Issuing CA", "key_type": "ec", "key_bits": 256})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := l.WriteWithContext(ctx, rootMount+"/root/sign-intermediate", map[string]any{
		"csr": gen.Data["csr"], "common_name": "Vault Issuing CA", "ttl": "43000h", "format": "pem_bundle", "max_path_length": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteWithContext(ctx, intMount+"/intermediate/set-signed", map[string]any{"certificate": signed.Data["certificate"]}); err != nil {
		t.Fatal(err)
	}
	iss, err := NewPKIIssuer(ctx, l, intMount, "")
	if err != nil {
		t.Fatal(err)
	}
	chain := iss.Chain()
	if len(chain) != 2 || !chain[1].Equal(root.Cert) || !ca.RootOf(iss).Equal(root.Cert) {
		t.Fatalf("Chain has %d certificates, RootOf %v", len(chain), ca.RootOf(iss))
	}
	bundles := mintAll(t, iss, profiles("east", "west"))
	checkMesh(t, bundles)
	for _, b := range bundles {
		if len(b.Chain) != 3 || !b.Chain[1].Equal(iss.Anchor()) || !b.Chain[2].Equal(root.Cert) || !b.Roots[0].Equal(root.Cert) {
			t.Fatalf("cert-chain.pem has %d certificates", len(b.Chain))
		}
	}

	// Revocation at the intermediate mount: Vault revokes east's CA there and its
	// CRL (signed by the issuing CA) lists it; the root mount's CRL is the upstream
	// one. With both and the cluster CAs' own, east's chain fails Envoy's rule and
	// west's passes.
	intCRL, changed, err := iss.CRL(ctx, []x509.RevocationListEntry{{SerialNumber: bundles[0].Cert.SerialNumber, RevocationTime: time.Now()}}, ca.CRLOptions{})
	if err != nil || !changed || !ca.SignedBy(intCRL, iss.Anchor()) || !ca.IsRevoked(intCRL, bundles[0].Cert.SerialNumber) {
		t.Fatalf("revoking at the intermediate mount: changed %v, %v", changed, err)
	}
	rootIss, err := NewPKIIssuer(ctx, l, rootMount, "")
	if err != nil {
		t.Fatal(err)
	}
	rootCRL, _, err := rootIss.CRL(ctx, nil, ca.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up, err := ca.UpstreamCRLs(chain, []*x509.RevocationList{rootCRL}, time.Now())
	if err != nil || len(up) != 1 {
		t.Fatalf("the root mount's CRL as upstream CRL: %v", err)
	}
	crls := append(append([]*x509.RevocationList{intCRL}, up...), ownCRLs(t, bundles)...)
	if err := ca.CheckChainCRLs(bundles[0].Chain, crls, time.Now()); !errors.Is(err, ca.ErrRevoked) {
		t.Errorf("east's chain: %v, want revoked", err)
	}
	if err := ca.CheckChainCRLs(bundles[1].Chain, crls, time.Now()); err != nil {
		t.Errorf("west's chain: %v", err)
	}
}

// An issuing CA kept in KV v2 with its chain (field ca_chain, a PEM string or a
// list of them, as Vault's PKI answers carry it) signs bundles that run up to the
// root; a chain missing a link is refused naming the field.
func TestKVSigningCAWithChain(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	org := root.Sub(t, catest.Options{CN: "Org Issuing CA"})
	issuing := org.Sub(t, catest.Options{CN: "Mesh Issuing CA"})
	for _, tt := range []struct {
		name  string
		chain any
	}{
		{"string", string(issuing.ChainPEM())},
		{"list", []any{string(org.CertPEM()), string(root.CertPEM())}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := KVPath{Mount: "secret", Path: v.Unique("meshpki/issuing")}
			if _, err := writeKV(ctx, admin.Logical(), k, map[string]any{
				FieldCertificate: string(issuing.CertPEM()), FieldPrivateKey: string(issuing.KeyPEM(t)), FieldCAChain: tt.chain,
			}, 0); err != nil {
				t.Fatal(err)
			}
			reader := tokenClient(t, v, policyToken(t, v, admin, kvPolicy(k), false))
			sc, err := LoadSigningCAKV(ctx, reader.Logical(), k, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			bundles := mintAll(t, ca.NewSigningCAIssuer(sc), profiles("east", "west"))
			checkMesh(t, bundles)
			if len(bundles[0].Chain) != 4 || !bundles[0].Roots[0].Equal(root.Cert) {
				t.Fatalf("chain of %d", len(bundles[0].Chain))
			}
		})
	}
	k := KVPath{Mount: "secret", Path: v.Unique("meshpki/issuing")}
	if _, err := writeKV(ctx, admin.Logical(), k, map[string]any{
		FieldCertificate: string(issuing.CertPEM()), FieldPrivateKey: string(issuing.KeyPEM(t)), FieldCAChain: string(root.CertPEM()),
	}, 0); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSigningCAKV(ctx, admin.Logical(), k, time.Now())
	if !errors.Is(err, ca.ErrChainLink) || !strings.Contains(err.Error(), `field "ca_chain"`) || strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatalf("chain missing a link: %v", err)
	}
}
