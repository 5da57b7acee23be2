package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// MintAhead decides, as a dry run of k8s.Rotate does (no Lease, nothing written), which
// of clusters are due, and mints their new intermediates now, so that their CRLs
// can reach every cluster before any of them is installed: pass them to SyncCRLs
// as Pending, then to Rotate as RotateOptions.Minted. Clusters that are not due,
// or that Rotate would refuse, get none. A failure to mint is returned, with
// nothing minted for the rest.
func MintAhead(ctx context.Context, clusters []*k8s.Cluster, opts k8s.RotateOptions) (map[string]*ca.Bundle, map[string]string, error) {
	dry := opts
	dry.DryRun = true
	minted, seen := map[string]*ca.Bundle{}, map[string]string{}
	for _, r := range k8s.Each(ctx, clusters, k8s.DefaultConcurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.RotateResult, error) {
		return k8s.Rotate(ctx, cl, dry)
	}, nil) {
		if r.Err != nil || r.Value == nil || r.Value.Outcome != k8s.OutcomeDue {
			continue
		}
		p := opts.Profile
		p.Cluster = r.Cluster.Name
		p.Subject.Locality = []string{r.Cluster.Name}
		b, err := ca.Mint(ctx, opts.Issuer, p)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", r.Cluster.Name, err)
		}
		minted[r.Cluster.Name], seen[r.Cluster.Name] = b, ""
		if r.Value.Before != nil {
			seen[r.Cluster.Name] = r.Value.Before.Serial
		}
	}
	return minted, seen, nil
}

// RotateOptions controls Rotate.
type RotateOptions struct {
	// Rotate is how each cluster is judged and rotated (k8s.Rotate); its Issuer
	// and CRLTTL come from the Source.
	Rotate k8s.RotateOptions
	// Concurrency bounds the clusters worked on at once (see k8s.Each).
	Concurrency int
	// CRLSettle is the wait, with CRLs on, between spreading the new
	// intermediates' CRLs and installing them (DefaultCRLSettle); zero waits not.
	CRLSettle time.Duration
	// Progress, if set, is called as each cluster's rotation finishes, from the
	// goroutine that ran it.
	Progress func(k8s.Result[*k8s.RotateResult])
	// Log receives a line per cluster of the CRL spreads; nil logs nothing.
	Log Logger
	// Readmit names clusters whose CA is revoked (a CRL the mesh holds lists it)
	// that may get a new one: re-admitting a revoked cluster is never implicit.
	// Others are left alone (k8s.OutcomeRevoked).
	Readmit []string
}

// RotateEntry is one cluster's part of a rotation run.
type RotateEntry struct {
	*k8s.RotateResult
	// Error is Err's message, for JSON.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
}

// RotateReport is what Rotate did. It never holds key material.
type RotateReport struct {
	// OK: every cluster is healthy after the run (Verdict).
	OK          bool   `json:"ok"`
	DryRun      bool   `json:"dryRun"`
	RenewBefore string `json:"renewBefore"`
	// Summary counts clusters by outcome.
	Summary  map[k8s.Outcome]int `json:"summary"`
	Clusters []RotateEntry       `json:"clusters"`
	// CRLsAhead is the spread of the new intermediates' CRLs before any was
	// installed, when CRLs are on and a cluster was due.
	CRLsAhead []*CRLSyncResult `json:"crlsAhead,omitempty"`
	// CRLs is the mesh CRL set's refresh after the rotations, when CRLs are on.
	CRLs []*CRLSyncResult `json:"crls,omitempty"`
	// Error is what stopped the whole run before any cluster was rotated (the root
	// source, the CRL spread), if anything did.
	Error string `json:"error,omitempty"`
	// Err says why the run is not OK: that, or the clusters not healthy.
	Err error `json:"-"`
	// CRLNextUpdate is, per cluster, the earliest next update of its ca-crl.pem
	// after the run, when CRLs are on (for the metrics).
	CRLNextUpdate map[string]time.Time `json:"-"`
}

// Verdict is OK when every cluster is healthy after the run.
func (r *RotateReport) Verdict() Verdict {
	if !r.OK {
		return Failed
	}
	return OK
}

// NotStarted reports a run stopped by err before any cluster was rotated (the root
// source could not be opened, say): every cluster failed, not started.
func NotStarted(clusters []*k8s.Cluster, opts RotateOptions, err error) *RotateReport {
	rep := newRotateReport(opts)
	rep.stop(clusters, opts, err)
	return rep
}

func newRotateReport(opts RotateOptions) *RotateReport {
	return &RotateReport{OK: true, DryRun: opts.Rotate.DryRun, RenewBefore: opts.Rotate.RenewBefore.String(),
		Summary: map[k8s.Outcome]int{}, CRLNextUpdate: map[string]time.Time{}}
}

