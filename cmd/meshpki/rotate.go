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
	TrustDomain   string
	KeepBackups   int
	RestartIstiod bool
	MetricsFile   string
	Output        string
	Readmit       []string
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
		trustDomainFlag(catRotate),
		&cli.IntFlag{Name: "keep-backups", Category: catRotate, Value: k8s.DefaultKeepBackups, Usage: "cacerts-backup-* Secrets kept per cluster; -1 keeps all, e.g. --keep-backups 5"},
		&cli.BoolFlag{Name: "restart-istiod", Category: catRotate, Usage: "restart istiod where cacerts changed (Istio before 1.19 does not reload it)"},
		readmitFlag(catRotate),
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
		TrustDomain:   c.String("trust-domain"),
		KeepBackups:   c.Int("keep-backups"),
		RestartIstiod: c.Bool("restart-istiod"),
		MetricsFile:   c.String("metrics-file"),
		Output:        c.String("output"),
		Readmit:       c.StringSlice("readmit"),
	}
}

// readmitFlag is --readmit, of the commands that may give a revoked cluster a new CA.
func readmitFlag(category string) cli.Flag {
	return &cli.StringSliceFlag{Name: "readmit", Category: category, Usage: "give this `CLUSTER`, whose CA is revoked, a new one, re-admitting it to the mesh (repeatable); without it a revoked cluster is left as it is"}
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
	if err := checkTrustDomain(o.TrustDomain); err != nil {
		return err
	}
	p := ca.IntermediateProfile("", o.Org)
	p.TTL, p.KeyType, p.AllowShortTTL, p.TrustDomain = ttl, kt, o.AllowShortTTL, o.TrustDomain
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

// onWait says, once per cluster, that a run waits for a Lease another run holds:
// what it waits for, how long at most, and how to skip the wait.
func (l *lockOptions) onWait(e *env) {
	l.lease.OnWait = func(cluster string, held *k8s.LockedError) {
		e.log.Info("waiting for the lock another run holds (--lock-wait 0 gives up at once)", "cluster", cluster,
			"holder", held.Holder, "expires", held.Expires.UTC().Format(time.RFC3339), "lockWait", l.Wait.String())
	}
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

// Run opens the root source before touching any cluster, rotates every cluster
// that is due (mesh.Rotate), writes the report and the metrics file; any cluster
// not healthy afterwards exits 1.
func (o *rotateOptions) Run(ctx context.Context, e *env) error {
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	o.Lock.onWait(e)
	o.rotate.Lock.OnWait = o.Lock.lease.OnWait
	lines := &lineWriter{w: e.stderr}
	opts := mesh.RotateOptions{Rotate: o.rotate, Concurrency: o.Clusters.Concurrency, CRLSettle: o.settle, Log: e.log, Readmit: o.Readmit,
		Progress: func(r k8s.Result[*k8s.RotateResult]) { lines.cluster(r.Cluster.Name, r.Value, r.Err) }}
	// The root source first: a sealed Vault or a refused token must stop the run
	// before any cluster is touched.
	src, err := o.CRL.source(ctx, e, o.Root)
	if err != nil {
		rep := mesh.NotStarted(clusters, opts, fmt.Errorf("%w; no cluster was touched", err))
		o.report(e, lines, rep)
		return rep.Err
	}
	e.log.Debug("rotating", "clusters", len(clusters), "renewBefore", o.rotate.RenewBefore.String(), "root", textfmt.Fingerprint(ca.Fingerprint(src.Issuer.Anchor())),
		"lockHolder", o.rotate.Lock.Holder, "dryRun", o.rotate.DryRun)
	rep := mesh.Rotate(ctx, clusters, src, opts)
	if rep.Error != "" { // stopped before any cluster was rotated
		o.report(e, lines, rep)
		return rep.Err
	}
	merr := o.report(e, lines, rep)
	if rep.Err != nil && merr != nil {
		return fmt.Errorf("%w; and %w", rep.Err, merr)
	}
	return errors.Join(rep.Err, merr)
}

// report writes rotate's result: the JSON or the summary on stdout, then the
// metrics file.
func (o *rotateOptions) report(e *env, lines *lineWriter, rep *mesh.RotateReport) error {
	for i, c := range rep.Clusters {
		if c.Err != nil && rep.Error == "" {
			rep.Clusters[i].Error = adviseText(c.Err)
		}
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, rep.OK, rep); err != nil {
			return err
		}
		if rep.Error == "" {
			lines.line(rotateSummary(rep))
		}
	} else if rep.Error == "" {
		fmt.Fprintln(e.stdout, rotateSummary(rep))
	}
	if o.MetricsFile == "" {
		return nil
	}
	var runs []metrics.Run
	for _, c := range rep.Clusters {
		runs = append(runs, metrics.Run{Cluster: c.Cluster, OK: c.Outcome.OK() && c.Err == nil && rep.Error == "",
			Rotated: c.Outcome == k8s.OutcomeRotated, NotAfter: c.NotAfter, CRLNextUpdate: rep.CRLNextUpdate[c.Cluster]})
	}
	err := writeMetrics(e, o.MetricsFile, runs)
	if err != nil && rep.Error != "" {
		e.log.Error("metrics file", "err", err)
		return nil
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
func rotateSummary(rep *mesh.RotateReport) string {
	var parts []string
	for _, o := range []struct {
		outcome k8s.Outcome
		label   string
	}{
		{k8s.OutcomeRotated, "rotated"}, {k8s.OutcomeDue, "due (would rotate)"}, {k8s.OutcomeNotDue, "not due"},
		{k8s.OutcomeLocked, "locked"}, {k8s.OutcomeRevoked, "revoked"}, {k8s.OutcomeFailed, "failed"},
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
			l.line(name + ": warning: " + warningText(w))
		}
	}
}

func describeRotation(name string, res *k8s.RotateResult, err error) string {
	msg := ""
	if err != nil {
		msg = strings.TrimPrefix(adviseText(err), "cluster "+name+": ")
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
	case k8s.OutcomeRevoked:
		return "revoked, left as it is: " + msg
	}
	return "failed: " + msg
}
