// Package rootsource opens the CA a mesh's intermediates are signed under: a
// folder holding root-cert.pem and root-key.pem, a folder holding an issuing CA
// below the root with its chain (ca-cert.pem, ca-key.pem, cert-chain.pem,
// root-cert.pem), a Vault PKI mount (whose key never leaves Vault), or a Vault KV v2
// secret holding the root's (or an issuing CA's) certificate and key. The key of a
// folder's root or issuing CA may live in an HSM or a key service instead (Spec.Key,
// a URI kms.Open reads): the folder then holds the certificates only.
//
// A Spec says which; Validate checks that it names exactly one; Open returns the
// ca.Issuer. The package reads no environment variables and opens no connection of
// its own: for the Vault kinds the caller connects (vault.NewClient) and passes the
// client.
package rootsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/kms"
	"github.com/meshpki/meshpki/vault"
)

// Kind is what holds the root.
type Kind string

// Kinds.
const (
	KindDir      Kind = "dir"
	KindCADir    Kind = "ca-dir"
	KindVaultPKI Kind = "vault-pki"
	KindVaultKV  Kind = "vault-kv"
)

// Errors Validate refuses with.
var (
	// ErrNone means no source was named.
	ErrNone = errors.New("no root source given")
	// ErrSeveral means more than one source was named.
	ErrSeveral = errors.New("more than one root source given")
	// ErrIssuerWithoutPKI means VaultIssuer was set without VaultPKI.
	ErrIssuerWithoutPKI = errors.New("a Vault issuer needs a Vault PKI mount")
	// ErrKeyWithoutFolder means Key was set without Dir or CADir.
	ErrKeyWithoutFolder = errors.New("a key URI needs a folder holding its certificate")
	// ErrKey wraps every error opening the key Key names (kms.Open's).
	ErrKey = errors.New("the CA's key")
	// ErrTwoKeys means Key was set and the folder holds a key file too: which
	// signs would be a guess.
	ErrTwoKeys = errors.New("the folder holds a key file and a key URI was given")
)

// Spec names where the signing CA is: exactly one of Dir, CADir, VaultPKI and
// VaultKV.
type Spec struct {
	// Dir is a folder holding ca.RootCertFile and ca.RootKeyFile.
	Dir string
	// CADir is a folder holding an issuing CA below the root, read by ca.ReadCADir:
	// ca.CADirCertFile, ca.CADirKeyFile, ca.CADirChainFile up to the root, and
	// optionally ca.CADirRootsFile.
	CADir string
	// VaultPKI is a PKI mount whose issuer signs; VaultIssuer names one of its
	// issuers (empty: the mount's default).
	VaultPKI    string
	VaultIssuer string
	// VaultKV is a KV v2 secret (MOUNT/PATH) with fields certificate and
	// private_key, and ca_chain when the certificate is an issuing CA below the root.
	VaultKV string
	// Key, with Dir or CADir, is the URI of the CA's key in an HSM or a key
	// service (kms.Open); the folder then holds no key file.
	Key string
}

// Kind is the kind of source s names, "" when it names none or several.
func (s Spec) Kind() Kind {
	if s.Validate() != nil {
		return ""
	}
	switch {
	case s.Dir != "":
		return KindDir
	case s.CADir != "":
		return KindCADir
	case s.VaultPKI != "":
		return KindVaultPKI
	}
	return KindVaultKV
}

// UsesVault reports whether opening s needs a Vault client.
func (s Spec) UsesVault() bool { return s.VaultPKI != "" || s.VaultKV != "" }

// Validate checks that s names exactly one source, and that a KV path parses.
func (s Spec) Validate() error {
	n := 0
	for _, v := range []string{s.Dir, s.CADir, s.VaultPKI, s.VaultKV} {
		if v != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return ErrNone
	case n > 1:
		return ErrSeveral
	case s.VaultIssuer != "" && s.VaultPKI == "":
		return ErrIssuerWithoutPKI
	case s.Key != "" && s.Dir == "" && s.CADir == "":
		return ErrKeyWithoutFolder
	}
	if s.Key != "" {
		if err := kms.Check(s.Key); err != nil {
			return fmt.Errorf("key URI: %w", err)
		}
	}
	if s.VaultKV != "" {
		if _, err := vault.ParseKVPath(s.VaultKV); err != nil {
			return fmt.Errorf("Vault KV path: %w", err)
		}
	}
	return nil
}

