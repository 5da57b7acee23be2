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

// softhsm is the process's SoftHSM2 configuration: one token folder, named by
// SOFTHSM2_CONF, which the module reads when it is initialised. It is set once
// for the process, as the module is loaded once per process.
var softhsm struct {
	once   sync.Once
	conf   string
	err    error
	tokens atomic.Int64
}

// NewSoftHSM initialises a new token for t in the process's SoftHSM2 store and
// returns it. Without SoftHSM2 (or without cgo, which loading a PKCS#11 module
// needs) the test is skipped, or failed when MESHPKI_REQUIRE_SERVERS=1.
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
	util, err := exec.LookPath("softhsm2-util")
	if module == "" || err != nil {
		requireOrSkip(t, "SoftHSM2 is not installed (apt-get install softhsm2)")
	}
	softhsm.once.Do(func() {
		dir, err := os.MkdirTemp("", "meshpki-softhsm-")
		if err != nil {
			softhsm.err = err
			return
		}
		if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
			softhsm.err = err
			return
		}
		softhsm.conf = filepath.Join(dir, "softhsm2.conf")
		conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(dir, "tokens"))
		if softhsm.err = os.WriteFile(softhsm.conf, []byte(conf), 0o600); softhsm.err == nil {
			softhsm.err = os.Setenv("SOFTHSM2_CONF", softhsm.conf)
		}
	})
	if softhsm.err != nil {
		t.Fatalf("SoftHSM2 configuration: %v", softhsm.err)
	}
	h := &SoftHSM{Module: module, Token: fmt.Sprintf("meshpki-test-%d", softhsm.tokens.Add(1)), PIN: randomPIN(t)}
	h.PINFile = filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(h.PINFile, []byte(h.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(util, "--init-token", "--free", "--label", h.Token, "--pin", h.PIN, "--so-pin", randomPIN(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return h
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

func randomPIN(t testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
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
