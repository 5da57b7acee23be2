package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// installOptions is "install": its flags as given (bind), then (Validate) the
// k8s.InstallOptions they mean.
type installOptions struct {
	cmd           cmdArgs
	Clusters      clusterOptions
	Lock          lockOptions
	Bundles       string
	DryRun        bool
	RestartIstiod bool
	AllowRootKey  bool
	AllowNewRoot  bool
	KeepBackups   int
	Output        string
	// MeshContexts are the contexts of the mesh's other clusters (for CRLs).
	MeshContexts []string
	CRLSettle    string

	install k8s.InstallOptions // set by Validate
	settle  time.Duration      // set by Validate
}

func installCommand(e *env) *cli.Command {
	flags := append(clusterFlags(true),
		&cli.StringFlag{Name: "bundles", Usage: "folder holding one bundle folder per cluster (DIR/<cluster>/), as intermediate create writes it"},
		&cli.BoolFlag{Name: "dry-run", Usage: "send every write as a server-side dry run and print what would change; nothing is stored"},
		&cli.BoolFlag{Name: "restart-istiod", Usage: "restart istiod (kubectl rollout restart) where cacerts changed: Istio before 1.19, or a switch from istiod's self-signed CA"},
		allowRootKeyFlag(),
		&cli.BoolFlag{Name: "allow-new-root", Usage: "install a bundle whose roots differ from those installed (a root change breaks cross-cluster mTLS: prefer a root rotation)"},
		&cli.IntFlag{Name: "keep-backups", Value: k8s.DefaultKeepBackups, Usage: "cacerts-backup-* Secrets kept per cluster; -1 keeps all (and needs no list/delete permission)"},
		lockWaitFlag(""),
		&cli.StringSliceFlag{Name: "mesh-context", Usage: "context of another cluster of the mesh (repeatable): with CRLs on, the new CAs' CRLs reach it too before they are installed"},
		crlSettleFlag(),
		outputFlag(),
	)
	return &cli.Command{
		Name:  "install",
		Usage: "install each cluster's bundle as Secret cacerts, in every cluster at once",
		Description: `For every chosen kubeconfig context, installs the bundle folder DIR/<cluster>/ as
Secret cacerts in the namespace (istio-system), clusters in parallel:

  - the bundle is verified as istiod would before anything is sent, and all bundles
    must trust the same roots;
  - the namespace is created if it is missing;
  - an identical cacerts is left alone ("unchanged": nothing is written);
  - a cacerts to be written is locked first: the Lease ` + k8s.LeaseName + ` that
    rotate and root rotate take too, so that they never interleave (another run's
    lock is waited for up to --lock-wait);
  - a bundle whose roots differ from the installed cacerts' roots is refused unless
    --allow-new-root;
  - the installed cacerts is first copied to cacerts-backup-<UTC time> (the newest
    --keep-backups are kept), then updated with its resourceVersion as
    precondition; if someone else changed it meanwhile, meshpki reads it again and
    decides again;
  - the key istio-generated (istiod's self-signed CA marker) is never written;
  - with CRLs on (some cacerts has ca-crl.pem; docs/revocation.md), the CRL of each
    CA new to its cluster is signed with its key and written first into every chosen
    cluster and every --mesh-context cluster, with the root's CRL they hold; then
    --crl-settle passes, for the proxies to read them, and only then are the new CAs
    installed (a new cluster's cacerts gets the whole mesh set). If that spread
    fails, nothing is installed.

A cluster is named after its context (map it with --cluster CTX=NAME). Progress goes
to stderr, one line per cluster; the result to stdout. Key material is never printed.

Exit status: 0 when every cluster succeeded, 1 when any failed (the others still
ran), 2 on bad usage or input (flags, kubeconfig, bundles).

Examples:
   meshpki install --bundles bundles --all-contexts
   meshpki install --bundles bundles --context east --context west --dry-run
   meshpki install --bundles bundles --context gke_prod_europe-west1_mesh --cluster gke_prod_europe-west1_mesh=eu
   KUBECONFIG=east.yaml:west.yaml meshpki install --bundles bundles --all-contexts --output json
   meshpki install --bundles bundles --context south --mesh-context east --mesh-context west`,
		Flags:  flags,
		Action: actionOf(e, bindInstall),
	}
}

