package mesh

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
)

// AnnotationRootRotation on cacerts records, as JSON (a rotation.Record), the
// last root rotation step meshpki made or first saw in that cluster, and when.
const AnnotationRootRotation = k8s.AnnotationRootRotation

// ErrRootRotationStep means a cluster cannot move to the step asked for from the
// step it is at (only one step forward at a time).
var ErrRootRotationStep = errors.New("not one step behind the target")

// RootRotationOptions controls a root rotation run.
type RootRotationOptions struct {
	// Namespace holds cacerts; empty means DefaultNamespace.
	Namespace string
	// NewRoot is the root the mesh moves to.
	NewRoot *x509.Certificate
	// Issuer signs the new intermediates of step 2 (switch) under NewRoot. Only
	// step 2 needs it.
	Issuer ca.Issuer
	// TTL is the new intermediates' lifetime; zero keeps each cluster's current one.
	TTL time.Duration
	// ToStep is the step to move to; zero means the next (see rotation.PlanRoot).
	ToStep rotation.Step
	// MinStepInterval is the least time between a cluster's steps; zero disables
	// the check.
	MinStepInterval time.Duration
	// DryRun mints, then sends every write as a server-side dry run; nothing is
	// stored and no annotation is written.
	DryRun bool
	// KeepBackups, RestartIstiod: as in InstallOptions.
	KeepBackups   int
	RestartIstiod bool
	// Concurrency bounds the clusters worked on at once; <= 0 means DefaultConcurrency.
	Concurrency int
	// Now is the time recorded in annotations and the interval check; nil means
	// time.Now.
	Now func() time.Time
	// IgnoreIstiod moves clusters on even when their istiod has not published the
	// roots of the step they are at (ConfigMap istio-ca-root-cert).
	IgnoreIstiod bool
	// Lock, when set, is the Lease (the one rotate takes, by default) held around
	// each cluster's step: read, decide, mint, write and record. Namespace
	// defaults to cacerts' namespace; Holder is required. nil takes no Lease (a
	// dry run never takes one).
	Lock *k8s.LeaseOptions
	// CRLs, when set, keeps the mesh CRL set whole through the rotation when CRLs
	// are on in the mesh (CRLsEnabled): before the clusters move, SyncCRLs spreads
	// the new root's CRL (NewRootCRLs) and, at step 2, the CRLs of the new
	// intermediates, minted first and signed with their keys, so that every cluster
	// holds a CRL of every CA a peer's chain can show at any moment of the run (Envoy
	// demands them all). The old root's CRL is passed on as found in the clusters:
	// crl sync or rotate with the old root source keeps it current. Its
	// AnchorCRLs, Pending, Namespace, Lock and DryRun are set here.
	CRLs *CRLSyncOptions
	// NewRootCRLs gives the new root source's current CRLs; it is called only when
	// CRLs are on. Without it such a run is refused (ErrNoRootCRL).
	NewRootCRLs func(context.Context) ([]*x509.RevocationList, error)
	// CRLSettle is the wait between that spread, when it changed a cluster, and
	// the step, for the proxies to read the new CRLs (see DefaultCRLSettle); zero
	// waits not.
	CRLSettle time.Duration
	// Log, if set, is told of the waits (CRLSettle).
	Log Logger
	// Adopt makes the run a convergence (rotation.Options.Adopt): clusters on other
	// roots, an issuing CA's chain or istiod's own self-signed CA are taken as they
	// are. A cluster without cacerts (or with the one istiod generated) is read as
	// the self-signed CA istiod signs with (k8s.ReadSelfSignedCA); its step 1
	// writes a cacerts that keeps that CA as signing CA, with every root in play,
	// and restarts istiod, which reads cacerts only at its start when it began on
	// its own CA (pilot/pkg/bootstrap/istio_ca.go: the cacerts watcher exists only
	// in plugged-in mode).
	Adopt bool
	// Readmit names clusters whose CA is revoked (a CRL the mesh holds lists it)
	// that step 2 may give a new intermediate; without it such a step is refused:
	// re-admitting a revoked cluster is never implicit.
	Readmit []string
}

func (o RootRotationOptions) namespace() string { return namespaceOr(o.Namespace) }

