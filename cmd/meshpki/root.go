package main

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/atomicfs"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/kms"
)

func rootCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "root",
		Usage: "create, bundle or rotate the mesh's root CA",
		Description: `Examples:
   meshpki root create --out root
   meshpki root create --vault-pki pki --enable-mount
   meshpki root bundle --out combined-root.pem root root-2027
   meshpki root rotate --new-root-dir root-2027 --all-contexts --status`,
		Subcommands: []*cli.Command{
			rootCreateCommand(e),
			rootRotateCommand(e),
			rootBundleCommand(e),
		},
	}
}

// rootCreateOptions is "root create": its flags as given (bind), then (Validate)
// the root profile they mean.
type rootCreateOptions struct {
	cmd cmdArgs
	// Target is where the root goes: a folder or Vault (rootvault.go).
	Target     rootTarget
	KeyType    string
	CommonName string
	Org        string
	TTL        string
	Output     string
	// KeyURI names the root's key in an HSM or key service (kms.Create makes it
	// there, or kms.Open opens it with ExistingKey).
	KeyURI      string
	ExistingKey bool
	// keyURISet and keyTypeSet say the flags were given (an empty --key-uri is an
	// error; --key-type with --existing-key must be the key's).
	keyURISet, keyTypeSet bool

	profile ca.RootProfile // set by Validate
}

func rootCreateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "create",
		Usage: "create a self-signed root CA in a folder, a Vault PKI mount or a Vault KV secret",
		Description: `Writes DIR/root-cert.pem and DIR/root-key.pem (0600, folder 0700). An existing root
in DIR is never overwritten.

With --vault-pki MOUNT the root is generated inside Vault (MOUNT/root/generate/internal):
its key never leaves Vault. --enable-mount mounts a PKI engine at MOUNT first if none is
there. A mount that already holds a root is refused (name a new issuer with
--vault-issuer to add a second root, e.g. for a root rotation).
With --vault-kv MOUNT/PATH the root is generated locally and stored in a KV v2 secret
(fields certificate and private_key) with check-and-set, so an existing secret is never
overwritten; the key touches no disk. Vault is reached through VAULT_ADDR, VAULT_TOKEN
and the --vault-* flags (see docs/vault.md).
With --key-uri the key is generated inside an HSM (a pkcs11: URI, with both id and
object), sensitive and never extractable; only DIR/root-cert.pem is written, and
later commands name the key with --key-uri beside --root-dir DIR. --existing-key
uses a key already there instead (a cloud KMS key, made with the service's tools).
The PIN comes from the URI's pin-source=FILE or MESHPKI_PKCS11_PIN (see docs/hsm.md).

Examples:
   meshpki root create --out root
   meshpki root create --out root --key-type rsa-4096 --org "Example Corp" --ttl 7300d
   meshpki root create --vault-pki pki-mesh --enable-mount --ttl 3650d
   meshpki root create --vault-kv secret/meshpki/root
   MESHPKI_PKCS11_PIN=$(cat pin) meshpki root create --out root-hsm \
     --key-uri 'pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=mesh;id=2026;object=root-2026'`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "folder to write root-cert.pem and root-key.pem to (or use --vault-pki / --vault-kv)"},
			&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
			&cli.StringFlag{Name: "common-name", Value: ca.DefaultRootCN, Usage: "subject CN"},
			orgFlag("", "subject O; must not be empty (the same rule as for intermediates)"),
			ttlFlag("", ca.DefaultRootTTL, "lifetime"),
			&cli.StringFlag{Name: "key-uri", Usage: "with --out: generate the root's key inside an HSM at this pkcs11: URI (id and object both given) and write only root-cert.pem; see docs/hsm.md, e.g. --key-uri 'pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=mesh;id=2026;object=root-2026?pin-source=/run/secrets/pin'"},
			&cli.BoolFlag{Name: "existing-key", Usage: "with --key-uri: sign the root with the key already at the URI (a cloud KMS key, or one made with the token's tools) instead of generating one; --key-type, when given, must be the key's type"},
			outputFlag(),
		}, rootVaultFlags()...),
		Action: actionOf(e, bindRootCreate),
	}
}

