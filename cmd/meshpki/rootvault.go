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

// rootVaultTarget is where "root create" puts a root in Vault.
type rootVaultTarget struct {
	PKI         string
	IssuerName  string
	EnableMount bool
	KV          *vault.KVPath
	Conn        *vaultConn
}

// parseRootVault reads the Vault flags of "root create", and checks that exactly one
// of --out, --vault-pki and --vault-kv is given. nil means a root in a folder.
func parseRootVault(c *cli.Context) (*rootVaultTarget, error) {
	n := 0
	for _, f := range []string{"out", "vault-pki", "vault-kv"} {
		if c.String(f) != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return nil, inputError(errors.New("say where the root goes: --out DIR, --vault-pki MOUNT or --vault-kv MOUNT/PATH"))
	case n > 1:
		return nil, inputError(errors.New("pass only one of --out, --vault-pki and --vault-kv"))
	case c.String("vault-pki") == "" && (c.Bool("enable-mount") || c.String("vault-issuer") != ""):
		return nil, inputError(errors.New("--enable-mount and --vault-issuer need --vault-pki"))
	case c.String("out") != "":
		return nil, nil
	}
	t := &rootVaultTarget{PKI: strings.Trim(c.String("vault-pki"), "/"), IssuerName: c.String("vault-issuer"), EnableMount: c.Bool("enable-mount")}
	if s := c.String("vault-kv"); s != "" {
		k, err := vault.ParseKVPath(s)
		if err != nil {
			return nil, inputError(fmt.Errorf("--vault-kv: %w", err))
		}
		t.KV = &k
	}
	conn, err := parseVaultConn(c)
	if err != nil {
		return nil, err
	}
	t.Conn = conn
	return t, nil
}

// runRootCreateVault makes the root in a Vault PKI mount, or locally and then into a
// KV v2 secret with check-and-set 0.
func runRootCreateVault(ctx context.Context, e *env, o *rootCreateOptions) error {
	t := o.Vault
	client, err := t.Conn.connect(ctx, e)
	if err != nil {
		return err
	}
	var res rootResult
	var c *x509.Certificate
	switch {
	case t.PKI != "":
		if strings.HasPrefix(string(o.Profile.KeyType), "rsa") {
			e.log.Info("Vault is generating an RSA key", "type", o.Profile.KeyType)
		}
		g, err := vault.GenerateInternalRoot(ctx, client.Logical(), t.PKI, o.Profile, vault.RootOptions{EnableMount: t.EnableMount, IssuerName: t.IssuerName})
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
		if o.Profile.KeyType == ca.RSA4096 || o.Profile.KeyType == ca.RSA3072 {
			e.log.Info("generating RSA key", "type", o.Profile.KeyType)
		}
		root, keyPEM, err := ca.CreateRoot(o.Profile, time.Now())
		if err != nil {
			return failed(err)
		}
		if err := vault.StoreRootKV(ctx, client.Logical(), *t.KV, root, keyPEM); err != nil {
			return vaultError(err)
		}
		c = root.Cert
		res.VaultKV = t.KV.String()
	}
	res.Subject, res.KeyType, res.NotAfter, res.Fingerprint = c.Subject.String(), ca.DescribeKey(c.PublicKey), c.NotAfter.UTC(), ca.Fingerprint(c)
	if o.Output == "json" {
		return writeJSON(e.stdout, res)
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