// String names the source for messages: "folder root", "Vault PKI mount pki", ...
func (s Spec) String() string {
	if s.Key != "" && (s.Dir != "" || s.CADir != "") {
		k := s.Key
		s.Key = ""
		return s.String() + " (key " + kms.Redact(k) + ")"
	}
	switch {
	case s.Dir != "":
		return "folder " + s.Dir
	case s.CADir != "":
		return "signing CA folder " + s.CADir
	case s.VaultPKI != "" && s.VaultIssuer != "":
		return fmt.Sprintf("Vault PKI mount %s (issuer %s)", s.mount(), s.VaultIssuer)
	case s.VaultPKI != "":
		return "Vault PKI mount " + s.mount()
	case s.VaultKV != "":
		return "Vault KV secret " + s.VaultKV
	}
	return "no root source"
}

func (s Spec) mount() string { return strings.Trim(s.VaultPKI, "/") }

// Options controls Open.
type Options struct {
	// Vault is a connected, logged-in Vault client; required for the Vault kinds.
	Vault vault.Logical
	// Now is the clock roots are checked against; nil means time.Now.
	Now func() time.Time
	// Log receives warnings (a root key readable by others) and debug lines; nil
	// discards them.
	Log *slog.Logger
	// KMS are the options of a key held in an HSM or key service (Spec.Key): the
	// PIN, when the URI names no pin-source.
	KMS kms.Options
}

// KeyIssuer is the issuer Open returns for a folder whose key is in an HSM or a
// key service (Spec.Key): Close ends the session with the token or service.
type KeyIssuer struct {
	*ca.LocalIssuer
	Key *kms.Key
}

// Close ends the key's session.
func (k *KeyIssuer) Close() error { return k.Key.Close() }

