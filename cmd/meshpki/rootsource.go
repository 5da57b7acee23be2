package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/kms"
	"github.com/meshpki/meshpki/rootsource"
	"github.com/meshpki/meshpki/vault"
)

// Flag categories in help output.
const (
	catRoot  = "Root source"
	catVault = "Vault connection"
)

// rootSourceFlags are the flags that choose where the root lives: a folder, a Vault
// PKI mount or a Vault KV v2 secret, and how to reach Vault.
func rootSourceFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "root-dir", Category: catRoot, Usage: "folder holding root-cert.pem and root-key.pem, e.g. --root-dir root"},
		&cli.StringFlag{Name: "ca-dir", Category: catRoot, Usage: "folder holding an issuing CA below the root: ca-cert.pem, ca-key.pem, cert-chain.pem (up to the root), root-cert.pem; see docs/hierarchies.md, e.g. --ca-dir issuing-ca"},
		&cli.StringFlag{Name: "vault-pki", Category: catRoot, Usage: "Vault PKI mount whose root signs the intermediates (the root key never leaves Vault), e.g. --vault-pki pki"},
		&cli.StringFlag{Name: "vault-issuer", Category: catRoot, Usage: "with --vault-pki: issuer name or ID to sign with instead of the mount's default, e.g. --vault-issuer mesh-root"},
		&cli.StringFlag{Name: "vault-kv", Category: catRoot, Usage: "Vault KV v2 secret holding the root (fields certificate, private_key) or an issuing CA (and ca_chain), as MOUNT/PATH, e.g. --vault-kv secret/meshpki/root"},
		keyURIFlag(""),
	}, vaultConnFlags()...)
}

// pinEnv holds the PIN of a PKCS#11 token whose key URI names no pin-source file.
const pinEnv = "MESHPKI_PKCS11_PIN"

// keyURIFlag is --key-uri (prefix "new-": --new-key-uri): the key of the folder's
// root or issuing CA in an HSM or a key service.
func keyURIFlag(prefix string) cli.Flag {
	cat := catRoot
	if prefix == "new-" {
		cat = catNewRoot
	}
	return &cli.StringFlag{Name: prefix + "key-uri", Category: cat, Usage: fmt.Sprintf("with --%[1]sroot-dir or --%[1]sca-dir: the CA's key in an HSM (pkcs11:) or a cloud KMS (awskms:, azurekms:), used in place of the folder's key file, which must not exist; the PIN from the URI's pin-source=FILE or %[2]s, never the URI (see docs/hsm.md), e.g. --%[1]skey-uri 'pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=mesh;object=root-2026?pin-source=/run/secrets/pin'", prefix, pinEnv)}
}

