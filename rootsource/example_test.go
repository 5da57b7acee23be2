package rootsource_test

import (
	"context"
	"fmt"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/rootsource"
	"github.com/meshpki/meshpki/vault"
)

// Mint a mesh's bundles from a root in a folder into a folder, one bundle folder
// per cluster, as `meshpki root create` and `meshpki intermediate create` do.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "meshpki-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The mesh's root, in a folder (root-cert.pem, root-key.pem).
	root, key, err := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	if err != nil {
		log.Fatal(err)
	}
	if err := ca.WriteRootDir(filepath.Join(dir, "root"), root, key); err != nil {
		log.Fatal(err)
	}

	iss, err := rootsource.Open(ctx, rootsource.Spec{Dir: filepath.Join(dir, "root")}, rootsource.Options{})
	if err != nil {
		log.Fatal(err)
	}
	var profiles []ca.Profile
	for _, cluster := range []string{"east", "west"} {
		profiles = append(profiles, ca.IntermediateProfile(cluster, "Example Corp"))
	}
	results, err := ca.MintDir(ctx, iss, profiles, ca.MintDirOptions{Out: filepath.Join(dir, "bundles"), Format: ca.FormatIstio})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		files, err := ca.ReadDir(r.Dir)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(filepath.Base(r.Dir), r.Subject, slices.Sorted(maps.Keys(files)))
	}
	// Output:
	// east CN=Intermediate CA,O=Example Corp,L=east [ca-cert.pem ca-key.pem cert-chain.pem root-cert.pem]
	// west CN=Intermediate CA,O=Example Corp,L=west [ca-cert.pem ca-key.pem cert-chain.pem root-cert.pem]
}

// The same from a root held in a Vault PKI mount: Vault signs every intermediate
// and its key never leaves Vault. The address and token come from the
// environment, as the vault CLI takes them.
func Example_vaultPKI() {
	ctx := context.Background()
	token, _, err := vault.FindToken("", os.Getenv, "")
	if err != nil {
		log.Fatal(err)
	}
	client, err := vault.NewClient(ctx, vault.Config{Address: os.Getenv("VAULT_ADDR"), Token: token})
	if err != nil {
		log.Fatal(err)
	}
	// The root, generated inside Vault (meshpki root create --vault-pki pki-mesh --enable-mount).
	if _, err := vault.GenerateInternalRoot(ctx, client.Logical(), "pki-mesh", ca.DefaultRootProfile("Example Corp"), vault.RootOptions{EnableMount: true}); err != nil {
		log.Fatal(err)
	}

	iss, err := rootsource.Open(ctx, rootsource.Spec{VaultPKI: "pki-mesh"}, rootsource.Options{Vault: client.Logical()})
	if err != nil {
		log.Fatal(err)
	}
	out, err := os.MkdirTemp("", "meshpki-bundles-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(out)
	profiles := []ca.Profile{ca.IntermediateProfile("east", "Example Corp"), ca.IntermediateProfile("west", "Example Corp")}
	results, err := ca.MintDir(ctx, iss, profiles, ca.MintDirOptions{Out: out})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		files, err := ca.ReadDir(r.Dir)
		if err != nil {
			log.Fatal(err)
		}
		rep := ca.Verify(files, ca.VerifyOptions{})
		fmt.Println(filepath.Base(r.Dir), rep.OK(), "signed by", iss.Anchor().Subject)
	}
	// Output:
	// east true signed by CN=Root CA,O=Example Corp
	// west true signed by CN=Root CA,O=Example Corp
}
