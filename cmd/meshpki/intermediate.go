package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
)

func intermediateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "intermediate",
		Usage: "mint per-cluster intermediate CAs",
		Description: `Examples:
   meshpki intermediate create --root-dir root --cluster east --cluster west --out bundles
   meshpki intermediate create --vault-pki pki --clusters-from clusters.txt --out bundles`,
		Subcommands: []*cli.Command{
			intermediateCreateCommand(e),
		},
	}
}

// intermediateCreateOptions is "intermediate create" after flag parsing.
type intermediateCreateOptions struct {
	Root        rootSource
	Out         string
	Profiles    []ca.Profile
	Format      ca.Format
	Force       bool
	Concurrency int
	Output      string
	Store       *bundleStore // --store-bundles; nil without it
}

func intermediateCreateCommand(e *env) *cli.Command {
	flags := append(rootSourceFlags(),
		&cli.StringSliceFlag{Name: "cluster", Aliases: []string{"c"}, Usage: "cluster name (repeat for several)"},
		&cli.StringFlag{Name: "clusters-from", Usage: "file with one cluster name per line (# comments allowed)"},
		&cli.StringFlag{Name: "out", Usage: "folder to write one bundle folder per cluster into"},
		&cli.StringFlag{Name: "ttl", Value: "8760h", Usage: "lifetime (Go duration, or days: 365d)"},
		&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
		&cli.StringFlag{Name: "org", Value: "Istio", Usage: "subject O"},
		&cli.StringFlag{Name: "common-name", Value: "Intermediate CA", Usage: "subject CN (L= is the cluster name)"},
		&cli.StringSliceFlag{Name: "san", Usage: "DNS SAN, repeatable; replaces the default " + ca.DefaultIstiodSAN},
		&cli.StringSliceFlag{Name: "uri-san", Usage: "URI SAN, repeatable"},
		&cli.IntFlag{Name: "pathlen", Value: 0, Usage: "path length constraint of the intermediate"},
		&cli.StringFlag{Name: "format", Value: string(ca.FormatIstio), Usage: "bundle files: istio (ca-cert.pem, ...) or tls (tls.crt, tls.key, ca.crt)"},
		&cli.BoolFlag{Name: "allow-short-ttl", Usage: "accept a life cut short by the root's expiry instead of failing"},
		&cli.BoolFlag{Name: "force", Usage: "replace existing bundle folders (each is kept as <cluster>.bak-<time>)"},
		&cli.IntFlag{Name: "concurrency", Value: runtime.GOMAXPROCS(0), Usage: "clusters minted and written at once"},
		outputFlag(),
		storeBundlesFlag(),
	)
	return &cli.Command{
		Name:  "create",
		Usage: "mint one intermediate CA per cluster and write its cacerts bundle",
		Description: `For each cluster, generates a key and CSR locally, signs it with the root as an
intermediate CA (pathlen 0, keyCertSign+cRLSign+digitalSignature, no EKU), verifies
the result as istiod would and writes OUT/<cluster>/ with ca-cert.pem, ca-key.pem
(0600), cert-chain.pem (intermediate then root) and root-cert.pem, atomically.
Nothing is written if any bundle folder exists already, unless --force.

Examples:
   meshpki intermediate create --root-dir root --cluster east --cluster west --out bundles
   meshpki intermediate create --root-dir root --clusters-from clusters.txt --out bundles --key-type rsa-4096
   meshpki intermediate create --root-dir root --cluster east --out bundles --force --ttl 90d
   meshpki intermediate create --vault-pki pki --cluster east --cluster west --out bundles
   meshpki intermediate create --vault-kv secret/meshpki/root --cluster east --out bundles --store-bundles secret/meshpki/bundles`,
		Flags: flags,
		Action: action(func(c *cli.Context) error {
			o, err := parseIntermediateCreate(c)
			if err != nil {
				return err
			}
			return runIntermediateCreate(c, e, o)
		}),
	}
}

