package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/internal/atomicfs"
)

// RootCRLFile ("root-crl.pem") is the CRL of a root kept in a folder, beside
// root-cert.pem and root-key.pem. It is the durable record of the cluster CAs the
// root revoked: each new one is signed with the entries of the last (so deleting it
// forgets every revocation; back it up with the root).
const RootCRLFile = "root-crl.pem"

// Revocation reasons meshpki records (RFC 5280 CRLReason).
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
)

// ParseReason parses a reason's name: keyCompromise, caCompromise, superseded,
// cessationOfOperation or unspecified.
func ParseReason(s string) (int, error) {
	switch s {
	case "keyCompromise":
		return ReasonKeyCompromise, nil
	case "caCompromise":
		return ReasonCACompromise, nil
	case "superseded":
		return ReasonSuperseded, nil
	case "cessationOfOperation":
		return ReasonCessationOfOperation, nil
	case "unspecified", "":
		return ReasonUnspecified, nil
	}
	return 0, fmt.Errorf("unknown revocation reason %q (want keyCompromise, caCompromise, superseded, cessationOfOperation or unspecified)", s)
}

// ReasonName names a CRL reason code as ParseReason reads it ("reason N" for a
// code it does not know).
func ReasonName(code int) string {
	switch code {
	case ReasonKeyCompromise:
		return "keyCompromise"
	case ReasonCACompromise:
		return "caCompromise"
	case ReasonSuperseded:
		return "superseded"
	case ReasonCessationOfOperation:
		return "cessationOfOperation"
	case ReasonUnspecified:
		return "unspecified"
	}
	return fmt.Sprintf("reason %d", code)
}

// ErrAlreadyRevoked: the serial is listed already.
var ErrAlreadyRevoked = errors.New("already revoked")

// CRLOptions shape the CRLs a root source signs.
type CRLOptions struct {
	// TTL is each CRL's life (DefaultCRLTTL when 0); Refresh: a CRL with less left
	// is signed again (DefaultCRLRefresh when 0).
	TTL, Refresh time.Duration
	// Now is the signing time; nil means time.Now.
	Now func() time.Time
	// DryRun signs in memory and writes nothing (changed still reports what a run
	// would write).
	DryRun bool
	// CoverTTL signs again a CRL that is not due but lives shorter than TTL (one
	// signed with a shorter TTL before): what hands a CRL out for TTL to come (crl
	// sign --crl-ttl 30d) must not give a 7-day one.
	CoverTTL bool
}

