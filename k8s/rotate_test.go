package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
)

func sharedRoot(t testing.TB) *ca.Root {
	t.Helper()
	r, err := testRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rotateOpts is a rotation with root (nil: the shared test root) as the current
// root, a lock holder named after the test, and otherwise the defaults.
func rotateOpts(t testing.TB, ns string, root *ca.Root) RotateOptions {
	if root == nil {
		root = sharedRoot(t)
	}
	return RotateOptions{Namespace: ns, Issuer: ca.NewLocalIssuer(root),
		Profile: ca.IntermediateProfile("", "Istio"), Lock: LeaseOptions{Holder: "test-" + t.Name()}}
}

// agedBundle makes what a cluster near expiry holds: an intermediate for cluster
// under root (nil: the shared one), issued age ago, with left to live.
func agedBundle(t testing.TB, root *ca.Root, cluster string, age, left time.Duration) (*ca.Bundle, map[string][]byte) {
	t.Helper()
	if root == nil {
		root = sharedRoot(t)
	}
	key, err := ca.GenerateKey(ca.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := ca.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Istio"}, CommonName: "Intermediate CA", Locality: []string{cluster}},
		NotBefore:             now.Add(-age),
		NotAfter:              now.Add(left),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		DNSNames:              []string{ca.DefaultIstiodSAN},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	b := &ca.Bundle{Cert: cert, Key: key, Chain: []*x509.Certificate{cert, root.Cert}, Roots: []*x509.Certificate{root.Cert}}
	files, err := b.Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	if rep := ca.Verify(files, ca.VerifyOptions{}); !rep.OK() {
		t.Fatalf("aged bundle does not verify: %v", rep.Err())
	}
	return b, files
}

func serialOf(c *x509.Certificate) string { return ca.FormatSerial(c) }

func rotateAll(t testing.TB, clusters []*Cluster, opts RotateOptions) map[string]Result[*RotateResult] {
	t.Helper()
	out := map[string]Result[*RotateResult]{}
	for _, r := range Each(testContext(t), clusters, 0, func(ctx context.Context, cl *Cluster) (*RotateResult, error) {
		return Rotate(ctx, cl, opts)
	}, nil) {
		b, _ := json.Marshal(r.Value)
		noKeyMaterial(t, "rotate result", string(b))
		out[r.Cluster.Name] = r
	}
	return out
}

func backups(t testing.TB, cl *Cluster, ns string) []string {
	t.Helper()
	b, err := Backups(testContext(t), cl, ns)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The decision rules, at chosen times, without a cluster.
func TestRotateJudge(t *testing.T) {
	root := sharedRoot(t)
	b, files := mint(t, nil, "east") // one year from now
	sec, err := NewSecret("istio-system", files)
	if err != nil {
		t.Fatal(err)
	}
	sec.ResourceVersion = "7"
	issued := b.Cert.NotBefore
	opts := rotateOpts(t, "istio-system", root)
	for _, tc := range []struct {
		name   string
		at     time.Duration // after NotBefore
		rb     ca.RenewBefore
		due    bool
		reason string
	}{
		{"fresh, default third", 24 * time.Hour, ca.RenewBefore{}, false, "364 days left; due on "},
		{"two thirds gone", 245 * 24 * time.Hour, ca.RenewBefore{}, true, "under renew-before 33.33% of lifetime"},
		{"just before two thirds", 242 * 24 * time.Hour, ca.RenewBefore{}, false, "due on " + b.Cert.NotAfter.Add(-time.Duration(float64(b.Cert.NotAfter.Sub(issued))/3)).UTC().Format(time.DateOnly)},
		{"30d rule, 40 days left", 325 * 24 * time.Hour, ca.RenewBefore{Duration: 30 * 24 * time.Hour}, false, "40 days left; due on "},
		{"30d rule, 20 days left", 345 * 24 * time.Hour, ca.RenewBefore{Duration: 30 * 24 * time.Hour}, true, "20 days left, under renew-before 30d"},
		{"expired", 400 * 24 * time.Hour, ca.RenewBefore{}, true, "certificate has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			o.RenewBefore = tc.rb
			d := judge(sec, o, issued.Add(tc.at))
			if d.due != tc.due || !strings.Contains(d.reason, tc.reason) || d.otherRoot || d.rv != "7" {
				t.Fatalf("due=%v otherRoot=%v reason %q; want due=%v and %q", d.due, d.otherRoot, d.reason, tc.due, tc.reason)
			}
		})
	}
	// Another root: due, and marked as a root change, at any time.
	o := rotateOpts(t, "istio-system", newRoot(t))
	d := judge(sec, o, issued.Add(24*time.Hour))
	if !d.due || !d.otherRoot || !strings.Contains(d.reason, "chains to root sha256:"+ca.Fingerprint(root.Cert)[:16]) {
		t.Fatalf("other root: %+v", d)
	}
	// Options that would rotate on every run are refused.
	o = rotateOpts(t, "istio-system", root)
	o.RenewBefore = ca.RenewBefore{Duration: 400 * 24 * time.Hour}
	o.Profile.TTL = 365 * 24 * time.Hour
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "every run would rotate again") {
		t.Fatalf("validate: %v", err)
	}
}

// Nothing due: every cluster reports "not due" and nothing is written, not even
// the Lease.
func TestRotateNothingDueWritesNothing(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	rvs := map[string]string{}
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, InstallOptions{Namespace: ns})
		rvs[cl.Name] = getSecret(t, cl, ns, SecretName).ResourceVersion
	}
	for run := range 2 {
		for name, r := range rotateAll(t, clusters, rotateOpts(t, ns, nil)) {
			res := r.Value
			if r.Err != nil || res.Outcome != OutcomeNotDue || res.Due || !strings.Contains(res.Reason, "364 days left") {
				t.Fatalf("run %d, %s: %+v, %v", run, name, res, r.Err)
			}
			if res.ResourceVersion != rvs[name] || res.NotAfter.IsZero() || res.RenewAt.IsZero() {
				t.Fatalf("run %d, %s: result %+v", run, name, res)
			}
		}
	}
	for _, cl := range clusters {
		if rv := getSecret(t, cl, ns, SecretName).ResourceVersion; rv != rvs[cl.Name] {
			t.Errorf("%s: cacerts written: resourceVersion %s -> %s", cl.Name, rvs[cl.Name], rv)
		}
		if b := backups(t, cl, ns); len(b) != 0 {
			t.Errorf("%s: backups %v", cl.Name, b)
		}
		if _, ok := getLease(t, cl, ns); ok {
			t.Errorf("%s: a Lease was written although nothing was due", cl.Name)
		}
	}
}

