package mesh

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// rrClock is a test clock that only moves when told: the records and the
// minimum step interval use it; certificates use the real time.
type rrClock struct{ offset atomic.Int64 }

func (c *rrClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *rrClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// rrVersions returns every cluster's cacerts resourceVersion.
func rrVersions(t *testing.T, clusters []*k8s.Cluster, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, cl := range clusters {
		out[cl.Name] = getSecret(t, cl, ns, k8s.SecretName).ResourceVersion
	}
	return out
}

func rrSameVersions(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for name, rv := range before {
		if after[name] != rv {
			t.Fatalf("%s wrote to %s: resourceVersion %s -> %s", what, name, rv, after[name])
		}
	}
}

// rrCheckMesh reads every cluster's cacerts back, checks its step, and has a
// workload of every cluster (signed by the cluster's then-current intermediate,
// trusting its then-current roots) complete mutual TLS with a workload of every
// other cluster, both ways.
func rrCheckMesh(t *testing.T, clusters []*k8s.Cluster, ns string, old, newRoot *ca.Root, want map[string]rotation.Step) {
	t.Helper()
	workloads := make([]*ca.Workload, len(clusters))
	for i, cl := range clusters {
		s := getSecret(t, cl, ns, k8s.SecretName)
		b, _, err := ca.ParseBundle(k8s.SecretFiles(s), ca.VerifyOptions{})
		if err != nil {
			t.Fatalf("%s: cacerts does not verify: %v", cl.Name, err)
		}
		step, err := rotation.StepOf(b, old.Cert, newRoot.Cert)
		if err != nil || step != want[cl.Name] {
			t.Fatalf("%s is at step %v (%v), want %v", cl.Name, step, err, want[cl.Name])
		}
		if step != rotation.StepOldRoot {
			var rec rotation.Record
			if err := json.Unmarshal([]byte(s.Annotations[AnnotationRootRotation]), &rec); err != nil || rec.Step != step {
				t.Fatalf("%s: annotation %q does not record step %v (%v)", cl.Name, s.Annotations[AnnotationRootRotation], step, err)
			}
		}
		if workloads[i], err = b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", cl.Name), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testContext(t)
	for i := range clusters {
		for j := range clusters {
			if i == j {
				continue
			}
			if err := ca.Handshake(ctx, workloads[i], workloads[j]); err != nil {
				t.Fatalf("steps %v: %s server, %s client: %v", want, clusters[i].Name, clusters[j].Name, err)
			}
		}
	}
}

func rrNames(clusters []*k8s.Cluster) []string {
	var out []string
	for _, cl := range clusters {
		out = append(out, cl.Name)
	}
	return out
}

// TestRootRotationWalksThreeClusters walks a three-cluster mesh from root A to
// root B, through every mixed state a real rollout passes (one cluster a step
// ahead of the others), checking mutual TLS between every pair of clusters after
// every change; runs that would break it are refused, and reruns write nothing.
func TestRootRotationWalksThreeClusters(t *testing.T) {
	_, clusters := realClusters(t, false)
	east, west, north := clusters[0], clusters[1], clusters[2]
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t) // same subject: told apart by key only
	for _, cl := range clusters {
		b, files := mint(t, rootA, cl.Name)
		if cl == north { // one cluster in cert-manager's layout
			var err error
			if files, err = b.Files(ca.FormatTLS); err != nil {
				t.Fatal(err)
			}
		}
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	clock := &rrClock{}
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB), MinStepInterval: 24 * time.Hour, Now: clock.Now}
	steps := func(e, w, n rotation.Step) map[string]rotation.Step {
		return map[string]rotation.Step{east.Name: e, west.Name: w, north.Name: n}
	}
	names := rrNames(clusters)
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(0, 0, 0))

	st := RootRotationStatus(ctx, clusters, opts)
	if st.Plan.Err != nil || st.Plan.MeshStep != rotation.StepOldRoot || st.Plan.Target != rotation.StepTrustBoth || len(st.Plan.Moving()) != 3 {
		t.Fatalf("status at the start: %+v", st.Plan)
	}

	// A dry run changes nothing.
	rvs := rrVersions(t, clusters, ns)
	rep, err := RotateRoot(ctx, clusters, withDryRun(opts))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Clusters {
		if r.Action != "trust both" || !r.DryRun || r.Install == nil || !r.Install.DryRun || r.Record != nil {
			t.Fatalf("dry run result %+v", r)
		}
	}
	rrSameVersions(t, "dry run", rvs, rrVersions(t, clusters, ns))

	// Mixed: east trusts both, the others only A.
	if _, err := ApplyRootRotationStep(ctx, east, rootA.Cert, rootB.Cert, rotation.StepTrustBoth, names, opts); err != nil {
		t.Fatal(err)
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(1, 0, 0))

	// A run completes step 1 on the laggards; east is left alone.
	rvs = rrVersions(t, clusters, ns)
	rep, err = RotateRoot(ctx, clusters, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Plan.Target != rotation.StepTrustBoth || strings.Join(rep.Plan.Moving(), ",") != "west,north" {
		t.Fatalf("run 1: target %v moving %v", rep.Plan.Target, rep.Plan.Moving())
	}
	if after := rrVersions(t, clusters, ns); after[east.Name] != rvs[east.Name] {
		t.Fatal("run 1 wrote to east, which was at step 1 already")
	}
	for _, r := range rep.Clusters[1:] {
		if r.Action != "trust both" || r.Install.Backup == "" || r.Record == nil || r.Record.Step != 1 {
			t.Fatalf("run 1 %s: %+v", r.Cluster, r)
		}
		if got := r.Install.ChangedFiles; len(got) != 1 || got[0] != ca.RootCertFile && got[0] != ca.TLSCAFile {
			t.Fatalf("step 1 changed %v, want only the roots file", got)
		}
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(1, 1, 1))

	// Rerun at once: too early, nothing written. With --step 1: a no-op.
	rvs = rrVersions(t, clusters, ns)
	rep, err = RotateRoot(ctx, clusters, opts)
	if !errors.Is(err, rotation.ErrTooEarly) || rep.Plan.NextAllowed.Before(clock.Now().Add(23*time.Hour)) {
		t.Fatalf("immediate rerun: %v (next allowed %v)", err, rep.Plan.NextAllowed)
	}
	pinned := opts
	pinned.ToStep = rotation.StepTrustBoth
	if rep, err = RotateRoot(ctx, clusters, pinned); err != nil || len(rep.Plan.Moving()) != 0 {
		t.Fatalf("rerun of step 1: %v, moving %v", err, rep.Plan.Moving())
	}
	rrSameVersions(t, "rerun of step 1", rvs, rrVersions(t, clusters, ns))

	// A day later. Mixed: west switched, the others still on A's intermediates.
	clock.Advance(25 * time.Hour)
	res, err := ApplyRootRotationStep(ctx, west, rootA.Cert, rootB.Cert, rotation.StepSwitched, names, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "switch" || res.Install.After == nil || !strings.Contains(res.Install.After.Subject, "L="+west.Name) {
		t.Fatalf("switch of west: %+v", res)
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(1, 2, 1))

	// Dropping the old root now would cut east and north off: refused, naming them.
	rvs = rrVersions(t, clusters, ns)
	drop := opts
	drop.ToStep = rotation.StepNewRoot
	_, err = RotateRoot(ctx, clusters, drop)
	if !errors.Is(err, rotation.ErrBehind) || !strings.Contains(err.Error(), "behind: east (at step 1 (trust-both)), north (at step 1 (trust-both))") {
		t.Fatalf("drop before switch reached all: %v", err)
	}
	if _, err := ApplyRootRotationStep(ctx, east, rootA.Cert, rootB.Cert, rotation.StepNewRoot, names, opts); !errors.Is(err, ErrRootRotationStep) {
		t.Fatalf("library drop on a cluster at step 1: %v", err)
	}
	rrSameVersions(t, "refused drop", rvs, rrVersions(t, clusters, ns))

	// A run completes the switch on east and north.
	rep, err = RotateRoot(ctx, clusters, opts)
	if err != nil || strings.Join(rep.Plan.Moving(), ",") != "east,north" {
		t.Fatalf("run 2: %v, moving %v", err, rep.Plan.Moving())
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(2, 2, 2))
	if s := getSecret(t, north, ns, k8s.SecretName); s.Data[ca.TLSCertFile] == nil || s.Data[ca.CACertFile] != nil {
		t.Fatal("north's tls layout was not kept")
	}

	// A day later. Mixed: north dropped A.
	clock.Advance(25 * time.Hour)
	if _, err := ApplyRootRotationStep(ctx, north, rootA.Cert, rootB.Cert, rotation.StepNewRoot, names, opts); err != nil {
		t.Fatal(err)
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(2, 2, 3))
	rep, err = RotateRoot(ctx, clusters, opts)
	if err != nil || strings.Join(rep.Plan.Moving(), ",") != "east,west" {
		t.Fatalf("run 3: %v, moving %v", err, rep.Plan.Moving())
	}
	rrCheckMesh(t, clusters, ns, rootA, rootB, steps(3, 3, 3))

	// Done: reruns write nothing and say so.
	rvs = rrVersions(t, clusters, ns)
	clock.Advance(48 * time.Hour)
	rep, err = RotateRoot(ctx, clusters, opts)
	if err != nil || !rep.Plan.Done() || len(rep.Plan.Moving()) != 0 || rep.Plan.OldFingerprint != ca.Fingerprint(rootA.Cert) {
		t.Fatalf("rerun when done: %v, %+v", err, rep.Plan)
	}
	rrSameVersions(t, "rerun when done", rvs, rrVersions(t, clusters, ns))
	for _, cl := range clusters {
		if b, err := k8s.Backups(ctx, cl, ns); err != nil || len(b) == 0 {
			t.Fatalf("%s: backups %v, %v", cl.Name, b, err)
		}
	}
}

func withDryRun(o RootRotationOptions) RootRotationOptions {
	o.DryRun = true
	return o
}

// TestRootRotationRecordsStepsMadeByHand: a mesh brought to step 1 without
// meshpki gets a record stamped now, and the wait starts then.
func TestRootRotationRecordsStepsMadeByHand(t *testing.T) {
	_, clusters := realClusters(t, false)
	clusters = clusters[:2]
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t)
	for _, cl := range clusters {
		b, _ := mint(t, rootA, cl.Name)
		b.Roots = append(b.Roots, rootB.Cert)
		files, err := b.Files(ca.FormatIstio)
		if err != nil {
			t.Fatal(err)
		}
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB), MinStepInterval: time.Hour}
	st := RootRotationStatus(ctx, clusters, opts)
	if !errors.Is(st.Plan.Err, rotation.ErrTooEarly) || len(st.Plan.Unrecorded()) != 2 {
		t.Fatalf("status: %v, unrecorded %v", st.Plan.Err, st.Plan.Unrecorded())
	}
	rep, err := RotateRoot(ctx, clusters, opts)
	if !errors.Is(err, rotation.ErrTooEarly) {
		t.Fatalf("first run: %v", err)
	}
	for _, r := range rep.Clusters {
		if r.Action != "record" || r.Record == nil || !r.Record.Observed || r.Record.Step != rotation.StepTrustBoth || r.Install != nil {
			t.Fatalf("%s: %+v", r.Cluster, r)
		}
	}
	rvs := rrVersions(t, clusters, ns)
	rep, err = RotateRoot(ctx, clusters, opts)
	if !errors.Is(err, rotation.ErrTooEarly) || len(rep.Plan.Unrecorded()) != 0 {
		t.Fatalf("second run: %v, unrecorded %v", err, rep.Plan.Unrecorded())
	}
	rrSameVersions(t, "second run", rvs, rrVersions(t, clusters, ns))
	// An hour later the switch goes ahead.
	opts.Now = func() time.Time { return time.Now().Add(61 * time.Minute) }
	if rep, err = RotateRoot(ctx, clusters, opts); err != nil || len(rep.Plan.Moving()) != 2 || rep.Plan.Target != rotation.StepSwitched {
		t.Fatalf("run after the wait: %v, %+v", err, rep.Plan)
	}
}

