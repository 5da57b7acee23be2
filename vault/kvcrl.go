package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshpki/meshpki/ca"
)

// KVCRLName is the secret beside a KV root that keeps its CRL: PATH/crl, and
// KVCRLField its field (PEM, one v2 CRL signed by the root).
const (
	KVCRLName  = "crl"
	KVCRLField = "crl"
)

// KVCRL is the ca.CRLAuthority of a root (or an issuing CA: everything here said of
// the root holds for it) kept in a Vault KV v2 secret: the record
// of what the root revoked is its CRL, kept beside it in the secret PATH/crl
// (KVCRLName), signed here with the root's key (ca.NextRootCRL) and written with
// check-and-set on the version read, so two runs never lose each other's
// revocations (a run that lost the race reads again and retries). Each version of
// that secret is a CRL the root signed: Vault's version history is the audit trail.
type KVCRL struct {
	l        Logical
	rootPath KVPath
	path     KVPath
	root     *ca.Root
}

var _ ca.CRLAuthority = (*KVCRL)(nil)

// NewKVCRL returns the CRL authority of root (the CA that signs, root or issuing CA),
// read from the KV v2 secret rootPath.
func NewKVCRL(l Logical, rootPath KVPath, root *ca.Root) *KVCRL {
	return &KVCRL{l: l, rootPath: rootPath, path: rootPath.Child(KVCRLName), root: root}
}

// Path is the secret that keeps the CRL.
func (k *KVCRL) Path() KVPath { return k.path }

// CRL implements ca.CRLAuthority. It needs "read" on MOUNT/data/PATH/crl, and
// "create" (first CRL) or "update" (later ones) there.
func (k *KVCRL) CRL(ctx context.Context, revoke []x509.RevocationListEntry, opts ca.CRLOptions) (*x509.RevocationList, bool, error) {
	for range 5 {
		last, version, err := k.read(ctx)
		if err != nil {
			return nil, false, err
		}
		crl, changed, err := ca.NextRootCRL(k.root, last, revoke, opts)
		if err != nil || !changed || opts.DryRun {
			return crl, changed, err
		}
		_, err = writeKV(ctx, k.l, k.path, map[string]any{KVCRLField: string(ca.EncodeCRLsPEM(crl))}, version)
		if errors.Is(err, ErrExists) {
			continue // another run wrote first: decide again on what it wrote
		}
		if err != nil {
			return nil, false, err
		}
		return crl, true, nil
	}
	return nil, false, fmt.Errorf("the CRL secret %s in Vault keeps changing under us: retry", k.path)
}

// read returns the CRL kept at k.path and the secret's version: nil and 0 when
// there is none yet.
func (k *KVCRL) read(ctx context.Context) (*x509.RevocationList, int, error) {
	path := k.path.DataPath()
	s, err := k.l.ReadWithContext(ctx, path)
	if err != nil {
		return nil, 0, describe(err, "read", path)
	}
	if s == nil || s.Data == nil {
		return nil, 0, nil
	}
	meta, _ := s.Data["metadata"].(map[string]any)
	v, err := jsonInt(meta["version"])
	if err != nil {
		return nil, 0, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: metadata version: %v", path, err)}
	}
	data, _ := s.Data["data"].(map[string]any)
	if data == nil {
		// Starting afresh would forget every revocation.
		return nil, 0, &Error{Kind: ErrMalformed, Path: path,
			Msg: fmt.Sprintf("the current version (%d) of the CRL secret %s in Vault is deleted or destroyed: restore it (vault kv undelete -versions=%d %s) or put back the last CRL; meshpki does not start a new record over it", v, k.path, v, k.path)}
	}
	pem, err := stringField(k.path, data, KVCRLField)
	if err != nil {
		return nil, 0, err
	}
	crls, err := ca.ParseCRLsPEM(pem)
	switch {
	case err != nil:
		return nil, 0, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s field %s: %v", k.path, KVCRLField, err)}
	case len(crls) != 1:
		return nil, 0, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("%s field %s: holds %d CRLs, want 1", k.path, KVCRLField, len(crls))}
	case !ca.SignedBy(crls[0], k.root.Cert):
		return nil, 0, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("%s field %s: not signed by the CA at %s", k.path, KVCRLField, k.rootPath)}
	}
	return crls[0], int(v), nil
}
