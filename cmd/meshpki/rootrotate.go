package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// catNewRoot groups "root rotate"'s flags that say where the new root lives.
const catNewRoot = "New root"

// defaultMinStepInterval is Istio's default workload certificate lifetime: the
// time every workload needs to get a certificate from a new intermediate.
const defaultMinStepInterval = "24h"

// newRootFlags choose the root a mesh rotates to: a folder, a Vault PKI mount or a
// Vault KV v2 secret (reached with the --vault-* connection flags).
func newRootFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "new-root-dir", Category: catNewRoot, Usage: "folder holding the new root's root-cert.pem and root-key.pem, e.g. --new-root-dir root-2027"},
		&cli.StringFlag{Name: "new-ca-dir", Category: catNewRoot, Usage: "folder holding an issuing CA under the new root (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem), e.g. --new-ca-dir issuing-2027"},
		&cli.StringFlag{Name: "new-vault-pki", Category: catNewRoot, Usage: "Vault PKI mount whose root signs the new intermediates (its key never leaves Vault), e.g. --new-vault-pki pki-2027"},
		&cli.StringFlag{Name: "new-vault-issuer", Category: catNewRoot, Usage: "with --new-vault-pki: the new root's issuer name or ID instead of the mount's default, e.g. --new-vault-issuer root-2027"},
		&cli.StringFlag{Name: "new-vault-kv", Category: catNewRoot, Usage: "Vault KV v2 secret holding the new root (fields certificate, private_key) or an issuing CA under it (and ca_chain), as MOUNT/PATH, e.g. --new-vault-kv secret/meshpki/root-2027"},
		keyURIFlag("new-"),
	}
}