func (o RootRotationOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// RootRotationClusterResult is one cluster's part of a root rotation run. It never
// holds key material.
type RootRotationClusterResult struct {
	Cluster   string        `json:"cluster"`
	Namespace string        `json:"namespace"`
	From      rotation.Step `json:"from"`
	To        rotation.Step `json:"to"`
	// Action is "trust both", "switch", "drop", "record" (only the annotation was
	// written: the cluster got to its step without meshpki, or its record lacked
	// clusters of this run) or "none".
	Action string `json:"action"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Install is what the write of cacerts did, nil when nothing was written.
	Install *k8s.InstallResult `json:"install,omitempty"`
	// Record is the annotation written, nil when none was.
	Record *rotation.Record `json:"record,omitempty"`
	// ResourceVersion is cacerts' resourceVersion after the run.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Note explains a "record" action.
	Note  string `json:"note,omitempty"`
	Error string `json:"error,omitempty"`
}

// RootRotationReport is a root rotation run (or status) over a mesh.
type RootRotationReport struct {
	Namespace string                       `json:"namespace"`
	DryRun    bool                         `json:"dryRun,omitempty"`
	Plan      *rotation.Plan               `json:"plan"`
	Clusters  []*RootRotationClusterResult `json:"clusters,omitempty"`
	// CRLs is the CRL spread before the clusters moved, when CRLs are on.
	CRLs []*CRLSyncResult `json:"crls,omitempty"`
	// Err is why the run (or the plan, for a status) did not do its step: the
	// plan's refusal, a failed cluster, or what stopped it before any cluster
	// moved (the CRL spread, say).
	Err error `json:"-"`
}

// Verdict is Waiting when the next step is not due yet (the minimum step
// interval: nothing was changed, a scheduler reruns later), OK when the step was
// made or was already there, and Failed otherwise.
func (r *RootRotationReport) Verdict() Verdict {
	plan := r.Plan
	waiting := errors.Is(plan.Err, rotation.ErrTooEarly)
	for _, c := range r.Clusters {
		if c.Error != "" {
			return Failed
		}
	}
	switch {
	case plan.Err != nil && !waiting:
		return Failed
	case r.Err != nil && (plan.Err == nil || !errors.Is(r.Err, plan.Err)):
		return Failed // stopped before any cluster moved
	case waiting:
		return Waiting
	}
	return OK
}

// rotationRead is one cluster's cacerts as a root rotation reads it.
type rotationRead struct {
	input           rotation.Input
	files           map[string][]byte
	resourceVersion string
}

// readForRotation reads cacerts and its rotation record from one cluster. A missing
// or broken cacerts is an input with an Err, not a function error. With adopt, a
// cluster without cacerts of its own is read as istiod's own CA (readSelfSigned).
func readForRotation(ctx context.Context, cl *k8s.Cluster, ns string, adopt bool) (*rotationRead, error) {
	r := &rotationRead{input: rotation.Input{Cluster: cl.Name}}
	s, err := k8s.GetCACerts(ctx, cl, ns)
	switch {
	case apierrors.IsNotFound(err) && adopt:
		return readSelfSigned(ctx, cl, ns, r, nil)
	case apierrors.IsNotFound(err):
		r.input.Err = fmt.Errorf("no Secret %s in namespace %s (install a bundle first)", k8s.SecretName, ns)
		if _, running, _ := k8s.ReadPublishedRoots(ctx, cl, ns); running {
			r.input.Err = fmt.Errorf("no Secret %s in namespace %s: istiod signs with its own CA there; %w", k8s.SecretName, ns, rotation.ErrNeedsAdopt)
		}
		return r, nil
	case err != nil:
		r.input.Err = err
		return r, err
	}
	r.resourceVersion = s.ResourceVersion
	r.files = k8s.SecretFiles(s)
	if _, generated := r.files[ca.ReservedKey]; generated && adopt {
		return readSelfSigned(ctx, cl, ns, r, s)
	}
	r.readRecord(s)
	// A cacerts whose CA is a self-signed root (istiod's own, adopted) is read:
	// the plan decides whether it may take part.
	b, _, err := ca.ParseBundle(r.files, ca.VerifyOptions{AllowRootKey: true})
	if err != nil {
		r.input.Err = fmt.Errorf("%s in namespace %s does not verify: %w", k8s.SecretName, ns, err)
		return r, nil
	}
	r.input.Bundle = b
	if data, found, err := k8s.ReadPublishedRoots(ctx, cl, ns); err == nil && found {
		r.input.Published, r.input.PublishedKnown = data, true
	}
	return r, nil
}

// readRecord takes the rotation record of cacerts s.
func (r *rotationRead) readRecord(s *corev1.Secret) {
	if v, ok := s.Annotations[AnnotationRootRotation]; ok {
		var rec rotation.Record
		if json.Unmarshal([]byte(v), &rec) == nil {
			r.input.Record = &rec
		}
	}
}

// readSelfSigned reads a cluster whose istiod signs with its own CA (s is the cacerts
// istiod generated, nil when there is none): the bundle is that CA as istiod holds
// it, trusting what istiod publishes, and its files are what step 1 extends. A CA
// that cannot be read, or an istiod that does not run (nothing published), is
// the input's Err: nothing to adopt.
func readSelfSigned(ctx context.Context, cl *k8s.Cluster, ns string, r *rotationRead, s *corev1.Secret) (*rotationRead, error) {
	if s != nil {
		r.readRecord(s)
	}
	data, found, err := k8s.ReadPublishedRoots(ctx, cl, ns)
	switch {
	case err != nil:
		r.input.Err = err
		return r, nil
	case !found:
		r.input.Err = fmt.Errorf("no %s and no istiod running in namespace %s (it publishes no ConfigMap %s): istiod's own CA is adopted only while istiod runs on it; start istiod, or install a bundle", k8s.SecretName, ns, k8s.RootConfigMap)
		return r, nil
	}
	own, err := k8s.ReadSelfSignedCA(ctx, cl, ns)
	if err != nil {
		r.input.Err = err
		return r, nil
	}
	var roots []*x509.Certificate
	pub, _ := ca.ParseCertificatesPEM(data)
	for _, c := range pub {
		if !ca.ContainsCert(roots, c) {
			roots = append(roots, c)
		}
	}
	if !ca.ContainsCert(roots, own.Cert) {
		r.input.Err = fmt.Errorf("istiod publishes %d roots, and not its own CA %s (Secret %s): it may be restarting onto another CA; rerun", len(roots), textfmt.Fingerprint(ca.Fingerprint(own.Cert)), own.Secret)
		return r, nil
	}
	b := &ca.Bundle{Cert: own.Cert, Key: own.Key, Chain: []*x509.Certificate{own.Cert}, Roots: roots}
	if r.files, err = b.Files(ca.FormatIstio); err != nil {
		r.input.Err = err
		return r, nil
	}
	b.RootsFile = r.files[ca.RootCertFile]
	if len(pub) == len(roots) {
		b.RootsFile, r.files[ca.RootCertFile] = data, data // istiod's own bytes: loaded
	}
	r.input.Bundle, r.input.SelfSigned = b, true
	r.input.Published, r.input.PublishedKnown = data, true
	return r, nil
}

// RootRotationStatus reads every cluster and plans the next run without changing
// anything: the plan says where each cluster stands, and why a run would refuse.
//
// Beyond the plan, it checks what would stop a run before any cluster moved: a
// revoked cluster that step 2 would re-admit, or, with CRLs on, a new root source
// that gives no CRL (opts.NewRootCRLs is called; it must sign nothing it would
// keep). Such a report's Err says why, and its Verdict is Failed.
func RootRotationStatus(ctx context.Context, clusters []*k8s.Cluster, opts RootRotationOptions) *RootRotationReport {
	rep, reads := planRootRotation(ctx, clusters, opts)
	plan := rep.Plan
	rep.Err = plan.Err
	if plan.Err != nil || len(plan.Moving()) == 0 {
		return rep
	}
	if err := refuseRevoked(reads, plan, opts.Readmit); err != nil {
		rep.Err = fmt.Errorf("a run would stop before any cluster moves: %w", err)
		return rep
	}
	if opts.CRLs != nil {
		sync := *opts.CRLs
		sync.Namespace = opts.namespace()
		if on, err := CRLsEnabled(ctx, clusters, sync); err == nil && on {
			if opts.NewRootCRLs == nil {
				rep.Err = invalid(fmt.Errorf("a run would stop before any cluster moves: CRLs are on in the mesh, and the new root source keeps no CRL: %w", ErrNoRootCRL))
			} else if _, err := opts.NewRootCRLs(ctx); err != nil {
				rep.Err = fmt.Errorf("a run would stop before any cluster moves: the new root's CRL: %w", err)
			}
		}
	}
	return rep
}

func planRootRotation(ctx context.Context, clusters []*k8s.Cluster, opts RootRotationOptions) (*RootRotationReport, []*rotationRead) {
	ns := opts.namespace()
	results := k8s.Each(ctx, clusters, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*rotationRead, error) {
		return readForRotation(ctx, cl, ns, opts.Adopt)
	}, nil)
	reads := make([]*rotationRead, len(results))
	inputs := make([]rotation.Input, len(results))
	for i, r := range results {
		reads[i] = r.Value
		if reads[i] == nil { // not started
			reads[i] = &rotationRead{input: rotation.Input{Cluster: r.Cluster.Name, Err: r.Err}}
		}
		inputs[i] = reads[i].input
	}
	plan := rotation.PlanRoot(inputs, rotation.Options{
		NewRoot: opts.NewRoot, ToStep: opts.ToStep, MinStepInterval: opts.MinStepInterval, Now: opts.now(),
		IgnoreIstiod: opts.IgnoreIstiod, Adopt: opts.Adopt,
	})
	return &RootRotationReport{Namespace: ns, DryRun: opts.DryRun, Plan: plan}, reads
}

// RotateRoot moves a mesh one step along the rotation to opts.NewRoot: it reads
// every cluster, plans (rotation.PlanRoot) and, unless the plan refuses, brings
// every cluster that must move to the plan's target with ApplyRootRotationStep,
// concurrently. Clusters already there are left untouched, so a rerun is a no-op.
// Clusters past step 0 with no record of when they got there (changed by hand, or
// a record lost) get one, stamped now, so that the minimum step interval counts
// from now; records that list fewer clusters than this run are widened, so that a
// later run given only some of the clusters is refused.
//
// A refused plan changes nothing and returns an error wrapping one of the
// rotation.Err* errors. The report is returned in every case; its Clusters hold
// one result per cluster of the run.
func RotateRoot(ctx context.Context, clusters []*k8s.Cluster, opts RootRotationOptions) (*RootRotationReport, error) {
	rep, err := rotateRoot(ctx, clusters, opts)
	rep.Err = err
	return rep, err
}

func rotateRoot(ctx context.Context, clusters []*k8s.Cluster, opts RootRotationOptions) (*RootRotationReport, error) {
	rep, reads := planRootRotation(ctx, clusters, opts)
	plan := rep.Plan
	for i, cl := range clusters {
		step := rotation.StepUnknown
		if i < len(plan.Clusters) { // a plan refused before reading clusters has none
			step = plan.Clusters[i].Step
		}
		rep.Clusters = append(rep.Clusters, &RootRotationClusterResult{Cluster: cl.Name, Namespace: rep.Namespace,
			From: step, To: step, Action: "none", DryRun: opts.DryRun, ResourceVersion: reads[i].resourceVersion})
	}
	if plan.Err != nil && !errors.Is(plan.Err, rotation.ErrTooEarly) {
		return rep, plan.Err
	}
	names := make([]string, len(clusters))
	for i, cl := range clusters {
		names[i] = cl.Name
	}
	slices.Sort(names)
	now := opts.now()
	type job struct {
		i      int
		stamp  bool // only record the step the cluster is at
		target rotation.Step
	}
	var jobs []job
	for i, row := range plan.Clusters {
		switch {
		case plan.Err == nil && row.Moves():
			jobs = append(jobs, job{i: i, target: row.Next})
		case opts.DryRun || plan.Done():
		case row.Unrecorded, narrowRecord(reads[i].input.Record, plan, names):
			jobs = append(jobs, job{i: i, stamp: true, target: row.Step})
		}
	}
	byCluster := map[*k8s.Cluster]job{}
	var work []*k8s.Cluster
	for _, j := range jobs {
		byCluster[clusters[j.i]] = j
		work = append(work, clusters[j.i])
	}
	if plan.Err == nil {
		if err := refuseRevoked(reads, plan, opts.Readmit); err != nil {
			return rep, err
		}
	}
	var pre map[*k8s.Cluster]stepInput
	if opts.CRLs != nil && plan.Err == nil && slices.ContainsFunc(jobs, func(j job) bool { return !j.stamp }) {
		var err error
		if pre, err = rootRotationCRLs(ctx, clusters, reads, plan, opts, rep); err != nil {
			return rep, err
		}
	}
	results := k8s.Each(ctx, work, opts.Concurrency, func(ctx context.Context, cl *k8s.Cluster) (*RootRotationClusterResult, error) {
		j := byCluster[cl]
		if j.stamp {
			return rewriteRecord(ctx, cl, reads[j.i], plan, names, now, opts)
		}
		return applyRootRotationStepLocked(ctx, cl, plan.Clusters[j.i].Step, plan.Roots, j.target, names, opts, pre[cl])
	}, nil)
	var errs []error
	for k, r := range results {
		i := jobs[k].i
		if r.Value != nil {
			rep.Clusters[i] = r.Value
		}
		if r.Err != nil {
			rep.Clusters[i].Error = r.Err.Error()
			errs = append(errs, r.Err)
		}
	}
	if plan.Err != nil {
		errs = append([]error{plan.Err}, errs...)
	}
	return rep, errors.Join(errs...)
}

// ApplyRootRotationStep moves one cluster to step target of the rotation from old
// to newRoot, when it is one step behind it; when it is at target already it
// changes nothing. It reads cacerts itself and checks the step it is at, so it is
// safe to call on any subset of clusters, but it knows nothing of the others:
// RotateRoot is what keeps a mesh together. The write goes through Install
// (verified first, backup of the previous cacerts, resourceVersion precondition);
// then the annotation AnnotationRootRotation records target, the time, the two
// roots and meshClusters, on condition that cacerts still holds what was written. With
// opts.Lock it does all that holding the cluster's Lease, so that neither another
// root rotation nor rotate writes cacerts meanwhile.
func ApplyRootRotationStep(ctx context.Context, cl *k8s.Cluster, old, newRoot *x509.Certificate, target rotation.Step, meshClusters []string, opts RootRotationOptions) (*RootRotationClusterResult, error) {
	roots := []*x509.Certificate{newRoot}
	if old != nil {
		roots = []*x509.Certificate{old, newRoot}
	}
	opts.NewRoot, opts.Adopt = newRoot, false
	return applyRootRotationStepLocked(ctx, cl, target-1, roots, target, meshClusters, opts, stepInput{})
}

// stepInput is what RotateRoot prepared for one cluster's step when CRLs are on.
type stepInput struct {
	// minted is the cluster's new intermediate for step 2, its CRL spread
	// beforehand; its CRLFile is the mesh set.
	minted *ca.Bundle
	// crls are CRLs the step's ca-crl.pem must hold (PEM): the mesh set, so that a
	// dry run, which wrote none of them, checks what a real run writes.
	crls []byte
}

// applyRootRotationStepLocked is ApplyRootRotationStep with what RotateRoot
// prepared: the step the plan saw the cluster at (from) and the roots in play
// (the new one last).
func applyRootRotationStepLocked(ctx context.Context, cl *k8s.Cluster, from rotation.Step, roots []*x509.Certificate, target rotation.Step, meshClusters []string, opts RootRotationOptions, pre stepInput) (*RootRotationClusterResult, error) {
	ns := opts.namespace()
	res := &RootRotationClusterResult{Cluster: cl.Name, Namespace: ns, From: rotation.StepUnknown, To: rotation.StepUnknown, Action: "none", DryRun: opts.DryRun}
	if len(roots) == 0 {
		return res, fmt.Errorf("cluster %s: no new root given", cl.Name)
	}
	if opts.Lock != nil && !opts.DryRun {
		lock := *opts.Lock
		if lock.Namespace == "" {
			lock.Namespace = ns
		}
		lease, err := k8s.AcquireLease(ctx, cl, lock)
		if err != nil {
			return res, err
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = lease.Release(rctx) // it expires on its own otherwise
		}()
		ctx = lease.Context()
	}
	res, err := applyRootRotationStep(ctx, cl, from, roots, target, meshClusters, opts, res, pre)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, k8s.ErrLeaseLost) {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	return res, err
}

func applyRootRotationStep(ctx context.Context, cl *k8s.Cluster, from rotation.Step, roots []*x509.Certificate, target rotation.Step, meshClusters []string, opts RootRotationOptions, res *RootRotationClusterResult, pre stepInput) (*RootRotationClusterResult, error) {
	ns := res.Namespace
	newRoot := roots[len(roots)-1]
	rd, err := readForRotation(ctx, cl, ns, opts.Adopt)
	if err != nil {
		return res, err
	}
	if rd.input.Err != nil {
		return res, fmt.Errorf("cluster %s: %w", cl.Name, rd.input.Err)
	}
	res.ResourceVersion = rd.resourceVersion
	cur := rd.input.Bundle
	step, err := rotation.StepIn(cur, roots, newRoot, opts.Adopt)
	if err != nil {
		return res, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	if opts.Adopt && from == rotation.StepOldRoot && step == rotation.StepNewRoot {
		step = from // it trusts the new root only, while others sign under others
	}
	res.From, res.To = step, step
	if step >= target {
		return res, nil
	}
	if step != target-1 {
		return res, fmt.Errorf("cluster %s: %w: it is at step %s, and step %d (%s) needs step %s first",
			cl.Name, ErrRootRotationStep, step, int(target), target.Action(), target-1)
	}

	switched := pre.minted
	if target == rotation.StepSwitched && switched == nil {
		if opts.Issuer == nil {
			return res, fmt.Errorf("cluster %s: step 2 (switch) needs an issuer for the new root", cl.Name)
		}
		p, err := rotation.Profile(cl.Name, cur.Cert)
		if err != nil {
			return res, err
		}
		if opts.TTL > 0 {
			p.TTL = opts.TTL
		}
		switched, err = ca.Mint(ctx, opts.Issuer, p)
		if err != nil {
			return res, err
		}
		if !switched.SignedUnder(newRoot) {
			return res, fmt.Errorf("cluster %s: the issuer signed the new intermediate under %s, not under the new root %s",
				cl.Name, textfmt.Fingerprint(ca.Fingerprint(switched.Roots[0])), textfmt.Fingerprint(ca.Fingerprint(newRoot)))
		}
	}
	files, err := rotation.FilesIn(rd.files, target, roots, newRoot, switched)
	if err != nil {
		return res, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	if pre.crls != nil {
		// The mesh set, and what the cluster's own file holds (its previous
		// intermediate's CRL among them).
		files[ca.CRLFile] = mergeCRLFiles(opts.now(), rd.files[ca.CRLFile], pre.crls)
	}
	// The bundle about to be written must be exactly at target: checked before
	// anything is sent.
	// An adopted CA (istiod's own) keeps signing until step 2: its key stays in
	// the cluster, where it was.
	adopted := rd.input.SelfSigned || ca.IsSelfSigned(cur.Cert)
	verify := ca.VerifyOptions{AllowRootKey: adopted && target == rotation.StepTrustBoth}
	nb, _, err := ca.ParseBundle(files, verify)
	if err != nil {
		return res, fmt.Errorf("cluster %s: the step %d bundle does not verify, nothing sent: %w", cl.Name, int(target), err)
	}
	got, err := rotation.StepIn(nb, roots, newRoot, opts.Adopt)
	// In a convergence, a cluster that signs under the new root already reaches
	// step 2 with step 1.
	if err != nil || got != target && !(opts.Adopt && target == rotation.StepTrustBoth && got == rotation.StepSwitched) {
		return res, fmt.Errorf("cluster %s: the bundle made for step %d is at step %s (%v), nothing sent", cl.Name, int(target), got, err)
	}

	now := opts.now()
	ir, err := k8s.Install(ctx, cl, files, k8s.InstallOptions{
		Namespace: ns,
		DryRun:    opts.DryRun,
		// Steps 1 and 3 change the set of roots; step 2 keeps it.
		AllowNewRoot: target != rotation.StepSwitched,
		KeepBackups:  opts.KeepBackups,
		// istiod on its own CA reads cacerts only when it starts.
		RestartIstiod: opts.RestartIstiod || rd.input.SelfSigned,
		Verify:        verify,
		Now:           func() time.Time { return now },
	})
	res.Install = ir
	if err != nil {
		return res, err
	}
	res.To, res.Action, res.ResourceVersion = got, target.Action(), ir.ResourceVersion
	if opts.Adopt && target == rotation.StepTrustBoth {
		res.Action = "trust all"
		if rd.input.SelfSigned {
			res.Action = "adopt"
		}
	}
	if opts.DryRun {
		return res, nil
	}
	rec := newRecord(got, now, roots, meshClusters)
	if got != target {
		rec.By = target
	}
	// Clusters of earlier steps stay in the record: every later run needs them.
	if prev := rd.input.Record; prev != nil && prev.NewRoot == rec.NewRoot && (prev.OldRoot == "" || rec.OldRoot == "" || prev.OldRoot == rec.OldRoot) {
		rec.Clusters = unionSorted(prev.Clusters, meshClusters)
	}
	rv, err := annotateRotation(ctx, cl, ns, files, rec)
	if err != nil {
		return res, fmt.Errorf("cluster %s: step %d written, but recording it failed (the next run records it as first seen then): %w", cl.Name, int(target), err)
	}
	res.Record, res.ResourceVersion = rec, rv
	return res, nil
}

// rewriteRecord writes the record of a cluster that stays at its step: either it
// got there without meshpki (no record; stamped now, marked observed), or its
// record lists fewer clusters than this run (widened, time kept).
func rewriteRecord(ctx context.Context, cl *k8s.Cluster, rd *rotationRead, plan *rotation.Plan, names []string, now time.Time, opts RootRotationOptions) (*RootRotationClusterResult, error) {
	ns := opts.namespace()
	row := plan.Clusters[slices.IndexFunc(plan.Clusters, func(c rotation.Cluster) bool { return c.Cluster == cl.Name })]
	res := &RootRotationClusterResult{Cluster: cl.Name, Namespace: ns, From: row.Step, To: row.Step, Action: "none", ResourceVersion: rd.resourceVersion}
	rec := &rotation.Record{Step: row.Step, At: now.UTC().Truncate(time.Second), OldRoot: plan.OldFingerprint, NewRoot: plan.NewFingerprint, Clusters: names}
	if len(plan.Roots) > 0 {
		rec = newRecord(row.Step, now, plan.Roots, names)
	}
	rec.Observed = true
	res.Note = "no record of when it got to this step: recorded as first seen now"
	if prev := rd.input.Record; !row.Unrecorded && prev != nil {
		cp := *prev
		cp.Clusters = unionSorted(prev.Clusters, names)
		rec = &cp
		res.Note = "its record listed fewer clusters than this run: widened to " + strings.Join(cp.Clusters, ", ")
	}
	rv, err := annotateRotation(ctx, cl, ns, rd.files, rec)
	if err != nil {
		return res, fmt.Errorf("cluster %s: recording step %d: %w", cl.Name, int(row.Step), err)
	}
	res.Action, res.Record, res.ResourceVersion = "record", rec, rv
	return res, nil
}

// narrowRecord reports whether rec, a record of this rotation, lists fewer
// clusters than names (an earlier run was given only some of them).
func narrowRecord(rec *rotation.Record, plan *rotation.Plan, names []string) bool {
	if rec == nil || rec.NewRoot != plan.NewFingerprint || rec.OldRoot != "" && plan.OldFingerprint != "" && rec.OldRoot != plan.OldFingerprint {
		return false
	}
	for _, n := range names {
		if !slices.Contains(rec.Clusters, n) {
			return true
		}
	}
	return false
}

func unionSorted(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// annotateRotation records rec on cacerts (AnnotationRootRotation), provided its
// data is still files (see k8s.AnnotateCACerts).
func annotateRotation(ctx context.Context, cl *k8s.Cluster, ns string, files map[string][]byte, rec *rotation.Record) (string, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	return k8s.AnnotateCACerts(ctx, cl, ns, files, AnnotationRootRotation, string(val))
}

// rootRotationCRLs spreads the CRLs a root rotation step needs before any cluster
// moves, when CRLs are on in the mesh (see RootRotationOptions.CRLs), and returns
// what each moving cluster's step needs: the mesh set and, going to step 2, its
// new intermediate, minted here so that its CRL reaches every cluster first.
func rootRotationCRLs(ctx context.Context, clusters []*k8s.Cluster, reads []*rotationRead, plan *rotation.Plan, opts RootRotationOptions, rep *RootRotationReport) (map[*k8s.Cluster]stepInput, error) {
	sync := *opts.CRLs
	sync.Namespace, sync.Lock, sync.DryRun = opts.namespace(), opts.Lock, opts.DryRun
	on, err := CRLsEnabled(ctx, clusters, sync)
	if err != nil || !on {
		return nil, err
	}
	if opts.NewRootCRLs == nil {
		return nil, fmt.Errorf("CRLs are on in the mesh, and the new root source keeps no CRL: %w; no cluster moved", ErrNoRootCRL)
	}
	for i, row := range plan.Clusters {
		if row.Moves() && row.Next == rotation.StepTrustBoth && reads[i].input.SelfSigned {
			// istiod's own CA has keyCertSign only: it cannot sign the CRL that every
			// Envoy with CRLs on demands of each CA in a peer's chain.
			return nil, invalid(fmt.Errorf("cluster %s signs with istiod's own CA, which cannot sign a CRL (its key usage lacks cRLSign), and CRLs are on in the mesh: the others' Envoys would refuse its workloads; adopt it before CRLs are switched on, or give it a bundle of the mesh first; no cluster moved", clusters[i].Name))
		}
	}
	if sync.AnchorCRLs, err = opts.NewRootCRLs(ctx); err != nil {
		return nil, fmt.Errorf("the new root's CRL: %w; no cluster moved", err)
	}
	minted := map[*k8s.Cluster]*ca.Bundle{}
	for i, row := range plan.Clusters {
		if !row.Moves() || row.Next != rotation.StepSwitched {
			continue
		}
		if opts.Issuer == nil {
			return nil, fmt.Errorf("cluster %s: step 2 (switch) needs an issuer for the new root", clusters[i].Name)
		}
		p, err := rotation.Profile(clusters[i].Name, reads[i].input.Bundle.Cert)
		if err != nil {
			return nil, err
		}
		if opts.TTL > 0 {
			p.TTL = opts.TTL
		}
		b, err := ca.Mint(ctx, opts.Issuer, p)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w; no cluster moved", clusters[i].Name, err)
		}
		if !b.SignedUnder(plan.NewRoot) {
			return nil, fmt.Errorf("cluster %s: the issuer signed the new intermediate under %s, not under the new root %s",
				clusters[i].Name, textfmt.Fingerprint(ca.Fingerprint(b.Roots[0])), textfmt.Fingerprint(ca.Fingerprint(plan.NewRoot)))
		}
		minted[clusters[i]] = b
		sync.Pending = append(sync.Pending, b)
	}
	res, err := SyncCRLs(ctx, clusters, sync)
	rep.CRLs = res
	if err != nil {
		return nil, fmt.Errorf("spreading the CRLs of the new root and intermediates: %w; no cluster moved", err)
	}
	if err := SettleCRLs(ctx, opts.Log, opts.CRLSettle, res, sync.DryRun); err != nil {
		return nil, fmt.Errorf("waiting for the proxies to read the new CRLs: %w; no cluster moved", err)
	}
	set := ca.EncodeCRLsPEM(sync.AnchorCRLs...)
	if len(sync.Pending) > 0 {
		set = sync.Pending[0].CRLFile // the whole mesh set
	}
	pre := map[*k8s.Cluster]stepInput{}
	for _, cl := range clusters {
		pre[cl] = stepInput{minted: minted[cl], crls: set}
	}
	return pre, nil
}

// mergeCRLFiles merges the current CRLs of PEM files (ones that do not parse are
// skipped: the result is checked before it is sent).
func mergeCRLFiles(now time.Time, files ...[]byte) []byte {
	var sets [][]*x509.RevocationList
	for _, f := range files {
		if crls, err := ca.ParseCRLsPEM(f); err == nil {
			sets = append(sets, current(crls, now))
		}
	}
	return ca.EncodeCRLsPEM(ca.MergeCRLs(sets...)...)
}

// newRecord is the record of a cluster that reached step at now, in the move to
// the last of roots (the roots in play).
func newRecord(step rotation.Step, now time.Time, roots []*x509.Certificate, clusters []string) *rotation.Record {
	newRoot := roots[len(roots)-1]
	rec := &rotation.Record{Step: step, At: now.UTC().Truncate(time.Second), NewRoot: ca.Fingerprint(newRoot), Clusters: clusters}
	for _, r := range roots[:len(roots)-1] {
		rec.Roots = append(rec.Roots, ca.Fingerprint(r))
	}
	if len(rec.Roots) == 1 {
		rec.OldRoot, rec.Roots = rec.Roots[0], nil
	}
	return rec
}

// refuseRevoked refuses a step that would move a cluster whose CA a CRL of the
// mesh revokes: a switch (step 2) would give it a new intermediate, re-admitting
// it, which only naming it in readmit allows; the other steps cannot take it along
// (its CA's CRL is no longer signed), so it must leave the run or get a new CA
// first.
func refuseRevoked(reads []*rotationRead, plan *rotation.Plan, readmit []string) error {
	var all []*x509.RevocationList
	for _, r := range reads {
		if crls, err := ca.ParseCRLsPEM(r.files[ca.CRLFile]); err == nil {
			all = append(all, crls...)
		}
	}
	var refused []string
	for i, row := range plan.Clusters {
		b := reads[i].input.Bundle
		if !row.Moves() || b == nil || plan.Target == rotation.StepSwitched && slices.Contains(readmit, row.Cluster) {
			continue
		}
		if why := ca.RevocationOf(b.Chain, all); why != "" {
			refused = append(refused, row.Cluster+": "+why)
		}
	}
	switch {
	case len(refused) == 0:
		return nil
	case plan.Target == rotation.StepSwitched:
		return invalid(fmt.Errorf("%w: step 2 (switch) would give %s a new intermediate; name a cluster to re-admit it, or take it out of the mesh; nothing was changed",
			ErrRevokedCA, strings.Join(refused, "; ")))
	}
	return invalid(fmt.Errorf("%w: step %d (%s) cannot take %s along (its CA's CRL is no longer signed): take it out of the run, or give it a new CA first (bootstrap --force); nothing was changed",
		ErrRevokedCA, int(plan.Target), plan.Target.Action(), strings.Join(refused, "; ")))
}
