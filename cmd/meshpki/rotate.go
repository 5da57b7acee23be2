package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/metrics"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// rotateOptions is "rotate": its flags as given (bind), then (Validate) the
// k8s.RotateOptions they mean.
type rotateOptions struct {
	cmd           cmdArgs
	Root          rootSource
	Clusters      clusterOptions
	Lock          lockOptions
	RenewBefore   string
	Force         bool
	AllowNewRoot  bool
	DryRun        bool
	TTL           string
	KeyType       string
	Org           string
	Format        string // "": the layout installed
	AllowShortTTL bool
	KeepBackups   int
	RestartIstiod bool
	MetricsFile   string
	Output        string
	CRL           crlSettings
	CRLSettle     string
	settle        time.Duration // set by Validate

	rotate k8s.RotateOptions // set by Validate; Issuer once the root is open
}

const catRotate = "Rotation"

func rotateCommand(e *env) *cli.Command {
	flags := append(rootSourceFlags(), clusterFlags(true)...)
	flags = append(flags, crlSettingFlags(catRotate)...)
	flags = append(flags, crlSettleFlag())
	flags = append(flags,
		&cli.StringFlag{Name: "renew-before", Category: catRotate, Usage: "rotate when less life is left than this: a duration (720h, 30d) or a share of the lifetime (33%); default: a third of the lifetime, e.g. --renew-before 60d"},
		&cli.BoolFlag{Name: "force", Category: catRotate, Usage: "rotate every chosen cluster, due or not, e.g. after a key may have leaked"},
		&cli.BoolFlag{Name: "allow-new-root", Category: catRotate, Usage: "also rotate clusters whose intermediate chains to another root, moving them to the current root (breaks cross-cluster mTLS until every cluster moved: prefer a root rotation)"},
		&cli.BoolFlag{Name: "dry-run", Category: catRotate, Usage: "decide and report only: no lock taken, nothing minted, nothing written"},
		lockWaitFlag(catRotate),
		ttlFlag(catRotate, ca.DefaultIntermediateTTL, "lifetime of new intermediates"),
		&cli.StringFlag{Name: "key-type", Category: catRotate, Value: string(ca.ECDSAP256), Usage: "key of new intermediates: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096, e.g. --key-type rsa-4096"},
		orgFlag(catRotate, "subject O of new intermediates (CN="+ca.DefaultIntermediateCN+", L=<cluster>); must not be empty, e.g. --org Example"),
		&cli.StringFlag{Name: "format", Category: catRotate, Usage: "Secret keys to write: istio or tls; default: the layout installed (istio when none), e.g. --format tls"},
		&cli.BoolFlag{Name: "allow-short-ttl", Category: catRotate, Usage: "accept a lifetime cut short by the root's expiry instead of failing"},
		&cli.IntFlag{Name: "keep-backups", Category: catRotate, Value: k8s.DefaultKeepBackups, Usage: "cacerts-backup-* Secrets kept per cluster; -1 keeps all, e.g. --keep-backups 5"},
		&cli.BoolFlag{Name: "restart-istiod", Category: catRotate, Usage: "restart istiod where cacerts changed (Istio before 1.19 does not reload it)"},
		&cli.StringFlag{Name: "metrics-file", Category: catRotate, Usage: "write Prometheus metrics for node_exporter's textfile collector here, atomically; counters carry over from the previous file, e.g. --metrics-file /var/lib/node_exporter/textfile/meshpki.prom"},
		outputFlag(),
	)
	return &cli.Command{
		Name:  "rotate",
		Usage: "renew each cluster's intermediate CA when it is due: for cron",
		Description: `For every chosen cluster (in parallel), reads Secret cacerts and decides whether
its intermediate CA is due:

  - missing, or failing istiod's checks: due;
  - signed by another root than the current one (--root-dir, --vault-pki or
    --vault-kv): due with --allow-new-root, otherwise that cluster fails;
  - less life left than --renew-before (default: a third of its lifetime): due;
  - --force: every cluster is due.

A cluster that is not due gets no write at all. A due cluster is locked (a
coordination.k8s.io Lease named ` + k8s.LeaseName + ` in the namespace; another run's
lock is waited for up to --lock-wait, an expired one is taken over), read again,
given a freshly minted intermediate (new key) that is verified, and installed as
install does: the previous cacerts is backed up first, the update carries the
resourceVersion read, the Secret is written whole. Then cacerts is read back and
the lock released. Vault (or the root folder) is opened and checked before any
cluster is touched: a sealed Vault or a revoked token changes nothing.

With CRLs on (some cacerts has ca-crl.pem; docs/revocation.md), the due clusters'
new intermediates are minted first, their CRLs written into every cluster, and
--crl-settle waited for the proxies to read them, before any is installed; a
cluster that cannot take them stops the run with nothing rotated. The run ends
with crl sync, which signs again the CRLs close to their next update.

Output: one line per cluster on stderr as it finishes ("rotated", "not due (N days
left, ...)", "locked by HOLDER", "failed: reason"); then the summary on stdout, or
with --output json the per-cluster records on stdout (and the summary on stderr).
Key material is never printed.

Exit status: 0 when every cluster is healthy afterwards (rotated or not due; in a
dry run, due counts as healthy), 1 when any cluster failed or stayed locked (the
others still ran) or the root source or the metrics file failed, 2 on bad usage.

Examples:
   meshpki rotate --all-contexts --root-dir root
   meshpki rotate --all-contexts --vault-pki pki --dry-run
   meshpki rotate --all-contexts --vault-pki pki --renew-before 30d --metrics-file /var/lib/node_exporter/textfile/meshpki.prom
   meshpki rotate --context east --vault-kv secret/meshpki/root --force --output json
   meshpki rotate --kubeconfig /etc/meshpki/kubeconfig --all-contexts --vault-pki pki \
       --vault-auth kubernetes --vault-role meshpki-rotate`,
		Flags:  flags,
		Action: actionOf(e, bindRotate),
	}
}