// TestRootRotationRefusesUnreachableCluster: one cluster down, nothing changes
// anywhere, and the error names it.
func TestRootRotationRefusesUnreachableCluster(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t)
	for _, cl := range clusters[:2] {
		_, files := mint(t, rootA, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	down, err := k8s.NewCluster("south", &rest.Config{Host: "https://127.0.0.1:1"}, k8s.ClusterOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mesh := []*k8s.Cluster{clusters[0], clusters[1], down}
	rvs := rrVersions(t, clusters[:2], ns)
	rep, err := RotateRoot(ctx, mesh, RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB)})
	if !errors.Is(err, rotation.ErrUnreadable) || !strings.Contains(err.Error(), "could not read south (cluster south:") {
		t.Fatalf("got %v", err)
	}
	if rep.Plan.Clusters[2].Problem == "" || len(rep.Plan.Moving()) != 0 {
		t.Fatalf("plan %+v", rep.Plan)
	}
	rrSameVersions(t, "refused run", rvs, rrVersions(t, clusters[:2], ns))

	// A cluster without cacerts is refused just the same.
	_, err = RotateRoot(ctx, clusters, RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB)})
	if !errors.Is(err, rotation.ErrUnreadable) || !strings.Contains(err.Error(), clusters[2].Name+" (no Secret cacerts in namespace "+ns) {
		t.Fatalf("cluster without cacerts: %v", err)
	}
}