func parseIntermediateCreate(c *cli.Context) (*intermediateCreateOptions, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	if err := requireFlags(c, "out"); err != nil {
		return nil, err
	}
	root, err := parseRootSource(c)
	if err != nil {
		return nil, err
	}
	store, err := parseStoreBundles(c, root)
	if err != nil {
		return nil, err
	}
	clusters := c.StringSlice("cluster")
	if f := c.String("clusters-from"); f != "" {
		more, err := readClusterList(f)
		if err != nil {
			return nil, inputError(err)
		}
		clusters = append(clusters, more...)
	}
	if len(clusters) == 0 {
		return nil, inputError(errors.New("no cluster given: pass --cluster NAME (repeatable) or --clusters-from FILE"))
	}
	seen := map[string]string{} // lower case -> as given
	for _, n := range clusters {
		if err := ca.ValidateClusterName(n); err != nil {
			return nil, inputError(fmt.Errorf("--cluster: %w", err))
		}
		switch prev, dup := seen[strings.ToLower(n)]; {
		case dup && prev == n:
			return nil, inputError(fmt.Errorf("--cluster: %q given twice", n))
		case dup:
			return nil, inputError(fmt.Errorf("--cluster: %q and %q differ only in case: their bundle folders would be one on a case-insensitive file system (macOS, Windows)", prev, n))
		}
		seen[strings.ToLower(n)] = n
	}
	kt, err := parseKeyTypeFlag(c)
	if err != nil {
		return nil, err
	}
	ttl, err := parseDuration("ttl", c.String("ttl"))
	if err != nil {
		return nil, err
	}
	format, err := parseFormatFlag(c)
	if err != nil {
		return nil, err
	}
	output, err := outputFormat(c)
	if err != nil {
		return nil, err
	}
	if c.Int("pathlen") < 0 {
		return nil, inputError(fmt.Errorf("--pathlen must be 0 or more, got %d", c.Int("pathlen")))
	}
	if c.Int("concurrency") < 1 {
		return nil, inputError(fmt.Errorf("--concurrency must be at least 1, got %d", c.Int("concurrency")))
	}
	var uris []*url.URL
	for _, s := range c.StringSlice("uri-san") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return nil, inputError(fmt.Errorf("--uri-san: %q is not an absolute URI", s))
		}
		uris = append(uris, u)
	}
	org, err := parseOrg(c)
	if err != nil {
		return nil, err
	}
	profiles := make([]ca.Profile, len(clusters))
	for i, name := range clusters {
		p := ca.IntermediateProfile(name, org)
		p.Subject.CommonName = c.String("common-name")
		if c.IsSet("san") {
			p.DNSNames = c.StringSlice("san")
		}
		p.URIs = uris
		p.TTL, p.KeyType, p.MaxPathLen = ttl, kt, c.Int("pathlen")
		p.AllowShortTTL = c.Bool("allow-short-ttl")
		if err := p.Validate(); err != nil {
			return nil, inputError(err)
		}
		profiles[i] = p
	}
	return &intermediateCreateOptions{
		Root: root, Out: c.String("out"), Profiles: profiles, Format: format,
		Force: c.Bool("force"), Concurrency: c.Int("concurrency"), Output: output, Store: store,
	}, nil
}

// readClusterList reads one cluster name per line; blank lines and # comments are skipped.
func readClusterList(name string) ([]string, error) {
	data, err := ca.ReadInputFile(name)
	if err != nil {
		return nil, err
	}
	return parseClusterList(name, data)
}

// maxClusterLine is the longest cluster name (a Kubernetes label value); a longer
// line is reported by its length, never quoted.
const maxClusterLine = 63

