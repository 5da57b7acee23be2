// Package vault makes HashiCorp Vault a root source for meshpki, in two ways:
//
//   - PKI mode: the root lives in a Vault PKI mount. PKIIssuer (a ca.Issuer) sends each
//     cluster's CSR to <mount>/root/sign-intermediate (or
//     <mount>/issuer/<ref>/sign-intermediate); the root key never leaves Vault and the
//     intermediate key never enters it.
//   - KV mode: the root certificate and key are kept in a KV v2 secret (fields
//     "certificate" and "private_key"). LoadRootKV returns a ca.Root to sign with
//     locally, exactly like a root read from files.
//
// NewClient builds a connected, authenticated client from a Config; the package never
// reads environment variables (the CLI fills Config from flags and VAULT_* variables).
// Every call takes a context, and every error names the Vault path involved and wraps
// one of the Err* sentinels so callers can tell a sealed Vault from a missing policy.
package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/meshpki/meshpki/ca"
)

// AuthMethod is how meshpki logs in to Vault.
type AuthMethod string

// The supported auth methods.
const (
	// AuthToken uses Config.Token as is.
	AuthToken AuthMethod = "token"
	// AuthAppRole logs in at auth/<mount>/login with a role ID and a secret ID.
	AuthAppRole AuthMethod = "approle"
	// AuthKubernetes logs in at auth/<mount>/login with a Kubernetes service-account
	// token (for runs inside a cluster).
	AuthKubernetes AuthMethod = "kubernetes"
)

// ParseAuthMethod parses "token", "approle" or "kubernetes".
func ParseAuthMethod(s string) (AuthMethod, error) {
	switch m := AuthMethod(strings.ToLower(s)); m {
	case AuthToken, AuthAppRole, AuthKubernetes:
		return m, nil
	case "":
		return AuthToken, nil
	}
	return "", fmt.Errorf("unknown Vault auth method %q (want token, approle or kubernetes)", s)
}

// Defaults for Config's zero values.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultRetries      = 2
	DefaultMinRetryWait = 250 * time.Millisecond
	DefaultMaxRetryWait = 3 * time.Second
	// DefaultServiceAccountTokenFile is where Kubernetes mounts a pod's token.
	DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Config says how to reach and log in to Vault. Secrets (Token, SecretID) may be given
// as values or, better, as files; the package never reads environment variables.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.example.com:8200.
	Address string
	// Namespace is the Vault Enterprise namespace (empty: root namespace).
	Namespace string

	// CACert is a PEM file with the CA certificate(s) that signed Vault's TLS
	// certificate; CACertPEM the same as bytes; CAPath a folder of such files.
	CACert    string
	CACertPEM []byte
	CAPath    string
	// TLSServerName overrides the name checked in Vault's certificate.
	TLSServerName string
	// SkipVerify disables verification of Vault's TLS certificate. Dangerous: anyone on
	// the network path can impersonate Vault and sign the mesh's intermediates.
	SkipVerify bool

	// Auth is the login method; empty means AuthToken.
	Auth AuthMethod
	// AuthMount is the auth method's mount path (default: the method's name).
	AuthMount string
	// Token is the Vault token for AuthToken.
	Token string
	// RoleID / RoleIDFile give the AppRole role ID.
	RoleID     string
	RoleIDFile string
	// SecretID / SecretIDFile give the AppRole secret ID.
	SecretID     string
	SecretIDFile string
	// Role is the Vault role for AuthKubernetes.
	Role string
	// ServiceAccountTokenFile is the Kubernetes service-account token for
	// AuthKubernetes (default DefaultServiceAccountTokenFile).
	ServiceAccountTokenFile string

	// Timeout bounds each HTTP attempt (default DefaultTimeout). The whole call is
	// bounded by the caller's context.
	Timeout time.Duration
	// Retries is how many times a request is retried after a 5xx answer, a 429 or a
	// timeout; 0 means DefaultRetries, negative means never. Other failures (4xx,
	// refused connections, TLS errors) are not retried.
	Retries int
	// MinRetryWait and MaxRetryWait bound the exponential backoff between retries.
	MinRetryWait time.Duration
	MaxRetryWait time.Duration
}

func (c Config) authMount() string {
	if m := strings.Trim(c.AuthMount, "/"); m != "" {
		return m
	}
	if c.Auth == "" {
		return string(AuthToken)
	}
	return string(c.Auth)
}