func bindRotate(c *cli.Context) *rotateOptions {
	return &rotateOptions{
		cmd:           bindArgs(c),
		Root:          bindRootSource(c, bindVaultConn(c)),
		Clusters:      bindClusters(c),
		Lock:          bindLock(c),
		CRL:           bindCRLSettings(c),
		CRLSettle:     c.String("crl-settle"),
		RenewBefore:   c.String("renew-before"),
		Force:         c.Bool("force"),
		AllowNewRoot:  c.Bool("allow-new-root"),
		DryRun:        c.Bool("dry-run"),
		TTL:           c.String("ttl"),
		KeyType:       c.String("key-type"),
		Org:           c.String("org"),
		Format:        c.String("format"),
		AllowShortTTL: c.Bool("allow-short-ttl"),
		KeepBackups:   c.Int("keep-backups"),
		RestartIstiod: c.Bool("restart-istiod"),
		MetricsFile:   c.String("metrics-file"),
		Output:        c.String("output"),
	}
}

// Validate checks the flags, and that the metrics file can be written, and builds
// the k8s.RotateOptions.
func (o *rotateOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.Root.Validate(); err != nil {
		return err
	}
	if err := o.CRL.Validate(); err != nil {
		return err
	}
	var err error
	if o.settle, err = parseDurationOrZero("crl-settle", o.CRLSettle); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	rb := ca.DefaultRenewBefore()
	if o.RenewBefore != "" {
		var err error
		if rb, err = ca.ParseRenewBefore(o.RenewBefore); err != nil {
			return inputError(fmt.Errorf("--renew-before: %w", err))
		}
	}
	ttl, err := parseDuration("ttl", o.TTL)
	if err != nil {
		return err
	}
	if rb.Duration >= ttl {
		return inputError(fmt.Errorf("--renew-before %s is not shorter than --ttl %s: every new intermediate would be due at once, and every run would rotate again",
			o.RenewBefore, o.TTL))
	}
	kt, err := parseKeyType(o.KeyType)
	if err != nil {
		return err
	}
	var format ca.Format
	if o.Format != "" {
		if format, err = parseFormat(o.Format); err != nil {
			return err
		}
	}
	if err := checkKeepBackups(o.KeepBackups); err != nil {
		return err
	}
	if err := o.Lock.Validate(); err != nil {
		return err
	}
	if o.MetricsFile != "" {
		if o.DryRun {
			return inputError(errors.New("--metrics-file records what a run did, and a dry run does nothing: drop one of them"))
		}
		if err := metrics.CheckPath(o.MetricsFile); err != nil {
			return inputError(fmt.Errorf("--metrics-file: %w", err))
		}
	}
	if err := checkOrg(o.Org); err != nil {
		return err
	}
	p := ca.IntermediateProfile("", o.Org)
	p.TTL, p.KeyType, p.AllowShortTTL = ttl, kt, o.AllowShortTTL
	o.rotate = k8s.RotateOptions{
		Namespace:     o.Clusters.Namespace,
		Profile:       p,
		Format:        format,
		RenewBefore:   rb,
		Force:         o.Force,
		AllowNewRoot:  o.AllowNewRoot,
		DryRun:        o.DryRun,
		KeepBackups:   o.KeepBackups,
		RestartIstiod: o.RestartIstiod,
		Lock:          o.Lock.lease,
	}
	return nil
}

