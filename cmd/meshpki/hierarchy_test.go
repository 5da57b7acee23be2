package main

import (
	"os"
	"path/filepath"
	"time"

	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
)

// TestIstiodIssuingCAHierarchy: bundles minted under an organisation's issuing CA
// (--ca-dir; root -> org CA -> cluster CAs, three levels) pass verify --mtls, are
// loaded by istiod's own loader, installed into real clusters, taken by a real
// istiod there (which then signs workloads whose chain runs cluster CA, org CA,
// root) and trusted across clusters. Then rotate moves the mesh to another issuing
// CA under the same root, four levels deep (root -> policy CA -> mesh CA -> cluster
// CAs): due without --force (another signing CA), hot-reloaded, and certificates
// from before and after are trusted across clusters, since the root did not change.
func TestIstiodIssuingCAHierarchy(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west")
	dir := t.TempDir()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	org := root.Sub(t, catest.Options{CN: "Org Issuing CA", PathLen: catest.PathLen(1)})
	policy := root.Sub(t, catest.Options{CN: "Policy CA", PathLen: catest.PathLen(2)})
	mesh := policy.Sub(t, catest.Options{CN: "Mesh CA", PathLen: catest.PathLen(1)})
	three := org.WriteCADir(t, filepath.Join(dir, "org-ca"))
	four := mesh.WriteCADir(t, filepath.Join(dir, "mesh-ca"))

	bundles := filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "intermediate", "create", "--ca-dir", three, "--cluster", "east", "--cluster", "west", "--out", bundles)
	for _, cl := range []string{"east", "west"} {
		files, err := ca.ReadDir(filepath.Join(bundles, cl))
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := ca.ParseCertificatesPEM(files[ca.CertChainFile])
		if len(chain) != 3 || !chain[1].Equal(org.Cert) || !chain[2].Equal(root.Cert) {
			t.Fatalf("%s: cert-chain.pem holds %d certificates, want cluster CA, org CA, root", cl, len(chain))
		}
		if ok, out := istiodLoads(t, filepath.Join(bundles, cl)); !ok {
			t.Fatalf("istiod's loader refuses %s: %s", cl, out)
		}
	}
	rrWant(t, 0, []string{"mtls: 2 of 2 pairs accept each other"}, "verify", "--mtls", filepath.Join(bundles, "east"), filepath.Join(bundles, "west"))
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles)

	var is []*testenv.Istiod
	var before []workload
	for _, c := range env.Clusters {
		i := startIstiod(t, c, false)
		if err := i.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
			t.Fatal(err)
		}
		is = append(is, i)
		w := signWorkload(t, i)
		installed, _ := ca.ParseCertificatePEM(secretFiles(t, clients[c.Name])[ca.CACertFile])
		if len(w.chain) < 3 || !w.chain[1].Equal(installed) || !w.chain[2].Equal(org.Cert) {
			t.Fatalf("istiod in %s signs with a chain of %d, not through the installed intermediate and the org CA", c.Name, len(w.chain))
		}
		before = append(before, w)
	}
	mustHandshake(t, "three levels", before...)
	wantIstiodState(t, kc, k8s.IstiodLoaded)

	// The rotate decision: another signing CA under the same root is due as such.
	out, _ := rrWant(t, 0, nil, "rotate", "--kubeconfig", kc, "--all-contexts", "--ca-dir", four, "--dry-run", "-o", "json")
	if strings.Count(out, "not by the current signing CA") != 2 {
		t.Fatalf("rotate --dry-run does not say why:\n%s", out)
	}
	offsets := make([]int64, len(is))
	for k, i := range is {
		offsets[k] = i.LogSize()
	}
	rrWant(t, 0, nil, "rotate", "--kubeconfig", kc, "--all-contexts", "--ca-dir", four)
	var after []workload
	for k, i := range is {
		if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogReloaded); err != nil {
			t.Fatal(err)
		}
		w := signWorkload(t, i)
		if len(w.chain) < 4 || !w.chain[2].Equal(mesh.Cert) || !w.chain[3].Equal(policy.Cert) {
			t.Fatalf("istiod in %s signs with a chain of %d after rotate, not through mesh CA and policy CA", i.Cluster.Name, len(w.chain))
		}
		after = append(after, w)
	}
	mustHandshake(t, "four levels", after...)
	mustHandshake(t, "three and four levels", before[0], after[1])
	mustHandshake(t, "three and four levels", after[0], before[1])
	noRefusals(t, is)
	rrWant(t, 0, nil, "status", "--kubeconfig", kc, "--all-contexts")
}