// TestRootRotationRefusesSubsetOfTheMesh: a first run given only some clusters
// cannot be told from a whole mesh, but once a run saw every cluster, every
// record lists them all, and a run given fewer is refused.
func TestRootRotationRefusesSubsetOfTheMesh(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t)
	for _, cl := range clusters {
		_, files := mint(t, rootA, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB)}
	if _, err := RotateRoot(ctx, clusters[:1], opts); err != nil {
		t.Fatal(err)
	}
	rep, err := RotateRoot(ctx, clusters, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Clusters[0]; r.Action != "record" || !strings.Contains(r.Note, "widened to east, north, west") || r.Record.Step != rotation.StepTrustBoth {
		t.Fatalf("east: %+v", r)
	}
	rvs := rrVersions(t, clusters, ns)
	if rep, err = RotateRoot(ctx, clusters, withDryRun(opts)); err != nil || rep.Plan.Target != rotation.StepSwitched {
		t.Fatalf("dry run of the switch: %v, %+v", err, rep.Plan)
	}
	for _, sub := range [][]*k8s.Cluster{clusters[:1], clusters[1:]} {
		_, err := RotateRoot(ctx, sub, opts)
		if !errors.Is(err, rotation.ErrIncomplete) {
			t.Fatalf("run on %v: %v", rrNames(sub), err)
		}
	}
	rrSameVersions(t, "refused subset runs", rvs, rrVersions(t, clusters, ns))
}

