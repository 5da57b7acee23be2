package main

// End-to-end tests with real istiod (pilot-discovery from istio.io/istio, run by
// internal/testenv against each test cluster's kube-apiserver, fed from the cacerts
// Secret as kubelet feeds a Secret volume). istiod is the judge: a step is done when
// istiod has taken it (its log, the trust bundle it publishes) and when the workload
// certificates it signs complete mutual TLS across clusters.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// istiodMesh returns clusters of the test's own (istiod publishes into every
// namespace: no other test uses them until this one ends; see parallelMesh) with
// an admin client per cluster. The tests that use it run in parallel
// (t.Parallel): they spend most of their time waiting for their own apiservers and
// istiods, which share nothing but the machine, and they set no environment.
func istiodMesh(t *testing.T, names ...string) (*testenv.K8s, string, map[string]kubernetes.Interface) {
	t.Helper()
	testenv.IstiodBin(t) // skips (or fails) without istiod
	env := parallelMesh(t, names...)
	clients := adminClients(t, env)
	return env, env.Kubeconfig, clients
}

// adminClients is an admin client per cluster of env, by cluster name.
func adminClients(t *testing.T, env *testenv.K8s) map[string]kubernetes.Interface {
	t.Helper()
	clients := map[string]kubernetes.Interface{}
	for _, c := range env.Clusters {
		cs, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
		if err != nil {
			t.Fatal(err)
		}
		clients[c.Name] = cs
	}
	return clients
}

// twoRoots makes root A (the mesh's) and root B (the next one) and bundles for
// east and west under A, in a new folder.
func twoRoots(t *testing.T) (rootA, rootB, bundles string) {
	t.Helper()
	dir := t.TempDir()
	rootA, rootB, bundles = filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", rootA)
	rrWant(t, 0, nil, "root", "create", "--out", rootB, "--common-name", "Root CA 2027")
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootA, "--cluster", "east", "--cluster", "west", "--out", bundles)
	return rootA, rootB, bundles
}

func startIstiod(t *testing.T, c *testenv.K8sCluster, multiRoot bool) *testenv.Istiod {
	t.Helper()
	return startIstiodWith(t, c, testenv.IstiodOptions{MultiRoot: multiRoot})
}

func startIstiodWith(t *testing.T, c *testenv.K8sCluster, opts testenv.IstiodOptions) *testenv.Istiod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	i, err := testenv.StartIstiod(ctx, testenv.IstiodBin(t), c, opts)
	if err != nil {
		t.Fatalf("start istiod for %s: %v", c.Name, err)
	}
	t.Cleanup(i.Stop)
	return i
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// workload is a certificate istiod signed, with the trust bundle its cluster's
// istiod published at that time: what a proxy holds.
type workload struct {
	cluster string
	w       *ca.Workload
	chain   []*x509.Certificate
}

func signWorkload(t *testing.T, i *testenv.Istiod) workload {
	t.Helper()
	ctx := waitCtx(t)
	wc, err := i.SignWorkload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := i.PublishedRoots(ctx, testenv.IstioNamespace)
	if err != nil {
		t.Fatal(err)
	}
	return workload{cluster: i.Cluster.Name, w: toWorkload(t, wc, roots), chain: wc.Chain}
}

