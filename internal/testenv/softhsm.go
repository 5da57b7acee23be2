package testenv

// A real PKCS#11 token for tests: SoftHSM2 (Debian package softhsm2, which .ci/run
// installs), loaded into the test process through its PKCS#11 module as an HSM
// vendor's module is loaded.
//
// Environment:
//
//	SOFTHSM2_MODULE  path of libsofthsm2.so when it is not in a Debian place

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// EnvSoftHSMModule overrides where libsofthsm2.so is looked for.
const EnvSoftHSMModule = "SOFTHSM2_MODULE"

// softhsmModules are where Debian and Ubuntu put the module.
var softhsmModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// SoftHSM is one initialised SoftHSM2 token of its own, for one test.
type SoftHSM struct {
	// Module is the PKCS#11 module's path.
	Module string
	// Token is the token's label, unique in the process.
	Token string
	// PIN is the user PIN; PINFile holds it (0600), for pin-source.
	PIN, PINFile string
}

// softhsm is the process's SoftHSM2 store: one token folder, named by
// SOFTHSM2_CONF, which the module reads when it is initialised, and the tokens in
// it. SoftHSM2 finds the tokens when the module is initialised: a token made while
// another test of the process holds the module open stays unseen ("no such
// token"). So every token the process hands out is made first, before any test
// loads the module: EnvSoftHSMTokens of them (default 24).
var softhsm struct {
	once   sync.Once
	err    error
	module string
	tokens []*SoftHSM
	next   atomic.Int64
}

// EnvSoftHSMTokens sets how many tokens a test process makes up front (default 24;
// raise it for go test -count=N).
const EnvSoftHSMTokens = "MESHPKI_SOFTHSM_TOKENS"

// NewSoftHSM returns a token of its own for t, initialised in the process's
// SoftHSM2 store, with a user PIN and a PIN file. Without SoftHSM2 (or without cgo,
// which loading a PKCS#11 module needs) the test is skipped, or failed when
// MESHPKI_REQUIRE_SERVERS=1.
func NewSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	if !cgoEnabled {
		requireOrSkip(t, "this test binary is built without cgo, which loading a PKCS#11 module needs")
	}
	module := os.Getenv(EnvSoftHSMModule)
	for _, m := range softhsmModules {
		if module != "" {
			break
		}
		if _, err := os.Stat(m); err == nil {
			module = m
		}
	}
	if module == "" {
		requireOrSkip(t, "SoftHSM2's module is not installed (apt-get install softhsm2)")
	}
	util := Tool(t, "softhsm2-util")
	softhsm.once.Do(func() { softhsm.err = makeTokens(module, util) })
	if softhsm.err != nil {
		t.Fatalf("SoftHSM2 tokens: %v", softhsm.err)
	}
	i := int(softhsm.next.Add(1)) - 1
	if i >= len(softhsm.tokens) {
		t.Fatalf("the %d SoftHSM2 tokens made for this test process are all taken: raise %s", len(softhsm.tokens), EnvSoftHSMTokens)
	}
	return softhsm.tokens[i]
}

// makeTokens makes the process's token store and its tokens.
func makeTokens(module, util string) error {
	n := 24
	if v := os.Getenv(EnvSoftHSMTokens); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			return fmt.Errorf("%s=%q: want a positive number", EnvSoftHSMTokens, v)
		}
	}
	dir, err := os.MkdirTemp("", "meshpki-softhsm-")
	if err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(dir, "tokens"))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		h := &SoftHSM{Module: module, Token: fmt.Sprintf("meshpki-test-%d", i), PIN: randomHex(6), PINFile: filepath.Join(dir, fmt.Sprintf("pin-%d", i))}
		if err := os.WriteFile(h.PINFile, []byte(h.PIN+"\n"), 0o600); err != nil {
			return err
		}
		if out, err := exec.Command(util, "--init-token", "--free", "--label", h.Token, "--pin", h.PIN, "--so-pin", randomHex(6)).CombinedOutput(); err != nil {
			return fmt.Errorf("softhsm2-util --init-token: %w\n%s", err, out)
		}
		softhsm.tokens = append(softhsm.tokens, h)
	}
	return nil
}

// URI is the pkcs11 URI of key id (hex) and object (label) in the token, with the
// PIN read from PINFile.
func (h *SoftHSM) URI(id, object string) string {
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s;id=%s;object=%s?pin-source=%s", h.Module, h.Token, id, object, h.PINFile)
}

// URIWithoutPIN is URI without pin-source: the PIN must come from elsewhere.
func (h *SoftHSM) URIWithoutPIN(id, object string) string {
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s;id=%s;object=%s", h.Module, h.Token, id, object)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

func requireOrSkip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(k8sRequire) == "1" {
		t.Fatalf("%s and %s=1 (.ci/run installs SoftHSM2)", why, k8sRequire)
	}
	t.Skip(why + ": skipping a test that needs a PKCS#11 token")
}
