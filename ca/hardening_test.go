package ca

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readCorpusRoot loads a corpus root without ReadRootDir's checks, as a caller of
// NewLocalIssuer might.
func readCorpusRoot(t *testing.T, name string) *Root {
	t.Helper()
	dir := filepath.Join("..", "testdata", "roots", name)
	certPEM, err := os.ReadFile(filepath.Join(dir, RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &Root{Cert: cert, Signer: key}
}

// TestMintRefusesWhatIstiodRefuses: even a root that skipped every up-front check
// never yields a bundle istiod's chain check would reject: Mint checks the chain of
// what it signed itself too.
func TestMintRefusesWhatIstiodRefuses(t *testing.T) {
	for _, tc := range []struct{ root, want string }{
		{"root-eku-client-only", "extended key usage"},
		{"root-unknown-critical-extension", "unhandled critical extension"},
		{"root-name-constraints-exclude-san", "name constraints"},
		{"root-excluded-dns", "name constraints"},
	} {
		t.Run(tc.root, func(t *testing.T) {
			root := readCorpusRoot(t, tc.root)
			_, err := Mint(context.Background(), NewLocalIssuer(root), IntermediateProfile("c", ""))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Mint: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A root with constraints that allow the SAN still mints.
	mint(t, NewLocalIssuer(readCorpusRoot(t, "ok-name-constraints-svc")), IntermediateProfile("c", ""))
}