// lockWaitFlag is --lock-wait, for every command that writes cacerts.
func lockWaitFlag(category string) cli.Flag {
	return &cli.DurationFlag{Name: "lock-wait", Category: category, Value: time.Minute,
		Usage: "how long to wait for a cluster's lock (Lease " + k8s.LeaseName + ", which install, bootstrap, rotate and root rotate share) that another run holds before giving up on that cluster; 0 gives up at once, e.g. --lock-wait 5m"}
}

// lockOptions is the --lock-wait flag group: the Lease this run takes in each
// cluster it writes to.
type lockOptions struct {
	Wait  time.Duration
	lease k8s.LeaseOptions // set by Validate
}

func bindLock(c *cli.Context) lockOptions { return lockOptions{Wait: c.Duration("lock-wait")} }

// Validate checks --lock-wait and names this run's Lease holder.
func (l *lockOptions) Validate() error {
	if l.Wait < 0 {
		return inputError(fmt.Errorf("--lock-wait must be 0 or more, got %s", l.Wait))
	}
	holder, err := lockHolder()
	if err != nil {
		return err
	}
	l.lease = k8s.LeaseOptions{Holder: holder, Wait: l.Wait}
	return nil
}

// lockHolder names this run in the Leases it takes: the host name (a CronJob's pod
// name) and a random suffix, so that two runs on one host differ.
func lockHolder() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "meshpki"
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return host + "_" + hex.EncodeToString(b), nil
}

// rotateEntry is one cluster's record in rotate's JSON.
type rotateEntry struct {
	*k8s.RotateResult
	Error string `json:"error,omitempty"`
}

type rotateReport struct {
	// OK: every cluster is healthy after the run.
	OK          bool   `json:"ok"`
	DryRun      bool   `json:"dryRun"`
	RenewBefore string `json:"renewBefore"`
	// Summary counts clusters by outcome.
	Summary  map[k8s.Outcome]int `json:"summary"`
	Clusters []rotateEntry       `json:"clusters"`
	// CRLsAhead is the spread of the new intermediates' CRLs before any was
	// installed, when CRLs are on and a cluster was due.
	CRLsAhead []*mesh.CRLSyncResult `json:"crlsAhead,omitempty"`
	// CRLs is the mesh CRL set's refresh after the rotations, when CRLs are on.
	CRLs []*mesh.CRLSyncResult `json:"crls,omitempty"`
	// Error is what stopped the whole run (the root source), if anything did.
	Error string `json:"error,omitempty"`
}

