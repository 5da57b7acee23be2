package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
	"github.com/meshpki/meshpki/rootsource"
)

// crlSettingFlags are --crl-ttl, --crl-refresh and --upstream-crl.
func crlSettingFlags(category string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "crl-ttl", Category: category, Value: durationText(ca.DefaultCRLTTL), Usage: "life of each CRL signed (nextUpdate), e.g. 7d"},
		&cli.StringFlag{Name: "crl-refresh", Category: category, Value: durationText(ca.DefaultCRLRefresh), Usage: "sign a CRL again once it has less than this left; a daily run keeps every CRL current"},
		&cli.StringSliceFlag{Name: "upstream-crl", Category: category, Usage: "with an issuing CA as signing CA (--ca-dir, a Vault KV issuing CA, a Vault intermediate mount): a PEM `FILE` of current v2 CRLs of the CAs above it up to the root, which meshpki passes on to every cluster (repeatable)"},
	}
}

// crlSettleFlag is --crl-settle, of the commands that spread new CRLs and then
// install a CA whose workloads need them.
func crlSettleFlag() cli.Flag {
	return &cli.StringFlag{Name: "crl-settle", Value: durationText(mesh.DefaultCRLSettle), EnvVars: []string{"MESHPKI_CRL_SETTLE"}, Usage: "with CRLs on: wait this long after spreading new CRLs before installing the CA that needs them, for the proxies to read them (the kubelet refreshes the mounted istio-ca-crl ConfigMap about once a minute); 0 waits not"}
}

// crlSettings is the --crl-ttl / --crl-refresh / --upstream-crl group.
type crlSettings struct {
	TTL, Refresh string
	// Upstream are the --upstream-crl files.
	Upstream     []string
	ttl, refresh time.Duration // set by Validate
}

func bindCRLSettings(c *cli.Context) crlSettings {
	return crlSettings{TTL: c.String("crl-ttl"), Refresh: c.String("crl-refresh"), Upstream: c.StringSlice("upstream-crl")}
}

func (t *crlSettings) Validate() error {
	var err error
	if t.ttl, err = parseDuration("crl-ttl", t.TTL); err != nil {
		return err
	}
	if t.refresh, err = parseDuration("crl-refresh", t.Refresh); err != nil {
		return err
	}
	if t.ttl <= 0 || t.refresh <= 0 || t.refresh >= t.ttl {
		return inputError(fmt.Errorf("--crl-refresh (%s) must be positive and less than --crl-ttl (%s)", t.Refresh, t.TTL))
	}
	return nil
}

// source opens root source src as the mesh jobs take it (mesh.Source): its
// issuer now, its revocation side only when a job needs it (CRLs on), and the
// --upstream-crl files read.
func (t *crlSettings) source(ctx context.Context, e *env, src rootSource) (*mesh.Source, error) {
	iss, err := src.issuer(ctx, e)
	if err != nil {
		return nil, err
	}
	return t.sourceOf(e, src, iss)
}

// sourceOf is source with the issuer open already.
func (t *crlSettings) sourceOf(e *env, src rootSource, iss ca.Issuer) (*mesh.Source, error) {
	var up []*x509.RevocationList
	for _, name := range t.Upstream {
		c, err := ca.ReadCRLFile(name)
		if err != nil {
			return nil, inputError(fmt.Errorf("--upstream-crl: %w", err))
		}
		up = append(up, c...)
	}
	return &mesh.Source{Issuer: iss, Upstream: up, CRLTTL: t.ttl, CRLRefresh: t.refresh, Log: e.log.With("source", src.Spec.String()),
		CRLAuthority: func(ctx context.Context) (ca.CRLAuthority, error) { return crlAuthority(ctx, e, src, iss) }}, nil
}