// One cluster near expiry (default rule: a third of its life left): only it is
// rotated; its old bundle is kept as a backup; the new one verifies, and its
// workloads still handshake with the other clusters'.
func TestRotateOnlyTheDueCluster(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	east := clusters[0]
	old, oldFiles := agedBundle(t, nil, east.Name, 300*24*time.Hour, 20*24*time.Hour)
	mustInstall(t, east, oldFiles, InstallOptions{Namespace: ns})
	rvs := map[string]string{}
	for _, cl := range clusters[1:] {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, InstallOptions{Namespace: ns})
		rvs[cl.Name] = getSecret(t, cl, ns, SecretName).ResourceVersion
	}

	results := rotateAll(t, clusters, rotateOpts(t, ns, nil))
	r := results[east.Name]
	if r.Err != nil || r.Value.Outcome != OutcomeRotated || !strings.Contains(r.Value.Reason, "19 days left") {
		t.Fatalf("east: %+v, %v", r.Value, r.Err)
	}
	for _, cl := range clusters[1:] {
		if res := results[cl.Name]; res.Err != nil || res.Value.Outcome != OutcomeNotDue {
			t.Fatalf("%s: %+v, %v", cl.Name, res.Value, res.Err)
		}
		if rv := getSecret(t, cl, ns, SecretName).ResourceVersion; rv != rvs[cl.Name] {
			t.Errorf("%s was written", cl.Name)
		}
	}
	res := r.Value
	// The old bundle is kept.
	if got := backups(t, east, ns); len(got) != 1 || got[0] != res.Backup {
		t.Fatalf("backups %v, result says %q", got, res.Backup)
	}
	if b := getSecret(t, east, ns, res.Backup); !maps.EqualFunc(b.Data, oldFiles, bytes.Equal) {
		t.Fatal("backup is not the old bundle")
	}
	// The new bundle verifies, is new, lives a year, and is what the result says.
	cur := getSecret(t, east, ns, SecretName)
	nb, rep, err := ca.ParseBundle(SecretFiles(cur), ca.VerifyOptions{})
	if err != nil {
		t.Fatalf("installed bundle: %v", err)
	}
	if serialOf(nb.Cert) == serialOf(old.Cert) || ca.KeyMatchesPublic(nb.Cert.PublicKey, old.Cert.PublicKey) {
		t.Fatal("same serial or same key as before")
	}
	if res.Before.Serial != serialOf(old.Cert) || res.After.Serial != rep.Serial || res.ResourceVersion != cur.ResourceVersion {
		t.Fatalf("result before %s after %s rv %s; installed %s rv %s", res.Before.Serial, res.After.Serial, res.ResourceVersion, rep.Serial, cur.ResourceVersion)
	}
	if left := time.Until(nb.Cert.NotAfter); left < 364*24*time.Hour || !res.NotAfter.Equal(nb.Cert.NotAfter) {
		t.Fatalf("new intermediate: %s left, result not after %s", left, res.NotAfter)
	}
	if nb.Cert.Subject.Locality[0] != east.Name {
		t.Fatalf("subject %s", nb.Cert.Subject)
	}
	if _, ok := getLease(t, east, ns); ok {
		t.Fatal("lease not released")
	}
	// Cross-cluster mTLS with west's and north's workloads, both ways.
	for _, other := range clusters[1:] {
		ob, _, err := ca.ParseBundle(SecretFiles(getSecret(t, other, ns, SecretName)), ca.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := nb.IssueWorkload(ca.SPIFFEID("cluster.local", "default", "east-app"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ob.IssueWorkload(ca.SPIFFEID("cluster.local", "default", other.Name+"-app"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.Handshake(testContext(t), e, o); err != nil {
			t.Errorf("east server, %s client: %v", other.Name, err)
		}
		if err := ca.Handshake(testContext(t), o, e); err != nil {
			t.Errorf("%s server, east client: %v", other.Name, err)
		}
	}
	// A second run finds nothing due.
	for name, r := range rotateAll(t, clusters, rotateOpts(t, ns, nil)) {
		if r.Err != nil || r.Value.Outcome != OutcomeNotDue {
			t.Fatalf("second run, %s: %+v, %v", name, r.Value, r.Err)
		}
	}
}

// Three runs decide at once that a cluster is due; the Lease lets one rotate and
// the others find it rotated meanwhile: one new intermediate, one backup.
func TestRotateConcurrentRunsRotateOnce(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	cl := clusters[1]
	_, files := agedBundle(t, nil, cl.Name, 300*24*time.Hour, 10*24*time.Hour)
	mustInstall(t, cl, files, InstallOptions{Namespace: ns})

	const runs = 3
	var decided sync.WaitGroup
	decided.Add(runs)
	results := make([]*RotateResult, runs)
	errs := make([]error, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := rotateOpts(t, ns, nil)
			opts.Lock.Holder = "run-" + string(rune('a'+i))
			opts.Lock.Wait, opts.Lock.Poll = 30*time.Second, 50*time.Millisecond
			// Every run has judged the cluster due before any takes the Lease.
			opts.beforeLock = func() { decided.Done(); decided.Wait() }
			results[i], errs[i] = Rotate(testContext(t), cl, opts)
		}()
	}
	wg.Wait()
	rotated := 0
	var serial string
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		switch res.Outcome {
		case OutcomeRotated:
			rotated++
			serial = res.After.Serial
		case OutcomeNotDue:
			if !strings.Contains(res.Reason, "rotated meanwhile") {
				t.Errorf("run %d: not due for %q", i, res.Reason)
			}
		default:
			t.Errorf("run %d: %s", i, res.Outcome)
		}
	}
	if rotated != 1 {
		t.Fatalf("%d runs rotated, want 1", rotated)
	}
	if b := backups(t, cl, ns); len(b) != 1 {
		t.Fatalf("backups %v, want 1", b)
	}
	_, rep, err := ca.ParseBundle(SecretFiles(getSecret(t, cl, ns, SecretName)), ca.VerifyOptions{})
	if err != nil || rep.Serial != serial {
		t.Fatalf("installed serial %s, rotated %s (%v)", rep.Serial, serial, err)
	}
}

// --force and a run that holds the Lease: the forced run waits, and finds that the
// other run rotated meanwhile; it does not rotate a second time.
func TestRotateForcedRunWaitsForLock(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	cl := clusters[2]
	_, files := mint(t, nil, cl.Name)
	mustInstall(t, cl, files, InstallOptions{Namespace: ns})

	other, err := AcquireLease(testContext(t), cl, LeaseOptions{Namespace: ns, Holder: "other-run"})
	if err != nil {
		t.Fatal(err)
	}
	opts := rotateOpts(t, ns, nil)
	opts.Force = true
	opts.Lock.Wait, opts.Lock.Poll = 30*time.Second, 50*time.Millisecond
	waiting := make(chan struct{})
	opts.beforeLock = func() { close(waiting) }
	done := make(chan struct{})
	var res *RotateResult
	var rerr error
	go func() {
		defer close(done)
		res, rerr = Rotate(testContext(t), cl, opts)
	}()
	<-waiting
	// The other run rotates and lets go.
	_, theirs := mint(t, nil, cl.Name)
	mustInstall(t, cl, theirs, InstallOptions{Namespace: ns})
	if err := other.Release(testContext(t)); err != nil {
		t.Fatal(err)
	}
	<-done
	if rerr != nil || res.Outcome != OutcomeNotDue || !strings.Contains(res.Reason, "rotated meanwhile") {
		t.Fatalf("forced run: %+v, %v", res, rerr)
	}
	if cur := getSecret(t, cl, ns, SecretName); !maps.EqualFunc(cur.Data, theirs, bytes.Equal) {
		t.Fatal("the forced run replaced the other run's new bundle")
	}
	if b := backups(t, cl, ns); len(b) != 1 {
		t.Fatalf("backups %v, want the other run's one", b)
	}
}

// A Lease held by a live run: a due cluster is left alone and reported locked; an
// expired Lease is taken over.
func TestRotateLockedAndStaleLease(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	cl := clusters[0]
	_, files := agedBundle(t, nil, cl.Name, 300*24*time.Hour, 10*24*time.Hour)
	mustInstall(t, cl, files, InstallOptions{Namespace: ns})
	rv := getSecret(t, cl, ns, SecretName).ResourceVersion
	putLease(t, cl, ns, "bastion-1_cafe", time.Now(), time.Minute)

	res, err := Rotate(testContext(t), cl, rotateOpts(t, ns, nil))
	var le *LockedError
	if !errors.As(err, &le) || res.Outcome != OutcomeLocked || res.LockedBy != "bastion-1_cafe" || res.Outcome.OK() {
		t.Fatalf("held lease: %+v, %v", res, err)
	}
	if getSecret(t, cl, ns, SecretName).ResourceVersion != rv {
		t.Fatal("cacerts written while another run held the lock")
	}
	// A dry run says who holds it.
	dry := rotateOpts(t, ns, nil)
	dry.DryRun = true
	if res, err := Rotate(testContext(t), cl, dry); err != nil || res.Outcome != OutcomeDue || res.LockedBy != "bastion-1_cafe" {
		t.Fatalf("dry run: %+v, %v", res, err)
	}

	// The holder died two minutes ago.
	l, _ := getLease(t, cl, ns)
	stale := metav1.NewMicroTime(time.Now().Add(-2 * time.Minute))
	l.Spec.RenewTime = &stale
	if _, err := cl.Client.CoordinationV1().Leases(ns).Update(testContext(t), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err = Rotate(testContext(t), cl, rotateOpts(t, ns, nil))
	if err != nil || res.Outcome != OutcomeRotated || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "took over the lock that bastion-1_cafe let expire") {
		t.Fatalf("stale lease: %+v, %v", res, err)
	}
	if _, ok := getLease(t, cl, ns); ok {
		t.Fatal("lease not released")
	}
}

// Missing and broken cacerts are due; a tls-layout bundle stays in that layout; a
// dry run changes nothing.
func TestRotateMissingBrokenAndFormat(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	east, west, north := clusters[0], clusters[1], clusters[2]
	// east: broken (no cert-chain.pem), west: tls layout near expiry, north: none.
	_, broken := mint(t, nil, east.Name)
	delete(broken, ca.CertChainFile)
	putSecret(t, east, ns, broken)
	b, _ := agedBundle(t, nil, west.Name, 300*24*time.Hour, 10*24*time.Hour)
	tlsFiles, err := b.Files(ca.FormatTLS)
	if err != nil {
		t.Fatal(err)
	}
	mustInstall(t, west, tlsFiles, InstallOptions{Namespace: ns})

	dry := rotateOpts(t, ns, nil)
	dry.DryRun = true
	for name, r := range rotateAll(t, clusters, dry) {
		if r.Err != nil || r.Value.Outcome != OutcomeDue || !r.Value.DryRun {
			t.Fatalf("dry run, %s: %+v, %v", name, r.Value, r.Err)
		}
	}
	if _, err := north.Client.CoreV1().Secrets(ns).Get(testContext(t), SecretName, metav1.GetOptions{}); err == nil {
		t.Fatal("dry run created cacerts")
	}
	for _, cl := range clusters[:2] {
		if _, ok := getLease(t, cl, ns); ok || len(backups(t, cl, ns)) != 0 {
			t.Fatalf("dry run wrote to %s", cl.Name)
		}
	}

	results := rotateAll(t, clusters, rotateOpts(t, ns, nil))
	for name, want := range map[string]string{east.Name: "fails istiod's checks: missing-file: cert-chain.pem", west.Name: "days left", north.Name: "no cacerts Secret"} {
		if r := results[name]; r.Err != nil || r.Value.Outcome != OutcomeRotated || !strings.Contains(r.Value.Reason, want) {
			t.Errorf("%s: %+v, %v; want rotated for %q", name, r.Value, r.Err, want)
		}
	}
	if got := getSecret(t, east, ns, results[east.Name].Value.Backup); !maps.EqualFunc(got.Data, broken, bytes.Equal) {
		t.Error("east's broken bundle was not kept")
	}
	w := getSecret(t, west, ns, SecretName)
	if _, ok := w.Data[ca.TLSCertFile]; !ok || len(w.Data) != 3 {
		t.Errorf("west's layout changed: keys %v", slicesOf(maps.Keys(w.Data)))
	}
	if results[north.Name].Value.Backup != "" {
		t.Error("north had nothing to back up")
	}
}

// A cluster on another root fails unless allowed; allowed, it moves to the current
// root alone. A cluster that trusts two roots (a root rotation in progress) keeps
// trusting both.
func TestRotateRoots(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	cl := clusters[1]
	rootA, rootB := sharedRoot(t), newRoot(t)

	// Installed under B, current root A.
	_, onB := mint(t, rootB, cl.Name)
	mustInstall(t, cl, onB, InstallOptions{Namespace: ns})
	rv := getSecret(t, cl, ns, SecretName).ResourceVersion
	res, err := Rotate(testContext(t), cl, rotateOpts(t, ns, rootA))
	if !errors.Is(err, ErrOtherRoot) || res.Outcome != OutcomeFailed || !strings.Contains(err.Error(), "cluster "+cl.Name) {
		t.Fatalf("other root: %+v, %v", res, err)
	}
	if getSecret(t, cl, ns, SecretName).ResourceVersion != rv {
		t.Fatal("written despite the root change")
	}
	if _, ok := getLease(t, cl, ns); ok {
		t.Fatal("lease taken for a refused cluster")
	}
	opts := rotateOpts(t, ns, rootA)
	opts.AllowNewRoot = true
	if res, err = Rotate(testContext(t), cl, opts); err != nil || res.Outcome != OutcomeRotated {
		t.Fatalf("allowed: %+v, %v", res, err)
	}
	if fps := res.After.RootFingerprints; len(fps) != 1 || fps[0] != ca.Fingerprint(rootA.Cert) {
		t.Fatalf("roots after moving to A: %v", fps)
	}

	// Installed: intermediate under A, roots A and B. Rotated under A: both roots
	// stay. Then with B current (allowed): an intermediate under B, both roots stay.
	ns2 := testNamespace(t)
	ab, _ := mint(t, rootA, cl.Name)
	ab.Roots = append(ab.Roots, rootB.Cert)
	abFiles, err := ab.Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	mustInstall(t, cl, abFiles, InstallOptions{Namespace: ns2})
	forced := rotateOpts(t, ns2, rootA)
	forced.Force = true
	want := ca.Fingerprint(rootA.Cert) + "," + ca.Fingerprint(rootB.Cert)
	if res, err = Rotate(testContext(t), cl, forced); err != nil || res.Outcome != OutcomeRotated || strings.Join(res.After.RootFingerprints, ",") != want {
		t.Fatalf("forced under A with roots A+B: %+v, %v", res, err)
	}
	toB := rotateOpts(t, ns2, rootB)
	toB.AllowNewRoot = true
	rootsBefore := getSecret(t, cl, ns2, SecretName).Data[ca.RootCertFile]
	// Both roots stay, in the installed order and bytes: istiod 1.20-1.29 refuse a
	// reordered roots file.
	if res, err = Rotate(testContext(t), cl, toB); err != nil || res.Outcome != OutcomeRotated || strings.Join(res.After.RootFingerprints, ",") != want {
		t.Fatalf("moved to B with roots A+B: %+v, %v", res, err)
	}
	if !bytes.Equal(getSecret(t, cl, ns2, SecretName).Data[ca.RootCertFile], rootsBefore) {
		t.Fatal("moving to B rewrote root-cert.pem")
	}
	if !strings.Contains(res.Reason, "not to the current root") {
		t.Fatalf("reason %q", res.Reason)
	}
}

// putSecret writes files as cacerts as is (no verification), creating namespace ns.
func putSecret(t testing.TB, cl *Cluster, ns string, files map[string][]byte) {
	t.Helper()
	if _, err := cl.Client.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec, err := NewSecret(ns, files)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Client.CoreV1().Secrets(ns).Create(testContext(t), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func slicesOf[T any](seq func(func(T) bool)) []T {
	var out []T
	for v := range seq {
		out = append(out, v)
	}
	return out
}