// TestRootRotationTakesTheLease: a step waits for (here: gives up on) the Lease
// another run (rotate, or another root rotation) holds, and releases its own.
func TestRootRotationTakesTheLease(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t)
	_, files := mint(t, rootA, cl.Name)
	mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	other, err := k8s.AcquireLease(ctx, cl, k8s.LeaseOptions{Namespace: ns, Holder: "rotate-cron"})
	if err != nil {
		t.Fatal(err)
	}
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB), Lock: &k8s.LeaseOptions{Holder: "root-rotate"}}
	rv := getSecret(t, cl, ns, k8s.SecretName).ResourceVersion
	rep, err := RotateRoot(ctx, []*k8s.Cluster{cl}, opts)
	var le *k8s.LockedError
	if !errors.As(err, &le) || le.Holder != "rotate-cron" || !strings.Contains(rep.Clusters[0].Error, "locked by rotate-cron") {
		t.Fatalf("run while locked: %v", err)
	}
	if got := getSecret(t, cl, ns, k8s.SecretName).ResourceVersion; got != rv {
		t.Fatal("a locked cluster was written")
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err = RotateRoot(ctx, []*k8s.Cluster{cl}, opts); err != nil || rep.Clusters[0].Action != "trust both" {
		t.Fatalf("run after release: %v, %+v", err, rep.Clusters[0])
	}
	if holder, _, err := k8s.LeaseHolder(ctx, cl, k8s.LeaseOptions{Namespace: ns}); err != nil || holder != "" {
		t.Fatalf("lease still held by %q (%v)", holder, err)
	}
}