func (r *RotateReport) stop(clusters []*k8s.Cluster, opts RotateOptions, err error) {
	r.OK, r.Error, r.Err = false, err.Error(), err
	for _, cl := range clusters {
		res := &k8s.RotateResult{Cluster: cl.Name, Namespace: namespaceOr(opts.Rotate.Namespace), DryRun: opts.Rotate.DryRun, Outcome: k8s.OutcomeFailed}
		entry := RotateEntry{RotateResult: res, Error: "not started: " + err.Error(), Err: err}
		// A cluster whose Lease another run held stopped the CRL spread: say so.
		for _, c := range r.CRLsAhead {
			var le *k8s.LockedError
			if c.Cluster == cl.Name && errors.As(c.Err, &le) {
				res.Outcome, res.LockedBy, res.Reason = k8s.OutcomeLocked, le.Holder, "its Lease is held by another run"
				entry.Error, entry.Err = "not started: "+c.Err.Error(), c.Err
			}
		}
		r.Clusters = append(r.Clusters, entry)
		r.Summary[res.Outcome]++
	}
}

// Rotate is what the rotation CronJob does, over every cluster at once (in
// parallel): each cluster's intermediate is judged (k8s.Rotate) and renewed when
// due, under the cluster's Lease. With CRLs on in the mesh (some cacerts has
// ca-crl.pem), the due clusters' new intermediates are minted first (MintAhead),
// their CRLs spread to every cluster and CRLSettle waited, before any is
// installed: the other clusters' proxies then accept what a new intermediate signs
// from its first moment; a cluster that cannot take them stops the run with
// nothing rotated. The run ends by refreshing the mesh CRL set (CRLSync), so that
// no CRL passes its next update. A dry run decides and reports only.
func Rotate(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts RotateOptions) *RotateReport {
	opts.Rotate.Issuer, opts.Rotate.CRLTTL = src.Issuer, src.CRLTTL
	rep := newRotateReport(opts)
	// Clusters whose CA is revoked get no new one unless re-admitted by name.
	revoked := revokedCAs(ctx, clusters, namespaceOr(opts.Rotate.Namespace), opts.Concurrency)
	var work []*k8s.Cluster
	for _, cl := range clusters {
		if why, ok := revoked[cl.Name]; ok && !slices.Contains(opts.Readmit, cl.Name) {
			err := fmt.Errorf("cluster %s: %s: %w", cl.Name, why, ErrRevokedCA)
			rep.skipped(cl, opts, err)
			continue
		}
		work = append(work, cl)
	}
	if !opts.Rotate.DryRun {
		if err := spreadAhead(ctx, work, src, &opts, rep); err != nil {
			rep.stop(work, opts, fmt.Errorf("%w; no cluster was rotated", err))
			return rep
		}
	}
	results := k8s.Each(ctx, work, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*k8s.RotateResult, error) {
		return k8s.Rotate(ctx, cl, opts.Rotate)
	}, opts.Progress)
	var bad []string
	for _, r := range results {
		res := r.Value
		if res == nil { // not started
			res = &k8s.RotateResult{Cluster: r.Cluster.Name, Namespace: namespaceOr(opts.Rotate.Namespace), DryRun: opts.Rotate.DryRun, Outcome: k8s.OutcomeFailed}
		}
		entry := RotateEntry{RotateResult: res, Err: r.Err}
		if r.Err != nil {
			entry.Error = r.Err.Error()
		}
		if !res.Outcome.OK() || r.Err != nil {
			rep.OK = false
			bad = append(bad, fmt.Sprintf("%s: %s", res.Cluster, res.Outcome))
		}
		rep.Summary[res.Outcome]++
		rep.Clusters = append(rep.Clusters, entry)
	}
	// The CRL refresh goes to the clusters under the source's root only: one whose
	// CA chains to another root gets no CRL of this one (a run that could not do
	// its job there writes nothing there).
	var mine []*k8s.Cluster
	for k, r := range results {
		if !errors.Is(r.Err, k8s.ErrOtherRoot) {
			mine = append(mine, work[k])
		}
	}
	var crlErr error
	if !opts.Rotate.DryRun && len(mine) > 0 {
		if crlErr = syncAfterRotate(ctx, mine, src, opts, rep); crlErr != nil {
			rep.OK = false
		}
	}
	for _, e := range rep.Clusters {
		if e.Outcome == k8s.OutcomeRevoked {
			bad = append(bad, fmt.Sprintf("%s: %s", e.Cluster, e.Outcome))
		}
	}
	// The CRL refresh that ends a run is not a cluster: say which failed.
	switch {
	case len(bad) > 0 && crlErr != nil:
		rep.Err = fmt.Errorf("%d of %d clusters not healthy (%s); and the CRL refresh failed: %w", len(bad), len(clusters), strings.Join(bad, ", "), crlErr)
	case len(bad) > 0:
		rep.Err = fmt.Errorf("%d of %d clusters not healthy (%s)", len(bad), len(clusters), strings.Join(bad, ", "))
	case crlErr != nil:
		rep.Err = fmt.Errorf("every cluster was rotated or not due, but the CRL refresh that ends the run failed (the CRLs stay as they were; a rerun signs them): %w", crlErr)
	}
	return rep
}

// ErrRevokedCA means a cluster's CA is revoked, and the cluster was not named to
// be re-admitted: it gets no new CA.
var ErrRevokedCA = errors.New("its CA is revoked; a new one would re-admit the cluster")