// TestRootRotateOntoIssuingCA: a mesh under a meshpki root moves, in root
// rotation's three steps, to an organisation's offline root whose issuing CA
// (--new-ca-dir) signs the new intermediates; in the end every cluster trusts the
// offline root alone and holds a three-level chain.
func TestRootRotateOntoIssuingCA(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	env := parallelMesh(t, "east", "west")
	dir := t.TempDir()
	kc := env.Kubeconfig
	rootA, bundles := filepath.Join(dir, "rootA"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", rootA)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootA, "--cluster", "east", "--cluster", "west", "--out", bundles)
	ns := "rr-issuing"
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns)

	offline := catest.Root(t, catest.Options{CN: "Offline Root 2027"})
	issuing := offline.Sub(t, catest.Options{CN: "Issuing CA 2027", PathLen: catest.PathLen(1)})
	caDir := issuing.WriteCADir(t, filepath.Join(dir, "issuing"))
	rot := func(extra ...string) []string {
		return append([]string{"root", "rotate", "--new-ca-dir", caDir, "--kubeconfig", kc, "--all-contexts", "--namespace", ns, "--min-step-interval", "0"}, extra...)
	}
	rrWant(t, 0, []string{"mesh: all 2 clusters at step 1 (trust-both)"}, rot()...)
	rrWant(t, 0, []string{"mesh: all 2 clusters at step 2 (switched)"}, rot()...)
	rrWant(t, 0, []string{"root rotation complete"}, rot()...)
	rrWant(t, 0, []string{"mesh: OK: all 2 clusters trust the same roots (" + textfmt.Fingerprint(ca.Fingerprint(offline.Cert)) + ")"},
		"status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
	cls, err := k8s.LoadClusters(k8s.ClusterOptions{Kubeconfig: kc, AllContexts: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cls {
		s, err := cl.Client.CoreV1().Secrets(ns).Get(t.Context(), k8s.SecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := ca.ParseCertificatesPEM(s.Data[ca.CertChainFile])
		if len(chain) != 3 || !chain[1].Equal(issuing.Cert) || !chain[2].Equal(offline.Cert) {
			t.Fatalf("%s: cert-chain.pem of %d certificates after the rotation", cl.Name, len(chain))
		}
	}

	// The same with CRLs on: the new source is the issuing CA, whose CRL meshpki
	// signs (signing-ca-crl.pem), and the offline root's comes with --upstream-crl.
	// Without it the rotation does not start. With it, every step's Secrets pass
	// istiod's own loader and the mesh CRL check, and in the end each cluster holds
	// the offline root's, the issuing CA's and both new cluster CAs' CRLs.
	ns = "rr-issuing-crl"
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns)
	rrWant(t, 0, nil, "crl", "sync", "--root-dir", rootA, "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
	offlineCRL, err := ca.SignCRL(offline.Cert, offline.Key, nil, nil, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(dir, "offline.crl")
	if err := os.WriteFile(crlFile, ca.EncodeCRLsPEM(offlineCRL), 0o644); err != nil {
		t.Fatal(err)
	}
	rot = func(extra ...string) []string {
		return append([]string{"root", "rotate", "--new-ca-dir", caDir, "--kubeconfig", kc, "--all-contexts", "--namespace", ns, "--min-step-interval", "0", "--crl-settle", "0"}, extra...)
	}
	if code, out, errOut := rrRun(t, rot()...); code != 2 || !strings.Contains(errOut, "--upstream-crl") || !strings.Contains(out, "stopped before any cluster moved") || strings.Contains(out, "some clusters failed") {
		t.Fatalf("root rotate onto an issuing CA with CRLs on, no --upstream-crl: exit %d\n%s\n%s", code, out, errOut)
	}
	// --status tells the same, before anyone runs it.
	if code, out, errOut := rrRun(t, rot("--status")...); code != 2 || !strings.Contains(out, "next: a run would stop before any cluster moves") || !strings.Contains(errOut, "--upstream-crl") {
		t.Fatalf("root rotate --status onto an issuing CA with CRLs on, no --upstream-crl: exit %d\n%s\n%s", code, out, errOut)
	}
	checkStep := func(step string) {
		t.Helper()
		rrWant(t, 0, []string{"mesh: OK"}, "status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
		for _, cl := range cls {
			s, err := cl.Client.CoreV1().Secrets(ns).Get(t.Context(), k8s.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ok, out := istiodLoads(t, filesDir(t, s.Data)); !ok {
				t.Fatalf("%s, %s: istiod's loader refuses cacerts: %s", step, cl.Name, out)
			}
		}
	}
	checkStep("before")
	for _, step := range []string{"step 1", "step 2", "step 3"} {
		rrWant(t, 0, nil, rot("--upstream-crl", crlFile)...)
		checkStep(step)
	}
	for _, cl := range cls {
		s, err := cl.Client.CoreV1().Secrets(ns).Get(t.Context(), k8s.SecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		crls, err := ca.ParseCRLsPEM(s.Data[ca.CRLFile])
		if err != nil || ca.CRLOf(crls, offline.Cert) == nil || ca.CRLOf(crls, issuing.Cert) == nil {
			t.Fatalf("%s: after the rotation ca-crl.pem lacks the offline root's or the issuing CA's CRL: %v", cl.Name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(caDir, ca.SigningCACRLFile)); err != nil {
		t.Errorf("the issuing CA's CRL is not recorded in its folder: %v", err)
	}
}