// TestRootRotationWithDeployedRBAC: the Roles of deploy/rbac.yaml that rotate
// needs (meshpki-install and meshpki-rotate) are all a root rotation needs too.
func TestRootRotationWithDeployedRBAC(t *testing.T) {
	_, admins := realClusters(t, false)
	_, limited := realClusters(t, true)
	admin, cl := admins[0], limited[0]
	ns := testNamespace(t)
	ctx := testContext(t)
	rootA, rootB := newRoot(t), newRoot(t)
	_, files := mint(t, rootA, cl.Name)
	mustInstall(t, admin, files, k8s.InstallOptions{Namespace: ns})
	applyRBAC(t, admin, ns, "meshpki-install")
	applyRBAC(t, admin, ns, "meshpki-rotate")
	deadline := time.Now().Add(10 * time.Second)
	for {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: testenv.LimitedUser,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "coordination.k8s.io", Resource: "leases"}}}
		out, err := admin.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && out.Status.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Role meshpki-rotate did not take effect (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB), Lock: &k8s.LeaseOptions{Holder: "root-rotate"}}
	for want := rotation.StepTrustBoth; want <= rotation.StepNewRoot; want++ {
		rep, err := RotateRoot(ctx, []*k8s.Cluster{cl}, opts)
		if err != nil || rep.Clusters[0].To != want || rep.Clusters[0].Record == nil {
			t.Fatalf("step %v as %s: %v, %+v", want, testenv.LimitedUser, err, rep.Clusters[0])
		}
	}
}

// TestRotateRootRefusedPlanDoesNotPanic: a plan refused before it reads the clusters
// (no new root, an invalid target step) is an error with one result per cluster,
// not an index out of range (the issue-10 defect).
func TestRotateRootRefusedPlanDoesNotPanic(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	for name, opts := range map[string]RootRotationOptions{
		"no new root":  {Namespace: ns},
		"invalid step": {Namespace: ns, NewRoot: sharedRoot(t).Cert, ToStep: 99},
	} {
		rep, err := RotateRoot(testContext(t), clusters, opts)
		if err == nil || rep == nil || len(rep.Clusters) != len(clusters) {
			t.Errorf("%s: %v, report %+v", name, err, rep)
		}
	}
}

