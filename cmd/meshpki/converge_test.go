package main

// Convergence (root rotate --adopt) against real kube-apiservers and real istiods:
// meshes on different roots, and a cluster on istiod's own self-signed CA, brought
// onto one root with no handshake failing at any step.

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// convergence drives an istiod mesh through root rotate --adopt onto the root in
// folder target, one step per run, and checks at every step what issue "one root
// for clusters that run on different roots" asks:
//   - every istiod takes the step (no refusal; it publishes the step's roots), and
//     is restarted only where it ran on its own CA (adopt);
//   - workloads signed after the step complete mTLS across every pair of clusters;
//   - a workload of this step and one of the step before (each with the trust bundle
//     its istiod published then) complete mTLS: within a cluster always, across
//     clusters where they did before, and everywhere from step 2 on.
type convergence struct {
	t         *testing.T
	kc        string
	is        []*testenv.Istiod
	target    string
	prev      []workload
	talked    func(a, b string) bool // whether a and b completed mTLS at step 0
	restart   map[string]int         // restarts each istiod may have made by the end
	clients   map[string]kubernetes.Interface
	rootsFile map[string][]byte // each cluster's root-cert.pem before the step
}

func (c *convergence) roots(files ...string) []*x509.Certificate {
	var out []*x509.Certificate
	for _, f := range files {
		out = append(out, must(ca.ParseCertificatePEM(must(os.ReadFile(filepath.Join(f, ca.RootCertFile))))))
	}
	return out
}

