package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/vault"
)

// catRootVault groups "root create"'s Vault flags in help output.
const catRootVault = "Root in Vault"

// rootVaultFlags are "root create"'s flags for a root kept in Vault.
func rootVaultFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "vault-pki", Category: catRootVault, Usage: "generate the root inside this Vault PKI mount (its key never leaves Vault), e.g. --vault-pki pki"},
		&cli.BoolFlag{Name: "enable-mount", Category: catRootVault, Usage: "with --vault-pki: mount a PKI engine there first if none is (max_lease_ttl = --ttl)"},
		&cli.StringFlag{Name: "vault-issuer", Category: catRootVault, Usage: "with --vault-pki: name of the new issuer; allows a second root in a mount that has one, e.g. --vault-issuer root-2027"},
		&cli.StringFlag{Name: "vault-kv", Category: catRootVault, Usage: "generate the root here and store it in this Vault KV v2 secret (never overwritten), as MOUNT/PATH, e.g. --vault-kv secret/meshpki/root"},
	}, vaultConnFlags()...)
}

// rootTarget is the flag group that says where "root create" puts the root: a
// folder (--out), a Vault PKI mount or a Vault KV v2 secret.
type rootTarget struct {
	Out         string
	PKI         string // Validate trims its slashes
	IssuerName  string
	EnableMount bool
	KVPath      string
	// Vault is the Vault connection flag group; Validate checks it only for a root
	// in Vault.
	Vault *vaultConn

	kv *vault.KVPath // set by Validate from KVPath
}

// bindRootTarget binds --out, --vault-pki, --vault-issuer, --enable-mount, --vault-kv
// and the Vault connection flags.
func bindRootTarget(c *cli.Context) rootTarget {
	return rootTarget{Out: c.String("out"), PKI: c.String("vault-pki"), IssuerName: c.String("vault-issuer"),
		EnableMount: c.Bool("enable-mount"), KVPath: c.String("vault-kv"), Vault: bindVaultConn(c)}
}

// Validate checks that exactly one of --out, --vault-pki and --vault-kv is given,
// and for a root in Vault, the KV path and the Vault connection flags.
func (t *rootTarget) Validate() error {
	n := 0
	for _, f := range []string{t.Out, t.PKI, t.KVPath} {
		if f != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return inputError(errors.New("say where the root goes: --out DIR, --vault-pki MOUNT or --vault-kv MOUNT/PATH"))
	case n > 1:
		return inputError(errors.New("pass only one of --out, --vault-pki and --vault-kv"))
	case t.PKI == "" && (t.EnableMount || t.IssuerName != ""):
		return inputError(errors.New("--enable-mount and --vault-issuer need --vault-pki"))
	case t.Out != "":
		return nil
	}
	if t.PKI != "" {
		if t.PKI = strings.Trim(t.PKI, "/"); t.PKI == "" {
			return inputError(errors.New("--vault-pki: no mount name (only slashes), e.g. --vault-pki pki"))
		}
	}
	if t.KVPath != "" {
		k, err := vault.ParseKVPath(t.KVPath)
		if err != nil {
			return inputError(fmt.Errorf("--vault-kv: %w", err))
		}
		t.kv = &k
	}
	return t.Vault.Validate()
}

// inVault says the root goes to Vault rather than to a folder.
func (t *rootTarget) inVault() bool { return t.Out == "" }

// runRootCreateVault makes the root in a Vault PKI mount, or locally and then into a
// KV v2 secret with check-and-set 0.
func runRootCreateVault(ctx context.Context, e *env, o *rootCreateOptions) error {
	t := &o.Target
	client, err := t.Vault.connect(ctx, e)
	if err != nil {
		return err
	}
	var res rootResult
	var c *x509.Certificate
	switch {
	case t.PKI != "":
		if strings.HasPrefix(string(o.profile.KeyType), "rsa") {
			e.log.Info("Vault is generating an RSA key", "type", o.profile.KeyType)
		}
		g, err := vault.GenerateInternalRoot(ctx, client.Logical(), t.PKI, o.profile, vault.RootOptions{EnableMount: t.EnableMount, IssuerName: t.IssuerName})
		if g != nil && g.Mounted {
			e.log.Info("mounted a PKI secrets engine", "mount", t.PKI)
		}
		if errors.Is(err, vault.ErrMountNotFound) && !t.EnableMount {
			return vaultError(fmt.Errorf("%w; or pass --enable-mount", err))
		}
		if err != nil {
			return vaultError(err)
		}
		c = g.Cert
		res.VaultPKI, res.IssuerID = t.PKI, g.IssuerID
	default:
		if o.profile.KeyType == ca.RSA4096 || o.profile.KeyType == ca.RSA3072 {
			e.log.Info("generating RSA key", "type", o.profile.KeyType)
		}
		root, keyPEM, err := ca.CreateRoot(o.profile, time.Now())
		if err != nil {
			return failed(err)
		}
		if err := vault.StoreRootKV(ctx, client.Logical(), *t.kv, root, keyPEM); err != nil {
			return vaultError(err)
		}
		c = root.Cert
		res.VaultKV = t.kv.String()
	}
	res.Subject, res.KeyType, res.NotAfter, res.Fingerprint = c.Subject.String(), ca.DescribeKey(c.PublicKey), c.NotAfter.UTC(), ca.Fingerprint(c)
	if o.Output == "json" {
		return writeJSON(e.stdout, true, res)
	}
	if res.VaultPKI != "" {
		fmt.Fprintf(e.stdout, "root CA generated in Vault PKI mount %s (issuer %s); its key never leaves Vault\n", res.VaultPKI, res.IssuerID)
	} else {
		fmt.Fprintf(e.stdout, "root CA stored in Vault KV at %s (fields %s, %s)\n", res.VaultKV, vault.FieldCertificate, vault.FieldPrivateKey)
	}
	fmt.Fprintf(e.stdout, "  subject:     %s\n  key:         %s\n  not after:   %s\n  sha256:      %s\n",
		res.Subject, res.KeyType, res.NotAfter.Format(time.RFC3339), res.Fingerprint)
	return nil
}