// warnPINFileMode warns, as for key files, when others than its owner may read
// or write the PIN file a key URI names.
func warnPINFileMode(e *env, keyURI string) {
	if f := kms.PINSource(keyURI); f != "" {
		if st, err := os.Stat(f); err == nil && st.Mode().Perm()&0o077 != 0 {
			e.log.Warn("the token's PIN file can be read or written by others than its owner: chmod 600 it", "file", f, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
		}
	}
}

// vaultConnFlags say how to reach and log in to Vault. Secrets never come from argv:
// the token from VAULT_TOKEN, --vault-token-file or ~/.vault-token, the AppRole secret
// ID from VAULT_SECRET_ID or --vault-secret-id-file.
func vaultConnFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "vault-addr", Category: catVault, EnvVars: []string{"VAULT_ADDR"}, Usage: "Vault's URL, e.g. --vault-addr https://vault.example.com:8200"},
		&cli.StringFlag{Name: "vault-namespace", Category: catVault, EnvVars: []string{"VAULT_NAMESPACE"}, Usage: "Vault Enterprise namespace, e.g. --vault-namespace mesh"},
		&cli.StringFlag{Name: "vault-ca-cert", Category: catVault, EnvVars: []string{"VAULT_CACERT"}, Usage: "PEM file with the CA that signed Vault's TLS certificate, e.g. --vault-ca-cert /etc/vault/ca.pem"},
		&cli.StringFlag{Name: "vault-ca-path", Category: catVault, EnvVars: []string{"VAULT_CAPATH"}, Usage: "folder of PEM CA files for Vault's TLS certificate, e.g. --vault-ca-path /etc/vault/cas"},
		&cli.BoolFlag{Name: "vault-skip-verify", Category: catVault, EnvVars: []string{"VAULT_SKIP_VERIFY"}, Usage: "do not verify Vault's TLS certificate (dangerous: anyone on the path could sign your mesh's CAs)"},
		&cli.StringFlag{Name: "vault-auth", Category: catVault, Value: string(vault.AuthToken), Usage: "login method: token (VAULT_TOKEN, --vault-token-file or ~/.vault-token), approle or kubernetes, e.g. --vault-auth approle"},
		&cli.StringFlag{Name: "vault-auth-mount", Category: catVault, Usage: "mount path of the auth method (default: approle or kubernetes), e.g. --vault-auth-mount k8s-east"},
		&cli.StringFlag{Name: "vault-token-file", Category: catVault, Usage: "file holding the Vault token (instead of VAULT_TOKEN), e.g. --vault-token-file /run/secrets/vault-token"},
		&cli.StringFlag{Name: "vault-role-id-file", Category: catVault, Usage: "approle: file holding the role ID (or set VAULT_ROLE_ID), e.g. --vault-role-id-file /run/secrets/role-id"},
		&cli.StringFlag{Name: "vault-secret-id-file", Category: catVault, Usage: "approle: file holding the secret ID (or set VAULT_SECRET_ID), e.g. --vault-secret-id-file /run/secrets/secret-id"},
		&cli.StringFlag{Name: "vault-role", Category: catVault, Usage: "kubernetes: the Vault role to log in as, e.g. --vault-role meshpki"},
		&cli.StringFlag{Name: "vault-sa-token-file", Category: catVault, Value: vault.DefaultServiceAccountTokenFile, Usage: "kubernetes: the service-account token to log in with"},
		&cli.DurationFlag{Name: "vault-timeout", Category: catVault, Value: vault.DefaultTimeout, Usage: "time limit of one request to Vault, e.g. --vault-timeout 10s"},
		&cli.IntFlag{Name: "vault-retries", Category: catVault, Value: vault.DefaultRetries, Usage: "retries (with backoff) of a request that timed out or got a 5xx or 429; 0 disables them"},
	}
}

// rootSource is the root-source flag group: where the root lives, and how to reach
// Vault when it is there.
type rootSource struct {
	// Spec holds the flags as given; Validate trims the PKI mount's slashes.
	rootsource.Spec
	// prefix is the flags' prefix ("" or "new-"), for messages.
	prefix string
	// emptyKey says --key-uri was given empty (an unset variable, say): never
	// taken for "no key URI", which would sign with a key file.
	emptyKey bool
	// Vault is the command's Vault connection flag group, shared with the other
	// groups that reach Vault; Validate checks it only when the source is in Vault.
	Vault *vaultConn
}

// bindRootSource binds --root-dir, --ca-dir, --vault-pki, --vault-issuer and --vault-kv.
func bindRootSource(c *cli.Context, vc *vaultConn) rootSource {
	return bindRootSourceFlags(c, "", vc)
}

// bindRootSourceFlags binds the root-source flags whose names start with prefix
// ("" for --root-dir and friends, "new-" for root rotation's --new-root-dir ...).
func bindRootSourceFlags(c *cli.Context, prefix string, vc *vaultConn) rootSource {
	f := func(name string) string { return c.String(prefix + name) }
	return rootSource{prefix: prefix, Vault: vc, emptyKey: c.IsSet(prefix+"key-uri") && f("key-uri") == "",
		Spec: rootsource.Spec{Dir: f("root-dir"), CADir: f("ca-dir"), VaultPKI: f("vault-pki"), VaultIssuer: f("vault-issuer"), VaultKV: f("vault-kv"), Key: f("key-uri")}}
}