// NewClient connects to Vault and logs in. Before it returns it has checked that Vault
// is reachable (TLS included), initialised and unsealed, and that the login worked
// (for a token: that Vault knows it, when the token may look itself up), so that
// callers can fail before touching anything.
func NewClient(ctx context.Context, cfg Config) (*api.Client, error) {
	auth, err := ParseAuthMethod(string(cfg.Auth))
	if err != nil {
		return nil, err
	}
	cfg.Auth = auth
	login, err := loginMethod(cfg)
	if err != nil {
		return nil, err
	}
	client, err := newAPIClient(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkSealStatus(ctx, client); err != nil {
		return nil, err
	}
	if login != nil {
		path := "auth/" + cfg.authMount() + "/login"
		if _, err := client.Auth().Login(ctx, login); err != nil {
			return nil, loginError(path, cfg.Auth, err)
		}
		return client, nil
	}
	client.SetToken(cfg.Token)
	if err := checkToken(ctx, client.Logical()); err != nil {
		return nil, err
	}
	return client, nil
}

// newAPIClient builds the api.Client without consulting the environment: its own
// HTTP client and TLS settings, the retry policy, and no token, namespace or headers
// other than cfg's (api.NewClient picks up VAULT_TOKEN, VAULT_NAMESPACE and
// VAULT_HEADERS on its own; they are reset here).
func newAPIClient(cfg Config) (*api.Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("no Vault address given")
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("Vault address %q is not an http:// or https:// URL", cfg.Address)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	retries := cfg.Retries
	switch {
	case retries == 0:
		retries = DefaultRetries
	case retries < 0:
		retries = 0
	}
	minWait, maxWait := cfg.MinRetryWait, cfg.MaxRetryWait
	if minWait <= 0 {
		minWait = DefaultMinRetryWait
	}
	if maxWait < minWait {
		maxWait = max(DefaultMaxRetryWait, minWait)
	}

	hc := cleanhttp.DefaultPooledClient()
	hc.Timeout = timeout // per attempt, so a hung attempt can be retried
	tr := hc.Transport.(*http.Transport)
	tr.TLSHandshakeTimeout = min(10*time.Second, timeout)
	tr.MaxIdleConnsPerHost = 64 // minting runs many requests at once
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	// The api client handles redirects itself.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	ac := &api.Config{
		Address:      cfg.Address,
		HttpClient:   hc,
		Timeout:      0, // per-attempt timeout above; the caller's context bounds the rest
		MaxRetries:   retries,
		MinRetryWait: minWait,
		MaxRetryWait: maxWait,
		Backoff:      retryablehttp.DefaultBackoff,
		CheckRetry:   retryPolicy,
	}
	if err := ac.ConfigureTLS(&api.TLSConfig{
		CACert:        cfg.CACert,
		CACertBytes:   cfg.CACertPEM,
		CAPath:        cfg.CAPath,
		TLSServerName: cfg.TLSServerName,
		Insecure:      cfg.SkipVerify,
	}); err != nil {
		return nil, fmt.Errorf("Vault TLS settings: %w", err)
	}
	client, err := api.NewClient(ac)
	if err != nil {
		// api.NewClient parses the VAULT_* environment even when, as here, it then
		// uses none of it: a malformed variable still fails it.
		return nil, fmt.Errorf("Vault client (the Vault API library also checks the VAULT_* environment variables): %w", err)
	}
	client.ClearToken()
	client.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		client.SetNamespace(strings.Trim(cfg.Namespace, "/"))
	} else {
		client.ClearNamespace()
	}
	return client, nil
}

// retryPolicy retries 5xx answers (but 501), 429 (Vault's rate-limit quotas) and
// timeouts; never 4xx, refused connections, TLS or DNS errors, nor anything once the
// caller's context is done.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout() && !isTLSError(err), nil
	}
	if resp == nil {
		return false, nil
	}
	return resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented, nil
}

