package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/vault"
)

func storeBundlesFlag() cli.Flag {
	return &cli.StringFlag{Name: "store-bundles", Category: catVault,
		Usage: "also keep each cluster's bundle (key included) in Vault KV v2 at MOUNT/PATH/<cluster>, never replacing one without --force, e.g. --store-bundles secret/meshpki/bundles"}
}

// bundleStore is the --store-bundles flag group: where, and how to reach Vault.
type bundleStore struct {
	// Path is --store-bundles as given, MOUNT/PATH; "" for none.
	Path  string
	Force bool
	// Vault is the command's Vault connection flag group, shared with the root source.
	Vault *vaultConn

	base vault.KVPath // set by Validate
}

// bindBundleStore binds --store-bundles and --force.
func bindBundleStore(c *cli.Context, vc *vaultConn) bundleStore {
	return bundleStore{Path: c.String("store-bundles"), Force: c.Bool("force"), Vault: vc}
}

// Validate parses the KV path and checks the Vault connection flags, which the root
// source may have checked already.
func (f *bundleStore) Validate() error {
	if f.Path == "" {
		return nil
	}
	base, err := vault.ParseKVPath(f.Path)
	if err != nil {
		return inputError(fmt.Errorf("--store-bundles: %w", err))
	}
	f.base = base
	return f.Vault.Validate()
}

// open connects to Vault and returns the store (vault.BundleStore), which never
// writes over the KV root at rootKV (MOUNT/PATH as given, "" for none) or its CRL;
// without --store-bundles, a nil store.
func (f *bundleStore) open(ctx context.Context, e *env, rootKV string) (ca.BundleStore, error) {
	if f.Path == "" {
		return nil, nil
	}
	client, err := f.Vault.connect(ctx, e)
	if err != nil {
		return nil, err
	}
	e.log.Info("bundles will also be kept in Vault KV", "path", f.base.String()+"/<cluster>")
	store := vault.NewBundleStore(client.Logical(), f.base, f.Force)
	if rootKV != "" {
		root, err := vault.ParseKVPath(rootKV)
		if err != nil {
			return nil, inputError(fmt.Errorf("--vault-kv: %w", err))
		}
		store.Protect(vault.KVRootPaths(root)...)
	}
	return store, nil
}
