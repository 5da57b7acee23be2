package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/vault"
)

func intermediateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "intermediate",
		Usage: "mint per-cluster intermediate CAs",
		Description: `Examples:
   meshpki intermediate create --root-dir root --cluster east --cluster west --out bundles
   meshpki intermediate create --vault-pki pki --clusters-from clusters.txt --out bundles
   meshpki intermediate csr --cluster east --out csrs        # offline root: sign the CSRs elsewhere
   meshpki intermediate import --out csrs --signed signed --root root.pem`,
		Subcommands: []*cli.Command{
			intermediateCreateCommand(e),
			intermediateCSRCommand(e),
			intermediateImportCommand(e),
			intermediateStatusCommand(e),
		},
	}
}

// intermediateCreateOptions is "intermediate create": its flags as given (bind),
// then (Validate) the profiles and format they mean.
type intermediateCreateOptions struct {
	cmd          cmdArgs
	Root         rootSource
	Store        bundleStore // --store-bundles
	Clusters     []string
	ClustersFrom string
	Out          string
	TTL          string
	KeyType      string
	Org          string
	CommonName   string
	// SANs replace the default DNS SAN when SANsSet.
	SANs          []string
	SANsSet       bool
	URISANs       []string
	PathLen       int
	Format        string
	AllowShortTTL bool
	TrustDomain   string
	Force         bool
	Concurrency   int
	Output        string

	// Set by Validate.
	profiles []ca.Profile
	format   ca.Format
}

func intermediateCreateCommand(e *env) *cli.Command {
	flags := append(rootSourceFlags(),
		&cli.StringSliceFlag{Name: "cluster", Aliases: []string{"c"}, Usage: "cluster name (repeat for several)"},
		&cli.StringFlag{Name: "clusters-from", Usage: "file with one cluster name per line (# comments allowed)"},
		&cli.StringFlag{Name: "out", Usage: "folder to write one bundle folder per cluster into"},
		ttlFlag("", ca.DefaultIntermediateTTL, "lifetime"),
		&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
		orgFlag("", "subject O"),
		&cli.StringFlag{Name: "common-name", Value: ca.DefaultIntermediateCN, Usage: "subject CN (L= is the cluster name)"},
		&cli.StringSliceFlag{Name: "san", Usage: "DNS SAN, repeatable; replaces the default " + ca.DefaultIstiodSAN},
		&cli.StringSliceFlag{Name: "uri-san", Usage: "URI SAN, repeatable"},
		&cli.IntFlag{Name: "pathlen", Value: 0, Usage: "path length constraint of the intermediate"},
		&cli.StringFlag{Name: "format", Value: string(ca.FormatIstio), Usage: "bundle files: istio (ca-cert.pem, ...) or tls (tls.crt, tls.key, ca.crt)"},
		&cli.BoolFlag{Name: "allow-short-ttl", Usage: "accept a life cut short by the root's expiry instead of failing"},
		trustDomainFlag(""),
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
		Flags:  flags,
		Action: actionOf(e, bindIntermediateCreate),
	}
}

func bindIntermediateCreate(c *cli.Context) *intermediateCreateOptions {
	vc := bindVaultConn(c)
	return &intermediateCreateOptions{
		cmd:           bindArgs(c),
		Root:          bindRootSource(c, vc),
		Store:         bindBundleStore(c, vc),
		Clusters:      c.StringSlice("cluster"),
		ClustersFrom:  c.String("clusters-from"),
		Out:           c.String("out"),
		TTL:           c.String("ttl"),
		KeyType:       c.String("key-type"),
		Org:           c.String("org"),
		CommonName:    c.String("common-name"),
		SANs:          c.StringSlice("san"),
		SANsSet:       c.IsSet("san"),
		URISANs:       c.StringSlice("uri-san"),
		PathLen:       c.Int("pathlen"),
		Format:        c.String("format"),
		AllowShortTTL: c.Bool("allow-short-ttl"),
		TrustDomain:   c.String("trust-domain"),
		Force:         c.Bool("force"),
		Concurrency:   c.Int("concurrency"),
		Output:        c.String("output"),
	}
}

