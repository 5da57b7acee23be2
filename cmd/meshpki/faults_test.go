package main

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// clearLeases deletes the rotation Lease in every cluster, as its expiry would
// once a killed run stopped renewing it.
func clearLeases(t *testing.T, clients map[string]kubernetes.Interface) {
	t.Helper()
	for _, cs := range clients {
		_ = cs.CoordinationV1().Leases(k8s.DefaultNamespace).Delete(waitCtx(t), k8s.LeaseName, metav1.DeleteOptions{})
	}
}

// TestKilledMeshJobsKeepTheMesh is the fault campaign of issue 26 against real
// kube-apiservers, with CRLs on: rotate, crl sync, install and bootstrap run as
// processes of their own and are killed (SIGKILL) at points spread over a run,
// from before the first write to its end; one cluster's apiserver is stopped in
// the middle of a rotate; a Lease held by a run that died blocks a cluster; a
// Secret is edited by hand (its CRLs removed). After each fault, every cluster
// holds a cacerts that verifies as istiod checks it, and no cluster lacks the
// current CRL of a CA another cluster's workloads chain to (so no handshake fails
// for want of a CRL); then a rerun converges (exit 0) and status is OK. The counts
// are logged.
func TestKilledMeshJobsKeepTheMesh(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	env := parallelMesh(t, "east", "west", "north")
	kc, clients := env.Kubeconfig, adminClients(t, env)
	names := []string{"east", "west", "north"}
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	for _, cl := range names {
		rrWant(t, 0, nil, "bootstrap", "--kubeconfig", kc, "--context", cl, "--root-dir", root)
	}
	rrWant(t, 0, nil, "crl", "sync", "--kubeconfig", kc, "--all-contexts", "--root-dir", root)

	states, faults := 0, 0
	// holds checks the invariants after a fault.
	holds := func(label string) {
		t.Helper()
		var members []ca.CRLMember
		for _, n := range names {
			files := secretFiles(t, clients[n])
			b, rep, err := ca.ParseBundle(files, ca.VerifyOptions{})
			if err != nil || !rep.OK() {
				t.Fatalf("%s: %s: cacerts does not verify: %v %v", label, n, err, rep.Err())
			}
			crls, err := ca.ParseCRLsPEM(files[ca.CRLFile])
			if err != nil {
				t.Fatalf("%s: %s: %s: %v", label, n, ca.CRLFile, err)
			}
			members = append(members, ca.CRLMember{Name: n, Chain: b.Chain, CRLs: crls})
		}
		for _, p := range ca.CheckMeshCRLs(members, time.Now()) {
			if slices.Contains([]string{"mesh-crl-missing", "mesh-crl-stale", "mesh-crl-off"}, p.Check) {
				t.Fatalf("%s: %s", label, p.Message)
			}
		}
		states++
	}
	// converge reruns a job after a fault, as an operator or the next cron run
	// would once the killed run's Leases expired: exit 0, status OK.
	converge := func(label string, args []string) {
		t.Helper()
		clearLeases(t, clients)
		rrWant(t, 0, nil, args...)
		holds(label + ", rerun")
		rrWant(t, 0, nil, "status", "--kubeconfig", kc, "--all-contexts")
	}
	common := []string{"--kubeconfig", kc, "--lock-wait", "0"}
	jobs := []struct {
		name   string
		args   []string
		before func() // outside the kill: what the job needs
	}{
		{name: "rotate", args: append([]string{"rotate", "--all-contexts", "--root-dir", root, "--force", "--crl-settle", "0"}, common...)},
		{name: "crl sync", args: append([]string{"crl", "sync", "--all-contexts", "--root-dir", root}, common...)},
		{name: "install", args: append([]string{"install", "--all-contexts", "--bundles", bundles, "--crl-settle", "0"}, common...),
			before: func() {
				rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles, "--force")
			}},
		{name: "bootstrap", args: append([]string{"bootstrap", "--context", "north", "--root-dir", root, "--force", "--mesh-context", "east", "--mesh-context", "west", "--crl-settle", "0"}, common...)},
	}
	fracs := []float64{0.25, 0.5, 0.75, 1.0}
	// snapshot is every cluster's cacerts and Lease, to tell whether a killed run
	// had written anything.
	midRun := 0
	snapshot := func() string {
		var b strings.Builder
		for _, n := range names {
			files := secretFiles(t, clients[n])
			for _, k := range slices.Sorted(maps.Keys(files)) {
				b.WriteString(n + k + string(files[k]))
			}
			if l, err := clients[n].CoordinationV1().Leases(k8s.DefaultNamespace).Get(waitCtx(t), k8s.LeaseName, metav1.GetOptions{}); err == nil {
				b.WriteString(l.ResourceVersion)
			}
		}
		return b.String()
	}
	for _, job := range jobs {
		if job.before != nil {
			job.before()
		}
		// A run's length as a process of its own (its start included), so that
		// the kills land from before its first write to its end.
		t0 := time.Now()
		if p := startCLI(t, dir, job.args...); p.wait(t) != 0 {
			t.Fatalf("%s: %s", job.name, p.err.String())
		}
		whole := time.Since(t0)
		holds(job.name)
		t.Logf("%s: a run takes %s", job.name, whole)
		for _, f := range fracs {
			if job.before != nil {
				job.before()
			}
			was := snapshot()
			p := startCLI(t, dir, job.args...)
			time.Sleep(time.Duration(f * float64(whole)))
			_ = p.cmd.Process.Kill()
			if code := p.wait(t); code > 1 && code != -1 {
				t.Fatalf("%s: exit %d\n%s", job.name, code, p.err.String())
			}
			faults++
			if snapshot() != was {
				midRun++ // the killed run had written something
			}
			label := job.name + " killed at " + time.Duration(f*float64(whole)).Round(time.Millisecond).String()
			holds(label)
			c0 := time.Now()
			converge(label, job.args)
			if d := time.Since(c0); d > 5*time.Second {
				t.Logf("%s: the rerun took %s", label, d)
			}
		}
	}

	// An apiserver stopped in the middle of a rotate: that cluster fails, the
	// others rotate; once it is back, a rerun converges.
	rotate := jobs[0].args
	t0 := time.Now()
	rrWant(t, 0, nil, rotate...)
	whole := time.Since(t0)
	north := env.Clusters[slices.IndexFunc(env.Clusters, func(c *testenv.K8sCluster) bool { return c.Name == "north" })]
	p := startCLI(t, dir, rotate...)
	t0 = time.Now()
	time.Sleep(whole / 3)
	if err := north.Stop(); err != nil {
		t.Fatal(err)
	}
	code := p.wait(t)
	t.Logf("rotate with north's apiserver stopped: exit %d after %s", code, time.Since(t0))
	if err := north.Start(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	faults++
	if code != 0 && code != 1 {
		t.Fatalf("apiserver stopped mid-run: exit %d\n%s", code, p.err.String())
	}
	holds("apiserver stopped mid-rotate")
	converge("apiserver stopped mid-rotate", rotate)

	// A Lease left by a run that died: with CRLs on, the run stops before any
	// cluster is rotated (the locked cluster could not take the new CAs' CRLs,
	// and would refuse their workloads), naming the holder and its expiry.
	before := map[string][]byte{}
	for _, n := range names {
		before[n] = secretFiles(t, clients[n])[ca.CACertFile]
	}
	_, err := clients["east"].CoordinationV1().Leases(k8s.DefaultNamespace).Create(waitCtx(t), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: k8s.LeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("a-run-that-died"), LeaseDurationSeconds: ptr(int32(300)),
			AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs := rrRun(t, rotate...)
	faults++
	if code != 1 || !strings.Contains(errs, "cluster east: locked by a-run-that-died") || !strings.Contains(errs, "no cluster was rotated") {
		t.Fatalf("Lease of a dead run: exit %d, stderr:\n%s", code, errs)
	}
	for _, n := range names {
		if string(secretFiles(t, clients[n])[ca.CACertFile]) != string(before[n]) {
			t.Fatalf("%s was rotated while east was locked", n)
		}
	}
	holds("Lease of a dead run")
	converge("Lease of a dead run", rotate)

	// A Secret edited by hand: west's CRLs removed. status says what is wrong, and
	// crl sync puts them back.
	s, err := clients["west"].CoreV1().Secrets(k8s.DefaultNamespace).Get(waitCtx(t), k8s.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(s.Data, ca.CRLFile)
	if _, err := clients["west"].CoreV1().Secrets(k8s.DefaultNamespace).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	faults++
	if code, out, _ := rrRun(t, "status", "--kubeconfig", kc, "--all-contexts"); code != 1 || !strings.Contains(out, "west has no ca-crl.pem") {
		t.Fatalf("status after west's CRLs were removed: exit %d\n%s", code, out)
	}
	converge("CRLs removed by hand", jobs[1].args)

	t.Logf("fault campaign: %d jobs, %d faults injected (%d kills, %d of them after the run had written, 1 apiserver stopped, 1 dead Lease, 1 hand edit), %d mesh states checked, each rerun converged",
		len(jobs), faults, len(jobs)*len(fracs), midRun, states)
}
