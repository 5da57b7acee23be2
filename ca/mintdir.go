package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// BundleStore keeps a copy of every minted bundle outside the output folder (package
// vault has one that keeps them in Vault KV v2).
type BundleStore interface {
	// Check runs before anything is minted: it refuses clusters whose copy it
	// would not replace, or a store that cannot be written.
	Check(ctx context.Context, clusters []string) error
	// Put keeps one cluster's files (key included). MintDir calls it only once the
	// bundle folder is in place.
	Put(ctx context.Context, cluster string, files map[string][]byte) error
}

// ErrNotStarted wraps what MintDir refuses before it mints anything: a --out that
// cannot be written, existing bundle folders, profiles the issuer cannot sign, a
// store's refusal.
var ErrNotStarted = errors.New("nothing was minted")

// MintDirOptions controls MintDir.
type MintDirOptions struct {
	// Out is the folder that gets one bundle folder per cluster, Out/<cluster>/.
	Out string
	// Format picks the bundle's file names.
	Format Format
	// Force replaces existing bundle folders, each renamed to a backup first.
	Force bool
	// Concurrency is how many clusters are minted and written at once; zero means
	// GOMAXPROCS.
	Concurrency int
	// Store, if set, also keeps every bundle written.
	Store BundleStore
	// Progress, if set, is called once per cluster as it is minted and staged (or
	// fails to be), from the worker that minted it. A later failure (the rename
	// into place, the store) shows only in the results.
	Progress func(MintDirResult)
	// Now is the clock (checks, backup names); nil means time.Now.
	Now func() time.Time
	// Log receives warnings (a folder others can write to, folders an interrupted
	// run left) and debug lines; nil discards them.
	Log *slog.Logger
}