// crlAuthority is the revocation side of the opened root source
// (rootsource.CRLAuthority); a source that keeps no CRL gives mesh.ErrNoRootCRL.
func crlAuthority(ctx context.Context, e *env, src rootSource, iss ca.Issuer) (ca.CRLAuthority, error) {
	opts, err := src.options(ctx, e)
	if err != nil {
		return nil, err
	}
	a, err := rootsource.CRLAuthority(ctx, src.Spec, iss, opts)
	switch {
	case err == nil:
		return a, nil
	case errors.Is(err, rootsource.ErrNoCRL):
		return nil, inputError(fmt.Errorf("%w: %w", mesh.ErrNoRootCRL, err))
	case src.UsesVault():
		return nil, vaultError(err)
	}
	return nil, inputError(err)
}

// crlFlags are the flags of the commands that sign and spread CRLs.
func crlFlags() []cli.Flag {
	flags := []cli.Flag{
		&cli.BoolFlag{Name: "dry-run", Usage: "sign and check everything, write nothing (the API servers validate the writes)"},
		lockWaitFlag(""),
		outputFlag(),
	}
	flags = append(flags, crlSettingFlags("")...)
	return append(append(flags, rootSourceFlags()...), clusterFlags(true)...)
}

// crlOptions is the flag group shared by crl sync and revoke.
type crlOptions struct {
	cmd      cmdArgs
	Source   rootSource
	Times    crlSettings
	DryRun   bool
	Output   string
	Clusters clusterOptions
	Lock     lockOptions
}

func bindCRL(c *cli.Context) crlOptions {
	return crlOptions{cmd: bindArgs(c), Source: bindRootSource(c, bindVaultConn(c)), Times: bindCRLSettings(c),
		DryRun: c.Bool("dry-run"), Output: c.String("output"), Clusters: bindClusters(c), Lock: bindLock(c)}
}

func (o *crlOptions) Validate() error {
	if err := o.Source.Validate(); err != nil {
		return err
	}
	if err := o.Times.Validate(); err != nil {
		return err
	}
	var err error
	if o.Output, err = parseOutputFormat(o.Output); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	return o.Lock.Validate()
}

// run is crl sync's and revoke's end: the report on stdout (text or JSON) and the
// exit code; a run stopped before any cluster was read prints nothing.
func (o *crlOptions) run(e *env, rep *mesh.CRLReport) error {
	if rep.Clusters == nil {
		return rep.Err
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, rep.Err == nil, rep); err != nil {
			return err
		}
	} else {
		printCRLRun(e, rep)
	}
	return rep.Err
}

// runOptions are the mesh.CRLRunOptions of the flags, with progress on stderr.
func (o *crlOptions) runOptions(p *progress) mesh.CRLRunOptions {
	lease := o.Lock.lease
	return mesh.CRLRunOptions{Namespace: o.Clusters.Namespace, Concurrency: o.Clusters.Concurrency, Lock: &lease, DryRun: o.DryRun,
		Progress: func(r *mesh.CRLSyncResult) { p.item(r.Cluster, r.Err, "action", r.Action, "crls", r.CRLs) }}
}

func printCRLRun(e *env, run *mesh.CRLReport) {
	for _, r := range run.Revoked {
		if r.Already {
			fmt.Fprintf(e.stdout, "%s CA serial %s was revoked already: its revocation is spread again\n", orDash(r.Cluster), r.Serial)
			continue
		}
		fmt.Fprintf(e.stdout, "revoked %s CA serial %s (%s)\n", r.Cluster, r.Serial, r.Reason)
	}
	verb := "kept"
	if run.RootCRL.Signed {
		verb = "signed"
	}
	what := "root CRL"
	if len(run.Upstream) > 0 {
		what = "CRL of the signing CA " + run.RootCRL.CA
	}
	fmt.Fprintf(e.stdout, "%s %s: number %s, %d revoked, next update %s\n", what, verb, run.RootCRL.Number, len(run.RootCRL.Revoked), run.RootCRL.NextUpdate.Format(time.RFC3339))
	for _, u := range run.Upstream {
		fmt.Fprintf(e.stdout, "CRL of %s passed on: number %s, %d revoked, next update %s\n", u.CA, u.Number, len(u.Revoked), u.NextUpdate.Format(time.RFC3339))
	}
	counts := map[k8s.Action]int{}
	failed := 0
	for _, r := range run.Clusters {
		switch {
		case r.Err != nil:
			failed++
			fmt.Fprintf(e.stdout, "%s: failed: %v\n", r.Cluster, r.Err)
		case r.Revoked:
			counts["revoked"]++
			fmt.Fprintf(e.stdout, "%s: revoked, cacerts left as it is\n", r.Cluster)
		case r.Action == mesh.ActionSkipped:
			counts[r.Action]++
			fmt.Fprintf(e.stdout, "%s: skipped (%s)\n", r.Cluster, strings.Join(r.Warnings, "; "))
		default:
			counts[r.Action]++
			own := ""
			if r.Signed {
				own = ", signed its CA's CRL"
			}
			fmt.Fprintf(e.stdout, "%s: %s (%d CRLs, next update %s%s)\n", r.Cluster, r.Action, r.CRLs, r.NextUpdate.Format(time.RFC3339), own)
		}
	}
	var parts []string
	for _, a := range []k8s.Action{k8s.ActionUpdated, k8s.ActionUnchanged, "revoked", mesh.ActionSkipped} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", failed))
	}
	fmt.Fprintln(e.stdout, countLine(len(run.Clusters), parts))
}

func crlCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "crl",
		Usage: "certificate revocation lists for the whole mesh (ca-crl.pem)",
		Description: `Every cluster's cacerts holds, as ` + ca.CRLFile + `, one current CRL of every CA of the
mesh: what Envoy demands once CRLs are on (Istio 1.27 and later). meshpki revoke adds
a revocation. See docs/revocation.md.

Examples:
   meshpki crl sync --root-dir root --all-contexts
   meshpki crl sign --root-dir offline-root --out offline-root.crl`,
		Subcommands: []*cli.Command{{
			Name:  "sync",
			Usage: "give every cluster one current CRL of every CA of the mesh",
			Description: `Signs the CRL of the CA that signs cluster CAs (` + ca.RootCRLFile + ` beside a root folder,
` + ca.SigningCACRLFile + ` in an issuing CA's --ca-dir; the secret PATH/crl beside a Vault KV root
or issuing CA; or the Vault PKI issuer's own CRL, which Vault signs on crl/rotate)
when it is missing or due,
signs each cluster CA's CRL with that CA's key from the cluster's own cacerts Secret
when missing or due, and writes the whole set into every cluster's cacerts as
` + ca.CRLFile + `. istiod 1.27 and later (PILOT_ENABLE_CA_CRL, on by default) loads it,
publishes it as ConfigMap istio-ca-crl, and every proxy's Envoy then demands a current
CRL from every CA of a peer's chain: a cluster whose CA's CRL the others lack is cut
off. So switch CRLs on for the whole mesh at once, with this command, and run it
daily (or after rotate, which does it) so that no CRL passes its next update.

A second run with nothing due writes nothing. Clusters whose CA is revoked are left
as they are. See docs/revocation.md.

Examples:
   meshpki crl sync --root-dir root --all-contexts
   meshpki crl sync --root-dir root --context east --context west --dry-run -o json
   meshpki crl sync --vault-pki pki --all-contexts
   meshpki crl sync --vault-kv secret/meshpki/root --all-contexts
   meshpki crl sync --ca-dir issuing-ca --upstream-crl offline-root.crl --all-contexts

With an issuing CA below the root (--ca-dir, a Vault KV issuing CA, a Vault
intermediate mount), the CRLs of the CAs above it (the offline root's, signed
outside meshpki) come with --upstream-crl: meshpki checks them as istiod and Envoy
will (v2, signed by that CA, current, not revoking the issuing CA) and passes them on.`,
			Flags: crlFlags(),
			Action: actionOf(e, func(c *cli.Context) *crlSyncOptions {
				return &crlSyncOptions{crlOptions: bindCRL(c)}
			}),
		}, crlSignCommand(e)},
	}
}

type crlSyncOptions struct{ crlOptions }

func (o *crlSyncOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	return o.crlOptions.Validate()
}