func bindRootCreate(c *cli.Context) *rootCreateOptions {
	return &rootCreateOptions{
		cmd:         bindArgs(c),
		Target:      bindRootTarget(c),
		KeyType:     c.String("key-type"),
		CommonName:  c.String("common-name"),
		Org:         c.String("org"),
		TTL:         c.String("ttl"),
		Output:      c.String("output"),
		KeyURI:      c.String("key-uri"),
		ExistingKey: c.Bool("existing-key"),
		keyURISet:   c.IsSet("key-uri"),
		keyTypeSet:  c.IsSet("key-type"),
	}
}

// Validate checks the flags and builds the root profile.
func (o *rootCreateOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	kt, err := parseKeyType(o.KeyType)
	if err != nil {
		return err
	}
	ttl, err := parseDuration("ttl", o.TTL)
	if err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if o.CommonName == "" {
		return inputError(errors.New("--common-name must not be empty"))
	}
	if err := checkOrg(o.Org); err != nil {
		return err
	}
	o.profile = ca.DefaultRootProfile(o.Org)
	o.profile.Subject = pkix.Name{CommonName: o.CommonName, Organization: []string{o.Org}}
	o.profile.KeyType, o.profile.TTL = kt, ttl
	switch {
	case o.keyURISet && o.KeyURI == "":
		return inputError(errors.New("--key-uri is empty (was the variable it came from set?)"))
	case o.ExistingKey && o.KeyURI == "":
		return inputError(errors.New("--existing-key needs --key-uri"))
	case o.KeyURI != "" && o.Target.Out == "":
		return inputError(errors.New("--key-uri needs --out DIR, the folder root-cert.pem is written to (a root in Vault has its key in Vault)"))
	case o.ExistingKey:
		if err := kms.Check(o.KeyURI); err != nil {
			return inputError(fmt.Errorf("--key-uri: %w", err))
		}
	case o.KeyURI != "":
		if err := kms.CheckCreate(o.KeyURI); err != nil {
			return inputError(fmt.Errorf("--key-uri: %w", err))
		}
	}
	return o.Target.Validate()
}

type rootResult struct {
	Dir         string    `json:"dir,omitempty"`
	VaultPKI    string    `json:"vaultPKI,omitempty"`
	IssuerID    string    `json:"vaultIssuerId,omitempty"`
	VaultKV     string    `json:"vaultKV,omitempty"`
	Subject     string    `json:"subject"`
	KeyType     string    `json:"keyType"`
	NotAfter    time.Time `json:"notAfter"`
	Fingerprint string    `json:"sha256Fingerprint"`
}

// Run creates the root (ca.CreateRoot) in the folder, or in Vault
// (runRootCreateVault), and writes what it made.
func (o *rootCreateOptions) Run(ctx context.Context, e *env) error {
	if o.profile.TTL < ca.DefaultMinRemaining {
		// Allowed (tests, demos), but said: nothing under it lasts.
		e.log.Warn("the root lives less than 30 days: intermediates under it are cut short (intermediate create needs --allow-short-ttl), and intermediate import refuses certificates with less than --min-remaining (30d) left",
			"ttl", textfmt.Duration(o.profile.TTL))
	}
	if o.Target.inVault() {
		return runRootCreateVault(ctx, e, o)
	}
	if err := ca.CheckRootDirFree(o.Target.Out); err != nil {
		return rootWriteError(err)
	}
	var root *ca.Root
	if o.KeyURI != "" {
		r, err := o.createInKMS(ctx, e)
		if err != nil {
			return err
		}
		root = r
	} else {
		if o.profile.KeyType == ca.RSA4096 || o.profile.KeyType == ca.RSA3072 {
			e.log.Info("generating RSA key", "type", o.profile.KeyType)
		}
		r, keyPEM, err := ca.CreateRoot(o.profile, time.Now())
		if err != nil {
			return failed(err)
		}
		if err := ca.WriteRootDir(o.Target.Out, r, keyPEM); err != nil {
			return rootWriteError(err)
		}
		root = r
	}
	res := rootResult{Dir: o.Target.Out, Subject: root.Cert.Subject.String(), KeyType: ca.DescribeKey(root.Cert.PublicKey),
		NotAfter: root.Cert.NotAfter.UTC(), Fingerprint: ca.Fingerprint(root.Cert)}
	if o.Output == "json" {
		return writeJSON(e.stdout, true, res)
	}
	fmt.Fprintf(e.stdout, "root CA written to %s\n  subject:     %s\n  key:         %s\n  not after:   %s\n  sha256:      %s\n",
		res.Dir, res.Subject, res.KeyType, res.NotAfter.Format(time.RFC3339), res.Fingerprint)
	return nil
}

