package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// bootstrapOptions is "bootstrap": its flags as given (bind), then (Validate) the
// profile, format and k8s.InstallOptions they mean.
type bootstrapOptions struct {
	cmd           cmdArgs
	Root          rootSource
	Clusters      clusterOptions
	Lock          lockOptions
	TTL           string
	KeyType       string
	Org           string
	TrustDomain   string
	Format        string
	Out           string
	DryRun        bool
	RestartIstiod bool
	Force         bool
	AllowNewRoot  bool
	Output        string
	// MeshContexts are the contexts of the clusters the new one joins.
	MeshContexts []string
	CRL          crlSettings
	CRLSettle    string

	// Set by Validate.
	profile ca.Profile // Cluster is filled in once the context is resolved
	format  ca.Format
	install k8s.InstallOptions
	settle  time.Duration
}

func bootstrapCommand(e *env) *cli.Command {
	flags := append(rootSourceFlags(), clusterFlags(false)...)
	flags = append(flags,
		ttlFlag("", ca.DefaultIntermediateTTL, "intermediate's lifetime"),
		&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
		orgFlag("", "subject O (CN="+ca.DefaultIntermediateCN+", L=<cluster>)"),
		trustDomainFlag(""),
		&cli.StringFlag{Name: "format", Value: string(ca.FormatIstio), Usage: "Secret keys: istio (ca-cert.pem, ...) or tls (tls.crt, tls.key, ca.crt)"},
		&cli.StringFlag{Name: "out", Usage: "also write the bundle to OUT/<cluster>/ (key 0600); by default it lives only in the Secret"},
		&cli.BoolFlag{Name: "dry-run", Usage: "mint, then send the writes as a server-side dry run; nothing is stored"},
		&cli.BoolFlag{Name: "restart-istiod", Usage: "restart istiod afterwards (needed when istiod already runs with its self-signed CA)"},
		&cli.BoolFlag{Name: "force", Usage: "replace an existing cacerts (backed up first; its roots must match unless --allow-new-root)"},
		&cli.BoolFlag{Name: "allow-new-root", Usage: "with --force: replace a cacerts that trusts other roots"},
		lockWaitFlag(""),
		&cli.StringSliceFlag{Name: "mesh-context", Usage: "context of a cluster of the mesh the new one joins (repeatable): when CRLs are on there, the new CA's CRL reaches them before its cacerts is installed"},
		outputFlag(),
	)
	flags = append(flags, crlSettingFlags("")...)
	flags = append(flags, crlSettleFlag())
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

CRLs (docs/revocation.md): when the clusters given by --mesh-context hold CRLs
(ca-crl.pem), the new CA's CRL is signed and written into each of them first (as
crl sync does, under their locks); --crl-settle passes, for their proxies to read it;
then the new cacerts is created with the whole mesh CRL set. Their Envoys demand a
CRL of every CA of a peer's chain: without this they would refuse the new cluster's
workloads. The root source must keep a CRL (--root-dir, --vault-pki or --vault-kv).
If any of them cannot be written, the new cluster is not installed. Without
--mesh-context no other cluster is read: run meshpki crl sync afterwards.

Exit status: 0 on success, 1 when minting or installing failed, 2 on bad usage or
input (flags, kubeconfig, root).

