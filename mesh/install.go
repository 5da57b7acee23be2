package mesh

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// InstallOptions controls Install.
type InstallOptions struct {
	// Install is how each cluster's cacerts is written (k8s.Install).
	Install k8s.InstallOptions
	// Concurrency bounds the clusters worked on at once (see k8s.Each).
	Concurrency int
	// Mesh are the mesh's other clusters: with CRLs on, the new CAs' CRLs reach
	// them too before any is installed (SpreadForInstall).
	Mesh []*k8s.Cluster
	// CRLSettle is the wait after that spread, when it changed a cluster, for the
	// proxies to read the new CRLs (DefaultCRLSettle); zero waits not.
	CRLSettle time.Duration
	// Progress, if set, is called as each cluster's install finishes, from the
	// goroutine that ran it.
	Progress func(k8s.Result[*k8s.InstallResult])
	// Log receives a line per cluster of the CRL spread; nil logs nothing.
	Log Logger
}

// Logger is the part of *slog.Logger the jobs log through.
type Logger interface {
	Info(msg string, args ...any)
}

// InstallEntry is one cluster's part of an install.
type InstallEntry struct {
	*k8s.InstallResult
	// Error is Err's message, for JSON.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
}

// InstallReport is what Install did. It never holds key material.
type InstallReport struct {
	OK       bool           `json:"ok"`
	DryRun   bool           `json:"dryRun"`
	Clusters []InstallEntry `json:"clusters"`
	// CRLs is the spread of the new CAs' CRLs before the install, when the mesh
	// uses CRLs and a CA was new.
	CRLs []*CRLSyncResult `json:"crls,omitempty"`
	// Err is why the install, or part of it, failed; nil when Verdict is OK.
	Err error `json:"-"`
}

// Verdict is OK when every cluster took its bundle (or had it already).
func (r *InstallReport) Verdict() Verdict {
	if r.Err != nil {
		return Failed
	}
	return OK
}

// MissingBundleError is a cluster without a bundle folder; it matches
// fs.ErrNotExist.
type MissingBundleError struct {
	Cluster string
	// Dir is the folder that is missing.
	Dir string
}

func (e *MissingBundleError) Error() string {
	return fmt.Sprintf("cluster %s: no bundle folder %s", e.Cluster, e.Dir)
}

func (e *MissingBundleError) Unwrap() error { return fs.ErrNotExist }

// InstallDir installs the bundle folder dir/<cluster>/ (as ca.MintDir writes them)
// of every cluster (see Install). A missing or unreadable folder fails that
// cluster alone (its Err wraps fs.ErrNotExist when it is missing); bundles that
// trust different roots are refused as a whole, as bad input, and nothing is
// installed.
func InstallDir(ctx context.Context, clusters []*k8s.Cluster, dir string, opts InstallOptions) *InstallReport {
	names := make([]string, len(clusters))
	for i, cl := range clusters {
		names[i] = cl.Name
	}
	files, errs, err := ca.ReadBundleSet(dir, names, opts.Install.Verify)
	if err != nil {
		return &InstallReport{DryRun: opts.Install.DryRun, Err: invalid(fmt.Errorf("%w; nothing was installed", err))}
	}
	for i, err := range errs {
		if errors.Is(err, fs.ErrNotExist) {
			errs[i] = &MissingBundleError{Cluster: names[i], Dir: filepath.Join(dir, names[i])}
		}
	}
	return install(ctx, clusters, files, errs, opts)
}

// Install installs files[i] (a bundle as ca.ReadDir or ca.Bundle.Files give it) as
// cacerts in clusters[i], concurrently, with k8s.Install: verified first, the
// previous cacerts backed up, written with optimistic concurrency under the
// cluster's Lease. When the mesh (clusters and opts.Mesh) uses CRLs, the CRLs of
// the CAs new to their cluster reach every cluster first, and CRLSettle is waited
// (a failure there installs nothing). One cluster's failure never stops the
// others.
func Install(ctx context.Context, clusters []*k8s.Cluster, files []map[string][]byte, opts InstallOptions) *InstallReport {
	return install(ctx, clusters, files, make([]error, len(clusters)), opts)
}

func install(ctx context.Context, clusters []*k8s.Cluster, files []map[string][]byte, readErrs []error, opts InstallOptions) *InstallReport {
	in := opts.Install
	rep := &InstallReport{OK: true, DryRun: in.DryRun}
	ns := namespaceOr(in.Namespace)
	lease := in.Lock
	res, err := SpreadForInstall(ctx, clusters, files, opts.Mesh, CRLSyncOptions{Namespace: ns,
		Concurrency: opts.Concurrency, Lock: lease, DryRun: in.DryRun})
	rep.CRLs = res
	for _, r := range res {
		logInfo(opts.Log, "CRLs", r.LogAttrs()...)
	}
	if err == nil {
		err = SettleCRLs(ctx, opts.Log, opts.CRLSettle, res, in.DryRun)
	}
	if err != nil {
		rep.OK, rep.Err = false, fmt.Errorf("%w; nothing was installed", err)
		return rep
	}
	index := map[*k8s.Cluster]int{}
	for i, cl := range clusters {
		index[cl] = i
	}
	results := k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.InstallResult, error) {
		i := index[cl]
		if readErrs[i] != nil {
			return &k8s.InstallResult{Cluster: cl.Name, Namespace: ns, DryRun: in.DryRun}, readErrs[i]
		}
		return k8s.Install(ctx, cl, files[i], in)
	}, opts.Progress)
	var failed, why []string
	for _, r := range results {
		ir := r.Value
		if ir == nil {
			ir = &k8s.InstallResult{Cluster: r.Cluster.Name, Namespace: ns, DryRun: in.DryRun}
		}
		entry := InstallEntry{InstallResult: ir, Err: r.Err}
		if r.Err != nil {
			entry.Error = r.Err.Error()
			failed = append(failed, r.Cluster.Name)
			why = append(why, r.Err.Error())
		}
		rep.Clusters = append(rep.Clusters, entry)
	}
	if len(failed) > 0 {
		rep.OK = false
		rep.Err = fmt.Errorf("%d of %d clusters failed (%s): %s", len(failed), len(results), strings.Join(failed, ", "), strings.Join(why, "; "))
	}
	return rep
}

func logInfo(l Logger, msg string, args ...any) {
	if l != nil {
		l.Info(msg, args...)
	}
}