// skipped records a cluster left out of the run (its CA revoked).
func (r *RotateReport) skipped(cl *k8s.Cluster, opts RotateOptions, err error) {
	res := &k8s.RotateResult{Cluster: cl.Name, Namespace: namespaceOr(opts.Rotate.Namespace), DryRun: opts.Rotate.DryRun, Outcome: k8s.OutcomeRevoked}
	r.OK = false
	r.Clusters = append(r.Clusters, RotateEntry{RotateResult: res, Error: err.Error(), Err: err})
	r.Summary[k8s.OutcomeRevoked]++
	if opts.Progress != nil {
		opts.Progress(k8s.Result[*k8s.RotateResult]{Cluster: cl, Value: res, Err: err})
	}
}

// revokedCAs reads every cluster's cacerts and tells, by cluster name, whose CA a
// CRL held anywhere in the mesh revokes, and by what (serial, issuer, reason).
// Clusters that cannot be read are not listed (the run reports them).
func revokedCAs(ctx context.Context, clusters []*k8s.Cluster, ns string, concurrency int) map[string]string {
	reads := k8s.Each(ctx, clusters, concurrency, func(ctx context.Context, cl *k8s.Cluster) (*crlRead, error) {
		return readForCRLs(ctx, cl, ns, time.Now())
	}, nil)
	var all []*x509.RevocationList
	for _, r := range reads {
		if r.Err == nil {
			all = append(all, r.Value.crls...)
		}
	}
	out := map[string]string{}
	for _, r := range reads {
		if r.Err != nil || r.Value.bundle == nil {
			continue
		}
		if why := ca.RevocationOf(r.Value.bundle.Chain, all); why != "" {
			out[r.Cluster.Name] = why
		}
	}
	return out
}

// spreadAhead, when CRLs are on in the mesh, mints the due clusters' new
// intermediates first (MintAhead), spreads their CRLs to every cluster (SyncCRLs
// with them pending) and waits CRLSettle; Rotate then installs them
// (k8s.RotateOptions.Minted).
func spreadAhead(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts *RotateOptions, rep *RotateReport) error {
	sync := CRLSyncOptions{Namespace: opts.Rotate.Namespace, TTL: src.CRLTTL, Refresh: src.CRLRefresh, Concurrency: opts.Concurrency,
		Lock: &opts.Rotate.Lock}
	if on, err := CRLsEnabled(ctx, clusters, sync); err != nil || !on {
		return nil // no CRLs; or no cluster readable, which the rotations report
	}
	minted, seen, err := MintAhead(ctx, clusters, opts.Rotate)
	if err != nil || len(minted) == 0 {
		return err
	}
	if sync.AnchorCRLs, _, err = src.AnchorCRLs(ctx, nil, false); err != nil {
		return err
	}
	for _, cl := range clusters {
		if b := minted[cl.Name]; b != nil {
			// A due cluster whose cacerts fails verification is replaced, not read.
			sync.Pending, sync.Replacing = append(sync.Pending, b), append(sync.Replacing, cl.Name)
		}
	}
	res, err := SyncCRLs(ctx, clusters, sync)
	rep.CRLsAhead = res
	for _, r := range res {
		logInfo(opts.Log, "CRLs ahead", "cluster", r.Cluster, "action", r.Action, "crls", r.CRLs)
	}
	if err != nil {
		return fmt.Errorf("spreading the new intermediates' CRLs first: %w", err)
	}
	if err := SettleCRLs(ctx, opts.Log, opts.CRLSettle, res, false); err != nil {
		return fmt.Errorf("waiting for the proxies to read the new CRLs: %w", err)
	}
	opts.Rotate.Minted, opts.Rotate.Seen = minted, seen
	return nil
}

// syncAfterRotate refreshes and spreads the mesh CRL set after the rotations,
// when CRLs are on in the mesh: a rotated cluster's new CA reaches the others, and
// no CRL passes its next update.
func syncAfterRotate(ctx context.Context, clusters []*k8s.Cluster, src *Source, opts RotateOptions, rep *RotateReport) error {
	sync := CRLSyncOptions{Namespace: opts.Rotate.Namespace, TTL: src.CRLTTL, Refresh: src.CRLRefresh, Concurrency: opts.Concurrency,
		Lock: &opts.Rotate.Lock}
	// CRLs are on when a cluster has them: nothing is signed otherwise.
	enabled, err := CRLsEnabled(ctx, clusters, sync)
	if err != nil || !enabled {
		return err
	}
	if sync.AnchorCRLs, _, err = src.AnchorCRLs(ctx, nil, false); err != nil {
		return err
	}
	res, err := SyncCRLs(ctx, clusters, sync)
	rep.CRLs = res
	for _, r := range res {
		if r.Err == nil && !r.NextUpdate.IsZero() {
			rep.CRLNextUpdate[r.Cluster] = r.NextUpdate
		}
		logInfo(opts.Log, "CRLs", "cluster", r.Cluster, "action", r.Action, "crls", r.CRLs, "signedOwnCRL", r.Signed)
	}
	return err
}