func (o MintDirOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func (o MintDirOptions) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// MintDirResult is one cluster's outcome. It never holds key material.
type MintDirResult struct {
	Cluster  string    `json:"cluster"`
	Dir      string    `json:"dir"`
	Subject  string    `json:"subject,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	// Backup is where the folder it replaced went (with Force).
	Backup string `json:"backup,omitempty"`
	// Err is why this cluster failed; Error is its text, for JSON.
	Err   error  `json:"-"`
	Error string `json:"error,omitempty"`
}

// MintDir mints one intermediate per profile with iss and writes each bundle to
// opts.Out/<cluster>/, the main job of a mesh's PKI:
//
//   - before anything is minted it checks that Out can be written, that no bundle
//     folder exists (unless Force), that iss's anchor can sign every profile as
//     istiod needs (CheckProfile), and opts.Store.Check; a refusal wraps
//     ErrNotStarted and nothing is changed;
//   - Out is created (0700) if missing and locked against other runs (LockDir);
//     temporary folders an interrupted run left in it are removed (RemoveOrphans);
//   - bundles are minted concurrently and staged as they come, then made durable
//     with one file-system sync and renamed into place (Batch);
//   - only then is each bundle written to the store.
//
// It returns one result per profile, in order, and an error if any failed.
func MintDir(ctx context.Context, iss Issuer, profiles []Profile, opts MintDirOptions) ([]MintDirResult, error) {
	results := make([]MintDirResult, len(profiles))
	for i, p := range profiles {
		results[i].Cluster, results[i].Dir = p.Cluster, filepath.Join(opts.Out, p.Cluster)
	}
	if err := mintDirPreflight(ctx, iss, profiles, opts); err != nil {
		return results, err
	}
	fail := func(i int, err error) {
		results[i].Err, results[i].Error = err, err.Error()
	}
	if err := context.Cause(ctx); err != nil { // interrupted already: nothing is touched
		for i := range results {
			fail(i, fmt.Errorf("cluster %s: not started: %w", profiles[i].Cluster, err))
		}
		return results, fmt.Errorf("%w: %w", ErrNotStarted, err)
	}
	unlock, err := PrepareOutDir(ctx, opts.Out, opts.log())
	if err != nil {
		return results, fmt.Errorf("%w: %w", ErrNotStarted, err)
	}
	defer unlock()

	workers := opts.Concurrency
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if len(profiles) > 1 && strings.HasPrefix(string(profiles[0].KeyType), "rsa") {
		opts.log().Info("generating RSA keys: this takes a while", "clusters", len(profiles), "type", profiles[0].KeyType)
	}
	start := time.Now()
	batch := NewBatch(WriteOptions{Force: opts.Force, Now: opts.now()})
	files := make([]map[string][]byte, len(profiles))
	errs := MintEach(ctx, iss, profiles, workers, func(i int, b *Bundle, err error) error {
		r := &results[i]
		if err == nil {
			if files[i], err = b.Files(opts.Format); err == nil {
				err = batch.Stage(r.Dir, files[i])
			}
		}
		if err != nil {
			files[i] = nil
			fail(i, err)
			if opts.Progress != nil {
				opts.Progress(*r)
			}
			return err
		}
		r.Subject, r.Serial, r.NotAfter = b.Cert.Subject.String(), FormatSerial(b.Cert), b.Cert.NotAfter.UTC()
		if opts.Progress != nil {
			opts.Progress(*r)
		}
		return nil
	})
	minted := time.Now()
	backups, commitErrs := batch.Commit()
	opts.log().Debug("bundles written", "clusters", len(profiles), "mint", minted.Sub(start).Round(time.Millisecond), "sync+rename", time.Since(minted).Round(time.Millisecond))
	nfail := 0
	for i := range results {
		r := &results[i]
		err := errs[i]
		if err == nil {
			err = commitErrs[r.Dir]
		}
		r.Backup = backups[r.Dir]
		if err == nil && opts.Store != nil {
			if perr := opts.Store.Put(ctx, r.Cluster, files[i]); perr != nil {
				err = fmt.Errorf("cluster %s: bundle written to %s, but not kept in the store: %w", r.Cluster, r.Dir, perr)
			}
		}
		files[i] = nil
		if err != nil {
			nfail++
			if r.Err == nil {
				fail(i, err)
			}
		}
	}
	if nfail > 0 {
		return results, fmt.Errorf("%d of %d clusters failed", nfail, len(results))
	}
	return results, nil
}

func mintDirPreflight(ctx context.Context, iss Issuer, profiles []Profile, opts MintDirOptions) error {
	if len(profiles) == 0 {
		return fmt.Errorf("%w: no cluster given", ErrNotStarted)
	}
	if err := CheckDirWritable(opts.Out); err != nil {
		return fmt.Errorf("%w: output folder: %w", ErrNotStarted, err)
	}
	var exists []string
	for _, p := range profiles {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotStarted, err)
		}
		if err := CheckWritable(filepath.Join(opts.Out, p.Cluster), opts.Force); errors.Is(err, ErrExists) {
			exists = append(exists, p.Cluster)
		} else if err != nil {
			return fmt.Errorf("%w: %w", ErrNotStarted, err)
		}
	}
	if len(exists) > 0 {
		return &ExistsError{Dir: opts.Out, Clusters: exists}
	}
	if err := CheckProfiles(iss.Chain(), profiles, opts.now()); err != nil {
		return fmt.Errorf("%w: %w", ErrNotStarted, err)
	}
	if opts.Store != nil {
		names := make([]string, len(profiles))
		for i, p := range profiles {
			names[i] = p.Cluster
		}
		if err := opts.Store.Check(ctx, names); err != nil {
			return fmt.Errorf("%w: %w", ErrNotStarted, err)
		}
	}
	return nil
}

// ExistsError lists the clusters whose bundle folder exists in Dir already. It
// wraps ErrExists and ErrNotStarted.
type ExistsError struct {
	Dir      string
	Clusters []string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("bundle folder already exists in %s for %s", e.Dir, SummarizeNames(e.Clusters, 10))
}

// Unwrap implements errors.Is for ErrExists and ErrNotStarted.
func (e *ExistsError) Unwrap() []error { return []error{ErrExists, ErrNotStarted} }

// SummarizeNames lists names, or the first max of them and how many more there are.
func SummarizeNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

// CheckProfiles refuses, before any key is generated, profiles that an issuer with
// chain (Issuer.Chain: the signing CA first) cannot sign or whose intermediates
// istiod would refuse (a TTL it cannot cover, a pathlen it forbids, name
// constraints excluding the SANs): CheckProfileChain. Profiles that differ only in
// their cluster are checked once. An empty chain checks nothing.
func CheckProfiles(chain []*x509.Certificate, profiles []Profile, now time.Time) error {
	if len(chain) == 0 {
		return nil
	}
	anchor := chain[0]
	what := "the root"
	if !IsSelfSigned(anchor) {
		what = "the signing CA"
	}
	seen := map[string]bool{}
	for _, p := range profiles {
		shape := fmt.Sprint(p.DNSNames, p.URIs, p.TTL, p.MaxPathLen, p.AllowShortTTL, p.Subject.Organization, p.Subject.CommonName)
		if seen[shape] {
			continue
		}
		seen[shape] = true
		if err := CheckProfileChain(chain, p, now); err != nil {
			return fmt.Errorf("%s (%s) cannot sign these intermediates: %w", what, anchor.Subject, err)
		}
	}
	return nil
}

// PrepareOutDir makes out (0700) if it is missing, warns through log when others
// may write in it, locks it against other meshpki runs (LockDir, waiting for one
// that holds it), and removes the temporary folders an interrupted run left there
// (each may hold a working intermediate CA key), saying so. The returned unlock
// releases the lock and removes out again if this call made it and it is still
// empty.
func PrepareOutDir(ctx context.Context, out string, log *slog.Logger) (unlock func(), err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, statErr := os.Stat(out)
	created := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, err
	}
	release := func(l *DirLock) func() {
		return func() {
			l.Unlock()
			if created {
				_ = os.Remove(out) // fails, as it should, unless empty
			}
		}
	}
	if st, err := os.Stat(out); err == nil && st.Mode().Perm()&0o022 != 0 {
		log.Warn("the output folder is writable by others, who could swap a cluster's bundle: chmod 700 it",
			"dir", out, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	lock, err := LockDir(ctx, out, func() {
		log.Info("another meshpki run is writing into the output folder: waiting for it", "dir", out)
	})
	if err != nil {
		if created {
			_ = os.Remove(out)
		}
		return nil, err
	}
	removed, err := RemoveOrphans(out)
	if err != nil {
		release(lock)()
		return nil, fmt.Errorf("remove temporary folders of an interrupted run in %s: %w", out, err)
	}
	if len(removed) > 0 {
		if SupportsDirLock() {
			log.Warn("removed temporary folders an interrupted run left behind (each may have held an intermediate CA key)",
				"dir", out, "count", len(removed), "folders", strings.Join(removed, " "))
		} else {
			log.Warn("temporary folders an interrupted run may have left behind (each may hold an intermediate CA key): remove them if no other meshpki run is writing here",
				"dir", out, "count", len(removed), "folders", strings.Join(removed, " "))
		}
	}
	return release(lock), nil
}
