package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
)

// A sealed Vault is named as such, before any login or signing.
func TestSealedVault(t *testing.T) {
	v := testenv.StartVaultT(t) // its own server: sealing is forever (no unseal key)
	ctx := context.Background()
	admin := tokenClient(t, v, v.Token)
	mount := v.Unique("pki")
	if _, err := GenerateInternalRoot(ctx, admin.Logical(), mount, ca.DefaultRootProfile(""), RootOptions{EnableMount: true}); err != nil {
		t.Fatal(err)
	}
	iss, err := NewPKIIssuer(ctx, admin.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Seal(ctx); err != nil {
		t.Fatal(err)
	}

	_, err = NewClient(ctx, Config{Address: v.Addr, Token: v.Token})
	if !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), "Vault at "+v.Addr+" is sealed") {
		t.Fatalf("NewClient on a sealed Vault: %v", err)
	}
	// Sealed while minting: the 503s are retried, then named.
	_, err = ca.Mint(ctx, iss, ca.IntermediateProfile("east", ""))
	if !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), "sealed") {
		t.Fatalf("Mint on a sealed Vault: %v", err)
	}
}

func TestUnreachableVault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = NewClient(context.Background(), Config{Address: addr, Token: "t"})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach Vault at "+addr) {
		t.Fatalf("got %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"no address", Config{Token: "t"}, "no Vault address"},
		{"bad address", Config{Address: "vault:8200", Token: "t"}, "not an http:// or https:// URL"},
		{"no token", Config{Address: "http://127.0.0.1:1"}, "no Vault token"},
		{"unknown auth", Config{Address: "http://127.0.0.1:1", Auth: "ldap"}, "unknown Vault auth method"},
		{"approle without role id", Config{Address: "http://127.0.0.1:1", Auth: AuthAppRole, SecretID: "s"}, "no AppRole role ID"},
		{"approle secret id file missing", Config{Address: "http://127.0.0.1:1", Auth: AuthAppRole, RoleID: "r", SecretIDFile: dir + "/nope"},
			"AppRole secret ID: open " + dir + "/nope"},
		{"kubernetes without role", Config{Address: "http://127.0.0.1:1", Auth: AuthKubernetes}, "needs a Vault role"},
		{"kubernetes token file missing", Config{Address: "http://127.0.0.1:1", Auth: AuthKubernetes, Role: "r", ServiceAccountTokenFile: dir + "/sa"},
			"service-account token: open " + dir + "/sa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %q", err, tt.msg)
			}
		})
	}
}

func TestInvalidToken(t *testing.T) {
	v := testenv.NeedVault(t, vaultSrv)
	_, err := NewClient(context.Background(), Config{Address: v.Addr, Token: "not-a-token"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "invalid, expired or revoked") {
		t.Fatalf("got %v", err)
	}
}

// TLS: Vault behind a TLS front (the real server, proxied). Without its CA the
// handshake fails with a clear error; with it, or with verification skipped, it works.
func TestTLS(t *testing.T) {
	v := testenv.NeedVault(t, vaultSrv)
	target, _ := url.Parse(v.Addr)
	front := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	defer front.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw})
	ctx := context.Background()

	_, err := NewClient(ctx, Config{Address: front.URL, Token: v.Token})
	if !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "TLS with Vault at "+front.URL+" failed") {
		t.Fatalf("unknown CA: %v", err)
	}
	caFile := writeSecretFile(t, "ca.pem", string(caPEM))
	for _, cfg := range []Config{
		{Address: front.URL, Token: v.Token, CACert: caFile},
		{Address: front.URL, Token: v.Token, CACertPEM: caPEM},
		{Address: front.URL, Token: v.Token, SkipVerify: true},
	} {
		if _, err := NewClient(ctx, cfg); err != nil {
			t.Errorf("CACert=%q PEM=%v skip=%v: %v", cfg.CACert, cfg.CACertPEM != nil, cfg.SkipVerify, err)
		}
	}
	// https:// to a plain-HTTP Vault.
	_, err = NewClient(ctx, Config{Address: strings.Replace(v.Addr, "http://", "https://", 1), Token: v.Token})
	if !errors.Is(err, ErrTLS) {
		t.Fatalf("https to http: %v", err)
	}
}