func bindInstall(c *cli.Context) *installOptions {
	return &installOptions{
		cmd:           bindArgs(c),
		Clusters:      bindClusters(c),
		Lock:          bindLock(c),
		Bundles:       c.String("bundles"),
		DryRun:        c.Bool("dry-run"),
		RestartIstiod: c.Bool("restart-istiod"),
		AllowRootKey:  c.Bool("allow-root-key"),
		AllowNewRoot:  c.Bool("allow-new-root"),
		KeepBackups:   c.Int("keep-backups"),
		Output:        c.String("output"),
		MeshContexts:  c.StringSlice("mesh-context"),
		CRLSettle:     c.String("crl-settle"),
	}
}

// Validate checks the flags and that --bundles is a folder, and builds the
// k8s.InstallOptions.
func (o *installOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.cmd.require("bundles", o.Bundles); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if err := checkKeepBackups(o.KeepBackups); err != nil {
		return err
	}
	if err := o.Lock.Validate(); err != nil {
		return err
	}
	var err error
	if o.settle, err = parseDurationOrZero("crl-settle", o.CRLSettle); err != nil {
		return err
	}
	for i, m := range o.MeshContexts {
		if slices.Contains(o.Clusters.Contexts, m) {
			return inputError(fmt.Errorf("--mesh-context %s is one of the clusters to install (--context)", m))
		}
		if slices.Contains(o.MeshContexts[:i], m) {
			return inputError(fmt.Errorf("--mesh-context %s given twice", m))
		}
	}
	st, err := os.Stat(o.Bundles)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return inputError(fmt.Errorf("--bundles %s: no such folder", o.Bundles))
		}
		return inputError(err)
	}
	if !st.IsDir() {
		return inputError(fmt.Errorf("--bundles %s: not a folder", o.Bundles))
	}
	o.install = k8s.InstallOptions{
		Namespace:     o.Clusters.Namespace,
		DryRun:        o.DryRun,
		AllowNewRoot:  o.AllowNewRoot,
		RestartIstiod: o.RestartIstiod,
		KeepBackups:   o.KeepBackups,
		Verify:        ca.VerifyOptions{AllowRootKey: o.AllowRootKey},
		Lock:          &o.Lock.lease,
	}
	return nil
}

// checkKeepBackups checks --keep-backups: -1 (keep all) or at least 1.
func checkKeepBackups(keep int) error {
	switch {
	case keep < -1:
		return inputError(fmt.Errorf("--keep-backups must be -1 (keep all) or more, got %d", keep))
	case keep == 0:
		return inputError(errors.New("--keep-backups 0 would delete the backup just made: keep at least 1, or -1 for all"))
	}
	return nil
}

