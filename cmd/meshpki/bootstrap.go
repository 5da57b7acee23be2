package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// bootstrapOptions is "bootstrap" after flag parsing.
type bootstrapOptions struct {
	Root     rootSource
	Clusters clusterOptions
	Profile  ca.Profile // Cluster is filled in once the context is resolved
	Format   ca.Format
	Install  k8s.InstallOptions
	Out      string
	Output   string
}

func bootstrapCommand(e *env) *cli.Command {
	flags := append(rootSourceFlags(), clusterFlags(false)...)
	flags = append(flags,
		ttlFlag("", ca.DefaultIntermediateTTL, "intermediate's lifetime"),
		&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
		orgFlag("", "subject O (CN="+ca.DefaultIntermediateCN+", L=<cluster>)"),
		&cli.StringFlag{Name: "format", Value: string(ca.FormatIstio), Usage: "Secret keys: istio (ca-cert.pem, ...) or tls (tls.crt, tls.key, ca.crt)"},
		&cli.StringFlag{Name: "out", Usage: "also write the bundle to OUT/<cluster>/ (key 0600); by default it lives only in the Secret"},
		&cli.BoolFlag{Name: "dry-run", Usage: "mint, then send the writes as a server-side dry run; nothing is stored"},
		&cli.BoolFlag{Name: "restart-istiod", Usage: "restart istiod afterwards (needed when istiod already runs with its self-signed CA)"},
		&cli.BoolFlag{Name: "force", Usage: "replace an existing cacerts (backed up first; its roots must match unless --allow-new-root)"},
		&cli.BoolFlag{Name: "allow-new-root", Usage: "with --force: replace a cacerts that trusts other roots"},
		lockWaitFlag(""),
		outputFlag(),
	)
	return &cli.Command{
		Name:  "bootstrap",
		Usage: "mint an intermediate CA for one new cluster and install it, in one step",
		Description: `Mints a new intermediate CA for the cluster of --context from the root (as
intermediate create does, named after the context or --cluster CTX=NAME) and
installs it as Secret cacerts (as install does). It is meant for a new cluster: it
refuses a cluster that already has cacerts unless --force, and finds that out before
anything is minted. The cluster is locked meanwhile (the Lease ` + k8s.LeaseName + `
that install and rotate take; another run's lock is waited for up to --lock-wait).

Install cacerts before installing Istio, or pass --restart-istiod: istiod only
switches from its self-signed CA to cacerts when it restarts.

Exit status: 0 on success, 1 when minting or installing failed, 2 on bad usage or
input (flags, kubeconfig, root).

Examples:
   meshpki bootstrap --context east --root-dir root
   meshpki bootstrap --context gke_prod_us-east1_mesh --cluster gke_prod_us-east1_mesh=us-east --root-dir root --out bundles
   meshpki bootstrap --context east --root-dir root --dry-run`,
		Flags: flags,
		Action: action(func(c *cli.Context) error {
			o, err := parseBootstrap(c, e)
			if err != nil {
				return err
			}
			return runBootstrap(c.Context, e, o)
		}),
	}
}

