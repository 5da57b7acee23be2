package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/fanout"
	"github.com/meshpki/meshpki/vault"
)

func storeBundlesFlag() cli.Flag {
	return &cli.StringFlag{Name: "store-bundles", Category: catVault,
		Usage: "also keep each cluster's bundle (key included) in Vault KV v2 at MOUNT/PATH/<cluster>, never replacing one without --force, e.g. --store-bundles secret/meshpki/bundles"}
}

// bundleStore keeps minted bundles in Vault KV v2 (--store-bundles): PATH/<cluster>
// with check-and-set, so that a bundle can be reinstalled without minting again.
type bundleStore struct {
	base  vault.KVPath
	conn  *vaultConn
	l     vault.Logical
	cas   map[string]int // cluster -> version to replace (0: new secret); read-only once minting starts
	force bool
}

// parseStoreBundles reads --store-bundles; nil when it is not given. It shares the
// root source's Vault connection when there is one.
func parseStoreBundles(c *cli.Context, root rootSource) (*bundleStore, error) {
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
	return &bundleStore{base: base, conn: conn, force: c.Bool("force")}, nil
}

// preflight connects to Vault, checks the KV v2 mount and looks up each cluster's
// secret, before anything is minted: an existing one is refused unless --force (and
// then replaced only at the version seen here).
func (s *bundleStore) preflight(ctx context.Context, e *env, profiles []ca.Profile) error {
	if s == nil {
		return nil
	}
	client, err := s.conn.connect(ctx, e)
	if err != nil {
		return err
	}
	s.l = client.Logical()
	if err := vault.CheckKVv2(ctx, s.l, s.base.Mount); err != nil {
		return vaultError(err)
	}
	s.cas = make(map[string]int, len(profiles))
	errs := make([]error, len(profiles))
	versions := make([]int, len(profiles))
	fanout.Each(ctx, len(profiles), 16, func(ctx context.Context, i int) {
		versions[i], errs[i] = vault.KVVersion(ctx, s.l, s.base.Child(profiles[i].Cluster))
	})
	var exists []string
	for i, p := range profiles {
		if err := errors.Join(errs[i], ctx.Err()); err != nil {
			return vaultError(fmt.Errorf("--store-bundles: %w", err))
		}
		s.cas[p.Cluster] = versions[i]
		if versions[i] > 0 {
			exists = append(exists, p.Cluster)
		}
	}
	if len(exists) > 0 && !s.force {
		sort.Strings(exists)
		return inputError(fmt.Errorf("--store-bundles: Vault already keeps a bundle at %s/<cluster> for %s (pass --force to replace it; Vault keeps the old version)",
			s.base, strings.Join(exists, ", ")))
	}
	e.log.Info("bundles will also be kept in Vault KV", "path", s.base.String()+"/<cluster>")
	return nil
}

// store writes one cluster's bundle files; a nil store does nothing.
func (s *bundleStore) store(ctx context.Context, cluster string, files map[string][]byte) error {
	if s == nil {
		return nil
	}
	if _, err := vault.StoreBundle(ctx, s.l, s.base, cluster, files, s.cas[cluster]); err != nil {
		return fmt.Errorf("keeping the bundle in Vault (nothing written for this cluster): %w", err)
	}
	return nil
}
