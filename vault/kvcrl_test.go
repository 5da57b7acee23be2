package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// TestKVCRL: the CRL of a root kept in Vault KV lives beside it (PATH/crl), signed
// by the root: the first call writes version 1, a call with nothing due writes
// nothing, revocations add entries (two at once both kept, through check-and-set),
// a serial twice is refused, and a CRL there that the root did not sign, or a
// deleted current version, is refused rather than started over.
func TestKVCRL(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	k := KVPath{Mount: "secret", Path: v.Unique("meshpki/crl-root")}
	root, keyPEM, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := StoreRootKV(ctx, admin.Logical(), k, root, keyPEM); err != nil {
		t.Fatal(err)
	}
	// The token of docs/vault.md's policy: read the root, read/create/update PATH/crl.
	policy := kvPolicy(k) + "\n" + `path "` + k.Child(KVCRLName).DataPath() + `" { capabilities = ["read", "create", "update"] }`
	limited := tokenClient(t, v, policyToken(t, v, admin, policy, false))
	loaded, err := LoadRootKV(ctx, limited.Logical(), k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	auth := NewKVCRL(limited.Logical(), k, loaded)
	first, changed, err := auth.CRL(ctx, nil, ca.CRLOptions{})
	if err != nil || !changed || !ca.SignedBy(first, root.Cert) {
		t.Fatalf("first CRL: changed=%v, %v", changed, err)
	}
	if ver, err := KVVersion(ctx, admin.Logical(), auth.Path()); err != nil || ver != 1 {
		t.Fatalf("CRL secret version %d, %v; want 1", ver, err)
	}
	if again, changed, err := auth.CRL(ctx, nil, ca.CRLOptions{}); err != nil || changed || again.Number.Cmp(first.Number) != 0 {
		t.Fatalf("nothing due: changed=%v, %v", changed, err)
	}
	bundles := mintAll(t, ca.NewLocalIssuer(root), profiles("east", "west"))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range bundles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = NewKVCRL(admin.Logical(), k, root).CRL(ctx, []x509.RevocationListEntry{{SerialNumber: b.Cert.SerialNumber, RevocationTime: time.Now()}}, ca.CRLOptions{})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	crl, _, err := auth.CRL(ctx, nil, ca.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		if !ca.IsRevoked(crl, b.Cert.SerialNumber) {
			t.Errorf("%s's CA lost from the CRL (two revocations at once)", b.Cert.Subject.Locality)
		}
	}
	if _, _, err := auth.CRL(ctx, []x509.RevocationListEntry{{SerialNumber: bundles[0].Cert.SerialNumber, RevocationTime: time.Now()}}, ca.CRLOptions{}); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("revoking twice: %v", err)
	}

	// A CRL the root did not sign, put there by someone else: refused, kept.
	other, _, err := ca.CreateRoot(ca.DefaultRootProfile("Istio"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged, err := ca.SignCRL(other.Cert, other.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ver, _ := KVVersion(ctx, admin.Logical(), auth.Path())
	if _, err := writeKV(ctx, admin.Logical(), auth.Path(), map[string]any{KVCRLField: string(ca.EncodeCRLsPEM(forged))}, ver); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.CRL(ctx, nil, ca.CRLOptions{}); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Errorf("a forged CRL: %v", err)
	}
	// A deleted current version: refused, not started over.
	if _, err := admin.Logical().DeleteWithContext(ctx, auth.Path().DataPath()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.CRL(ctx, nil, ca.CRLOptions{}); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("a deleted CRL version: %v", err)
	}
}