func parseBootstrap(c *cli.Context, e *env) (*bootstrapOptions, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	root, err := parseRootSource(c)
	if err != nil {
		return nil, err
	}
	cl, err := parseClusterFlags(c)
	if err != nil {
		return nil, err
	}
	if n := len(cl.Contexts); n != 1 {
		return nil, inputError(fmt.Errorf("bootstrap works on one cluster: pass --context once (got %d)", n))
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
	out, err := outputFormat(c)
	if err != nil {
		return nil, err
	}
	if c.Bool("allow-new-root") && !c.Bool("force") {
		return nil, inputError(errors.New("--allow-new-root only makes sense with --force"))
	}
	org, err := parseOrg(c)
	if err != nil {
		return nil, err
	}
	p := ca.IntermediateProfile("", org)
	p.TTL, p.KeyType = ttl, kt
	lock, err := parseLock(c)
	if err != nil {
		return nil, err
	}
	return &bootstrapOptions{
		Root: root, Clusters: cl, Profile: p, Format: format, Out: c.String("out"), Output: out,
		Install: k8s.InstallOptions{
			Namespace:     cl.Namespace,
			DryRun:        c.Bool("dry-run"),
			CreateOnly:    !c.Bool("force"),
			AllowNewRoot:  c.Bool("allow-new-root"),
			RestartIstiod: c.Bool("restart-istiod"),
			Lock:          lock,
		},
	}, nil
}

// bootstrapResult is bootstrap's result: the install's, plus where the bundle was
// written, if it was.
type bootstrapResult struct {
	*k8s.InstallResult
	BundleDir string `json:"bundleDir,omitempty"`
	Error     string `json:"error,omitempty"`
}

func runBootstrap(ctx context.Context, e *env, o *bootstrapOptions) error {
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	cl := clusters[0]
	p := o.Profile
	p.Cluster = cl.Name
	p.Subject.Locality = []string{cl.Name}
	if err := p.Validate(); err != nil {
		return inputError(err)
	}
	var dir string
	if o.Out != "" {
		dir = filepath.Join(o.Out, cl.Name)
		if err := ca.CheckWritable(dir, false); errors.Is(err, ca.ErrExists) {
			return inputError(fmt.Errorf("--out: %w: bootstrap never replaces a bundle folder; choose another --out", err))
		} else if err != nil {
			return inputError(err)
		}
	}
	iss, err := o.Root.issuer(ctx, e)
	if err != nil {
		return err
	}
	if err := checkProfiles(iss, []ca.Profile{p}); err != nil {
		return err
	}
	if o.Out != "" {
		if err := ca.CheckDirWritable(o.Out); err != nil {
			return inputError(fmt.Errorf("--out: %w", err))
		}
	}
	prog := newProgress(e, "bootstrap", 1)
	res, files, err := k8s.Bootstrap(ctx, cl, k8s.BootstrapOptions{Issuer: iss, Profile: p, Format: o.Format, Install: o.Install})
	if err == nil && res.After != nil {
		e.log.Debug("minted", "cluster", cl.Name, "serial", res.After.Serial, "notAfter", res.After.NotAfter)
	}
	if err == nil && dir != "" && !o.Install.DryRun {
		var unlock func()
		if unlock, err = prepareOut(ctx, e, o.Out); err == nil {
			_, err = ca.WriteDir(dir, files, ca.WriteOptions{})
			unlock()
		}
		if err != nil {
			err = fmt.Errorf("cluster %s: cacerts installed, but writing the bundle to %s failed: %w", cl.Name, dir, err)
		}
	}
	prog.item(cl.Name, err)
	prog.finish()
	out := bootstrapResult{InstallResult: res}
	if err == nil && dir != "" && !o.Install.DryRun {
		out.BundleDir = dir
	}
	if err != nil {
		out.Error = err.Error()
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		printInstall(e.stdout, installReport{OK: err == nil, DryRun: o.Install.DryRun, Clusters: []installEntry{{InstallResult: res, Error: out.Error}}})
		if out.BundleDir != "" {
			fmt.Fprintf(e.stdout, "bundle written to %s\n", out.BundleDir)
		}
	}
	if errors.Is(err, k8s.ErrSecretExists) {
		return failed(fmt.Errorf("%w: bootstrap is for new clusters; use meshpki install, or pass --force to replace it (a backup is kept)", err))
	}
	return failed(err)
}

// prepareOut is ca.PrepareOutDir with the CLI's logger and exit code.
func prepareOut(ctx context.Context, e *env, out string) (unlock func(), err error) {
	unlock, err = ca.PrepareOutDir(ctx, out, e.log)
	if err != nil {
		return nil, failed(err)
	}
	return unlock, nil
}