// Run opens the root source before touching any cluster, rotates every cluster
// that is due (k8s.Rotate), writes the report and the metrics file; any cluster not
// healthy afterwards exits 1.
func (o *rotateOptions) Run(ctx context.Context, e *env) error {
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	rep := rotateReport{OK: true, DryRun: o.rotate.DryRun, RenewBefore: o.rotate.RenewBefore.String(), Summary: map[k8s.Outcome]int{}}
	lines := &lineWriter{w: e.stderr}

	// The root source first: a sealed Vault or a refused token must stop the run
	// before any cluster is touched.
	iss, err := o.Root.issuer(ctx, e)
	if err != nil {
		return o.notStarted(e, clusters, &rep, fmt.Errorf("%w; no cluster was touched", err))
	}
	o.rotate.Issuer = iss
	o.rotate.CRLTTL = o.CRL.ttl
	e.log.Debug("rotating", "clusters", len(clusters), "renewBefore", o.rotate.RenewBefore.String(), "root", textfmt.Fingerprint(ca.Fingerprint(iss.Anchor())),
		"lockHolder", o.rotate.Lock.Holder, "dryRun", o.rotate.DryRun)

	if !o.rotate.DryRun {
		if err := o.spreadAhead(ctx, e, iss, clusters, &rep); err != nil {
			return o.notStarted(e, clusters, &rep, fmt.Errorf("%w; no cluster was rotated", err))
		}
	}
	results := k8s.Each(ctx, clusters, o.Clusters.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.RotateResult, error) {
		return k8s.Rotate(ctx, cl, o.rotate)
	}, func(r k8s.Result[*k8s.RotateResult]) {
		lines.cluster(r.Cluster.Name, r.Value, r.Err)
	})

	var runs []metrics.Run
	var bad []string
	for _, r := range results {
		res := r.Value
		if res == nil { // not started
			res = &k8s.RotateResult{Cluster: r.Cluster.Name, Namespace: o.rotate.Namespace, DryRun: o.rotate.DryRun, Outcome: k8s.OutcomeFailed}
		}
		entry := rotateEntry{RotateResult: res}
		if r.Err != nil {
			entry.Error = r.Err.Error()
			if errors.Is(r.Err, k8s.ErrOtherRoot) {
				entry.Error += " (--allow-new-root rotates it anyway)"
			}
		}
		if !res.Outcome.OK() || r.Err != nil {
			rep.OK = false
			bad = append(bad, fmt.Sprintf("%s: %s", res.Cluster, res.Outcome))
		}
		rep.Summary[res.Outcome]++
		rep.Clusters = append(rep.Clusters, entry)
		runs = append(runs, metrics.Run{Cluster: res.Cluster, OK: res.Outcome.OK() && r.Err == nil,
			Rotated: res.Outcome == k8s.OutcomeRotated, NotAfter: res.NotAfter})
	}
	crlNext := map[string]time.Time{}
	if !o.rotate.DryRun {
		if err := o.syncCRLs(ctx, e, iss, clusters, &rep, crlNext); err != nil {
			rep.OK = false
			bad = append(bad, "CRLs: "+err.Error())
		}
	}
	for i := range runs {
		runs[i].CRLNextUpdate = crlNext[runs[i].Cluster]
	}
	summary := rotateSummary(rep)
	if o.Output == "json" {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
		lines.line(summary)
	} else {
		fmt.Fprintln(e.stdout, summary)
	}
	var merr error
	if o.MetricsFile != "" {
		merr = writeMetrics(e, o.MetricsFile, runs)
	}
	switch {
	case len(bad) > 0 && merr != nil:
		return failed(fmt.Errorf("%d of %d clusters not healthy (%s); and %w", len(bad), len(results), strings.Join(bad, ", "), merr))
	case len(bad) > 0:
		return failed(fmt.Errorf("%d of %d clusters not healthy (%s)", len(bad), len(results), strings.Join(bad, ", ")))
	}
	return failed(merr)
}