Examples:
   meshpki bootstrap --context east --root-dir root
   meshpki bootstrap --context gke_prod_us-east1_mesh --cluster gke_prod_us-east1_mesh=us-east --root-dir root --out bundles
   meshpki bootstrap --context east --root-dir root --dry-run
   meshpki bootstrap --context south --root-dir root --mesh-context east --mesh-context west`,
		Flags:  flags,
		Action: actionOf(e, bindBootstrap),
	}
}

func bindBootstrap(c *cli.Context) *bootstrapOptions {
	return &bootstrapOptions{
		cmd:           bindArgs(c),
		Root:          bindRootSource(c, bindVaultConn(c)),
		Clusters:      bindClusters(c),
		Lock:          bindLock(c),
		TTL:           c.String("ttl"),
		KeyType:       c.String("key-type"),
		Org:           c.String("org"),
		TrustDomain:   c.String("trust-domain"),
		Format:        c.String("format"),
		Out:           c.String("out"),
		DryRun:        c.Bool("dry-run"),
		RestartIstiod: c.Bool("restart-istiod"),
		Force:         c.Bool("force"),
		AllowNewRoot:  c.Bool("allow-new-root"),
		Output:        c.String("output"),
		MeshContexts:  c.StringSlice("mesh-context"),
		CRL:           bindCRLSettings(c),
		CRLSettle:     c.String("crl-settle"),
	}
}

// Validate checks the flags (one --context) and builds the profile and the
// k8s.InstallOptions.
func (o *bootstrapOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.Root.Validate(); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	if n := len(o.Clusters.Contexts); n != 1 {
		return inputError(fmt.Errorf("bootstrap works on one cluster: pass --context once (got %d)", n))
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
	if o.AllowNewRoot && !o.Force {
		return inputError(errors.New("--allow-new-root only makes sense with --force"))
	}
	if err := checkOrg(o.Org); err != nil {
		return err
	}
	if err := checkTrustDomain(o.TrustDomain); err != nil {
		return err
	}
	o.profile = ca.IntermediateProfile("", o.Org)
	o.profile.TTL, o.profile.KeyType, o.profile.TrustDomain = ttl, kt, o.TrustDomain
	if err := o.Lock.Validate(); err != nil {
		return err
	}
	if err := o.CRL.Validate(); err != nil {
		return err
	}
	if o.settle, err = parseDurationOrZero("crl-settle", o.CRLSettle); err != nil {
		return err
	}
	for i, m := range o.MeshContexts {
		if m == o.Clusters.Contexts[0] {
			return inputError(fmt.Errorf("--mesh-context %s is the cluster being bootstrapped (--context)", m))
		}
		if slices.Contains(o.MeshContexts[:i], m) {
			return inputError(fmt.Errorf("--mesh-context %s given twice", m))
		}
	}
	o.install = k8s.InstallOptions{
		Namespace:     o.Clusters.Namespace,
		DryRun:        o.DryRun,
		CreateOnly:    !o.Force,
		AllowNewRoot:  o.AllowNewRoot,
		RestartIstiod: o.RestartIstiod,
		Lock:          &o.Lock.lease,
	}
	return nil
}

// Run opens the root source and bootstraps the cluster (mesh.Bootstrap: pre-flight
// checks, mint, CRLs to the mesh first when it uses them, install, --out), then
// writes the result.
func (o *bootstrapOptions) Run(ctx context.Context, e *env) error {
	o.Lock.onWait(e)
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	cl := clusters[0]
	if err := o.preflight(cl.Name); err != nil {
		return err
	}
	src, err := o.CRL.source(ctx, e, o.Root)
	if err != nil {
		return err
	}
	lease := o.Lock.lease
	bopts := mesh.BootstrapOptions{Source: src, Profile: o.profile, Format: o.format, Install: o.install, CRLSettle: o.settle, Out: o.Out, Log: e.log,
		CRLs: mesh.CRLSyncOptions{TTL: o.CRL.ttl, Refresh: o.CRL.refresh, Concurrency: k8s.DefaultConcurrency, Lock: &lease,
			Progress: func(r *mesh.CRLSyncResult) {
				e.log.Info("CRLs", r.LogAttrs()...)
			}}}
	if len(o.MeshContexts) > 0 {
		if bopts.Mesh, err = o.meshClusters(e); err != nil {
			return err
		}
	}
	prog := newProgress(e, "bootstrap", 1)
	rep, _ := mesh.Bootstrap(ctx, cl, bopts)
	prog.item(cl.Name, rep.Err)
	prog.finish()
	if o.Output == "json" {
		if err := writeJSON(e.stdout, rep.Err == nil, rep); err != nil {
			return err
		}
	} else {
		printBootstrap(e.stdout, rep)
	}
	return rep.Err
}

// preflight checks, before the root source is opened, what the flags say of the
// cluster: its name as a profile, and that --out has no bundle folder for it.
func (o *bootstrapOptions) preflight(cluster string) error {
	p := o.profile
	p.Cluster, p.Subject.Locality = cluster, []string{cluster}
	if err := p.Validate(); err != nil {
		return inputError(err)
	}
	if o.Out == "" {
		return nil
	}
	if err := ca.CheckWritable(filepath.Join(o.Out, cluster), false); errors.Is(err, ca.ErrExists) {
		return inputError(fmt.Errorf("--out: %w: bootstrap never replaces a bundle folder; choose another --out", err))
	} else if err != nil {
		return inputError(err)
	}
	return nil
}

func printBootstrap(w io.Writer, rep *mesh.BootstrapReport) {
	printInstall(w, &mesh.InstallReport{OK: rep.Err == nil, DryRun: rep.DryRun, Clusters: []mesh.InstallEntry{{InstallResult: rep.InstallResult, Error: rep.Error, Err: rep.Err}}})
	if rep.BundleDir != "" {
		fmt.Fprintf(w, "bundle written to %s\n", rep.BundleDir)
	}
	for _, r := range rep.CRLs {
		if r.Err != nil {
			fmt.Fprintf(w, "CRLs of %s: FAILED: %v\n", r.Cluster, r.Err)
		} else {
			fmt.Fprintf(w, "CRLs of %s: %s, %d CRLs\n", r.Cluster, r.Action, r.CRLs)
		}
	}
}

// meshClusters loads the --mesh-context clusters from the same kubeconfig, with
// the same --cluster names.
func (o *bootstrapOptions) meshClusters(e *env) ([]*k8s.Cluster, error) {
	mesh := o.Clusters
	mesh.load.Contexts = o.MeshContexts
	cls, err := mesh.loadClusters(e)
	if err != nil {
		return nil, fmt.Errorf("--mesh-context: %w", err)
	}
	return cls, nil
}
