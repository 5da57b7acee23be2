package rootsource_test

import (
	"fmt"
	"os"
	"testing"

	cflog "github.com/cloudflare/cfssl/log"

	"github.com/meshpki/meshpki/internal/testenv"
)

// TestMain starts a Vault dev server for Example_vaultPKI, which finds it through
// VAULT_ADDR and VAULT_TOKEN as a user's program would; without VAULTDEV_BIN that
// example is skipped.
func TestMain(m *testing.M) {
	cflog.Level = cflog.LevelFatal
	if os.Getenv(testenv.EnvVaultdevBin) == "" || !testenv.ExamplesSelected() {
		if !testenv.SkipExamples("^Example_vault", testenv.EnvVaultdevBin+" is not set") {
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	srv, err := testenv.StartVault()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	os.Setenv("VAULT_ADDR", srv.Addr)
	os.Setenv("VAULT_TOKEN", srv.Token)
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}