// loginMethod prepares the auth module for cfg, reading the credential files now so
// that a missing file is reported before any network traffic. nil means token auth.
func loginMethod(cfg Config) (api.AuthMethod, error) {
	switch cfg.Auth {
	case AuthToken:
		if cfg.Token == "" {
			return nil, errors.New("no Vault token given")
		}
		return nil, nil
	case AuthAppRole:
		roleID, err := valueOrFile("AppRole role ID", cfg.RoleID, cfg.RoleIDFile)
		if err != nil {
			return nil, err
		}
		secretID, err := valueOrFile("AppRole secret ID", cfg.SecretID, cfg.SecretIDFile)
		if err != nil {
			return nil, err
		}
		a, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(cfg.authMount()))
		if err != nil {
			return nil, fmt.Errorf("AppRole login: %w", err)
		}
		return a, nil
	case AuthKubernetes:
		if cfg.Role == "" {
			return nil, errors.New("Kubernetes login needs a Vault role")
		}
		file := cfg.ServiceAccountTokenFile
		if file == "" {
			file = DefaultServiceAccountTokenFile
		}
		// Read (and trimmed: a hand-made file often ends in a newline) here, so that a
		// missing file is reported before any network traffic.
		jwt, err := readSecretFile("service-account token", file)
		if err != nil {
			return nil, err
		}
		a, err := kubernetes.NewKubernetesAuth(cfg.Role,
			kubernetes.WithServiceAccountToken(jwt), kubernetes.WithMountPath(cfg.authMount()))
		if err != nil {
			return nil, fmt.Errorf("Kubernetes login: %w", err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("unknown Vault auth method %q", cfg.Auth)
}

// valueOrFile returns value, or the trimmed content of file.
func valueOrFile(what, value, file string) (string, error) {
	if value != "" && file != "" {
		return "", fmt.Errorf("%s given both as a value and as file %s", what, file)
	}
	if value != "" {
		return value, nil
	}
	if file == "" {
		return "", fmt.Errorf("no %s given", what)
	}
	return readSecretFile(what, file)
}

// readSecretFile reads a small credential file: a regular file, of bounded size.
// Errors name the file, never its content.
func readSecretFile(what, file string) (string, error) {
	b, err := ca.ReadInputFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: file %s is empty", what, file)
	}
	return s, nil
}

// ErrNoToken means FindToken found no token.
var ErrNoToken = errors.New("no Vault token")

// FindToken looks for a Vault token as the vault CLI does: in file when one is
// given, else in the environment variable VAULT_TOKEN (read through getenv, so that
// the caller decides what the environment is), else in home/.vault-token, where
// `vault login` keeps it (home "" skips it). It returns the token and where it came
// from: the file's name or "VAULT_TOKEN". Errors never hold the token.
func FindToken(file string, getenv func(string) string, home string) (token, from string, err error) {
	if file != "" {
		b, err := ca.ReadInputFile(file)
		if err != nil {
			return "", "", err
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, file, nil
		}
		return "", "", fmt.Errorf("%s is empty", file)
	}
	if getenv != nil {
		if t := strings.TrimSpace(getenv("VAULT_TOKEN")); t != "" {
			return t, "VAULT_TOKEN", nil
		}
	}
	if home != "" {
		f := filepath.Join(home, ".vault-token")
		if t, err := readSecretFile("Vault token", f); err == nil {
			return t, f, nil
		}
	}
	return "", "", ErrNoToken
}

// checkSealStatus reads sys/seal-status (no token needed): it proves Vault is
// reachable and speaks TLS as configured, and that it can serve requests.
func checkSealStatus(ctx context.Context, client *api.Client) error {
	st, err := client.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return describe(err, "read", "sys/seal-status")
	}
	switch {
	case !st.Initialized:
		return &Error{Kind: ErrSealed, Path: "sys/seal-status", Msg: fmt.Sprintf("Vault at %s is not initialized (vault operator init)", client.Address())}
	case st.Sealed:
		return &Error{Kind: ErrSealed, Path: "sys/seal-status", Msg: fmt.Sprintf("Vault at %s is sealed: unseal it (vault operator unseal) and retry; nothing was changed", client.Address())}
	}
	return nil
}

// checkToken looks the token up. A token whose policies do not allow
// auth/token/lookup-self (no default policy) passes; an invalid one does not.
func checkToken(ctx context.Context, l Logical) error {
	_, err := l.ReadWithContext(ctx, "auth/token/lookup-self")
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && !hasMessage(re, "invalid token") {
		return nil
	}
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		return &Error{Kind: ErrAuth, Path: "auth/token/lookup-self", Msg: "Vault rejected the token: it is invalid, expired or revoked", Err: err}
	}
	return describe(err, "read", "auth/token/lookup-self")
}

func loginError(path string, m AuthMethod, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500 {
		return &Error{Kind: ErrAuth, Path: path, Err: err,
			Msg: fmt.Sprintf("Vault %s login at %s failed (HTTP %d): %s", m, path, re.StatusCode, vaultMessages(re))}
	}
	return describe(err, "update", path)
}

// isTLSError reports certificate and handshake failures.
func isTLSError(err error) bool {
	var (
		ua   x509.UnknownAuthorityError
		he   x509.HostnameError
		ci   x509.CertificateInvalidError
		cve  *tls.CertificateVerificationError
		rhe  tls.RecordHeaderError
		alrt tls.AlertError
	)
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cve) ||
		errors.As(err, &rhe) || errors.As(err, &alrt) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") ||
		strings.Contains(err.Error(), "tls: ")
}