// openNewRoot opens the new root source: the issuer for step 2 and the root it
// chains to (itself, or the root at the end of an issuing CA's chain), which must
// be a self-signed CA.
func openNewRoot(ctx context.Context, e *env, s rootSource) (ca.Issuer, *x509.Certificate, error) {
	iss, err := s.issuer(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	root := ca.RootOf(iss)
	if s.VaultPKI != "" {
		if root == nil {
			return nil, nil, inputError(fmt.Errorf("--new-vault-pki %s: its issuer (%s) is not a root and Vault holds no chain up to one (import the issuer with its full chain, or name the root's own issuer with --new-vault-issuer)", s.VaultPKI, iss.Anchor().Subject))
		}
		if err := ca.CheckRootCert(root, time.Now()); err != nil {
			return nil, nil, inputError(fmt.Errorf("--new-vault-pki %s: the root its issuer chains to (%s) cannot be the new root: %w (name the root's own issuer with --new-vault-issuer)", s.VaultPKI, root.Subject, err))
		}
	}
	if root == nil {
		return nil, nil, inputError(fmt.Errorf("new root source %s reaches no self-signed root", s.Spec))
	}
	return iss, root, nil
}

// rootRotateOptions is "root rotate": its flags as given (bind), then (Validate)
// the mesh.RootRotationOptions they mean.
type rootRotateOptions struct {
	cmd cmdArgs
	// NewRoot is the --new-* root source, opened as rootsource.go opens any.
	NewRoot         rootSource
	Clusters        clusterOptions
	Lock            lockOptions
	Status          bool
	DryRun          bool
	MinStepInterval string
	Step            string
	TTL             string
	KeepBackups     int
	RestartIstiod   bool
	IgnoreIstiod    bool
	Adopt           bool
	Readmit         []string
	Output          string
	CRL             crlSettings
	CRLSettle       string

	rotation mesh.RootRotationOptions // set by Validate; NewRoot and Issuer once the root is open
}

func rootRotateCommand(e *env) *cli.Command {
	flags := append(newRootFlags(), clusterFlags(true)...)
	flags = append(flags,
		&cli.BoolFlag{Name: "status", Usage: "only show where each cluster stands and what a run would do; change nothing"},
		&cli.BoolFlag{Name: "dry-run", Usage: "mint what the step needs, then send every write as a server-side dry run; nothing is stored"},
		&cli.StringFlag{Name: "min-step-interval", Value: defaultMinStepInterval, Usage: "least time a cluster stays at a step before the next (the workload certificate TTL); 0 (in any unit: 0s, 0m, 0d) disables the check, e.g. --min-step-interval 48h"},
		&cli.StringFlag{Name: "step", Usage: "move only to this step: 1 or trust-both, 2 or switch, 3 or drop; a rerun at that step is a no-op (default: the next step), e.g. --step 2"},
		&cli.StringFlag{Name: "ttl", Usage: "lifetime of the new intermediates of step 2 (default: each cluster's current one), e.g. --ttl 365d"},
		&cli.IntFlag{Name: "keep-backups", Value: k8s.DefaultKeepBackups, Usage: "cacerts-backup-* Secrets kept per cluster; -1 keeps all"},
		&cli.BoolFlag{Name: "restart-istiod", Usage: "restart istiod where cacerts changed (Istio before 1.19 does not reload cacerts by itself)"},
		&cli.BoolFlag{Name: "ignore-istiod", Usage: "move on even where istiod has not published the roots of the last step (ConfigMap istio-ca-root-cert)"},
		readmitFlag(""),
		&cli.BoolFlag{Name: "adopt", Usage: "converge clusters as they are onto the new root: clusters on other roots (another mesh), an issuing CA's chain, or istiod's own self-signed CA (no cacerts); every root in play is trusted everywhere from step 1 (docs/root-rotation.md, Merging meshes)"},
		lockWaitFlag(""),
		outputFlag(),
	)
	flags = append(flags, crlSettingFlags("")...)
	flags = append(flags, crlSettleFlag())
	flags = append(flags, vaultConnFlags()...)
	return &cli.Command{
		Name:  "rotate",
		Usage: "replace the mesh's root, one safe step per run, without breaking cross-cluster mTLS",
		Description: `Moves every cluster of the mesh from its current (old) root to a new root, in the
three steps Istio supports (ISTIO_MULTIROOT_MESH=true on istiod; see
docs/root-rotation.md), one step per run:

  1 trust both: root-cert.pem becomes old root + new root; the intermediate and
    cert-chain.pem are unchanged;
  2 switch:     a new intermediate signed by the new root (same subject, SANs, key
    type and lifetime); root-cert.pem stays old + new;
  3 drop:       root-cert.pem becomes the new root alone.

Each run reads every cluster's cacerts, works out where it stands (which roots it
trusts, which root signed its intermediate; the old root is the one that signed
the intermediates) and moves every cluster to the next step. It refuses, changing
nothing, when a cluster cannot be read or is foreign to the rotation, when a
cluster of earlier steps is missing from the run, when clusters are two steps
apart, or when --min-step-interval has not passed since a cluster reached its step
(recorded in the annotation meshpki.io/root-rotation on cacerts), or when a
cluster's istiod has not loaded the step its cacerts is at: a cluster has reached a
step only when istiod publishes that step's roots (ConfigMap istio-ca-root-cert,
column ISTIOD; "no istiod" where none publishes any, which does not hold the run up;
--ignore-istiod skips the check). istiod refuses a roots file it cannot take and keeps
its old CA: so root-cert.pem is only ever extended (step 1) or trimmed (step 3), its
bytes kept, never reordered (Istio 1.20-1.29 compare it byte for byte). When clusters
are at different steps (a run that failed half-way), a run brings the laggards to
the step the others reached, and nothing further.

Between two steps every workload must pick up the change: the new trust bundle
after step 1, a certificate from the new intermediate after step 2 (workload
certificates last 24h by default). Hence --min-step-interval 24h. Always pass
every cluster of the mesh. Every write keeps a backup (cacerts-backup-*), goes
through the same checks as install, uses optimistic concurrency, and is made
holding the cluster's Lease ` + k8s.LeaseName + ` (the lock rotate takes), so that two
runs never change one cluster at once. Key material is never printed.

With CRLs on in the mesh (some cacerts has ca-crl.pem; docs/revocation.md), each run
first spreads what the step needs to every cluster, as crl sync does: the new
root's CRL (signed in --new-root-dir's root-crl.pem, beside a --new-vault-kv root,
or by Vault for --new-vault-pki; --new-ca-dir keeps no CRL and such a run is
refused) and, before step 2,
the CRLs of the new intermediates, minted first and signed with their keys; then,
when that changed a cluster, --crl-settle passes before any cluster moves, for the
proxies to read the new CRLs (a mounted ConfigMap). Every cluster thus holds a CRL
of every CA a peer may show at any moment of the run. The
old root's CRL is passed on as the clusters hold it: keep the daily rotate or crl
sync with the old root running until step 3.

With --adopt the clusters may run on different roots today, and the same steps
bring them onto the new one (a convergence: meshes merged, clusters adopted from
istiod's own CA):

  1 trust all: root-cert.pem gains every root any cluster trusts and the new
    root; signing CAs unchanged. A cluster whose istiod signs with its own
    self-signed CA (no cacerts, or the one istiod generated) gets a cacerts that
    keeps that CA and its key as signing CA, and its istiod is restarted (it reads
    cacerts only at its start then). A cluster already signing under the new root
    reaches step 2 here;
  2 switch:    each other cluster gets an intermediate from the new root;
  3 drop:      root-cert.pem becomes the new root alone.

From step 1 on every cluster trusts every other. The new root must not be a
cluster's own CA, nor share a key with a root to be dropped; a self-signed CA that
expires before step 3 could be made is refused.

Exit status: 0 when the step was made, nothing was due, or the next step is not
allowed yet (the output says from when); 1 when the run was refused or a cluster
failed; 2 on bad usage or input.

Examples:
   meshpki root create --out root-2027 --common-name "Root CA 2027"
   meshpki root rotate --new-root-dir root-2027 --all-contexts --status
   meshpki root rotate --new-root-dir root-2027 --all-contexts --dry-run
   meshpki root rotate --new-root-dir root-2027 --all-contexts
   meshpki root rotate --new-vault-pki pki --new-vault-issuer root-2027 --context east --context west --step 2
   meshpki root rotate --new-vault-kv secret/meshpki/root-2027 --all-contexts --min-step-interval 48h -o json
   meshpki root rotate --adopt --new-root-dir mesh-a-root --all-contexts --status   # merge mesh B into mesh A`,
		Flags:  flags,
		Action: actionOf(e, bindRootRotate),
	}
}

func bindRootRotate(c *cli.Context) *rootRotateOptions {
	return &rootRotateOptions{
		cmd:             bindArgs(c),
		NewRoot:         bindRootSourceFlags(c, "new-", bindVaultConn(c)),
		Clusters:        bindClusters(c),
		Lock:            bindLock(c),
		Status:          c.Bool("status"),
		DryRun:          c.Bool("dry-run"),
		MinStepInterval: c.String("min-step-interval"),
		Step:            c.String("step"),
		TTL:             c.String("ttl"),
		KeepBackups:     c.Int("keep-backups"),
		RestartIstiod:   c.Bool("restart-istiod"),
		IgnoreIstiod:    c.Bool("ignore-istiod"),
		Adopt:           c.Bool("adopt"),
		Readmit:         c.StringSlice("readmit"),
		Output:          c.String("output"),
		CRL:             bindCRLSettings(c),
		CRLSettle:       c.String("crl-settle"),
	}
}

// Validate checks the flags and builds the mesh.RootRotationOptions; --status and
// --dry-run take no lock.
func (o *rootRotateOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.NewRoot.Validate(); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	o.rotation = mesh.RootRotationOptions{
		Namespace:     o.Clusters.Namespace,
		DryRun:        o.DryRun,
		KeepBackups:   o.KeepBackups,
		RestartIstiod: o.RestartIstiod,
		IgnoreIstiod:  o.IgnoreIstiod,
		Adopt:         o.Adopt,
		Readmit:       o.Readmit,
		Concurrency:   o.Clusters.Concurrency,
	}
	if err := o.Lock.Validate(); err != nil {
		return err
	}
	if !o.Status && !o.DryRun {
		o.rotation.Lock = &o.Lock.lease
	}
	if o.Status && o.DryRun {
		return inputError(errors.New("--status and --dry-run exclude each other (--status changes nothing either)"))
	}
	if err := o.CRL.Validate(); err != nil {
		return err
	}
	o.rotation.CRLs = &mesh.CRLSyncOptions{TTL: o.CRL.ttl, Refresh: o.CRL.refresh, Concurrency: o.Clusters.Concurrency}
	var err error
	if o.rotation.CRLSettle, err = parseDurationOrZero("crl-settle", o.CRLSettle); err != nil {
		return err
	}
	if o.rotation.MinStepInterval, err = parseDurationOrZero("min-step-interval", strings.TrimSpace(o.MinStepInterval)); err != nil {
		return err
	}
	if o.Step != "" {
		if o.rotation.ToStep, err = rotation.ParseStep(o.Step); err != nil {
			return inputError(fmt.Errorf("--step: %w", err))
		}
	}
	if o.TTL != "" {
		if o.rotation.TTL, err = parseDuration("ttl", o.TTL); err != nil {
			return err
		}
	}
	return checkKeepBackups(o.KeepBackups)
}

// rootRotateOutput is root rotate's JSON result.
type rootRotateOutput struct {
	OK bool `json:"ok"`
	// Waiting: nothing was done because the next step is not allowed yet.
	Waiting bool `json:"waiting,omitempty"`
	Status  bool `json:"status,omitempty"`
	*mesh.RootRotationReport
	Error string `json:"error,omitempty"`
}

// Run reads the kubeconfig and opens the new root, then shows where each cluster
// stands (--status) or moves the mesh one step (mesh.RotateRoot), and writes the
// report; a refused run or a failed cluster exits 1.
func (o *rootRotateOptions) Run(ctx context.Context, e *env) error {
	o.Lock.onWait(e)
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	if err := o.openNewRoot(ctx, e); err != nil {
		return err
	}
	var rep *mesh.RootRotationReport
	if o.Status {
		rep = mesh.RootRotationStatus(ctx, clusters, o.rotation)
	} else {
		rep, _ = mesh.RotateRoot(ctx, clusters, o.rotation)
		progressRootRotation(e, o.rotation.DryRun, rep)
	}
	return o.report(e, rep)
}

// openNewRoot opens the new root source (openNewRoot) into the rotation's options.
func (o *rootRotateOptions) openNewRoot(ctx context.Context, e *env) error {
	iss, newRoot, err := openNewRoot(ctx, e, o.NewRoot)
	if err != nil {
		return err
	}
	o.rotation.NewRoot, o.rotation.Issuer = newRoot, iss
	o.rotation.Log = e.log
	src, err := o.CRL.sourceOf(e, o.NewRoot, iss)
	if err != nil {
		return err
	}
	o.rotation.NewRootCRLs = func(ctx context.Context) ([]*x509.RevocationList, error) {
		crls, _, err := src.AnchorCRLs(ctx, nil, o.DryRun || o.Status) // --status signs nothing it keeps
		return crls, err
	}
	e.log.Debug("new root", "subject", newRoot.Subject.String(), "sha256", ca.Fingerprint(newRoot), "notAfter", newRoot.NotAfter)
	return nil
}

// progressRootRotation writes one line per cluster changed (or failed) on stderr;
// the table goes to stdout.
func progressRootRotation(e *env, dryRun bool, rep *mesh.RootRotationReport) {
	verb := "root rotation"
	if dryRun {
		verb += " (dry run)"
	}
	var changed []*mesh.RootRotationClusterResult
	for _, r := range rep.Clusters {
		if r.Action != "none" || r.Error != "" {
			changed = append(changed, r)
		}
	}
	prog := newProgress(e, verb, len(changed))
	for _, r := range changed {
		var err error
		if r.Error != "" {
			err = errors.New(r.Error)
		}
		prog.item(r.Cluster, err, "action", r.Action, "from", int(r.From), "to", int(r.To))
	}
	prog.finish()
}

// report writes the run's (or --status') result and gives its verdict an exit
// code: a waiting run exits 0.
func (o *rootRotateOptions) report(e *env, rep *mesh.RootRotationReport) error {
	plan, verdict := rep.Plan, rep.Verdict()
	out := rootRotateOutput{OK: verdict != mesh.Failed, Waiting: verdict == mesh.Waiting, Status: o.Status, RootRotationReport: rep}
	if rep.Err != nil {
		out.Error = rep.Err.Error()
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, out.OK, out); err != nil {
			return err
		}
	} else {
		printRootRotation(e.stdout, out, o.rotation.MinStepInterval, time.Now())
	}
	switch {
	case verdict == mesh.Waiting:
		e.log.Info("next root rotation step not allowed yet", "from", plan.NextAllowed.UTC().Format(time.RFC3339))
		return nil
	case verdict == mesh.OK:
		return nil
	case rep.Err != nil && (plan.Err == nil || !errors.Is(rep.Err, plan.Err)):
		return rep.Err // stopped on the way: bad input found there (exit 2) keeps its code
	}
	return failed(plan.Err)
}