func (o *crlSyncOptions) Run(ctx context.Context, e *env) error {
	o.Lock.onWait(e)
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	src, err := o.Times.source(ctx, e, o.Source)
	if err != nil {
		return err
	}
	p := newProgress(e, "CRLs", len(clusters))
	rep := mesh.CRLSync(ctx, clusters, src, o.runOptions(p))
	p.finish()
	return o.run(e, rep)
}

func revokeCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "revoke clusters' CAs across the whole mesh, now",
		ArgsUsage: "CLUSTER...",
		Description: `Revokes the intermediate CA of each CLUSTER (as named by --context / --cluster),
or of each --serial: the signing CA's CRL lists it (` + ca.RootCRLFile + ` beside a root
folder or ` + ca.SigningCACRLFile + ` in an issuing CA's --ca-dir, the durable record; the secret
PATH/crl beside a --vault-kv root; or Vault's own revocation and CRL with
--vault-pki), and the mesh CRL set goes to every other cluster, as crl sync does.
From then on every other cluster's Envoys refuse the revoked cluster's workloads, and
its own Secret is left as it is (the cluster may be compromised or gone). To bring it
back, mint it a new intermediate and install it, then run crl sync.

A CLUSTER must be among the chosen clusters (its serial is read from its cacerts);
a cluster that cannot be reached is revoked by --serial (meshpki status -o json shows
serials). The root itself cannot be revoked, nor the issuing CA the command signs
under, nor a CA that CA did not sign.

Examples:
   meshpki revoke --root-dir root --all-contexts --reason keyCompromise east
   meshpki revoke --root-dir root --all-contexts --reason cessationOfOperation --serial 3f2a...
   meshpki revoke --vault-pki pki --all-contexts west
   meshpki revoke --ca-dir issuing-ca --upstream-crl offline-root.crl --all-contexts east

Flags go before the CLUSTER arguments.`,
		Flags: append(crlFlags(),
			&cli.StringFlag{Name: "reason", Value: "keyCompromise", Usage: "keyCompromise, caCompromise, superseded, cessationOfOperation or unspecified"},
			&cli.StringSliceFlag{Name: "serial", Usage: "serial (hex) of a cluster CA to revoke (repeatable)"},
		),
		Action: actionOf(e, func(c *cli.Context) *revokeOptions {
			return &revokeOptions{crlOptions: bindCRL(c), Reason: c.String("reason"), Serials: c.StringSlice("serial")}
		}),
	}
}

type revokeOptions struct {
	crlOptions
	Reason  string
	Serials []string

	reason  int
	serials []*big.Int
}

func (o *revokeOptions) Validate() error {
	if len(o.cmd.Args) == 0 && len(o.Serials) == 0 {
		return inputError(fmt.Errorf("nothing to revoke: name clusters (meshpki revoke CLUSTER...) or pass --serial (see 'meshpki %s --help')", o.cmd.Path))
	}
	if err := o.cmd.flagsFirst(); err != nil {
		return err
	}
	var err error
	if o.reason, err = ca.ParseReason(o.Reason); err != nil {
		return inputError(fmt.Errorf("--reason: %w", err))
	}
	for _, s := range o.Serials {
		n, err := ca.ParseSerial(s)
		if err != nil {
			return inputError(fmt.Errorf("--serial %q: %w", s, err))
		}
		o.serials = append(o.serials, n)
	}
	return o.crlOptions.Validate()
}

func (o *revokeOptions) Run(ctx context.Context, e *env) error {
	o.Lock.onWait(e)
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	src, err := o.Times.source(ctx, e, o.Source)
	if err != nil {
		return err
	}
	if o.Source.Kind() == rootsource.KindVaultPKI && o.reason != ca.ReasonUnspecified {
		e.log.Warn("Vault records no revocation reason: its CRL lists the serials without one", "reason", o.Reason)
	}
	p := newProgress(e, "CRLs", len(clusters))
	rep := mesh.Revoke(ctx, clusters, src, mesh.RevokeOptions{CRLRunOptions: o.runOptions(p),
		Clusters: o.cmd.Args, Serials: o.serials, Reason: o.reason, ReasonName: o.Reason})
	p.finish()
	return o.run(e, rep)
}