// createInKMS makes the root with its key in an HSM or key service: the key
// generated there (kms.Create), or the one there already (--existing-key), signs
// the certificate, and only root-cert.pem is written. A key made here whose
// certificate cannot be written is deleted again.
func (o *rootCreateOptions) createInKMS(ctx context.Context, e *env) (_ *ca.Root, err error) {
	// Hold the folder while the key is made: a second run into it waits, then finds
	// the root there and makes no key of its own. A folder made here is removed
	// again when the run is refused (os.Remove: only while it is empty).
	var made []string // the folders MkdirAll makes, deepest first
	for d := filepath.Clean(o.Target.Out); ; d = filepath.Dir(d) {
		if _, serr := os.Lstat(d); !errors.Is(serr, fs.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	defer func() {
		if err != nil {
			for _, d := range made {
				_ = os.Remove(d) // only while empty
			}
		}
	}()
	warnPINFileMode(e, o.KeyURI)
	if err := os.MkdirAll(o.Target.Out, 0o700); err != nil {
		return nil, failed(err)
	}
	lock, err := atomicfs.LockDir(ctx, o.Target.Out, func() {
		e.log.Info("waiting for another meshpki run writing into the folder", "dir", o.Target.Out)
	})
	if err != nil {
		return nil, failed(err)
	}
	defer lock.Unlock()
	if err := ca.CheckRootDirFree(o.Target.Out); err != nil {
		return nil, rootWriteError(err)
	}
	// A run killed while it wrote the certificate left its temporary file; with
	// the folder held, none is a live run's.
	left, _ := filepath.Glob(filepath.Join(o.Target.Out, "."+ca.RootCertFile+".tmp-*"))
	for _, f := range left {
		if atomicfs.IsTemp(filepath.Base(f)) && os.Remove(f) == nil {
			e.log.Info("removed what an interrupted run left", "file", f)
		}
	}
	opts := kms.Options{PIN: os.Getenv(pinEnv)}
	var key *kms.Key
	if o.ExistingKey {
		key, err = kms.Open(ctx, o.KeyURI, opts)
		if err == nil {
			kt, _ := ca.KeyTypeOf(key.Public()) // Open checked it
			if o.keyTypeSet && kt != o.profile.KeyType {
				key.Close()
				return nil, inputError(fmt.Errorf("--key-type %s: the key at --key-uri is %s (drop --key-type: an existing key's type is its own)", o.profile.KeyType, kt))
			}
			o.profile.KeyType = kt
		}
	} else {
		e.log.Info("generating the root's key in the token", "type", o.profile.KeyType, "key", kms.Redact(o.KeyURI))
		key, err = kms.Create(ctx, o.KeyURI, o.profile.KeyType, opts)
	}
	switch {
	case errors.Is(err, kms.ErrExists):
		return nil, inputError(fmt.Errorf("--key-uri: %w; to make the root with the key there, add --existing-key", err))
	case err != nil && kms.BadInput(err):
		return nil, inputError(fmt.Errorf("--key-uri: %w", err))
	case err != nil:
		return nil, failed(fmt.Errorf("--key-uri: %w", err)) // the token or service failed or is unreachable
	}
	drop := func() {
		if o.ExistingKey {
			key.Close()
			return
		}
		if derr := key.Destroy(); derr != nil {
			e.log.Error("the key generated in the token is not used, and could not be deleted: delete it with the token's tools", "key", kms.Redact(o.KeyURI), "err", derr)
		}
	}
	if ctx.Err() != nil { // interrupted while the token made the key
		drop()
		return nil, failed(fmt.Errorf("stopped before the root was signed: %w", context.Cause(ctx)))
	}
	root, err := ca.CreateRootWithSigner(o.profile, key, time.Now())
	if err != nil {
		drop()
		return nil, failed(fmt.Errorf("sign the root in the token: %w", err))
	}
	if err := ca.WriteRootDir(o.Target.Out, root, nil); err != nil {
		drop()
		return nil, rootWriteError(err)
	}
	e.closeAtEnd(key)
	return root, nil
}

func rootWriteError(err error) error {
	if errors.Is(err, ca.ErrRootExists) {
		return inputError(fmt.Errorf("%w; choose another --out", err))
	}
	return failed(err)
}