// rootLabel names a root fingerprint as old, new or its short fingerprint (a
// convergence has no one old root).
func rootLabel(plan *rotation.Plan, fp string) string {
	switch {
	case fp == plan.NewFingerprint:
		return "new"
	case fp == plan.OldFingerprint && !plan.Adopt:
		return "old"
	}
	return textfmt.Fingerprint(fp)
}

// intermediateCell is the INTERMEDIATE column: which root the cluster's CA comes
// from ("from new root", "from old root", "from <fp>"), or istiod's own CA.
func intermediateCell(plan *rotation.Plan, c rotation.Cluster) string {
	switch {
	case c.SelfSigned:
		return "istiod self-signed"
	case c.Adopted:
		return "istiod self-signed (adopted)"
	case c.IntermediateFrom == "other":
		return "from " + rootLabel(plan, c.Signer)
	case c.IntermediateFrom != "":
		return "from " + c.IntermediateFrom + " root"
	}
	return "-"
}

func printRootRotation(w io.Writer, out rootRotateOutput, interval time.Duration, now time.Time) {
	plan := out.Plan
	old := "unknown"
	if plan.OldFingerprint != "" {
		old = textfmt.Fingerprint(plan.OldFingerprint)
	}
	if plan.Adopt {
		var others []string
		for _, fp := range plan.RootFingerprints {
			if fp != plan.NewFingerprint {
				others = append(others, textfmt.Fingerprint(fp))
			}
		}
		fmt.Fprintf(w, "convergence onto new root %s from %s\n", textfmt.Fingerprint(plan.NewFingerprint), orNone(strings.Join(others, ", ")))
	} else {
		fmt.Fprintf(w, "root rotation from old root %s to new root %s\n", old, textfmt.Fingerprint(plan.NewFingerprint))
	}
	results := map[string]*mesh.RootRotationClusterResult{}
	for _, r := range out.Clusters {
		results[r.Cluster] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if out.Status {
		fmt.Fprintln(tw, "CLUSTER\tSTEP\tINTERMEDIATE\tTRUSTS\tISTIOD\tSINCE\tNEXT RUN")
	} else {
		fmt.Fprintln(tw, "CLUSTER\tSTEP\tINTERMEDIATE\tTRUSTS\tISTIOD\tSINCE\tTHIS RUN")
	}
	for _, c := range plan.Clusters {
		inter, trusts, since := intermediateCell(plan, c), "-", "-"
		if len(c.Trusts) > 0 {
			var labels []string
			for _, fp := range c.Trusts {
				labels = append(labels, rootLabel(plan, fp))
			}
			trusts = strings.Join(labels, " + ")
		}
		switch {
		case !c.Since.IsZero():
			since = fmt.Sprintf("%s (%s ago)", c.Since.UTC().Format(time.RFC3339), textfmt.Duration(now.Sub(c.Since)))
		case c.Unrecorded:
			since = "not recorded"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Cluster, c.Step, inter, trusts, orDash(c.Istiod), since, describeRotationRun(out, c, results[c.Cluster]))
	}
	tw.Flush()
	for _, c := range plan.Clusters {
		if c.Problem != "" {
			fmt.Fprintf(w, "%s: %s\n", c.Cluster, c.Problem)
		}
		if r := results[c.Cluster]; r != nil && r.Error != "" {
			fmt.Fprintf(w, "%s: FAILED: %s\n", c.Cluster, r.Error)
		}
		if r := results[c.Cluster]; r != nil && r.Install != nil {
			for _, warn := range r.Install.Warnings {
				fmt.Fprintf(w, "%s: warning: %s\n", c.Cluster, warningText(warn))
			}
		}
	}
	for _, r := range out.CRLs {
		if r.Err != nil {
			fmt.Fprintf(w, "%s: CRLs: FAILED: %v\n", r.Cluster, r.Err)
		} else {
			fmt.Fprintf(w, "%s: CRLs: %s, %d CRLs\n", r.Cluster, r.Action, r.CRLs)
		}
	}

	// The mesh, and what comes next.
	switch {
	case plan.Err != nil && !out.Waiting:
		fmt.Fprintf(w, "mesh: REFUSED: %s\n", plan.Err)
		return
	case plan.Done():
		fmt.Fprintln(w, "mesh: root rotation complete: every cluster trusts the new root only, and its intermediate comes from it; retire the old root once nothing else trusts it")
		return
	}
	// After a real run, describe where it left the clusters (failed ones too).
	afterRun := !out.Status && !out.DryRun && !out.Waiting && len(out.Clusters) > 0
	reached := plan.MeshStep
	if afterRun {
		reached = plan.Target // every cluster is there now
	}
	fmt.Fprintln(w, "mesh: "+describeMeshStep(plan, out.Clusters, afterRun))
	moving := plan.Moving()
	if out.Status || out.DryRun {
		switch {
		case out.Status && plan.Err == nil && out.Error != "":
			fmt.Fprintf(w, "next: %s\n", out.Error)
		case out.Waiting:
			fmt.Fprintf(w, "next: step %d (%s) is allowed from %s (--min-step-interval %s)\n", int(plan.Target), stepAction(plan, plan.Target), plan.NextAllowed.UTC().Format(time.RFC3339), textfmt.Interval(interval))
		case len(moving) > 0:
			verb := "a run brings"
			if out.DryRun {
				verb = "dry run, nothing changed: a run would bring"
			}
			fmt.Fprintf(w, "next: %s %s to step %d (%s)\n", verb, strings.Join(moving, ", "), int(plan.Target), stepAction(plan, plan.Target))
		default:
			fmt.Fprintln(w, "next: nothing to do")
		}
		return
	}
	if out.Waiting {
		fmt.Fprintf(w, "waiting: step %d (%s) is allowed from %s (--min-step-interval %s); nothing was changed\n", int(plan.Target), stepAction(plan, plan.Target), plan.NextAllowed.UTC().Format(time.RFC3339), textfmt.Interval(interval))
		return
	}
	if !out.OK {
		failedAny := slices.ContainsFunc(out.Clusters, func(r *mesh.RootRotationClusterResult) bool { return r.Error != "" })
		if failedAny {
			fmt.Fprintln(w, "mesh: some clusters failed: fix them and rerun; the run brings them to the step the others reached")
		} else {
			fmt.Fprintln(w, "mesh: stopped before any cluster moved: "+out.Error)
		}
		return
	}
	if len(moving) == 0 {
		fmt.Fprintln(w, "nothing to do: every cluster is at the step asked for")
	}
	if reached < rotation.StepNewRoot {
		fmt.Fprintln(w, "next: "+nextStepAdvice(reached+1, interval, now))
	} else {
		fmt.Fprintln(w, "root rotation complete: retire the old root once nothing else trusts it")
	}
}

// describeMeshStep is e.g. "all 3 clusters at step 1 (trust-both): trusts old +
// new roots, intermediate from the old root".
func describeMeshStep(plan *rotation.Plan, results []*mesh.RootRotationClusterResult, afterRun bool) string {
	lo, hi := rotation.StepNewRoot, rotation.StepOldRoot
	for _, c := range plan.Clusters {
		lo, hi = min(lo, c.Step), max(hi, c.Step)
	}
	if afterRun { // where the run left them
		lo, hi = rotation.StepNewRoot, rotation.StepOldRoot
		for _, r := range results {
			lo, hi = min(lo, r.To), max(hi, r.To)
		}
	}
	if lo == hi {
		all := fmt.Sprintf("all %d clusters", len(plan.Clusters))
		if len(plan.Clusters) == 1 {
			all = "the one cluster"
		}
		return fmt.Sprintf("%s at step %s: %s", all, lo, stepDescribe(plan, lo))
	}
	if plan.Adopt {
		return fmt.Sprintf("clusters at steps %s to %s: a run brings those at step %d to step %d (%s)", lo, hi, int(lo), int(lo)+1, stepAction(plan, lo+1))
	}
	return fmt.Sprintf("clusters at steps %s and %s: a run brings the others to step %d (%s)", lo, hi, int(hi), hi.Action())
}

// stepAction and stepDescribe are Step.Action and Step.Describe, in a
// convergence's words when the plan is one.
func stepAction(plan *rotation.Plan, s rotation.Step) string {
	if plan.Adopt && s == rotation.StepTrustBoth {
		return "trust all"
	}
	return s.Action()
}

func stepDescribe(plan *rotation.Plan, s rotation.Step) string {
	if !plan.Adopt {
		return s.Describe()
	}
	switch s {
	case rotation.StepOldRoot:
		return "each trusts its own roots, CA unchanged"
	case rotation.StepTrustBoth:
		return "trusts every root in play, CA unchanged"
	case rotation.StepSwitched:
		return "trusts every root in play, CA from the new root"
	}
	return s.Describe()
}

func orNone(s string) string {
	if s == "" {
		return "no other root"
	}
	return s
}

func describeRotationRun(out rootRotateOutput, c rotation.Cluster, r *mesh.RootRotationClusterResult) string {
	if out.Status {
		if out.Plan.Err == nil && c.Moves() {
			if c.SelfSigned && c.Next == rotation.StepTrustBoth {
				return "adopt (istiod restarted) -> step 1"
			}
			return fmt.Sprintf("%s -> step %d", stepAction(out.Plan, c.Next), int(c.Next))
		}
		return "-"
	}
	if r == nil {
		return "-"
	}
	switch {
	case r.Error != "":
		return "FAILED"
	case r.Action == "record":
		return "record only: " + r.Note
	case r.Action == "none":
		return "unchanged"
	}
	s := r.Action + fmt.Sprintf(" -> step %d", int(r.To))
	if r.DryRun {
		s = "would " + s
	}
	if r.Install != nil {
		if r.Install.Before != nil && r.Install.After != nil && r.Install.Before.Serial != r.Install.After.Serial {
			s += fmt.Sprintf(", new intermediate serial %s (not after %s)", r.Install.After.Serial, formatTime(r.Install.After.NotAfter))
		}
		if r.Install.Backup != "" {
			if r.DryRun {
				s += ", previous would be kept as a backup"
			} else {
				s += ", previous kept as " + r.Install.Backup
			}
		}
		if len(r.Install.IstiodRestarted) > 0 {
			s += ", restarted " + strings.Join(r.Install.IstiodRestarted, ",")
		}
	}
	return s
}

// nextStepAdvice says what to wait for before step next, and from when.
func nextStepAdvice(next rotation.Step, interval time.Duration, now time.Time) string {
	from := ""
	if interval > 0 {
		from = fmt.Sprintf(" The next run may make it from %s (--min-step-interval %s).", now.Add(interval).UTC().Format(time.RFC3339), textfmt.Interval(interval))
	}
	switch next {
	case rotation.StepTrustBoth:
		return "rerun to make every cluster trust both roots (step 1)." + from
	case rotation.StepSwitched:
		return "wait until every workload of every cluster trusts the new root (istiod pushes the new root-cert.pem to every namespace; proxies pick it up, at once with PROXY_CONFIG_XDS_AGENT, or when restarted), then rerun to switch to intermediates from the new root (step 2)." + from
	default:
		return "wait until every workload of every cluster carries a certificate from its new intermediate (workload certificates last 24h by default and are renewed before they expire; restart workloads to hurry), then rerun to drop the old root (step 3)." + from
	}
}

// rootBundleCommand builds a root bundle file (several roots in one PEM file) by
// hand, e.g. for a trust bundle outside the mesh.
func rootBundleCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "bundle",
		Usage:     "combine several root certificates into one root bundle file (root-cert.pem), checked and deduplicated",
		ArgsUsage: "ROOT...",
		Description: `Reads each ROOT (a PEM file of one or more certificates, or a root folder holding
root-cert.pem), checks that every certificate is a root: a self-signed CA that may
sign certificates, currently valid, with a strong key; drops duplicates (same
certificate, even from two files) and writes them, in the order first seen, to
--out. The first ROOT's bytes are kept as they are (text around its PEM blocks
included) and the other roots appended: Istio 1.20-1.29 take a changed roots file
only when one file contains the other byte for byte, so give the roots file that is
installed now first. This is the root-cert.pem of a root rotation's steps 1 and 2 (old + new);
root rotate writes it into the clusters by itself. Private keys are never read:
a file holding one is refused.

An existing --out is never overwritten without --force. --out - writes the bundle
to stdout (and the summary to stderr).

Examples:
   meshpki root bundle --out combined-root.pem root root-2027
   meshpki root bundle --out - old-root.pem new-root.pem > root-cert.pem
   meshpki root bundle --out trust.pem --force root/root-cert.pem partner-roots.pem`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "file to write the bundle to, or - for stdout, e.g. --out combined-root.pem"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing --out file"},
			outputFlag(),
		},
		Action: actionOf(e, func(c *cli.Context) *rootBundleOptions {
			return &rootBundleOptions{cmd: bindArgs(c), Out: c.String("out"), Force: c.Bool("force"), Output: c.String("output")}
		}),
	}
}