// step runs one root rotate --adopt, waits for every istiod to publish want, and
// checks the handshakes.
func (c *convergence) step(step int, want []*x509.Certificate, signer *x509.Certificate) {
	t := c.t
	t.Helper()
	offsets := make([]int64, len(c.is))
	for k, i := range c.is {
		offsets[k] = i.LogSize()
	}
	rrWant(t, 0, nil, "root", "rotate", "--adopt", "--kubeconfig", c.kc, "--all-contexts", "--new-root-dir", c.target, "--min-step-interval", "0")
	// Each roots file changed only as every istiod takes it on a hot reload: the
	// byte rule of Istio 1.20-1.29, the set rule of 1.30+; at step 1 the bytes
	// installed (a hand-made file's text too) are kept and extended. (An adopted
	// istiod is restarted: it takes any file.)
	for name, before := range c.rootsFile {
		next := secretFiles(t, c.clients[name])[ca.RootCertFile]
		if before != nil {
			for _, rel := range []ca.IstioRelease{{Major: 1, Minor: 20}, {Major: 1, Minor: 29}, {Major: 1, Minor: 30}} {
				if v := ca.IstiodTakesRootsChange(rel, true, before, next); !v.Accepted {
					t.Fatalf("step %d, %s: Istio %s would refuse the roots file: %s", step, name, rel, v.Reason)
				}
			}
			if step == 1 && !bytes.HasPrefix(next, before) {
				t.Fatalf("step 1, %s: the installed roots file was not kept byte for byte", name)
			}
		}
		c.rootsFile[name] = next
	}
	var cur []workload
	for k, i := range c.is {
		ctx := waitCtx(t)
		if err := i.WaitPublished(ctx, want); err != nil {
			t.Fatalf("step %d: %v; refusals: %v\n%s", step, err, i.Refusals(offsets[k]), tail(i.LogSince(offsets[k])))
		}
		w := signWorkload(t, i)
		// After a switch istiod signs with an intermediate of the target once it
		// has reloaded (a hot reload: the roots file did not change).
		for signer != nil && w.chain[1].CheckSignatureFrom(signer) != nil {
			if ctx.Err() != nil {
				t.Fatalf("step %d, %s: istiod signs under another root than the target\n%s", step, i.Cluster.Name, tail(i.LogSince(offsets[k])))
			}
			time.Sleep(200 * time.Millisecond)
			w = signWorkload(t, i)
		}
		cur = append(cur, w)
	}
	noRefusals(t, c.is)
	// meshpki status agrees: every cacerts is fine (an adopted one too), and from
	// step 1 on every cluster trusts the same roots.
	rrWant(t, 0, []string{"mesh: OK"}, "status", "--kubeconfig", c.kc, "--all-contexts")
	mustHandshake(t, fmt.Sprintf("step %d", step), cur...)
	for _, a := range cur {
		for _, b := range c.prev {
			if a.cluster == b.cluster || c.talked(a.cluster, b.cluster) || step >= 2 {
				if err := ca.Handshake(waitCtx(t), a.w, b.w); err != nil {
					t.Fatalf("step %d: %s (after the step) and %s (before it): %v", step, a.cluster, b.cluster, err)
				}
			}
		}
	}
	c.prev = cur
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

func (c *convergence) done() {
	t := c.t
	t.Helper()
	for _, i := range c.is {
		if got, want := i.Restarts(), c.restart[i.Cluster.Name]; got != want {
			t.Errorf("istiod in %s restarted %d times, want %d", i.Cluster.Name, got, want)
		}
	}
	out, _ := rrWant(t, 0, []string{"root rotation complete"}, "root", "rotate", "--adopt", "--kubeconfig", c.kc, "--all-contexts", "--new-root-dir", c.target, "--status")
	if strings.Contains(out, "would") {
		t.Fatalf("a converged mesh still has work:\n%s", out)
	}
	rrWant(t, 0, []string{"mesh: OK"}, "status", "--kubeconfig", c.kc, "--all-contexts")
}

// The convergence tests name their clusters as other istiod tests do, so that the
// harness recycles those clusters (parallelMesh) instead of starting new ones:
// mesh A is east + west, mesh B north + south.

// TestIstiodMergeMeshes: two meshes, east+west on root A and north+south on root
// B, merged onto A. From step 1 every pair of clusters trusts each other; at the
// end every istiod publishes A alone and signs under A, and none was restarted.
func TestIstiodMergeMeshes(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west", "north", "south")
	dir := t.TempDir()
	rootA, rootB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	rrWant(t, 0, nil, "root", "create", "--out", rootA, "--common-name", "Mesh A Root")
	rrWant(t, 0, nil, "root", "create", "--out", rootB, "--common-name", "Mesh B Root")
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootA, "--cluster", "east", "--cluster", "west", "--out", filepath.Join(dir, "ba"))
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootB, "--cluster", "north", "--cluster", "south", "--out", filepath.Join(dir, "bb"))
	// Mesh A's cacerts were made by hand (root-cert.pem with openssl's text around
	// the PEM block), as `kubectl create secret generic cacerts --from-file=...`.
	handRoot := opensslText(t, filepath.Join(rootA, ca.RootCertFile))
	for _, name := range []string{"east", "west"} {
		data := map[string][]byte{ca.RootCertFile: handRoot}
		for _, f := range []string{ca.CACertFile, ca.CAKeyFile, ca.CertChainFile} {
			data[f] = must(os.ReadFile(filepath.Join(dir, "ba", name, f)))
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k8s.DefaultNamespace}}
		_, _ = clients[name].CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: k8s.SecretName, Namespace: k8s.DefaultNamespace}, Data: data}
		if _, err := clients[name].CoreV1().Secrets(k8s.DefaultNamespace).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--context", "north", "--context", "south", "--bundles", filepath.Join(dir, "bb"))
	meshA := map[string]bool{"east": true, "west": true}
	c := &convergence{t: t, kc: kc, target: rootA, restart: map[string]int{}, clients: clients, rootsFile: map[string][]byte{},
		talked: func(a, b string) bool { return meshA[a] == meshA[b] }}
	for _, name := range []string{"east", "west", "north", "south"} {
		c.rootsFile[name] = secretFiles(t, clients[name])[ca.RootCertFile]
	}
	for _, cl := range env.Clusters {
		// south's istiod publishes its roots as a ClusterTrustBundle (issue 27): each
		// step's gate reads them there (no istio-ca-root-cert exists in south).
		i := startIstiodWith(t, cl, testenv.IstiodOptions{MultiRoot: true, ClusterTrustBundle: cl.Name == "south"})
		c.is = append(c.is, i)
		c.prev = append(c.prev, signWorkload(t, i))
	}
	// Two meshes: east and north do not talk yet.
	if err := ca.Handshake(waitCtx(t), c.prev[0].w, c.prev[2].w); err == nil {
		t.Fatal("east and north completed mTLS before the merge")
	}
	_, out, _ := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts")
	for _, want := range []string{`(?m)^east .*shared root *$`, `(?m)^north .*other root *$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Fatalf("status does not say where each cluster's trust comes from (%s):\n%s", want, out)
		}
	}
	// Without --adopt, a root rotation refuses a mesh whose clusters are steps apart.
	code, out, errOut := rrRun(t, "root", "rotate", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", rootA, "--min-step-interval", "0")
	if code != 1 || !strings.Contains(out+errOut, "--adopt") {
		t.Fatalf("root rotate without --adopt over two meshes: exit %d\n%s\n%s", code, out, errOut)
	}
	out, _ = rrWant(t, 0, []string{"convergence onto new root", "trust all -> step 1"}, "root", "rotate", "--adopt", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", rootA, "--status")
	if !strings.Contains(out, "from new root") || !strings.Contains(out, "from sha256:") {
		t.Fatalf("--status does not say where each cluster's CA comes from:\n%s", out)
	}
	wantTrustSources(t, kc, clients, map[string]string{"east": k8s.SourceConfigMap, "west": k8s.SourceConfigMap, "north": k8s.SourceConfigMap, "south": k8s.SourceClusterTrustBundle})
	a, b := c.roots(rootA)[0], c.roots(rootB)[0]
	c.step(1, []*x509.Certificate{a, b}, nil)
	c.step(2, []*x509.Certificate{a, b}, a)
	c.step(3, []*x509.Certificate{a}, a)
	c.done()
}

// TestIstiodAdoptSelfSigned: west runs on istiod's own self-signed CA (it started
// without cacerts), east on the mesh's root. The convergence gives west a cacerts
// that keeps its CA (restarting its istiod once: the only restart), then an
// intermediate of the root, and every step keeps both handshake rules.
func TestIstiodAdoptSelfSigned(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	rrWant(t, 0, nil, "root", "create", "--out", root, "--common-name", "Mesh Root")
	rrWant(t, 0, nil, "bootstrap", "--kubeconfig", kc, "--context", "east", "--root-dir", root)
	c := &convergence{t: t, kc: kc, target: root, restart: map[string]int{"west": 1}, clients: clients,
		rootsFile: map[string][]byte{"east": secretFiles(t, clients["east"])[ca.RootCertFile], "west": nil},
		talked:    func(a, b string) bool { return a == b }}
	for _, cl := range env.Clusters {
		i := startIstiod(t, cl, true)
		c.is = append(c.is, i)
		c.prev = append(c.prev, signWorkload(t, i))
	}
	own := must(ca.ParseCertificatePEM(secretData(t, clients["west"], k8s.SelfSignedSecret)[ca.CACertFile]))
	if st := istiodStates(t, kc); st["west"].State != k8s.IstiodSelfSigned || st["east"].State != k8s.IstiodLoaded {
		t.Fatalf("before: west %+v, east %+v", st["west"], st["east"])
	}
	_, out, _ := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts")
	if !regexp.MustCompile(`(?m)^west .*istiod self-signed *$`).MatchString(out) || !regexp.MustCompile(`(?m)^east .*shared root *$`).MatchString(out) {
		t.Fatalf("status does not say where each cluster's trust comes from:\n%s", out)
	}
	code, out, errOut := rrRun(t, "root", "rotate", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", root, "--min-step-interval", "0")
	if code != 1 || !strings.Contains(out+errOut, "--adopt") {
		t.Fatalf("root rotate without --adopt over a self-signed cluster: exit %d\n%s\n%s", code, out, errOut)
	}
	rrWant(t, 0, []string{"istiod self-signed", "adopt (istiod restarted) -> step 1"}, "root", "rotate", "--adopt", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", root, "--status")
	n := c.roots(root)[0]
	c.step(1, []*x509.Certificate{n, own}, nil)
	if files := secretFiles(t, clients["west"]); !ca.SameCertificates(must(ca.ParseCertificatesPEM(files[ca.CACertFile])), []*x509.Certificate{own}) {
		t.Fatal("step 1 did not keep istiod's own CA as the signing CA of west")
	}
	if ok, why := istiodLoads(t, filesDir(t, secretFiles(t, clients["west"]))); !ok {
		t.Fatalf("istiod's loader refuses the adopted cacerts: %s", why)
	}
	c.step(2, []*x509.Certificate{n, own}, n)
	c.step(3, []*x509.Certificate{n}, n)
	c.done()
}

// TestKilledConvergenceResumes: a convergence of clusters on roots A and B and the
// target N, run as its own process and killed (SIGKILL) at points spread over the
// runs, between and inside steps, some runs two at once. After every kill: every
// cluster holds a cacerts istiod would load, each roots file changed only as
// Istio 1.20 takes on a hot reload, and no two clusters that completed mTLS before
// the kill fail after it. Leases a killed run left are cleared (as their expiry
// would), and the next run resumes; in the end every cluster trusts and signs
// under N.
func TestKilledConvergenceResumes(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	env := parallelMesh(t, "east", "west", "north")
	kc, clients := env.Kubeconfig, adminClients(t, env)
	dir := t.TempDir()
	roots := map[string]string{"east": filepath.Join(dir, "a"), "west": filepath.Join(dir, "b"), "north": filepath.Join(dir, "n")}
	for cl, r := range roots {
		rrWant(t, 0, nil, "root", "create", "--out", r, "--common-name", "Root of "+cl)
		rrWant(t, 0, nil, "bootstrap", "--kubeconfig", kc, "--context", cl, "--root-dir", r)
	}
	target := roots["north"]
	args := []string{"root", "rotate", "--adopt", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", target, "--min-step-interval", "0", "--lock-wait", "0"}
	names := []string{"east", "west", "north"}
	read := func() map[string]map[string][]byte {
		out := map[string]map[string][]byte{}
		for _, n := range names {
			out[n] = secretFiles(t, clients[n])
		}
		return out
	}
	// talks says which pairs of clusters complete mTLS: both trust the root the
	// other's CA chains to (what the handshakes of TestIstiodMergeMeshes check for
	// real, here at the cost of a signature check); each changed cacerts must also
	// be one istiod's own loader takes.
	loaded := map[string][]byte{}
	talks := func(files map[string]map[string][]byte) map[[2]string]bool {
		bs := map[string]*ca.Bundle{}
		for _, n := range names {
			b, rep, err := ca.ParseBundle(files[n], ca.VerifyOptions{})
			if err != nil || !rep.OK() {
				t.Fatalf("%s: cacerts does not verify: %v %v", n, err, rep.Err())
			}
			if !bytes.Equal(loaded[n], files[n][ca.CACertFile]) || !bytes.Equal(loaded[n+"/roots"], files[n][ca.RootCertFile]) {
				if ok, why := istiodLoadsIfBuilt(t, filesDir(t, files[n])); !ok {
					t.Fatalf("%s: istiod's loader refuses cacerts: %s", n, why)
				}
				loaded[n], loaded[n+"/roots"] = files[n][ca.CACertFile], files[n][ca.RootCertFile]
			}
			bs[n] = b
		}
		trusts := func(x, y string) bool {
			return slices.ContainsFunc(bs[x].Roots, bs[y].SignedUnder)
		}
		out := map[[2]string]bool{}
		for _, x := range names {
			for _, y := range names {
				out[[2]string{x, y}] = trusts(x, y) && trusts(y, x)
			}
		}
		return out
	}
	prev := read()
	prevTalks := talks(prev)
	// How long a run takes here: kills land at fractions of it, from before the
	// first write to after the last, cycling, until the convergence completes.
	t0 := time.Now()
	if p := startCLI(t, dir, append(args, "--dry-run")...); p.wait(t) != 0 {
		t.Fatalf("dry run: %s", p.err.String())
	}
	whole := time.Since(t0)
	fracs := []float64{0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7, 1.9, 2.1}
	kills, twice, mixed, done := 0, 0, 0, false
	states := map[string]int{}
	for k := 0; !done && k < 40; k++ {
		var procs []*cliProcess
		procs = append(procs, startCLI(t, dir, args...))
		if k%4 == 3 { // a second run at the same time
			procs = append(procs, startCLI(t, dir, args...))
			twice++
		}
		if k < 30 {
			time.Sleep(time.Duration(fracs[k%len(fracs)] * float64(whole)))
			for _, p := range procs {
				_ = p.cmd.Process.Kill()
			}
			kills++
		}
		for _, p := range procs {
			if code := p.wait(t); code > 1 {
				t.Fatalf("exit %d\n%s\n%s", code, p.out.String(), p.err.String())
			}
		}
		cur := read()
		for _, n := range names {
			for _, rel := range []ca.IstioRelease{{Major: 1, Minor: 20}, {Major: 1, Minor: 30}} {
				if v := ca.IstiodTakesRootsChange(rel, true, prev[n][ca.RootCertFile], cur[n][ca.RootCertFile]); !v.Accepted {
					t.Fatalf("round %d, %s: Istio %s would refuse the roots file: %s", k, n, rel, v.Reason)
				}
			}
		}
		curTalks := talks(cur)
		for pair, ok := range prevTalks {
			if ok && !curTalks[pair] {
				t.Fatalf("round %d: %s and %s talked before and do not now", k, pair[0], pair[1])
			}
		}
		prev, prevTalks = cur, curTalks
		clearLeases(t, clients)
		code, out, _ := rrRun(t, "root", "rotate", "--adopt", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", target, "--status")
		done = code == 0 && strings.Contains(out, "root rotation complete")
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "mesh: ") {
				states[line]++
				if strings.Contains(line, "clusters at steps") {
					mixed++
				}
			}
		}
	}
	if !done {
		t.Fatal("no convergence after 40 runs")
	}
	n := must(ca.ParseCertificatePEM(must(os.ReadFile(filepath.Join(target, ca.RootCertFile)))))
	for _, name := range names {
		b, _, err := ca.ParseBundle(prev[name], ca.VerifyOptions{})
		if err != nil || len(b.Roots) != 1 || !b.Roots[0].Equal(n) || !b.SignedUnder(n) {
			t.Errorf("%s: not on the target at the end", name)
		}
	}
	t.Logf("%d runs killed (%d rounds with two runs at once), %d of them left clusters at different steps, before the convergence completed; states seen: %v", kills, twice, mixed, states)
}