// Validate checks the flags, reads --clusters-from and builds one profile per
// cluster (ca.Profile.Validate).
func (o *intermediateCreateOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.cmd.require("out", o.Out); err != nil {
		return err
	}
	if err := o.Root.Validate(); err != nil {
		return err
	}
	if err := o.Store.Validate(); err != nil {
		return err
	}
	clusters, err := clusterNames(o.Clusters, o.ClustersFrom)
	if err != nil {
		return err
	}
	kt, err := parseKeyType(o.KeyType)
	if err != nil {
		return err
	}
	ttl, err := parseDuration("ttl", o.TTL)
	if err != nil {
		return err
	}
	if o.format, err = parseFormat(o.Format); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if o.PathLen < 0 {
		return inputError(fmt.Errorf("--pathlen must be 0 or more, got %d", o.PathLen))
	}
	if o.Concurrency < 1 {
		return inputError(fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency))
	}
	var uris []*url.URL
	for _, s := range o.URISANs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return inputError(fmt.Errorf("--uri-san: %q is not an absolute URI", s))
		}
		uris = append(uris, u)
	}
	if err := checkOrg(o.Org); err != nil {
		return err
	}
	if err := checkTrustDomain(o.TrustDomain); err != nil {
		return err
	}
	o.profiles = make([]ca.Profile, len(clusters))
	for i, name := range clusters {
		p := ca.IntermediateProfile(name, o.Org)
		p.Subject.CommonName = o.CommonName
		if o.SANsSet {
			p.DNSNames = o.SANs
		}
		p.URIs = uris
		p.TTL, p.KeyType, p.MaxPathLen = ttl, kt, o.PathLen
		p.AllowShortTTL, p.TrustDomain = o.AllowShortTTL, o.TrustDomain
		if err := p.Validate(); err != nil {
			return inputError(err)
		}
		o.profiles[i] = p
	}
	return nil
}

// Run mints the bundles (ca.MintDir) and writes the results.
func (o *intermediateCreateOptions) Run(ctx context.Context, e *env) error {
	// Pre-flight before Vault is even asked: --out must be writable.
	if err := ca.CheckDirWritable(o.Out); err != nil {
		return inputError(fmt.Errorf("--out: %w", err))
	}
	iss, err := o.Root.issuer(ctx, e)
	if err != nil {
		return err
	}
	store, err := o.Store.open(ctx, e, o.Root.VaultKV)
	if err != nil {
		return err
	}
	prog := newProgress(e, "minted", len(o.profiles))
	results, err := ca.MintDir(ctx, iss, o.profiles, ca.MintDirOptions{
		Out: o.Out, Format: o.format, Force: o.Force, Concurrency: o.Concurrency, Store: store, Log: e.log,
		Progress: func(r ca.MintDirResult) {
			if r.Err != nil {
				prog.item(r.Cluster, r.Err)
				return
			}
			prog.item(r.Cluster, nil, "dir", r.Dir, "notAfter", r.NotAfter.Format(time.RFC3339))
		},
	})
	prog.finish()
	if early, stop := mintStopped(ctx, err); early {
		return stop // nothing was minted: no result to print
	}
	if o.Output == "json" {
		if werr := writeJSON(e.stdout, err == nil, mintList{Bundles: results}); werr != nil {
			return werr
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
	return failed(err)
}

// mintStopped tells whether ca.MintDir's error stopped it before any bundle was
// minted, and gives such an error its exit code and the flag it is about.
func mintStopped(ctx context.Context, err error) (bool, error) {
	var exists *ca.ExistsError
	switch {
	case errors.As(err, &exists):
		return true, inputError(fmt.Errorf("%w (pass --force to replace; the old one is kept as a backup)", err))
	case errors.Is(err, vault.ErrBundlePathTaken):
		return true, inputError(fmt.Errorf("--store-bundles: %w (the root is kept there: give --store-bundles another path)", err))
	case errors.Is(err, vault.ErrBundleStored):
		return true, inputError(fmt.Errorf("--store-bundles: %w (pass --force to replace it; Vault keeps the old version)", err))
	case errors.Is(err, ca.ErrNotStarted) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		var ve *vault.Error
		if errors.As(err, &ve) {
			return true, vaultError(fmt.Errorf("--store-bundles: %w", err))
		}
		if ctx.Err() == nil {
			return true, inputError(err)
		}
	}
	return false, nil
}