// Run installs every cluster's bundle folder (mesh.InstallDir: CRLs to the mesh
// first when it uses them) and writes the report; any cluster failed exits 1.
func (o *installOptions) Run(ctx context.Context, e *env) error {
	o.Lock.onWait(e)
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	opts := mesh.InstallOptions{Install: o.install, Concurrency: o.Clusters.Concurrency, CRLSettle: o.settle, Log: e.log}
	if len(o.MeshContexts) > 0 {
		m := o.Clusters
		m.load.Contexts, m.load.AllContexts = o.MeshContexts, false
		if opts.Mesh, err = m.loadClusters(e); err != nil {
			return fmt.Errorf("--mesh-context: %w", err)
		}
	}
	verb := "install"
	if o.install.DryRun {
		verb = "install (dry run)"
	}
	prog := newProgress(e, verb, len(clusters))
	opts.Progress = func(r k8s.Result[*k8s.InstallResult]) {
		var attrs []any
		if r.Value != nil && r.Err == nil {
			attrs = append(attrs, "action", r.Value.Action, "elapsed", r.Elapsed.Round(time.Millisecond))
		}
		prog.item(r.Cluster.Name, r.Err, attrs...)
	}
	rep := mesh.InstallDir(ctx, clusters, o.Bundles, opts)
	if rep.Clusters == nil { // stopped before any cluster: nothing to report
		return rep.Err
	}
	prog.finish()
	for i, c := range rep.Clusters {
		rep.Clusters[i].Error = adviseText(c.Err)
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, rep.OK, rep); err != nil {
			return err
		}
	} else {
		printInstall(e.stdout, rep)
	}
	return rep.Err
}

func printInstall(w io.Writer, rep *mesh.InstallReport) {
	width := 0
	for _, c := range rep.Clusters {
		width = max(width, len(c.Cluster))
	}
	counts := map[string]int{}
	var order []string
	count := func(k string) {
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, c := range rep.Clusters {
		if c.Error != "" {
			fmt.Fprintf(w, "%-*s  %-12s  %s\n", width, c.Cluster, "FAILED", c.Error)
			count("failed")
			continue
		}
		what := string(c.Action)
		if rep.DryRun && c.Action != k8s.ActionUnchanged {
			what = "would " + strings.TrimSuffix(what, "d")
		}
		count(what)
		fmt.Fprintf(w, "%-*s  %-12s  %s\n", width, c.Cluster, what, describeChange(c.InstallResult))
		for _, warn := range c.Warnings {
			fmt.Fprintf(w, "%-*s  %-12s  %s\n", width, "", "warning:", warningText(warn))
		}
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	prefix := ""
	if rep.DryRun {
		prefix = "dry run, nothing changed: "
	}
	fmt.Fprintln(w, prefix+countLine(len(rep.Clusters), parts))
}

// describeChange prints what install did to one cluster's cacerts: subject, serial
// and not-after before and after. Never key material.
func describeChange(r *k8s.InstallResult) string {
	var parts []string
	a, b := r.After, r.Before
	switch {
	case a == nil:
	case b == nil || r.Action == k8s.ActionUnchanged:
		parts = append(parts, fmt.Sprintf("%s  serial %s  not after %s (%s left)", a.Subject, a.Serial, a.NotAfter.Format(time.RFC3339), timeLeft(a.NotAfter)))
	default:
		if b.Subject != a.Subject {
			parts = append(parts, fmt.Sprintf("subject %s -> %s", orDash(b.Subject), a.Subject))
		} else {
			parts = append(parts, a.Subject)
		}
		parts = append(parts, fmt.Sprintf("serial %s -> %s", orDash(b.Serial), a.Serial))
		parts = append(parts, fmt.Sprintf("not after %s -> %s", formatTime(b.NotAfter), formatTime(a.NotAfter)))
		if len(r.ChangedFiles) > 0 {
			parts = append(parts, "changes "+strings.Join(r.ChangedFiles, ","))
		}
	}
	would := func(done, dry string) string {
		if r.DryRun {
			return dry
		}
		return done
	}
	if r.NamespaceCreated {
		parts = append(parts, would("namespace "+r.Namespace+" created", "namespace "+r.Namespace+" would be created"))
	}
	if r.Backup != "" {
		parts = append(parts, would("previous kept as ", "previous would be kept as ")+r.Backup)
	}
	if len(r.PrunedBackups) > 0 {
		parts = append(parts, "old backups deleted: "+strings.Join(r.PrunedBackups, ","))
	}
	if len(r.IstiodRestarted) > 0 {
		parts = append(parts, would("restarted ", "would restart ")+strings.Join(r.IstiodRestarted, ","))
	}
	return strings.Join(parts, "  ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
