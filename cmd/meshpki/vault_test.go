package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/vault"
)

// vaultEnv points the CLI at v through the standard environment, as a user would,
// with nothing inherited from the developer's shell (nor ~/.vault-token).
func vaultEnv(t *testing.T, v *testenv.VaultServer, token string) {
	t.Helper()
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "VAULT_CAPATH", "VAULT_NAMESPACE",
		"VAULT_SKIP_VERIFY", "VAULT_ROLE_ID", "VAULT_SECRET_ID"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("HOME", t.TempDir())
	if v != nil {
		t.Setenv("VAULT_ADDR", v.Addr)
	}
	if token != "" {
		t.Setenv("VAULT_TOKEN", token)
	}
}

// vaultAdmin is a root-token client for setting up policies and auth methods.
func vaultAdmin(t *testing.T, v *testenv.VaultServer) *api.Client {
	t.Helper()
	c, err := vault.NewClient(context.Background(), vault.Config{Address: v.Addr, Token: v.Token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// policyToken returns a token holding only policy hcl (plus the default policy when
// withDefault).
func policyToken(t *testing.T, admin *api.Client, name, hcl string, withDefault bool) string {
	t.Helper()
	ctx := context.Background()
	if err := admin.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
		t.Fatal(err)
	}
	s, err := admin.Logical().WriteWithContext(ctx, "auth/token/create", map[string]any{
		"policies": []string{name}, "no_default_policy": !withDefault, "ttl": "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

func expectExit(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	code, out, errs := meshpki(t, args...)
	if code != want {
		t.Fatalf("meshpki %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errs)
	}
	return out, errs
}

// PKI mode through the CLI: the root is generated in Vault, three clusters are minted
// with a token that may only update sign-intermediate (given as a file), and the
// bundles pass verify --mtls. A second root in the same mount is refused.
func TestVaultPKIEndToEnd(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	vaultEnv(t, v, v.Token)
	dir := t.TempDir()

	out, _ := expectExit(t, 0, "root", "create", "--vault-pki", "pki-mesh", "--enable-mount", "--ttl", "3650d", "-o", "json")
	var root struct {
		VaultPKI, VaultIssuerID, Sha256Fingerprint string
	}
	if err := json.Unmarshal([]byte(out), &root); err != nil || root.VaultPKI != "pki-mesh" || root.VaultIssuerID == "" {
		t.Fatalf("root create -o json: %v\n%s", err, out)
	}
	_, errs := expectExit(t, 2, "root", "create", "--vault-pki", "pki-mesh")
	if !strings.Contains(errs, "already holds a root") {
		t.Errorf("second root: %s", errs)
	}

	signOnly := policyToken(t, admin, "mesh-signer", `path "pki-mesh/root/sign-intermediate" { capabilities = ["update"] }`, false)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(signOnly+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vaultEnv(t, v, "")
	bundles := filepath.Join(dir, "bundles")
	out, _ = expectExit(t, 0, "intermediate", "create", "--vault-pki", "pki-mesh", "--vault-token-file", tokenFile,
		"--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	if strings.Count(out, "minted") != 3 {
		t.Errorf("want 3 clusters minted:\n%s", out)
	}
	out, _ = expectExit(t, 0, "verify", "--mtls", "-o", "json", filepath.Join(bundles, "east"), filepath.Join(bundles, "west"), filepath.Join(bundles, "north"))
	var res struct {
		OK      bool
		Bundles []struct {
			RootFingerprints []string `json:"rootFingerprints"`
		}
		Handshakes []struct {
			OK    bool
			Pairs int
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	pairs := 0
	for _, h := range res.Handshakes {
		pairs += h.Pairs
	}
	if !res.OK || pairs != 6 {
		t.Fatalf("verify --mtls: %s", out)
	}
	for _, b := range res.Bundles {
		if len(b.RootFingerprints) != 1 || b.RootFingerprints[0] != root.Sha256Fingerprint {
			t.Errorf("bundle trusts %v, want Vault's root %s", b.RootFingerprints, root.Sha256Fingerprint)
		}
	}
}

// KV mode through the CLI, with --store-bundles: the second root create is refused
// and the first root stays; bundles kept in Vault are never replaced without --force.
func TestVaultKVEndToEnd(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	vaultEnv(t, v, v.Token)
	dir := t.TempDir()
	ctx := context.Background()

	out, _ := expectExit(t, 0, "root", "create", "--vault-kv", "secret/meshpki/root", "-o", "json")
	var first struct{ VaultKV, Sha256Fingerprint string }
	if err := json.Unmarshal([]byte(out), &first); err != nil || first.VaultKV != "secret/meshpki/root" {
		t.Fatalf("root create -o json: %v\n%s", err, out)
	}
	_, errs := expectExit(t, 2, "root", "create", "--vault-kv", "secret/meshpki/root")
	if !strings.Contains(errs, "a root is never overwritten") {
		t.Errorf("second root create: %s", errs)
	}
	k := vault.KVPath{Mount: "secret", Path: "meshpki/root"}
	kept, err := vault.LoadRootKV(ctx, admin.Logical(), k, time.Now())
	if err != nil || ca.Fingerprint(kept.Cert) != first.Sha256Fingerprint {
		t.Fatalf("the first root did not survive: %v", err)
	}

	bundles := filepath.Join(dir, "bundles")
	expectExit(t, 0, "intermediate", "create", "--vault-kv", "secret/meshpki/root", "--cluster", "east", "--cluster", "west",
		"--out", bundles, "--store-bundles", "secret/meshpki/bundles")
	expectExit(t, 0, "verify", "--mtls", filepath.Join(bundles, "east"), filepath.Join(bundles, "west"))
	s, err := admin.Logical().ReadWithContext(ctx, "secret/data/meshpki/bundles/east")
	if err != nil || s == nil {
		t.Fatalf("bundle not kept in Vault: %v", err)
	}
	onDisk, err := ca.ReadDir(filepath.Join(bundles, "east"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range onDisk {
		if s.Data["data"].(map[string]any)[name] != string(content) {
			t.Errorf("Vault's copy of east/%s differs from the file", name)
		}
	}

	// Again without --force: refused before minting, nothing written anywhere.
	again := filepath.Join(dir, "again")
	_, errs = expectExit(t, 2, "intermediate", "create", "--vault-kv", "secret/meshpki/root", "--cluster", "east",
		"--out", again, "--store-bundles", "secret/meshpki/bundles")
	if !strings.Contains(errs, "already keeps a bundle at secret/meshpki/bundles/<cluster> for east") || exists(again) {
		t.Errorf("store over an existing bundle: exists(out)=%v\n%s", exists(again), errs)
	}
	expectExit(t, 0, "intermediate", "create", "--vault-kv", "secret/meshpki/root", "--cluster", "east",
		"--out", again, "--store-bundles", "secret/meshpki/bundles", "--force")
	if n, err := vault.KVVersion(ctx, admin.Logical(), k.Child("x")); err != nil || n != 0 {
		t.Fatal(n, err)
	}
	if n, _ := vault.KVVersion(ctx, admin.Logical(), vault.KVPath{Mount: "secret", Path: "meshpki/bundles/east"}); n != 2 {
		t.Errorf("east's bundle version %d after --force, want 2", n)
	}

	// Bundles kept beside the root: a cluster named like the root's secret, or its
	// CRL, would replace the root (or its CRL) with a bundle under --force. Refused
	// before anything is minted; the root is still the first one.
	expectExit(t, 0, "crl", "sign", "--vault-kv", "secret/meshpki/root", "--out", filepath.Join(dir, "root-crl.pem"))
	crlVersion, err := vault.KVVersion(ctx, admin.Logical(), k.Child(vault.KVCRLName))
	if err != nil || crlVersion == 0 {
		t.Fatalf("crl sign kept no CRL beside the KV root: %d %v", crlVersion, err)
	}
	for _, cluster := range []string{"root", vault.KVCRLName} {
		base := "secret/meshpki"
		if cluster == vault.KVCRLName {
			base = "secret/meshpki/root"
		}
		side := filepath.Join(dir, "beside-"+cluster)
		_, errs = expectExit(t, 2, "intermediate", "create", "--vault-kv", "secret/meshpki/root", "--cluster", cluster,
			"--out", side, "--store-bundles", base, "--force")
		if !strings.Contains(errs, "cluster "+cluster+"'s bundle would be kept at secret/meshpki/root") || exists(side) {
			t.Errorf("bundle over the root's secrets (cluster %s): exists(out)=%v\n%s", cluster, exists(side), errs)
		}
	}
	kept, err = vault.LoadRootKV(ctx, admin.Logical(), k, time.Now())
	if err != nil || ca.Fingerprint(kept.Cert) != first.Sha256Fingerprint {
		t.Fatalf("the root did not survive a bundle stored beside it: %v", err)
	}
	if n, _ := vault.KVVersion(ctx, admin.Logical(), k.Child(vault.KVCRLName)); n != crlVersion {
		t.Errorf("the root's CRL is at version %d, want %d", n, crlVersion)
	}
}

// Failures a user meets: each exits non-zero with a clear message, and neither a
// bundle folder nor the output folder appears.
func TestVaultFailuresWriteNothing(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	vaultEnv(t, v, v.Token)
	expectExit(t, 0, "root", "create", "--vault-pki", "pki", "--enable-mount", "--ttl", "2h")
	expectExit(t, 0, "root", "create", "--vault-kv", "secret/root")
	readOnly := policyToken(t, admin, "reader", `path "pki/*" { capabilities = ["read", "list"] }`, true)
	noDefault := policyToken(t, admin, "nothing", `path "pki/issuers" { capabilities = ["list"] }`, false)
	dir := t.TempDir()

	tests := []struct {
		name  string
		token string
		args  []string
		code  int
		msg   []string
	}{
		{name: "403 found up front", token: readOnly, args: []string{"--vault-pki", "pki", "--ttl", "1h"}, code: 1,
			msg: []string{`may not "update" pki/root/sign-intermediate`, `path "pki/root/sign-intermediate" { capabilities = ["update"] }`}},
		{name: "403 when signing", token: noDefault, args: []string{"--vault-pki", "pki", "--ttl", "1h"}, code: 1,
			msg: []string{`denied "update" on pki/root/sign-intermediate (HTTP 403)`}},
		// Found before any key is made: bad input, exit 2.
		{name: "root near expiry", token: v.Token, args: []string{"--vault-pki", "pki"}, code: 2,
			msg: []string{"root expires before the requested not-after", "cannot sign these intermediates"}},
		{name: "no such mount", token: v.Token, args: []string{"--vault-pki", "pki2", "--ttl", "1h"}, code: 2, msg: []string{"no PKI secrets engine at pki2/"}},
		{name: "no such issuer", token: v.Token, args: []string{"--vault-pki", "pki", "--vault-issuer", "x", "--ttl", "1h"}, code: 2, msg: []string{`has no issuer "x"`}},
		{name: "no such KV secret", token: v.Token, args: []string{"--vault-kv", "secret/nope"}, code: 2, msg: []string{"no secret at secret/nope"}},
		{name: "invalid token", token: "s.nope", args: []string{"--vault-kv", "secret/root"}, code: 1, msg: []string{"invalid, expired or revoked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vaultEnv(t, v, tt.token)
			out := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			args := append([]string{"intermediate", "create", "--cluster", "east", "--cluster", "west", "--out", out}, tt.args...)
			stdout, errs := expectExit(t, tt.code, args...)
			for _, m := range tt.msg {
				if !strings.Contains(stdout+errs, m) {
					t.Errorf("output does not say %q:\nstdout:\n%s\nstderr:\n%s", m, stdout, errs)
				}
			}
			if exists(out) {
				t.Errorf("%s was created", out)
			}
		})
	}

	// Sealed last: sealing is for good.
	vaultEnv(t, v, v.Token)
	rootDir := filepath.Join(dir, "root")
	expectExit(t, 0, "root", "create", "--out", rootDir)
	if err := v.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "sealed")
	for _, args := range [][]string{
		{"intermediate", "create", "--vault-pki", "pki", "--cluster", "east", "--out", out, "--ttl", "1h"},
		{"intermediate", "create", "--vault-kv", "secret/root", "--cluster", "east", "--out", out},
		{"intermediate", "create", "--root-dir", rootDir, "--cluster", "east", "--out", out, "--store-bundles", "secret/b"},
		{"root", "create", "--vault-kv", "secret/root2"},
	} {
		_, errs := expectExit(t, 1, args...)
		if !strings.Contains(errs, "Vault at "+v.Addr+" is sealed") {
			t.Errorf("%v: %s", args, errs)
		}
	}
	if exists(out) {
		t.Error("a sealed Vault left an output folder")
	}
}

// AppRole through the CLI: role ID from the environment, secret ID from a file.
func TestVaultAppRoleCLI(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	ctx := context.Background()
	vaultEnv(t, v, v.Token)
	expectExit(t, 0, "root", "create", "--vault-pki", "pki", "--enable-mount")
	if err := admin.Sys().PutPolicyWithContext(ctx, "signer", `path "pki/root/sign-intermediate" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	if err := admin.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, "auth/approle/role/meshpki", map[string]any{"token_policies": []string{"signer"}}); err != nil {
		t.Fatal(err)
	}
	s, err := admin.Logical().ReadWithContext(ctx, "auth/approle/role/meshpki/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID := s.Data["role_id"].(string)
	if s, err = admin.Logical().WriteWithContext(ctx, "auth/approle/role/meshpki/secret-id", nil); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(s.Data["secret_id"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}

	vaultEnv(t, v, "")
	t.Setenv("VAULT_ROLE_ID", roleID)
	out := filepath.Join(t.TempDir(), "bundles")
	expectExit(t, 0, "intermediate", "create", "--vault-pki", "pki", "--vault-auth", "approle", "--vault-secret-id-file", secretFile,
		"--cluster", "east", "--out", out)
	expectExit(t, 0, "verify", filepath.Join(out, "east"))

	_, errs := expectExit(t, 2, "intermediate", "create", "--vault-pki", "pki", "--vault-auth", "approle", "--cluster", "east", "--out", out+"2")
	if !strings.Contains(errs, "needs a secret ID") {
		t.Errorf("no secret ID: %s", errs)
	}
}

// Flag mistakes: exit 2 before any network traffic. Secrets have no flags at all.
func TestVaultFlagErrors(t *testing.T) {
	vaultEnv(t, nil, "")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1") // nothing listens: reaching it would be a bug
	dir := t.TempDir()
	tests := []struct {
		args []string
		msg  string
	}{
		{[]string{"intermediate", "create", "--cluster", "e", "--out", dir}, "no root given"},
		{[]string{"intermediate", "create", "--root-dir", dir, "--vault-pki", "pki", "--cluster", "e", "--out", dir}, "only one of --root-dir, --ca-dir, --vault-pki and --vault-kv"},
		{[]string{"intermediate", "create", "--root-dir", dir, "--vault-issuer", "x", "--cluster", "e", "--out", dir}, "--vault-issuer needs --vault-pki"},
		{[]string{"intermediate", "create", "--vault-kv", "secret", "--cluster", "e", "--out", dir}, "--vault-kv: KV path \"secret\": want MOUNT/PATH"},
		{[]string{"intermediate", "create", "--vault-kv", "secret/data/root", "--cluster", "e", "--out", dir}, "without the API's /data/"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--cluster", "e", "--out", dir}, "no Vault token"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-addr", "", "--cluster", "e", "--out", dir}, "no Vault address"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-auth", "ldap", "--cluster", "e", "--out", dir}, "unknown Vault auth method"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-auth", "approle", "--cluster", "e", "--out", dir}, "needs a role ID"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-auth", "kubernetes", "--cluster", "e", "--out", dir}, "needs --vault-role ROLE"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-token-file", dir + "/nope", "--cluster", "e", "--out", dir}, "--vault-token-file: open"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-token", "s.x", "--cluster", "e", "--out", dir}, "flag provided but not defined: -vault-token"},
		{[]string{"intermediate", "create", "--vault-pki", "pki", "--vault-secret-id", "x", "--cluster", "e", "--out", dir}, "flag provided but not defined"},
		{[]string{"intermediate", "create", "--root-dir", dir, "--store-bundles", "kv", "--cluster", "e", "--out", dir}, "--store-bundles: KV path"},
		{[]string{"root", "create"}, "--out DIR, --vault-pki MOUNT or --vault-kv MOUNT/PATH"},
		{[]string{"root", "create", "--out", dir, "--vault-kv", "secret/x"}, "only one of --out, --vault-pki and --vault-kv"},
		{[]string{"root", "create", "--vault-kv", "secret/x", "--enable-mount"}, "need --vault-pki"},
	}
	for _, tt := range tests {
		_, errs := expectExit(t, 2, tt.args...)
		if !strings.Contains(errs, tt.msg) {
			t.Errorf("%v: stderr does not say %q:\n%s", tt.args, tt.msg, errs)
		}
	}
	out, _ := expectExit(t, 0, "intermediate", "create", "--help")
	for _, f := range []string{"--vault-pki", "--vault-kv", "--vault-issuer", "--store-bundles", "$VAULT_ADDR", "$VAULT_SKIP_VERIFY"} {
		if !strings.Contains(out, f) {
			t.Errorf("help lacks %s", f)
		}
	}
}

// The real binary against the real Vault, configured only through the environment.
func TestVaultBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	v := testenv.StartVaultT(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshpki")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runBin := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		noKeys(t, out.String(), errb.String())
		if code != want {
			t.Fatalf("meshpki %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return errb.String()
	}
	runBin(0, "root", "create", "--vault-pki", "pki", "--enable-mount")
	runBin(0, "intermediate", "create", "--vault-pki", "pki", "--cluster", "east", "--cluster", "west", "--out", "bundles")
	runBin(0, "verify", "--mtls", "bundles/east", "bundles/west")
	if err := v.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	errs := runBin(1, "intermediate", "create", "--vault-pki", "pki", "--cluster", "north", "--out", "more")
	if !strings.Contains(errs, "is sealed") || exists(filepath.Join(dir, "more")) {
		t.Errorf("sealed: %s", errs)
	}
}
