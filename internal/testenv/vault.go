package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Environment variables that drive the Vault test server.
const (
	// EnvVaultdevBin is the path of the vaultdev binary (`tools/build.sh vaultdev`
	// prints its folder). Unset: tests that need Vault skip.
	EnvVaultdevBin = "VAULTDEV_BIN"
)

// VaultServer is a running vaultdev: a real Vault core with PKI, KV v2 (mounted at
// secret/), AppRole and Kubernetes auth, in memory, on 127.0.0.1.
type VaultServer struct {
	// Addr is the server's URL, e.g. http://127.0.0.1:40123.
	Addr string
	// Token is a root token.
	Token string

	cmd    *exec.Cmd
	dir    string
	stderr *bytes.Buffer
	done   chan struct{}
	seq    atomic.Int64
}

// vaultRequired reports whether a missing server is a failure.
// MESHPKI_REQUIRE_SERVERS=1 turns the skips into failures (make test sets it).
func vaultRequired() bool { return os.Getenv(vaultRequireEnv) == "1" }

// vaultRequireEnv is vaultRequireEnv (k8s.go), spelled out so that this file
// stands alone.
const vaultRequireEnv = "MESHPKI_REQUIRE_SERVERS"

// errNoVault means VAULTDEV_BIN is unset and servers are not required.
var errNoVault = errors.New(EnvVaultdevBin + " is unset: tests that need a real Vault are skipped (run `make test`, or set " +
	EnvVaultdevBin + "=$(tools/build.sh vaultdev)/vaultdev)")

// StartVault starts VAULTDEV_BIN on 127.0.0.1 with a free port and waits until it
// serves. It returns errNoVault (see NoVault) when VAULTDEV_BIN is unset.
func StartVault() (*VaultServer, error) {
	bin := os.Getenv(EnvVaultdevBin)
	if bin == "" {
		return nil, errNoVault
	}
	dir, err := os.MkdirTemp("", "meshpki-vaultdev-")
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready.json")
	v := &VaultServer{dir: dir, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	v.cmd = exec.Command(bin, "-addr", "127.0.0.1:0", "-token", "root-"+hex.EncodeToString(tok),
		"-ready-file", ready, "-kv-path", "secret", "-log-level", vaultLogLevel())
	v.cmd.Stdout = nil
	v.cmd.Stderr = v.stderr
	if os.Getenv("MESHPKI_VAULT_LOG") != "" {
		v.cmd.Stderr = io.MultiWriter(v.stderr, os.Stderr)
	}
	v.cmd.SysProcAttr = vaultProcAttr()
	if err := v.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = v.cmd.Wait(); close(v.done) }()
	deadline := time.After(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var r struct{ Addr, Token string }
			if err := json.Unmarshal(b, &r); err != nil {
				v.Stop()
				return nil, fmt.Errorf("vaultdev ready file: %w", err)
			}
			v.Addr, v.Token = r.Addr, r.Token
			return v, nil
		}
		select {
		case <-v.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("vaultdev exited before serving: %s", v.stderr.String())
		case <-deadline:
			v.Stop()
			return nil, fmt.Errorf("vaultdev not ready after 60s: %s", v.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server and removes its files. Everything it holds is in memory and
// thrown away, so there is no point in Vault's orderly (and slow: seconds) shutdown.
func (v *VaultServer) Stop() {
	if v == nil || v.cmd == nil || v.cmd.Process == nil {
		return
	}
	_ = v.cmd.Process.Kill()
	<-v.done
	os.RemoveAll(v.dir)
}

// Unique returns prefix-<n>, a name no earlier call on v returned: fresh mounts,
// policies and paths per test on a shared server.
func (v *VaultServer) Unique(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, v.seq.Add(1))
}

// WithVault is for TestMain: it starts one server for the package, stores it in *v
// (nil when VAULTDEV_BIN is unset), runs the tests and stops the server. A missing
// binary fails the run when MESHPKI_REQUIRE_SERVERS=1; a binary that does not start
// always fails it.
//
//	var vaultSrv *testenv.VaultServer
//	func TestMain(m *testing.M) { os.Exit(testenv.WithVault(m, &vaultSrv)) }
func WithVault(m *testing.M, v **VaultServer) int {
	srv, err := StartVault()
	switch {
	case errors.Is(err, errNoVault) && vaultRequired():
		fmt.Fprintf(os.Stderr, "testenv: %s=1 but %s is unset\n", vaultRequireEnv, EnvVaultdevBin)
		return 1
	case errors.Is(err, errNoVault):
	case err != nil:
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*v = srv
	defer srv.Stop()
	return m.Run()
}

// NeedVault skips t when v is nil (VAULTDEV_BIN unset; WithVault already failed the
// run if servers are required) and returns v.
func NeedVault(t testing.TB, v *VaultServer) *VaultServer {
	t.Helper()
	if v == nil {
		if vaultRequired() {
			t.Fatalf("%s=1 but no Vault server is running", vaultRequireEnv)
		}
		t.Skip(errNoVault.Error())
	}
	return v
}

// StartVaultT starts a server of t's own (for tests that seal it, or packages without
// a TestMain), stopped when t ends. It skips t when VAULTDEV_BIN is unset, and fails
// it instead when MESHPKI_REQUIRE_SERVERS=1.
func StartVaultT(t testing.TB) *VaultServer {
	t.Helper()
	v, err := StartVault()
	if errors.Is(err, errNoVault) {
		if vaultRequired() {
			t.Fatalf("%s=1 but %s is unset", vaultRequireEnv, EnvVaultdevBin)
		}
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Stop)
	return v
}

// Seal seals the server (PUT sys/seal with the root token).
func (v *VaultServer) Seal(ctx context.Context) error {
	return v.rootRequest(ctx, "PUT", "sys/seal", nil)
}

// rootRequest sends one request to the server with the root token.
func (v *VaultServer) rootRequest(ctx context.Context, method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", v.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	return nil
}

// vaultLogLevel is vaultdev's log level: MESHPKI_VAULT_LOG (e.g. debug) or error.
func vaultLogLevel() string {
	if l := os.Getenv("MESHPKI_VAULT_LOG"); l != "" {
		return l
	}
	return "error"
}
