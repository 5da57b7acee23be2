package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/fanout"
)

// ErrBundleStored means the store already keeps a bundle for a cluster and
// replacing it was not asked for.
var ErrBundleStored = errors.New("Vault already keeps a bundle")

// ErrBundlePathTaken means a cluster's bundle would land on a secret the store
// was told to keep clear of (Protect): the root itself, or its CRL.
var ErrBundlePathTaken = errors.New("a bundle would overwrite a secret that is not a bundle")

// BundleStore is a ca.BundleStore that keeps each cluster's bundle in Vault KV v2
// at Base/<cluster> (StoreBundle), with check-and-set: Check records the version it
// saw, and Put replaces only that version, so a bundle written meanwhile by another
// run is never overwritten.
type BundleStore struct {
	l    Logical
	base KVPath
	// replace lets Put replace a bundle Check found (Vault keeps the old version).
	replace bool

	// protected are secrets no bundle may land on (Protect).
	protected []KVPath

	mu  sync.Mutex
	cas map[string]int // cluster -> version seen by Check (0: none)
}

var _ ca.BundleStore = (*BundleStore)(nil)

// NewBundleStore keeps bundles under base; replace allows replacing bundles that
// are there already.
func NewBundleStore(l Logical, base KVPath, replace bool) *BundleStore {
	return &BundleStore{l: l, base: base, replace: replace}
}

// Protect makes Check refuse a cluster whose bundle would land on one of paths
// (ErrBundlePathTaken), even with replace: e.g. KVRootPaths of a KV root kept
// under the same base, which a cluster named like the root's secret (or "crl")
// would otherwise overwrite with its bundle.
func (s *BundleStore) Protect(paths ...KVPath) *BundleStore {
	s.protected = append(s.protected, paths...)
	return s
}

// KVRootPaths are the secrets a root (or issuing CA) kept in KV at root occupies:
// root itself and its CRL (KVCRLName).
func KVRootPaths(root KVPath) []KVPath { return []KVPath{root, root.Child(KVCRLName)} }

// Base is where the bundles are kept.
func (s *BundleStore) Base() KVPath { return s.base }

// free refuses a cluster whose bundle would land on a protected secret.
func (s *BundleStore) free(cluster string) error {
	if p := s.base.Child(cluster); slices.Contains(s.protected, p) {
		return fmt.Errorf("%w: cluster %s's bundle would be kept at %s", ErrBundlePathTaken, cluster, p)
	}
	return nil
}

// Check implements ca.BundleStore: the mount must be KV v2, a cluster whose bundle
// would land on a protected secret is refused (ErrBundlePathTaken), and a cluster
// that has a bundle already is refused (ErrBundleStored) unless replace was given.
func (s *BundleStore) Check(ctx context.Context, clusters []string) error {
	for _, c := range clusters {
		if err := s.free(c); err != nil {
			return err
		}
	}
	if err := CheckKVv2(ctx, s.l, s.base.Mount); err != nil {
		return err
	}
	errs := make([]error, len(clusters))
	versions := make([]int, len(clusters))
	fanout.Each(ctx, len(clusters), 16, func(ctx context.Context, i int) {
		versions[i], errs[i] = KVVersion(ctx, s.l, s.base.Child(clusters[i]))
	})
	cas := make(map[string]int, len(clusters))
	var exists []string
	for i, c := range clusters {
		if err := errors.Join(errs[i], ctx.Err()); err != nil {
			return err
		}
		cas[c] = versions[i]
		if versions[i] > 0 {
			exists = append(exists, c)
		}
	}
	if len(exists) > 0 && !s.replace {
		sort.Strings(exists)
		return fmt.Errorf("%w at %s/<cluster> for %s", ErrBundleStored, s.base, strings.Join(exists, ", "))
	}
	s.mu.Lock()
	s.cas = cas
	s.mu.Unlock()
	return nil
}

// Put implements ca.BundleStore. Without a Check first it writes only new secrets.
func (s *BundleStore) Put(ctx context.Context, cluster string, files map[string][]byte) error {
	if err := s.free(cluster); err != nil {
		return err
	}
	s.mu.Lock()
	cas := s.cas[cluster]
	s.mu.Unlock()
	_, err := StoreBundle(ctx, s.l, s.base, cluster, files, cas)
	return err
}