// Validate checks that exactly one source is named (rootsource.Spec.Validate), in
// the words of the flags, and the Vault connection flags when the source is in Vault.
func (s *rootSource) Validate() error {
	s.VaultPKI = strings.Trim(s.VaultPKI, "/")
	if s.emptyKey {
		return inputError(fmt.Errorf("--%skey-uri is empty (was the variable it came from set?)", s.prefix))
	}
	switch err := s.Spec.Validate(); {
	case errors.Is(err, rootsource.ErrNone) && s.VaultIssuer != "":
		return inputError(fmt.Errorf("--%[1]svault-issuer needs --%[1]svault-pki", s.prefix))
	case errors.Is(err, rootsource.ErrNone) && s.prefix == "new-":
		return inputError(errors.New("no new root given: pass --new-root-dir DIR, --new-ca-dir DIR, --new-vault-pki MOUNT or --new-vault-kv MOUNT/PATH (make one with meshpki root create)"))
	case errors.Is(err, rootsource.ErrNone):
		return inputError(fmt.Errorf("no root given: pass --%[1]sroot-dir DIR, --%[1]sca-dir DIR, --%[1]svault-pki MOUNT or --%[1]svault-kv MOUNT/PATH", s.prefix))
	case errors.Is(err, rootsource.ErrSeveral):
		return inputError(fmt.Errorf("pass only one of --%[1]sroot-dir, --%[1]sca-dir, --%[1]svault-pki and --%[1]svault-kv", s.prefix))
	case errors.Is(err, rootsource.ErrIssuerWithoutPKI):
		return inputError(fmt.Errorf("--%[1]svault-issuer needs --%[1]svault-pki", s.prefix))
	case errors.Is(err, rootsource.ErrKeyWithoutFolder):
		return inputError(fmt.Errorf("--%[1]skey-uri needs --%[1]sroot-dir or --%[1]sca-dir: the folder that holds the CA's certificate", s.prefix))
	case s.Key != "" && kms.BadInput(err):
		return inputError(fmt.Errorf("--%skey-uri: %w", s.prefix, errors.Unwrap(err)))
	case err != nil:
		return inputError(fmt.Errorf("--%svault-kv: %w", s.prefix, errors.Unwrap(err)))
	}
	if s.UsesVault() {
		return s.Vault.Validate()
	}
	return nil
}

// issuer opens the root source (rootsource.Open), connecting to and logging in to
// Vault first when the root is there, all before anything is minted. Errors reading
// the root are bad input (exit 2); Vault being unreachable, sealed or refusing is a
// failure (exit 1).
func (s rootSource) issuer(ctx context.Context, e *env) (ca.Issuer, error) {
	opts, err := s.options(ctx, e)
	if err != nil {
		return nil, err
	}
	if s.Key != "" {
		warnPINFileMode(e, s.Key)
	}
	iss, err := rootsource.Open(ctx, s.Spec, opts)
	switch {
	case err == nil:
		if c, ok := iss.(io.Closer); ok {
			e.closeAtEnd(c)
		}
		return iss, nil
	case s.UsesVault():
		return nil, vaultError(err)
	case s.Key != "" && errors.Is(err, rootsource.ErrKey) && !kms.BadInput(err):
		return nil, failed(err) // the token or service failed or is unreachable
	}
	return nil, inputError(err)
}

// options are the rootsource.Options of s: the logger, and the Vault client
// (connected and logged in once per run) when the source is in Vault.
func (s rootSource) options(ctx context.Context, e *env) (rootsource.Options, error) {
	opts := rootsource.Options{Log: e.log, KMS: kms.Options{PIN: os.Getenv(pinEnv)}}
	if s.UsesVault() {
		client, err := s.Vault.connect(ctx, e)
		if err != nil {
			return opts, err
		}
		opts.Vault = client.Logical()
	}
	return opts, nil
}

// vaultConn is the Vault connection flag group: the flags as given, then (Validate)
// a vault.Config from them and the standard environment, then (connect) the
// connection, opened and logged in once, on first use. Several flag groups of one
// command share one.
type vaultConn struct {
	Addr, Namespace, CACert, CAPath string
	SkipVerify                      bool
	Auth, AuthMount                 string
	TokenFile                       string
	RoleIDFile, SecretIDFile        string
	Role, SATokenFile               string
	Timeout                         time.Duration
	Retries                         int

	// Set by Validate.
	validated bool
	cfg       vault.Config
	tokenFrom string
	// Set by connect.
	client *api.Client
}

// bindVaultConn binds the --vault-* connection flags (which VAULT_ADDR,
// VAULT_CACERT, VAULT_CAPATH, VAULT_NAMESPACE and VAULT_SKIP_VERIFY default).
func bindVaultConn(c *cli.Context) *vaultConn {
	return &vaultConn{
		Addr:         c.String("vault-addr"),
		Namespace:    c.String("vault-namespace"),
		CACert:       c.String("vault-ca-cert"),
		CAPath:       c.String("vault-ca-path"),
		SkipVerify:   c.Bool("vault-skip-verify"),
		Auth:         c.String("vault-auth"),
		AuthMount:    c.String("vault-auth-mount"),
		TokenFile:    c.String("vault-token-file"),
		RoleIDFile:   c.String("vault-role-id-file"),
		SecretIDFile: c.String("vault-secret-id-file"),
		Role:         c.String("vault-role"),
		SATokenFile:  c.String("vault-sa-token-file"),
		Timeout:      c.Duration("vault-timeout"),
		Retries:      c.Int("vault-retries"),
	}
}

