package main

import (
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
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

// rootCreateOptions is "root create" after flag parsing.
type rootCreateOptions struct {
	Out     string
	Profile ca.RootProfile
	Output  string
	// Vault is set instead of Out for a root in Vault (rootvault.go).
	Vault *rootVaultTarget
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

Examples:
   meshpki root create --out root
   meshpki root create --out root --key-type rsa-4096 --org "Example Corp" --ttl 7300d
   meshpki root create --vault-pki pki-mesh --enable-mount --ttl 3650d
   meshpki root create --vault-kv secret/meshpki/root`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "folder to write root-cert.pem and root-key.pem to (or use --vault-pki / --vault-kv)"},
			&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
			&cli.StringFlag{Name: "common-name", Value: ca.DefaultRootCN, Usage: "subject CN"},
			orgFlag("", "subject O; must not be empty (the same rule as for intermediates)"),
			ttlFlag("", ca.DefaultRootTTL, "lifetime"),
			outputFlag(),
		}, rootVaultFlags()...),
		Action: action(func(c *cli.Context) error {
			opts, err := parseRootCreate(c)
			if err != nil {
				return err
			}
			if opts.Vault != nil {
				return runRootCreateVault(c.Context, e, opts)
			}
			return runRootCreate(e, opts)
		}),
	}
}

func parseRootCreate(c *cli.Context) (*rootCreateOptions, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	kt, err := parseKeyTypeFlag(c)
	if err != nil {
		return nil, err
	}
	ttl, err := parseDuration("ttl", c.String("ttl"))
	if err != nil {
		return nil, err
	}
	out, err := outputFormat(c)
	if err != nil {
		return nil, err
	}
	if c.String("common-name") == "" {
		return nil, inputError(errors.New("--common-name must not be empty"))
	}
	org, err := parseOrg(c)
	if err != nil {
		return nil, err
	}
	p := ca.DefaultRootProfile(org)
	p.Subject = pkix.Name{CommonName: c.String("common-name"), Organization: []string{org}}
	p.KeyType, p.TTL = kt, ttl
	vt, err := parseRootVault(c)
	if err != nil {
		return nil, err
	}
	return &rootCreateOptions{Out: c.String("out"), Profile: p, Output: out, Vault: vt}, nil
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

func runRootCreate(e *env, o *rootCreateOptions) error {
	if err := ca.CheckRootDirFree(o.Out); err != nil {
		return rootWriteError(err)
	}
	if o.Profile.KeyType == ca.RSA4096 || o.Profile.KeyType == ca.RSA3072 {
		e.log.Info("generating RSA key", "type", o.Profile.KeyType)
	}
	root, keyPEM, err := ca.CreateRoot(o.Profile, time.Now())
	if err != nil {
		return failed(err)
	}
	if err := ca.WriteRootDir(o.Out, root, keyPEM); err != nil {
		return rootWriteError(err)
	}
	res := rootResult{Dir: o.Out, Subject: root.Cert.Subject.String(), KeyType: ca.DescribeKey(root.Cert.PublicKey),
		NotAfter: root.Cert.NotAfter.UTC(), Fingerprint: ca.Fingerprint(root.Cert)}
	if o.Output == "json" {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "root CA written to %s\n  subject:     %s\n  key:         %s\n  not after:   %s\n  sha256:      %s\n",
		res.Dir, res.Subject, res.KeyType, res.NotAfter.Format(time.RFC3339), res.Fingerprint)
	return nil
}

func rootWriteError(err error) error {
	if errors.Is(err, ca.ErrRootExists) {
		return inputError(fmt.Errorf("%w; choose another --out", err))
	}
	return failed(err)
}