// Retries: 5xx answers and timeouts are retried with backoff; 4xx never. The real
// Vault sits behind a proxy that injects the failures.
func TestRetries(t *testing.T) {
	v := testenv.NeedVault(t, vaultSrv)
	target, _ := url.Parse(v.Addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var calls, failFirst atomic.Int64
	var status atomic.Int64
	var hang atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/token/lookup-self" {
			proxy.ServeHTTP(w, r)
			return
		}
		n := calls.Add(1)
		if n <= failFirst.Load() {
			if hang.Load() {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return
			}
			w.WriteHeader(int(status.Load()))
			fmt.Fprintf(w, `{"errors":["injected %d"]}`, status.Load())
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	cfg := Config{Address: front.URL, Token: v.Token, MinRetryWait: time.Millisecond, MaxRetryWait: 5 * time.Millisecond, Retries: 3}

	tests := []struct {
		name      string
		status    int
		hang      bool
		fail      int64
		wantCalls int64
		wantErr   string
	}{
		{name: "500 then success", status: 500, fail: 2, wantCalls: 3},
		{name: "503 then success", status: 503, fail: 3, wantCalls: 4},
		{name: "429 then success", status: 429, fail: 1, wantCalls: 2},
		{name: "500 every time", status: 500, fail: 99, wantCalls: 4, wantErr: "HTTP 500, after retries): injected 500"},
		{name: "400 never retried", status: 400, fail: 99, wantCalls: 1, wantErr: "injected 400"},
		{name: "timeout then success", hang: true, fail: 1, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			failFirst.Store(tt.fail)
			status.Store(int64(tt.status))
			hang.Store(tt.hang)
			cfg := cfg
			if tt.hang {
				cfg.Timeout = 200 * time.Millisecond
			}
			_, err := NewClient(context.Background(), cfg)
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want %q", err, tt.wantErr)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("%d calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestRetryPolicy(t *testing.T) {
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	timeout := &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "read", Err: timeoutErr{}}}
	refused := &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}}
	tests := []struct {
		name  string
		ctx   context.Context
		code  int
		err   error
		retry bool
	}{
		{"500", ctx, 500, nil, true},
		{"502", ctx, 502, nil, true},
		{"503", ctx, 503, nil, true},
		{"501 not implemented", ctx, 501, nil, false},
		{"429", ctx, 429, nil, true},
		{"400", ctx, 400, nil, false},
		{"403", ctx, 403, nil, false},
		{"404", ctx, 404, nil, false},
		{"412", ctx, 412, nil, false},
		{"timeout", ctx, 0, timeout, true},
		{"connection refused", ctx, 0, refused, false},
		{"context canceled", canceled, 500, nil, false},
	}
	for _, tt := range tests {
		var resp *http.Response
		if tt.err == nil {
			resp = &http.Response{StatusCode: tt.code, Body: io.NopCloser(strings.NewReader(""))}
		}
		if got, _ := retryPolicy(tt.ctx, resp, tt.err); got != tt.retry {
			t.Errorf("%s: retry=%v, want %v", tt.name, got, tt.retry)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// AppRole: role ID and secret ID from files; the role's policy allows only
// sign-intermediate, which is enough to mint and not enough for anything else.
func TestAppRoleLogin(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, _ := newPKIRoot(t, v, admin, 24*time.Hour)
	policy := v.Unique("sign-only")
	if err := admin.Sys().PutPolicyWithContext(ctx, policy, signOnlyPolicy(mount)); err != nil {
		t.Fatal(err)
	}
	authMount := v.Unique("approle")
	if err := admin.Sys().EnableAuthWithOptionsWithContext(ctx, authMount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	rolePath := "auth/" + authMount + "/role/meshpki"
	if _, err := admin.Logical().WriteWithContext(ctx, rolePath, map[string]any{
		"token_policies": []string{policy}, "token_no_default_policy": true, "token_ttl": "10m",
	}); err != nil {
		t.Fatal(err)
	}
	s, err := admin.Logical().ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID := s.Data["role_id"].(string)
	s, err = admin.Logical().WriteWithContext(ctx, rolePath+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretID := s.Data["secret_id"].(string)

	cfg := Config{Address: v.Addr, Auth: AuthAppRole, AuthMount: authMount,
		RoleIDFile: writeSecretFile(t, "role-id", roleID), SecretIDFile: writeSecretFile(t, "secret-id", secretID)}
	c, err := NewClient(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewPKIIssuer(ctx, c.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	bundles := mintAll(t, iss, []ca.Profile{hourProfile("east"), hourProfile("west")})
	checkMesh(t, bundles)
	// The role can do nothing else.
	_, err = c.Logical().WriteWithContext(ctx, "secret/data/x", map[string]any{"data": map[string]any{"a": "b"}})
	if err = describe(err, "create", "secret/data/x"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("AppRole token wrote to KV: %v", err)
	}

	cfg.SecretIDFile = writeSecretFile(t, "wrong", "00000000-0000-0000-0000-000000000000")
	_, err = NewClient(ctx, cfg)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "approle login at auth/"+authMount+"/login failed") {
		t.Fatalf("wrong secret ID: %v", err)
	}
	if strings.Contains(err.Error(), secretID) || strings.Contains(err.Error(), "00000000-0000") {
		t.Errorf("error shows a secret ID: %v", err)
	}
}

// Kubernetes auth against the real Vault; the Kubernetes side (TokenReview) is a
// stub that accepts one service-account token.
func TestKubernetesLogin(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, _ := newPKIRoot(t, v, admin, 24*time.Hour)
	policy := v.Unique("sign-only")
	if err := admin.Sys().PutPolicyWithContext(ctx, policy, signOnlyPolicy(mount)); err != nil {
		t.Fatal(err)
	}
	jwt := serviceAccountJWT(t, "istio-system", "meshpki")
	var reviews atomic.Int64
	kube := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		reviews.Add(1)
		var review struct {
			Spec struct{ Token string } `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&review)
		status := map[string]any{"authenticated": false}
		if review.Spec.Token == jwt {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:istio-system:meshpki", "uid": "0b8b5b4e-0000-4000-8000-000000000001",
				"groups": []string{"system:serviceaccounts"},
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status,
		})
	}))
	defer kube.Close()

	authMount := v.Unique("kubernetes")
	if err := admin.Sys().EnableAuthWithOptionsWithContext(ctx, authMount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, "auth/"+authMount+"/config", map[string]any{
		"kubernetes_host": kube.URL, "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, "auth/"+authMount+"/role/meshpki", map[string]any{
		"bound_service_account_names": []string{"meshpki"}, "bound_service_account_namespaces": []string{"istio-system"},
		"token_policies": []string{policy}, "token_no_default_policy": true, "token_ttl": "10m",
	}); err != nil {
		t.Fatal(err)
	}

	cfg := Config{Address: v.Addr, Auth: AuthKubernetes, AuthMount: authMount, Role: "meshpki",
		ServiceAccountTokenFile: writeSecretFile(t, "token", jwt)}
	c, err := NewClient(ctx, cfg)
	if err != nil {
		t.Fatalf("%v (reviews %d)", err, reviews.Load())
	}
	if reviews.Load() == 0 {
		t.Error("Vault never asked Kubernetes to review the token")
	}
	iss, err := NewPKIIssuer(ctx, c.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Mint(ctx, iss, hourProfile("east")); err != nil {
		t.Fatal(err)
	}

	cfg.ServiceAccountTokenFile = writeSecretFile(t, "other", serviceAccountJWT(t, "default", "someone"))
	_, err = NewClient(ctx, cfg)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "kubernetes login at auth/"+authMount+"/login failed") {
		t.Fatalf("foreign service account: %v", err)
	}
}

// serviceAccountJWT makes a token shaped like a Kubernetes service-account token
// (ES256, signed by a throwaway key: the TokenReview stub is what vouches for it).
func serviceAccountJWT(t *testing.T, namespace, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now().Unix()
	signing := enc(map[string]any{"alg": "ES256", "typ": "JWT", "kid": "test"}) + "." + enc(map[string]any{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:" + namespace + ":" + name,
		"iat": now, "nbf": now, "exp": now + 3600,
		"kubernetes.io/serviceaccount/namespace":            namespace,
		"kubernetes.io/serviceaccount/service-account.name": name,
		"kubernetes.io/serviceaccount/service-account.uid":  "0b8b5b4e-0000-4000-8000-000000000001",
		"kubernetes.io/serviceaccount/secret.name":          name + "-token",
	})
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// The package reads no environment variable: only Config counts (the api package
// would pick up VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS on its own). One leak
// remains, inside api.NewClient: a malformed VAULT_* variable (say VAULT_CACERT naming
// a missing file) makes it fail, even though its value is not used.
func TestIgnoresEnvironment(t *testing.T) {
	v := testenv.NeedVault(t, vaultSrv)
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", v.Token)
	t.Setenv("VAULT_NAMESPACE", "elsewhere")
	t.Setenv("VAULT_HEADERS", `{"X-Extra":"1"}`)
	ctx := context.Background()
	c, err := NewClient(ctx, Config{Address: v.Addr, Token: v.Token})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace() != "" || c.Headers().Get("X-Extra") != "" {
		t.Errorf("namespace %q, headers %v taken from the environment", c.Namespace(), c.Headers())
	}
	_, err = NewClient(ctx, Config{Address: v.Addr, Token: "s.wrong"})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("the environment's token was used instead of Config's: %v", err)
	}
}