// TestRootRotationKeepsCRLs walks a mesh with CRLs on (one cluster in the tls
// layout, where istiod wants a CRL of every root of ca.crt too) from root A to
// root B: before each step the new root's CRL, and at step 2 the new
// intermediates' CRLs, reach every cluster, so that every pair completes mTLS with
// CRLs enforced as Envoy does after every step. Without RootRotationOptions.CRLs,
// step 2 is refused (istiod's rule: no CRL of the new chain) and nothing moves.
func TestRootRotationKeepsCRLs(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	rootA, rootB := newRoot(t), newRoot(t)
	for _, cl := range clusters {
		b, files := mint(t, rootA, cl.Name)
		if cl == clusters[2] {
			var err error
			if files, err = b.Files(ca.FormatTLS); err != nil {
				t.Fatal(err)
			}
		}
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	crlOf := func(r *ca.Root) []*x509.RevocationList {
		crl, err := ca.SignCRL(r.Cert, r.Signer, nil, nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.RevocationList{crl}
	}
	if _, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: crlOf(rootA)}); err != nil {
		t.Fatal(err)
	}
	allTalk := func(what string) {
		t.Helper()
		ws := make([]*ca.Workload, len(clusters))
		for i, cl := range clusters {
			ws[i], _ = crlWorkload(t, cl, ns)
			if len(ws[i].CRLs) == 0 {
				t.Fatalf("%s: %s has no CRLs", what, cl.Name)
			}
		}
		for i := range clusters {
			for j := i + 1; j < len(clusters); j++ {
				if err := handshakes(t, ws[i], ws[j]); err != nil {
					t.Errorf("%s: %s <-> %s: %v", what, clusters[i].Name, clusters[j].Name, err)
				}
			}
		}
	}
	allTalk("before")
	newCRLs := func(context.Context) ([]*x509.RevocationList, error) { return crlOf(rootB), nil }
	opts := RootRotationOptions{Namespace: ns, NewRoot: rootB.Cert, Issuer: ca.NewLocalIssuer(rootB),
		CRLs: &CRLSyncOptions{}, NewRootCRLs: newCRLs}

	rep, err := RotateRoot(testContext(t), clusters, opts)
	if err != nil || len(rep.CRLs) != 3 {
		t.Fatalf("step 1: %v, %d CRL results", err, len(rep.CRLs))
	}
	allTalk("step 1")
	for _, cl := range clusters {
		crls, _ := ca.ParseCRLsPEM(k8s.SecretFiles(getSecret(t, cl, ns, k8s.SecretName))[ca.CRLFile])
		if ca.CRLOf(crls, rootB.Cert) == nil {
			t.Fatalf("step 1: %s lacks the new root's CRL", cl.Name)
		}
	}

	// Step 2 without the CRL spread: refused everywhere, nothing moves.
	bare := opts
	bare.CRLs = nil
	before := rrVersions(t, clusters, ns)
	if _, err := RotateRoot(testContext(t), clusters, bare); err == nil || !strings.Contains(err.Error(), ca.CRLFile) {
		t.Fatalf("step 2 without CRLs: %v, want istiod's CRL rule to refuse it", err)
	}
	rrSameVersions(t, "a refused step 2", before, rrVersions(t, clusters, ns))

	if _, err := RotateRoot(testContext(t), clusters, opts); err != nil {
		t.Fatalf("step 2: %v", err)
	}
	allTalk("step 2")
	// What each cluster held just before its own switch (its newest backup) had
	// the CRLs of every new intermediate already: a cluster still at step 1 accepts
	// one that switched first.
	var newCAs []*x509.Certificate
	for _, cl := range clusters {
		b, _, err := ca.ParseBundle(k8s.SecretFiles(getSecret(t, cl, ns, k8s.SecretName)), ca.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		newCAs = append(newCAs, b.Cert)
	}
	for _, cl := range clusters {
		list, err := cl.Client.CoreV1().Secrets(ns).List(testContext(t), metav1.ListOptions{LabelSelector: k8s.LabelBackupOf + "=" + k8s.SecretName})
		if err != nil {
			t.Fatal(err)
		}
		var newest map[string][]byte
		best := int64(-1)
		for _, s := range list.Items {
			if rv, err := strconv.ParseInt(s.Annotations[k8s.AnnotationBackupResourceVersion], 10, 64); err == nil && rv > best {
				best, newest = rv, k8s.SecretFiles(&s)
			}
		}
		crls, err := ca.ParseCRLsPEM(newest[ca.CRLFile])
		if err != nil {
			t.Fatalf("%s: backup before step 2: %v", cl.Name, err)
		}
		for i, c := range newCAs {
			if ca.CRLOf(crls, c) == nil {
				t.Errorf("%s held no CRL of %s's new intermediate before its switch", cl.Name, clusters[i].Name)
			}
		}
	}
	if _, err := RotateRoot(testContext(t), clusters, opts); err != nil {
		t.Fatalf("step 3: %v", err)
	}
	allTalk("step 3")
	for _, cl := range clusters {
		b, _, err := ca.ParseBundle(k8s.SecretFiles(getSecret(t, cl, ns, k8s.SecretName)), ca.VerifyOptions{})
		if err != nil || !b.SignedUnder(rootB.Cert) || len(b.Roots) != 1 {
			t.Fatalf("%s after step 3: %v", cl.Name, err)
		}
	}
	// Without the new root's CRL source, a CRL mesh does not move.
	noSource := opts
	noSource.NewRootCRLs = nil
	noSource.NewRoot = newRoot(t).Cert
	if _, err := RotateRoot(testContext(t), clusters, noSource); !errors.Is(err, ErrNoRootCRL) {
		t.Fatalf("a root rotation of a CRL mesh without the new root's CRL: %v, want ErrNoRootCRL", err)
	}
}