// parseClusterList reads one cluster name per line of data (from file name, for
// errors); blank lines and # comments are skipped.
func parseClusterList(name string, data []byte) ([]string, error) {
	var out []string
	for line := 1; len(data) > 0; line++ {
		var text []byte
		text, data, _ = bytes.Cut(data, []byte("\n"))
		s, _, _ := strings.Cut(string(text), "#")
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if len(s) > maxClusterLine {
			return nil, fmt.Errorf("%s:%d: a line of %d bytes is no cluster name (at most 63 characters)", name, line, len(s))
		}
		if err := ca.ValidateClusterName(s); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// prepareOut makes the folder bundle folders are written into (0700), warns if
// others may write in it, locks it against other meshpki runs for the rest of this
// one, and removes the temporary folders an interrupted run left there (each may
// hold a working intermediate CA key), saying so on stderr.
func prepareOut(ctx context.Context, e *env, out string) (unlock func(), err error) {
	_, statErr := os.Stat(out)
	created := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return nil, failed(err)
	}
	// A run that fails before writing a bundle leaves nothing behind: the folder it
	// made goes again if it is still empty when the lock is released.
	release := func(l *ca.DirLock) func() {
		return func() {
			l.Unlock()
			if created {
				_ = os.Remove(out) // fails, as it should, unless empty
			}
		}
	}
	if st, err := os.Stat(out); err == nil && st.Mode().Perm()&0o022 != 0 {
		e.log.Warn("the output folder is writable by others, who could swap a cluster's bundle: chmod 700 it",
			"dir", out, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	lock, err := ca.LockDir(ctx, out, func() {
		e.log.Info("another meshpki run is writing into the output folder: waiting for it", "dir", out)
	})
	if err != nil {
		if created {
			_ = os.Remove(out)
		}
		return nil, failed(err)
	}
	removed, err := ca.RemoveOrphans(out)
	if err != nil {
		release(lock)()
		return nil, failed(fmt.Errorf("remove temporary folders of an interrupted run in %s: %w", out, err))
	}
	if len(removed) > 0 {
		if ca.SupportsDirLock() {
			e.log.Warn("removed temporary folders an interrupted run left behind (each may have held an intermediate CA key)",
				"dir", out, "count", len(removed), "folders", strings.Join(removed, " "))
		} else {
			e.log.Warn("temporary folders an interrupted run may have left behind (each may hold an intermediate CA key): remove them if no other meshpki run is writing here",
				"dir", out, "count", len(removed), "folders", strings.Join(removed, " "))
		}
	}
	return release(lock), nil
}

// summarizeNames lists names, or the first max of them and how many more there are.
func summarizeNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

type mintResult struct {
	Cluster  string    `json:"cluster"`
	Dir      string    `json:"dir"`
	Subject  string    `json:"subject,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	Backup   string    `json:"backup,omitempty"`
	Error    string    `json:"error,omitempty"`
}

func runIntermediateCreate(c *cli.Context, e *env, o *intermediateCreateOptions) error {
	// Pre-flight: refuse before minting anything if --out cannot be written or any
	// bundle folder exists.
	if err := ca.CheckDirWritable(o.Out); err != nil {
		return inputError(fmt.Errorf("--out: %w", err))
	}
	var exists []string
	for _, p := range o.Profiles {
		if err := ca.CheckWritable(filepath.Join(o.Out, p.Cluster), o.Force); errors.Is(err, ca.ErrExists) {
			exists = append(exists, p.Cluster)
		} else if err != nil {
			return inputError(err)
		}
	}
	if len(exists) > 0 {
		return inputError(fmt.Errorf("bundle folder already exists in %s for %s (pass --force to replace; the old one is kept as a backup)", o.Out, summarizeNames(exists, 10)))
	}
	iss, err := o.Root.issuer(c.Context, e)
	if err != nil {
		return err
	}
	if err := checkProfiles(iss, o.Profiles); err != nil {
		return err
	}
	if err := o.Store.preflight(c.Context, e, o.Profiles); err != nil {
		return err
	}
	if c.Context.Err() == nil { // interrupted already: nothing starts, nothing is touched
		unlock, err := prepareOut(c.Context, e, o.Out)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if strings.HasPrefix(string(o.Profiles[0].KeyType), "rsa") && len(o.Profiles) > 1 {
		e.log.Info("generating RSA keys: this takes a while", "clusters", len(o.Profiles), "type", o.Profiles[0].KeyType)
	}
	start := time.Now()
	prog := newProgress(e, "minted", len(o.Profiles))
	results := make([]mintResult, len(o.Profiles))
	for i, p := range o.Profiles {
		// Named up front: a cluster never started (the run was interrupted) has no
		// callback, and its failure must still say which cluster it is.
		results[i].Cluster, results[i].Dir = p.Cluster, filepath.Join(o.Out, p.Cluster)
	}
	// Bundles are staged in temporary folders as they are minted, then made durable
	// with one file-system sync and renamed into place together.
	batch := ca.NewBatch(ca.WriteOptions{Force: o.Force, Now: time.Now()})
	errs := ca.MintEach(c.Context, iss, o.Profiles, o.Concurrency, func(i int, b *ca.Bundle, err error) error {
		p := o.Profiles[i]
		dir := filepath.Join(o.Out, p.Cluster)
		r := &results[i]
		r.Cluster, r.Dir = p.Cluster, dir
		if err == nil {
			var files map[string][]byte
			if files, err = b.Files(o.Format); err == nil {
				if err = o.Store.store(c.Context, p.Cluster, files); err == nil {
					err = batch.Stage(dir, files)
				}
			}
		}
		if err != nil {
			prog.item(p.Cluster, err)
			return err
		}
		r.Subject, r.Serial, r.NotAfter = b.Cert.Subject.String(), ca.FormatSerial(b.Cert), b.Cert.NotAfter.UTC()
		prog.item(p.Cluster, nil, "dir", dir, "notAfter", r.NotAfter.Format(time.RFC3339))
		return nil
	})
	prog.finish()
	minted := time.Now()
	backups, commitErrs := batch.Commit()
	e.log.Debug("bundles written", "clusters", len(o.Profiles), "mint", minted.Sub(start).Round(time.Millisecond), "sync+rename", time.Since(minted).Round(time.Millisecond))
	for i := range results {
		if err := commitErrs[results[i].Dir]; err != nil && errs[i] == nil {
			errs[i] = err
		}
		results[i].Backup = backups[results[i].Dir]
	}
	var nfail int
	for i, err := range errs {
		if err != nil {
			nfail++
			results[i].Error = err.Error()
		}
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, results); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if r.Error != "" {
				fmt.Fprintf(e.stdout, "FAILED  %s: %s\n", r.Cluster, r.Error)
				continue
			}
			fmt.Fprintf(e.stdout, "minted  %s  %s  not after %s", r.Cluster, r.Dir, r.NotAfter.Format(time.RFC3339))
			if r.Backup != "" {
				fmt.Fprintf(e.stdout, "  (previous kept in %s)", r.Backup)
			}
			fmt.Fprintln(e.stdout)
		}
	}
	if nfail > 0 {
		var ee *exitError
		for _, err := range errs {
			if errors.As(err, &ee) {
				return err // an input error surfaced per cluster: keep its code
			}
		}
		return failed(fmt.Errorf("%d of %d clusters failed", nfail, len(errs)))
	}
	return nil
}