// Validate fills the vault.Config, reading the credentials of the chosen login
// method from files or the environment, never argv. It does so once: the groups
// sharing v may each call it.
func (v *vaultConn) Validate() error {
	if v.validated {
		return nil
	}
	auth, err := vault.ParseAuthMethod(v.Auth)
	if err != nil {
		return inputError(fmt.Errorf("--vault-auth: %w", err))
	}
	v.cfg = vault.Config{
		Address:    v.Addr,
		Namespace:  v.Namespace,
		CACert:     v.CACert,
		CAPath:     v.CAPath,
		SkipVerify: v.SkipVerify,
		Auth:       auth,
		AuthMount:  v.AuthMount,
		Timeout:    v.Timeout,
		Retries:    v.Retries,
	}
	if v.cfg.Address == "" {
		return inputError(errors.New("no Vault address: set VAULT_ADDR or pass --vault-addr URL"))
	}
	if v.cfg.Timeout <= 0 {
		return inputError(fmt.Errorf("--vault-timeout must be positive, got %s", v.cfg.Timeout))
	}
	switch r := v.Retries; {
	case r < 0:
		return inputError(fmt.Errorf("--vault-retries must be 0 or more, got %d", r))
	case r == 0:
		v.cfg.Retries = -1 // the library's "none"
	}
	switch auth {
	case vault.AuthToken:
		if err := v.readToken(v.TokenFile); err != nil {
			return err
		}
	case vault.AuthAppRole:
		v.cfg.RoleIDFile = v.RoleIDFile
		if v.cfg.RoleIDFile == "" {
			v.cfg.RoleID = os.Getenv("VAULT_ROLE_ID")
		}
		v.cfg.SecretIDFile = v.SecretIDFile
		if v.cfg.SecretIDFile == "" {
			v.cfg.SecretID = os.Getenv("VAULT_SECRET_ID")
		}
		if v.cfg.RoleID == "" && v.cfg.RoleIDFile == "" {
			return inputError(errors.New("--vault-auth approle needs a role ID: pass --vault-role-id-file FILE or set VAULT_ROLE_ID"))
		}
		if v.cfg.SecretID == "" && v.cfg.SecretIDFile == "" {
			return inputError(errors.New("--vault-auth approle needs a secret ID: pass --vault-secret-id-file FILE or set VAULT_SECRET_ID (never on the command line)"))
		}
	case vault.AuthKubernetes:
		v.cfg.Role = v.Role
		v.cfg.ServiceAccountTokenFile = v.SATokenFile
		if v.cfg.Role == "" {
			return inputError(errors.New("--vault-auth kubernetes needs --vault-role ROLE"))
		}
	}
	v.validated = true
	return nil
}

// readToken takes the token from file, else VAULT_TOKEN, else ~/.vault-token (where
// `vault login` keeps it).
func (v *vaultConn) readToken(file string) error {
	home, _ := os.UserHomeDir()
	t, from, err := vault.FindToken(file, os.Getenv, home)
	switch {
	case errors.Is(err, vault.ErrNoToken):
		return inputError(errors.New("no Vault token: set VAULT_TOKEN, pass --vault-token-file FILE, log in with `vault login`, or use --vault-auth approle|kubernetes"))
	case err != nil:
		return inputError(fmt.Errorf("--vault-token-file: %w", err))
	}
	v.cfg.Token, v.tokenFrom = t, from
	return nil
}

// connect opens the connection on first use: reachability, TLS, seal status and login
// are all checked here, before anything is minted or written.
func (v *vaultConn) connect(ctx context.Context, e *env) (*api.Client, error) {
	if v.client != nil {
		return v.client, nil
	}
	if v.cfg.SkipVerify {
		e.log.Warn("Vault's TLS certificate is not verified (VAULT_SKIP_VERIFY / --vault-skip-verify): anyone on the network path can impersonate Vault", "addr", v.cfg.Address)
	}
	e.log.Debug("connecting to Vault", "addr", v.cfg.Address, "auth", v.cfg.Auth, "token", v.tokenFrom, "namespace", v.cfg.Namespace)
	client, err := vault.NewClient(ctx, v.cfg)
	if err != nil {
		return nil, vaultError(err)
	}
	v.client = client
	return client, nil
}
