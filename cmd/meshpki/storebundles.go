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

// bundleStoreFlags is --store-bundles after parsing: where, and how to reach Vault.
type bundleStoreFlags struct {
	base  vault.KVPath
	conn  *vaultConn
	force bool
}

// parseStoreBundles reads --store-bundles; nil when it is not given. It shares the
// root source's Vault connection when there is one.
func parseStoreBundles(c *cli.Context, root rootSource) (*bundleStoreFlags, error) {
	s := c.String("store-bundles")
	if s == "" {
		return nil, nil
	}
	base, err := vault.ParseKVPath(s)
	if err != nil {
		return nil, inputError(fmt.Errorf("--store-bundles: %w", err))
	}
	conn := root.Vault
	if conn == nil {
		if conn, err = parseVaultConn(c); err != nil {
			return nil, err
		}
	}
	return &bundleStoreFlags{base: base, conn: conn, force: c.Bool("force")}, nil
}

// open connects to Vault and returns the store (vault.BundleStore); a nil f gives
// a nil store.
func (f *bundleStoreFlags) open(ctx context.Context, e *env) (ca.BundleStore, error) {
	if f == nil {
		return nil, nil
	}
	client, err := f.conn.connect(ctx, e)
	if err != nil {
		return nil, err
	}
	e.log.Info("bundles will also be kept in Vault KV", "path", f.base.String()+"/<cluster>")
	return vault.NewBundleStore(client.Logical(), f.base, f.force), nil
}