// Close closes iss when it holds a session (a KeyIssuer); other issuers need none.
func Close(iss ca.Issuer) error {
	if c, ok := iss.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Open opens the source s names and returns the issuer that signs under it,
// checking before anything is minted that the root (or Vault's issuer) is there,
// usable and valid now. Errors name the folder, file, mount or path.
func Open(ctx context.Context, s Spec, o Options) (ca.Issuer, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if s.UsesVault() && o.Vault == nil {
		return nil, fmt.Errorf("%s: no Vault client given", s)
	}
	switch {
	case s.VaultPKI != "":
		iss, err := vault.NewPKIIssuer(ctx, o.Vault, s.mount(), s.VaultIssuer)
		if err != nil {
			return nil, err
		}
		log.Debug("Vault PKI issuer ready", "signPath", iss.SignPath(), "issuer", iss.Anchor().Subject.String(), "notAfter", iss.Anchor().NotAfter)
		return iss, nil
	case s.VaultKV != "":
		k, _ := vault.ParseKVPath(s.VaultKV) // validated
		sc, err := vault.LoadSigningCAKV(ctx, o.Vault, k, now())
		if err != nil {
			return nil, err
		}
		log.Debug("signing CA loaded from Vault KV", "path", k.String(), "subject", sc.Cert.Subject.String(), "levels", len(sc.Chain), "notAfter", sc.Cert.NotAfter)
		return ca.NewSigningCAIssuer(sc), nil
	case s.Key != "":
		return openKey(ctx, s, o, now(), log)
	case s.CADir != "":
		sc, err := ca.ReadCADir(s.CADir, now())
		if err != nil {
			return nil, err
		}
		warnKeyMode(log, filepath.Join(s.CADir, ca.CADirKeyFile), "signing CA")
		log.Debug("signing CA loaded", "subject", sc.Cert.Subject.String(), "root", sc.Root().Subject.String(), "levels", len(sc.Chain), "notAfter", sc.Cert.NotAfter)
		return ca.NewSigningCAIssuer(sc), nil
	}
	root, err := ca.ReadRootDir(s.Dir, now())
	if err != nil {
		return nil, err
	}
	warnKeyMode(log, filepath.Join(s.Dir, ca.RootKeyFile), "root")
	log.Debug("root loaded", "subject", root.Cert.Subject.String(), "notAfter", root.Cert.NotAfter)
	return ca.NewLocalIssuer(root), nil
}

// openKey opens a folder's root or issuing CA whose key s.Key names: the key in
// its token or service, the certificates from the folder, which must hold no key
// file (ErrTwoKeys).
func openKey(ctx context.Context, s Spec, o Options, now time.Time, log *slog.Logger) (*KeyIssuer, error) {
	dir, keyFile := s.Dir, ca.RootKeyFile
	if s.CADir != "" {
		dir, keyFile = s.CADir, ca.CADirKeyFile
	}
	if _, err := os.Lstat(filepath.Join(dir, keyFile)); err == nil {
		return nil, fmt.Errorf("%s: %w (%s): move the file away, or drop the key URI", filepath.Join(dir, keyFile), ErrTwoKeys, kms.Redact(s.Key))
	}
	key, err := kms.Open(ctx, s.Key, o.KMS)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	var sc *ca.SigningCA
	if s.CADir != "" {
		sc, err = ca.ReadCADirWithSigner(dir, key, now)
	} else {
		var root *ca.Root
		if root, err = ca.ReadRootDirWithSigner(dir, key, now); err == nil {
			sc = root.SigningCA()
		}
	}
	if err != nil {
		key.Close()
		return nil, fmt.Errorf("%w (key %s)", err, kms.Redact(s.Key))
	}
	log.Debug("signing CA loaded, its key in an HSM or key service", "subject", sc.Cert.Subject.String(), "key", kms.Redact(s.Key), "levels", len(sc.Chain), "notAfter", sc.Cert.NotAfter)
	return &KeyIssuer{LocalIssuer: ca.NewSigningCAIssuer(sc), Key: key}, nil
}

// warnKeyMode warns, as ssh does for its keys (but only a warning: the key was
// already readable), when others than its owner may read or write keyFile.
func warnKeyMode(log *slog.Logger, keyFile, what string) {
	if st, err := os.Stat(keyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("the "+what+" key can be read or written by others than its owner: chmod 600 it", "file", keyFile, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
}

// ErrNoCRL: the source cannot keep a revocation record.
var ErrNoCRL = errors.New("this root source keeps no CRL")

// CRLAuthority returns the revocation side of the source s, whose issuer iss Open
// returned: the CA that signs cluster CAs keeps the record of those it revoked and
// signs its own CRL. That is root-crl.pem in a root folder (ca.FolderCRL),
// signing-ca-crl.pem in an issuing CA's folder (--ca-dir), the Vault PKI issuer's own
// revocation and CRL (a root or an intermediate mount), or the secret PATH/crl beside
// a Vault KV root or issuing CA (vault.KVCRL; o.Vault is needed). The CRLs of the CAs
// above an issuing CA come from outside (ca.UpstreamCRLs).
func CRLAuthority(_ context.Context, s Spec, iss ca.Issuer, o Options) (ca.CRLAuthority, error) {
	if a, ok := iss.(ca.CRLAuthority); ok && s.Kind() == KindVaultPKI {
		return a, nil
	}
	// The other kinds sign with the CA Open loaded (and, for a key in a token,
	// the session it holds): it is not read again.
	held, ok := iss.(interface{ SigningCA() *ca.SigningCA })
	if !ok {
		return nil, fmt.Errorf("%s: %w", s, ErrNoCRL)
	}
	c := held.SigningCA()
	root := &ca.Root{Cert: c.Cert, Signer: c.Signer}
	switch s.Kind() {
	case KindDir:
		return &ca.FolderCRL{Dir: s.Dir, Root: root}, nil
	case KindCADir:
		return &ca.FolderCRL{Dir: s.CADir, File: ca.SigningCACRLFile, Root: root}, nil
	case KindVaultKV:
		if o.Vault == nil {
			return nil, fmt.Errorf("%s: no Vault client given", s)
		}
		k, _ := vault.ParseKVPath(s.VaultKV) // validated
		return vault.NewKVCRL(o.Vault, k, root), nil
	}
	return nil, fmt.Errorf("%s: %w", s, ErrNoCRL)
}