func toWorkload(t *testing.T, wc *testenv.WorkloadCert, roots []byte) *ca.Workload {
	t.Helper()
	key, err := ca.ParsePrivateKeyPEM(wc.KeyPEM)
	if err != nil {
		t.Fatalf("workload key: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("published trust bundle holds no certificate")
	}
	// The chain a proxy presents: leaf and intermediates, not the roots.
	var der [][]byte
	for _, c := range wc.Chain {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		der = append(der, c.Raw)
	}
	var id *url.URL
	if len(wc.Chain[0].URIs) > 0 {
		id = wc.Chain[0].URIs[0]
	}
	return &ca.Workload{ID: id, Cert: tls.Certificate{Certificate: der, PrivateKey: key, Leaf: wc.Chain[0]}, Roots: pool}
}

// mustHandshake runs mutual TLS both ways between every pair of ws from different
// clusters.
func mustHandshake(t *testing.T, what string, ws ...workload) {
	t.Helper()
	n := 0
	for _, a := range ws {
		for _, b := range ws {
			if a.cluster == b.cluster {
				continue
			}
			if err := ca.Handshake(waitCtx(t), a.w, b.w); err != nil {
				t.Fatalf("%s: %s (server) and %s (client): %v", what, a.cluster, b.cluster, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s: no pair to check", what)
	}
}

// secretData reads the data of Secret name in istio-system.
func secretData(t *testing.T, cs kubernetes.Interface, name string) map[string][]byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets(k8s.DefaultNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// secretFiles reads a cluster's cacerts.
func secretFiles(t *testing.T, cs kubernetes.Interface) map[string][]byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets(k8s.DefaultNamespace).Get(context.Background(), k8s.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

type statusJSON struct {
	OK       bool `json:"ok"`
	Clusters []struct {
		Cluster string            `json:"cluster"`
		Verdict string            `json:"verdict"`
		Istiod  *k8s.IstiodStatus `json:"istiod"`
	} `json:"clusters"`
}

func istiodStates(t *testing.T, kc string, args ...string) map[string]*k8s.IstiodStatus {
	t.Helper()
	if !slices.Contains(args, "--context") {
		args = append(args, "--all-contexts")
	}
	_, out, errOut := rrRun(t, append([]string{"status", "--kubeconfig", kc, "-o", "json"}, args...)...)
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s\n%s", err, out, errOut)
	}
	m := map[string]*k8s.IstiodStatus{}
	for _, c := range st.Clusters {
		m[c.Cluster] = c.Istiod
	}
	return m
}

func wantIstiodState(t *testing.T, kc string, want k8s.IstiodState, args ...string) {
	t.Helper()
	for cl, st := range istiodStates(t, kc, args...) {
		if st == nil || st.State != want {
			t.Fatalf("status: istiod in %s is %+v, want %s", cl, st, want)
		}
	}
}

func noRefusals(t *testing.T, is []*testenv.Istiod) {
	t.Helper()
	for _, i := range is {
		if r := i.Refusals(0); len(r) > 0 {
			t.Fatalf("istiod in %s refused a change: %s", i.Cluster.Name, strings.Join(r, " | "))
		}
	}
}

// TestIstiodInstallAndRotate: after install, every istiod signs workloads with the
// installed intermediate, and each cluster's published trust bundle accepts the other
// clusters' workloads; after rotate, every istiod reloads without a restart, and
// certificates from before and after are trusted across clusters.
func TestIstiodInstallAndRotate(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west", "north")
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles)

	var is []*testenv.Istiod
	var before []workload
	for _, c := range env.Clusters {
		// west's istiod publishes its roots as a ClusterTrustBundle (issue 27): no
		// istio-ca-root-cert there, and status and the gates read the bundle.
		i := startIstiodWith(t, c, testenv.IstiodOptions{MultiRoot: true, ClusterTrustBundle: c.Name == "west"})
		if err := i.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
			t.Fatal(err)
		}
		is = append(is, i)
		w := signWorkload(t, i)
		installed, _ := ca.ParseCertificatePEM(secretFiles(t, clients[c.Name])[ca.CACertFile])
		if !w.chain[1].Equal(installed) || w.chain[0].CheckSignatureFrom(installed) != nil {
			t.Fatalf("istiod in %s signed with %s, not the installed intermediate", c.Name, w.chain[1].Subject)
		}
		before = append(before, w)
	}
	mustHandshake(t, "after install", before...)
	wantIstiodState(t, kc, k8s.IstiodLoaded)
	wantTrustSources(t, kc, clients, map[string]string{"east": k8s.SourceConfigMap, "west": k8s.SourceClusterTrustBundle, "north": k8s.SourceConfigMap})

	// rotate: a new intermediate per cluster, taken on istiod's hot reload.
	offsets := make([]int64, len(is))
	for k, i := range is {
		offsets[k] = i.LogSize()
	}
	rrWant(t, 0, nil, "rotate", "--kubeconfig", kc, "--all-contexts", "--root-dir", root, "--force")
	var after []workload
	for k, i := range is {
		if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogReloaded); err != nil {
			t.Fatal(err)
		}
		if i.Restarts() != 0 {
			t.Fatalf("istiod in %s was restarted", i.Cluster.Name)
		}
		w := signWorkload(t, i)
		installed, _ := ca.ParseCertificatePEM(secretFiles(t, clients[i.Cluster.Name])[ca.CACertFile])
		if !w.chain[1].Equal(installed) || w.chain[1].Equal(before[k].chain[1]) {
			t.Fatalf("istiod in %s still signs with the old intermediate after rotate", i.Cluster.Name)
		}
		after = append(after, w)
	}
	mustHandshake(t, "after rotate", after...)
	mustHandshake(t, "before and after rotate", before[0], after[1], after[2])
	mustHandshake(t, "before and after rotate", after[0], before[1], before[2])
	noRefusals(t, is)
	wantIstiodState(t, kc, k8s.IstiodLoaded)

	// CRLs on: istiod in ClusterTrustBundle mode loads ca-crl.pem but publishes no
	// istio-ca-crl (its namespace controller does not run), so no proxy there
	// enforces it: measured here, and status warns.
	for k, i := range is {
		offsets[k] = i.LogSize()
	}
	rrWant(t, 0, nil, "crl", "sync", "--kubeconfig", kc, "--all-contexts", "--root-dir", root)
	for k, i := range is {
		if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogReloaded); err != nil {
			t.Fatal(err)
		}
	}
	if err := is[0].WaitPublishedCRL(waitCtx(t), secretFiles(t, clients["east"])[ca.CRLFile]); err != nil { // east publishes it
		t.Fatal(err)
	}
	if _, err := clients["west"].CoreV1().ConfigMaps(testenv.IstioNamespace).Get(context.Background(), testenv.CRLConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("west (ClusterTrustBundle mode) published %s: %v", testenv.CRLConfigMap, err)
	}
	_, out, _ := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts")
	if !regexp.MustCompile(`(?m)^west +warning .*loaded \(ctb\)`).MatchString(out) || !strings.Contains(out, "crl-not-published") || strings.Count(out, "crl-not-published") != 1 {
		t.Fatalf("status does not warn that west's CRLs are not published (and only west's):\n%s", out)
	}
}

// wantTrustSources checks where status read each cluster's published roots, and
// that a cluster in ClusterTrustBundle mode has no istio-ca-root-cert to read.
func wantTrustSources(t *testing.T, kc string, clients map[string]kubernetes.Interface, want map[string]string) {
	t.Helper()
	code, out, errOut := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts", "-o", "json")
	var rep struct {
		Clusters []struct {
			Cluster string
			Istiod  struct{ State, Source string }
			Istio   struct{ ClusterTrustBundle bool }
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status -o json (exit %d): %v\n%s\n%s", code, err, out, errOut)
	}
	for _, c := range rep.Clusters {
		if c.Istiod.Source != want[c.Cluster] || c.Istio.ClusterTrustBundle != (want[c.Cluster] == k8s.SourceClusterTrustBundle) {
			t.Errorf("%s: status read the roots from %q (clusterTrustBundle %v), want %q", c.Cluster, c.Istiod.Source, c.Istio.ClusterTrustBundle, want[c.Cluster])
		}
		if want[c.Cluster] == k8s.SourceClusterTrustBundle {
			_, err := clients[c.Cluster].CoreV1().ConfigMaps(testenv.IstioNamespace).Get(context.Background(), testenv.RootConfigMap, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s: istiod in ClusterTrustBundle mode, yet %s is there (%v): the test would not show that status reads the bundle", c.Cluster, testenv.RootConfigMap, err)
			}
		}
	}
}

// opensslText returns `openssl x509 -text` of a PEM certificate: explanatory text,
// then the PEM block, as Istio's guide leaves root-cert.pem when made by hand.
func opensslText(t *testing.T, pemFile string) []byte {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-in", pemFile, "-text").Output()
	if err != nil {
		t.Fatalf("openssl x509 -text: %v", err)
	}
	if !bytes.HasPrefix(out, []byte("Certificate:")) {
		t.Fatalf("openssl printed no text before the block:\n%s", out)
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestRootRotateWaitsForIstiod: an istiod without ISTIO_MULTIROOT_MESH refuses step 1;
// status reports it refused with that reason, and root rotate will not take step 2.
func TestRootRotateWaitsForIstiod(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	env, kc, _ := istiodMesh(t, "solo")
	dir := t.TempDir()
	rootA, rootB, bundles := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", rootA)
	rrWant(t, 0, nil, "root", "create", "--out", rootB, "--common-name", "Root CA 2027")
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootA, "--cluster", "solo", "--out", bundles)
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles)
	// istiod publishes its roots as a ClusterTrustBundle (issue 27): what it holds
	// is what the gate reads.
	i := startIstiodWith(t, env.Clusters[0], testenv.IstiodOptions{ClusterTrustBundle: true})
	off := i.LogSize()
	rrWant(t, 0, nil, "root", "rotate", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", rootB, "--min-step-interval", "0")
	ctx := waitCtx(t)
	for len(i.Refusals(off)) == 0 {
		if ctx.Err() != nil {
			t.Fatalf("istiod did not refuse step 1 without ISTIO_MULTIROOT_MESH:\n%s", i.LogSince(off))
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := istiodStates(t, kc, "--istiod-grace", "1ms")["solo"]
	if st == nil || st.State != k8s.IstiodRefused || !strings.Contains(st.Reason, "ISTIO_MULTIROOT_MESH") {
		t.Fatalf("status: %+v, want refused naming ISTIO_MULTIROOT_MESH", st)
	}
	_, out, errOut := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts", "--istiod-grace", "1ms")
	if !strings.Contains(out, "refused since") || !strings.Contains(out, "(ctb)") {
		t.Fatalf("status table lacks the refusal read from the ClusterTrustBundle:\n%s\n%s", out, errOut)
	}
	code, out, errOut := rrRun(t, "root", "rotate", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", rootB, "--min-step-interval", "0")
	if code != 1 || !strings.Contains(out+errOut, "istiod has not loaded") || !strings.Contains(out+errOut, "solo") {
		t.Fatalf("root rotate went on past an istiod that refused step 1: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestIstiodSelfSignedThenInstall: an istiod that started before cacerts existed signs
// with its own CA and does not switch on its own; install and bootstrap say so, and
// with --restart-istiod restart it (the harness stands in for the Deployment
// controller), after which it signs with the installed intermediate.
func TestIstiodSelfSignedThenInstall(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west")
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--out", bundles)
	east, west := startIstiod(t, env.Clusters[0], true), startIstiod(t, env.Clusters[1], true)
	wantIstiodState(t, kc, k8s.IstiodSelfSigned)

	// install without --restart-istiod: written, and the user told that istiod won't take it.
	out, errOut := rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--context", "east", "--bundles", bundles)
	if !strings.Contains(out, "self-signed CA") || !strings.Contains(out, "--restart-istiod") {
		t.Fatalf("install did not warn that istiod keeps its self-signed CA:\n%s\n%s", out, errOut)
	}
	time.Sleep(time.Second) // the volume is synced within 200 ms; istiod must not switch
	if st := istiodStates(t, kc, "--context", "east")["east"]; st.State != k8s.IstiodSelfSigned {
		t.Fatalf("istiod in east: %+v, want self-signed", st)
	}
	// Again with --restart-istiod: cacerts is unchanged, istiod is restarted all the same.
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--context", "east", "--bundles", bundles, "--restart-istiod")
	waitRestartedOnto(t, east, clients["east"])

	// bootstrap (mint + install one new cluster) onto west, whose istiod is self-signed.
	rrWant(t, 0, nil, "bootstrap", "--kubeconfig", kc, "--context", "west", "--root-dir", root, "--restart-istiod")
	waitRestartedOnto(t, west, clients["west"])
	wantIstiodState(t, kc, k8s.IstiodLoaded)
	mustHandshake(t, "after install and bootstrap", signWorkload(t, east), signWorkload(t, west))
}

func waitRestartedOnto(t *testing.T, i *testenv.Istiod, cs kubernetes.Interface) {
	t.Helper()
	ctx := waitCtx(t)
	for i.Restarts() == 0 {
		if ctx.Err() != nil {
			t.Fatalf("istiod in %s was not restarted", i.Cluster.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	installed, _ := ca.ParseCertificatePEM(secretFiles(t, cs)[ca.CACertFile])
	roots, _ := ca.ParseCertificatesPEM(secretFiles(t, cs)[ca.RootCertFile])
	if err := i.WaitPublished(ctx, roots); err != nil {
		t.Fatal(err)
	}
	if w := signWorkload(t, i); !w.chain[1].Equal(installed) {
		t.Fatalf("istiod in %s signs with %s after the restart, not the installed intermediate", i.Cluster.Name, w.chain[1].Subject)
	}
}

// filesDir writes files (a cacerts Secret's data) into a new folder, for
// istiodLoads.
func filesDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// istiodLoads runs istiod's own loader for plugged-in certs
// (security/pkg/pki/util.NewVerifiedKeyCertBundleFromFile) on a bundle folder.
func istiodLoads(t *testing.T, dir string) (bool, string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(testenv.IstiodBin(t), "bundlecheck"), dir).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return err == nil, strings.TrimSpace(string(out))
}

// TestIstiodLoaderAgreesWithVerify: every bundle meshpki mints (each key type, both
// layouts) is loaded by istiod's own loader, and no bundle of the corpus that meshpki
// verify accepts is refused by it (meshpki may be stricter, never laxer).
func TestIstiodLoaderAgreesWithVerify(t *testing.T) {
	testenv.IstiodBin(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	for _, kt := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048"} {
		for _, format := range []string{"istio", "tls"} {
			out := filepath.Join(dir, kt+"-"+format)
			rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--key-type", kt, "--format", format, "--out", out)
			if ok, msg := istiodLoads(t, filepath.Join(out, "east")); !ok {
				t.Errorf("%s %s: istiod refuses a bundle meshpki minted: %s", kt, format, msg)
			}
		}
	}
	cases, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "bundles", "*"))
	if len(cases) < 10 {
		t.Fatalf("corpus has %d bundles", len(cases))
	}
	for _, c := range cases {
		code, _, _ := rrRun(t, "verify", c)
		ok, msg := istiodLoads(t, c)
		if code == 0 && !ok {
			t.Errorf("%s: meshpki verify accepts what istiod refuses: %s", filepath.Base(c), msg)
		}
		if strings.HasPrefix(filepath.Base(c), "ok-") && !ok {
			t.Errorf("%s: istiod refuses a good bundle: %s", filepath.Base(c), msg)
		}
	}
}