// notStarted reports a run stopped before any cluster was rotated: every cluster
// failed, not started, in the JSON result and the metrics.
func (o *rotateOptions) notStarted(e *env, clusters []*k8s.Cluster, rep *rotateReport, err error) error {
	rep.OK, rep.Error = false, err.Error()
	var runs []metrics.Run
	for _, cl := range clusters {
		res := &k8s.RotateResult{Cluster: cl.Name, Namespace: o.rotate.Namespace, DryRun: o.rotate.DryRun, Outcome: k8s.OutcomeFailed}
		rep.Clusters = append(rep.Clusters, rotateEntry{RotateResult: res, Error: "not started: " + err.Error()})
		rep.Summary[k8s.OutcomeFailed]++
		runs = append(runs, metrics.Run{Cluster: cl.Name})
	}
	if o.Output == "json" {
		if werr := writeJSON(e.stdout, rep); werr != nil {
			return werr
		}
	}
	if o.MetricsFile != "" {
		if werr := writeMetrics(e, o.MetricsFile, runs); werr != nil {
			e.log.Error("metrics file", "err", werr)
		}
	}
	return err
}

// spreadAhead, when CRLs are on in the mesh, mints the due clusters' new
// intermediates first (mesh.MintAhead), spreads their CRLs to every cluster
// (mesh.SyncCRLs with them pending) and waits --crl-settle: the other clusters'
// proxies then accept what a new intermediate signs from the moment it is
// installed. A cluster that cannot take the new CRLs stops the run: rotating
// anyway would cut the new intermediates off from it.
func (o *rotateOptions) spreadAhead(ctx context.Context, e *env, iss ca.Issuer, clusters []*k8s.Cluster, rep *rotateReport) error {
	opts := mesh.CRLSyncOptions{Namespace: o.rotate.Namespace, TTL: o.CRL.ttl, Refresh: o.CRL.refresh, Concurrency: o.Clusters.Concurrency,
		Lock: &o.rotate.Lock}
	if on, err := mesh.CRLsEnabled(ctx, clusters, opts); err != nil || !on {
		return nil // no CRLs; or no cluster readable, which the rotations report
	}
	minted, err := mesh.MintAhead(ctx, clusters, o.rotate)
	if err != nil || len(minted) == 0 {
		return err
	}
	if opts.AnchorCRLs, err = rootCRLs(e, o.Root, iss, o.CRL, false)(ctx); err != nil {
		return err
	}
	for _, cl := range clusters {
		if b := minted[cl.Name]; b != nil {
			// A due cluster whose cacerts fails verification is replaced, not read.
			opts.Pending, opts.Replacing = append(opts.Pending, b), append(opts.Replacing, cl.Name)
		}
	}
	res, err := mesh.SyncCRLs(ctx, clusters, opts)
	rep.CRLsAhead = res
	for _, r := range res {
		e.log.Info("CRLs ahead", "cluster", r.Cluster, "action", r.Action, "crls", r.CRLs)
	}
	if err != nil {
		return fmt.Errorf("spreading the new intermediates' CRLs first: %w", err)
	}
	if err := mesh.SettleCRLs(ctx, o.settle, res, false); err != nil {
		return fmt.Errorf("waiting --crl-settle for the proxies to read the new CRLs: %w", err)
	}
	o.rotate.Minted = minted
	return nil
}

