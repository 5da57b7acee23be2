package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// TestPKICRLRevoke: revoking a cluster CA goes through the real Vault, and Vault's
// own CRL (v2, signed by the issuer, with its key identifier) is the one used: it
// lists the serial, the cluster's chain then fails Envoy's CRL rule, and the others'
// pass. A second run asks Vault for nothing new; revoking twice is refused.
func TestPKICRLRevoke(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, root := newPKIRoot(t, v, admin, 10*365*24*time.Hour)
	iss, err := NewPKIIssuer(ctx, admin.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	bundles := mintAll(t, iss, profiles("east", "west"))
	first, _, err := iss.CRL(ctx, nil, ca.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.SignedBy(first, root.Cert) || len(first.AuthorityKeyId) == 0 || first.Number == nil {
		t.Fatal("Vault's CRL is not signed by the root, or lacks a key identifier or number")
	}
	again, changed, err := iss.CRL(ctx, nil, ca.CRLOptions{})
	if err != nil || changed || again.Number.Cmp(first.Number) != 0 {
		t.Errorf("second read: changed=%v, number %v then %v, %v", changed, first.Number, again.Number, err)
	}
	east := bundles[0].Cert
	crl, changed, err := iss.CRL(ctx, []x509.RevocationListEntry{{SerialNumber: east.SerialNumber, RevocationTime: time.Now(), ReasonCode: ca.ReasonKeyCompromise}}, ca.CRLOptions{})
	if err != nil || !changed {
		t.Fatalf("revoke east: changed=%v, %v", changed, err)
	}
	if !ca.IsRevoked(crl, east.SerialNumber) || ca.IsRevoked(crl, bundles[1].Cert.SerialNumber) {
		t.Fatal("Vault's CRL should list east's CA only")
	}
	crls := append([]*x509.RevocationList{crl}, ownCRLs(t, bundles)...)
	if err := ca.CheckChainCRLs(bundles[0].Chain, crls, time.Now()); !errors.Is(err, ca.ErrRevoked) {
		t.Errorf("east's chain with Vault's CRL: %v, want revoked", err)
	}
	if err := ca.CheckChainCRLs(bundles[1].Chain, crls, time.Now()); err != nil {
		t.Errorf("west's chain with Vault's CRL: %v", err)
	}
	if _, _, err := iss.CRL(ctx, []x509.RevocationListEntry{{SerialNumber: east.SerialNumber}}, ca.CRLOptions{}); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("revoking east twice: %v", err)
	}
	// Vault revokes only what it issued.
	if _, _, err := iss.CRL(ctx, []x509.RevocationListEntry{{SerialNumber: big.NewInt(0x5ca1ab1e)}}, ca.CRLOptions{}); err == nil {
		t.Error("Vault revoked a serial it never issued")
	}
}

// ownCRLs is an (empty) CRL of each bundle's CA, signed with its key, as crl sync
// gives each cluster CA.
func ownCRLs(t *testing.T, bundles []*ca.Bundle) []*x509.RevocationList {
	t.Helper()
	var crls []*x509.RevocationList
	for _, b := range bundles {
		own, err := ca.SignCRL(b.Cert, b.Key, nil, nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		crls = append(crls, own)
	}
	return crls
}