func (o CRLOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// ReadRootCRL reads DIR/root-crl.pem, which must hold one v2 CRL signed by root.
// It returns nil without an error when there is no such file.
func ReadRootCRL(dir string, root *x509.Certificate) (*x509.RevocationList, error) {
	return readFolderCRL(dir, RootCRLFile, root)
}

// readFolderCRL reads DIR/FILE, which must hold one v2 CRL signed by c; nil without
// an error when there is no such file.
func readFolderCRL(dir, file string, c *x509.Certificate) (*x509.RevocationList, error) {
	name := filepath.Join(dir, file)
	data, err := ReadInputFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	crls, err := ParseCRLsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(crls) != 1 {
		return nil, fmt.Errorf("%s: holds %d CRLs, want 1", name, len(crls))
	}
	if !SignedBy(crls[0], c) {
		return nil, fmt.Errorf("%s: not signed by %s", name, c.Subject)
	}
	return crls[0], nil
}

// RootDirCRL signs the CRL of the root kept in dir (root, as ReadRootDir read it):
// with revoke empty it returns the CRL in root-crl.pem, signed again first when
// missing or due (CRLOptions.Refresh); with revoke it adds those entries (refusing
// a serial listed already, ErrAlreadyRevoked) and signs at once. A new CRL has the
// last one's number plus one and is written atomically (0644: a CRL is public);
// changed reports a write. The folder is locked meanwhile, so two runs never lose
// each other's revocations.
func RootDirCRL(ctx context.Context, dir string, root *Root, revoke []x509.RevocationListEntry, opts CRLOptions) (crl *x509.RevocationList, changed bool, err error) {
	return folderCRL(ctx, dir, RootCRLFile, root, revoke, opts)
}

// folderCRL is RootDirCRL for the CRL of ca (a root or an issuing CA) kept as
// DIR/FILE.
func folderCRL(ctx context.Context, dir, file string, ca *Root, revoke []x509.RevocationListEntry, opts CRLOptions) (crl *x509.RevocationList, changed bool, err error) {
	lock, err := atomicfs.LockDir(ctx, dir, nil)
	if err != nil {
		return nil, false, err
	}
	defer lock.Unlock()
	last, err := readFolderCRL(dir, file, ca.Cert)
	if err != nil {
		return nil, false, err
	}
	crl, changed, err = NextRootCRL(ca, last, revoke, opts)
	if err != nil || !changed || opts.DryRun {
		return crl, changed, err
	}
	if err := atomicfs.WriteFile(filepath.Join(dir, file), EncodeCRLsPEM(crl), 0o644); err != nil {
		return nil, false, err
	}
	return crl, true, nil
}

// NextRootCRL is the root's CRL after last (nil: none yet), whatever keeps it (and
// an issuing CA's, passed as root: any CA with its key will do): last
// itself when revoke is empty and it is not due (CRLOptions.Refresh), else a new CRL
// signed with root's key, holding last's entries and revoke's (a serial listed
// already is ErrAlreadyRevoked), numbered last's number plus one; changed reports
// a new one, for the caller to store.
func NextRootCRL(root *Root, last *x509.RevocationList, revoke []x509.RevocationListEntry, opts CRLOptions) (crl *x509.RevocationList, changed bool, err error) {
	now := opts.now()
	var entries []x509.RevocationListEntry
	number := big.NewInt(1)
	if last != nil {
		entries = slices.Clone(last.RevokedCertificateEntries)
		if last.Number != nil {
			number = new(big.Int).Add(last.Number, big.NewInt(1))
		}
	}
	for _, e := range revoke {
		if slices.ContainsFunc(entries, func(x x509.RevocationListEntry) bool { return x.SerialNumber.Cmp(e.SerialNumber) == 0 }) {
			return nil, false, fmt.Errorf("serial %s: %w", FormatSerialNumber(e.SerialNumber), ErrAlreadyRevoked)
		}
		entries = append(entries, e)
	}
	if len(revoke) == 0 && last != nil && !crlDue(last, now, opts) {
		return last, false, nil
	}
	for i := range entries { // entries read back carry raw extensions that would be written twice
		entries[i] = x509.RevocationListEntry{SerialNumber: entries[i].SerialNumber, RevocationTime: entries[i].RevocationTime, ReasonCode: entries[i].ReasonCode}
	}
	crl, err = SignCRL(root.Cert, root.Signer, entries, number, now, opts.TTL)
	if err != nil {
		return nil, false, err
	}
	return crl, true, nil
}

// CRLAuthority is a root source's side of revocation: it keeps the durable record
// of the cluster CAs its anchor revoked and signs the anchor's CRL. CRL returns that
// CRL as it stands, signed anew first when due (CRLOptions.Refresh) or when revoke
// adds serials (a serial listed already is ErrAlreadyRevoked); changed reports a
// new CRL. FolderCRL (a root's or an issuing CA's folder), vault.KVCRL and
// vault.PKIIssuer implement it.
type CRLAuthority interface {
	CRL(ctx context.Context, revoke []x509.RevocationListEntry, opts CRLOptions) (crl *x509.RevocationList, changed bool, err error)
}

// FolderCRL is the CRLAuthority of a CA kept in folder Dir: a root (root-crl.pem
// there, see RootDirCRL), or an issuing CA read by ReadCADir, with File set to
// SigningCACRLFile. Root holds the CA that signs, root or not.
type FolderCRL struct {
	Dir string
	// File is the CRL's name in Dir: RootCRLFile when empty.
	File string
	Root *Root
}

var _ CRLAuthority = (*FolderCRL)(nil)

// CRL implements CRLAuthority.
func (f *FolderCRL) CRL(ctx context.Context, revoke []x509.RevocationListEntry, opts CRLOptions) (*x509.RevocationList, bool, error) {
	file := f.File
	if file == "" {
		file = RootCRLFile
	}
	return folderCRL(ctx, f.Dir, file, f.Root, revoke, opts)
}

// ParseSerial reads a certificate serial number as people copy it: hex, with or
// without 0x and colons, in any case. It must be positive.
func ParseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), ":", ""), "0x"), 16)
	if !ok || n.Sign() <= 0 {
		return nil, errors.New("want a positive hex number")
	}
	return n, nil
}

// crlDue tells whether the kept CRL last must be signed again at now: close to its
// next update (NeedsRefresh); not valid yet (signed on a host whose clock ran
// ahead: nobody would take it); or, with CoverTTL, living shorter than the TTL
// asked for.
func crlDue(last *x509.RevocationList, now time.Time, opts CRLOptions) bool {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = DefaultCRLTTL
	}
	switch {
	case NeedsRefresh(last, now, opts.Refresh):
		return true
	case last.ThisUpdate.After(now.Add(time.Minute)):
		return true
	case opts.CoverTTL && last.NextUpdate.Sub(last.ThisUpdate) < ttl-time.Minute:
		return true
	}
	return false
}