// rootBundleOptions is "root bundle": its flags and ROOT arguments.
type rootBundleOptions struct {
	cmd    cmdArgs
	Out    string
	Force  bool
	Output string
}

// Validate checks the flags and that roots are given.
func (o *rootBundleOptions) Validate() error {
	if err := o.cmd.require("out", o.Out); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if len(o.cmd.Args) == 0 {
		return inputError(errors.New("no roots given: pass root certificate files or root folders as arguments"))
	}
	return o.cmd.flagsFirst()
}

type rootBundleResult struct {
	Out string `json:"out"`
	*ca.RootBundle
}

// Run reads and checks the roots (ca.ReadRootBundle) and writes the bundle to --out,
// never over anything but a regular file, and never over one without --force.
func (o *rootBundleOptions) Run(_ context.Context, e *env) error {
	rb, err := ca.ReadRootBundle(o.cmd.Args, time.Now())
	if err != nil {
		return inputError(err)
	}
	res := rootBundleResult{Out: o.Out, RootBundle: rb}
	pemData := rb.PEM
	summary := e.stdout
	if o.Out == "-" {
		if _, err := io.Copy(e.stdout, bytes.NewReader(pemData)); err != nil {
			return err
		}
		summary = e.stderr
	} else if err := outError(ca.WriteOutputFile(o.Out, pemData, ca.OutputFileOptions{Force: o.Force, Perm: 0o644})); err != nil {
		return err
	}
	if o.Output == "json" {
		return writeJSON(summary, true, res)
	}
	where := "written to " + o.Out
	if o.Out == "-" {
		where = "written to stdout"
	}
	fmt.Fprintf(summary, "root bundle of %d roots %s\n", len(res.Roots), where)
	for _, r := range res.Roots {
		fmt.Fprintf(summary, "  sha256:%s  %s  not after %s  (%s)\n", r.Fingerprint, r.Subject, r.NotAfter.Format(time.RFC3339), r.Source)
	}
	for _, d := range res.Duplicates {
		fmt.Fprintf(summary, "  duplicate dropped: %s\n", d)
	}
	return nil
}