// syncCRLs refreshes and spreads the mesh CRL set after the rotations, when CRLs
// are on in the mesh (some cluster's cacerts has ca-crl.pem): a rotated cluster's
// new CA reaches the others, and no CRL passes its next update.
func (o *rotateOptions) syncCRLs(ctx context.Context, e *env, iss ca.Issuer, clusters []*k8s.Cluster, rep *rotateReport, next map[string]time.Time) error {
	opts := mesh.CRLSyncOptions{Namespace: o.rotate.Namespace, TTL: o.CRL.ttl, Refresh: o.CRL.refresh, Concurrency: o.Clusters.Concurrency,
		Lock: &o.rotate.Lock}
	// CRLs are on when a cluster has them: nothing is signed otherwise.
	enabled, err := mesh.CRLsEnabled(ctx, clusters, opts)
	if err != nil || !enabled {
		return err
	}
	anchors, err := rootCRLs(e, o.Root, iss, o.CRL, false)(ctx)
	if err != nil {
		return err
	}
	opts.AnchorCRLs = anchors
	res, err := mesh.SyncCRLs(ctx, clusters, opts)
	rep.CRLs = res
	for _, r := range res {
		if r.Err == nil && !r.NextUpdate.IsZero() {
			next[r.Cluster] = r.NextUpdate
		}
		e.log.Info("CRLs", "cluster", r.Cluster, "action", r.Action, "crls", r.CRLs, "signedOwnCRL", r.Signed)
	}
	return err
}

func writeMetrics(e *env, path string, runs []metrics.Run) error {
	note, err := metrics.Update(path, time.Now(), runs)
	if note != "" {
		e.log.Warn(note)
	}
	return err
}

// rotateSummary is the closing line, e.g. "3 clusters: 1 rotated, 2 not due".
func rotateSummary(rep rotateReport) string {
	var parts []string
	for _, o := range []struct {
		outcome k8s.Outcome
		label   string
	}{
		{k8s.OutcomeRotated, "rotated"}, {k8s.OutcomeDue, "due (would rotate)"}, {k8s.OutcomeNotDue, "not due"},
		{k8s.OutcomeLocked, "locked"}, {k8s.OutcomeFailed, "failed"},
	} {
		if n := rep.Summary[o.outcome]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o.label))
		}
	}
	line := countLine(len(rep.Clusters), parts)
	if rep.DryRun {
		line = "dry run, nothing changed: " + line
	}
	return line
}

// lineWriter prints one line per cluster as it finishes, from many goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, s)
}

// cluster prints what happened to one cluster: never key material.
func (l *lineWriter) cluster(name string, res *k8s.RotateResult, err error) {
	l.line(name + ": " + describeRotation(name, res, err))
	if res != nil {
		for _, w := range res.Warnings {
			if w == k8s.WarningIstiodSelfSigned {
				w += "; or pass --restart-istiod"
			}
			l.line(name + ": warning: " + w)
		}
	}
}

func describeRotation(name string, res *k8s.RotateResult, err error) string {
	msg := ""
	if err != nil {
		msg = strings.TrimPrefix(err.Error(), "cluster "+name+": ")
	}
	if res == nil {
		return "failed: " + msg
	}
	switch res.Outcome {
	case k8s.OutcomeRotated:
		var parts []string
		if res.Before != nil && res.Before.Serial != "" {
			parts = append(parts, fmt.Sprintf("serial %s -> %s", res.Before.Serial, res.After.Serial))
		} else {
			parts = append(parts, "serial "+res.After.Serial)
		}
		parts = append(parts, fmt.Sprintf("not after %s (%d days left)", res.NotAfter.Format(time.RFC3339), res.RemainingSeconds/86400))
		if res.Backup != "" {
			parts = append(parts, "previous kept as "+res.Backup)
		}
		if len(res.IstiodRestarted) > 0 {
			parts = append(parts, "restarted "+strings.Join(res.IstiodRestarted, ","))
		}
		return "rotated (" + res.Reason + "): " + strings.Join(parts, ", ")
	case k8s.OutcomeNotDue:
		return "not due (" + res.Reason + ")"
	case k8s.OutcomeDue:
		return "due, would rotate: " + res.Reason
	case k8s.OutcomeLocked:
		return msg + "; not rotated (" + res.Reason + ")"
	}
	return "failed: " + msg
}
