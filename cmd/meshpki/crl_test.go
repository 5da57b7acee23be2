package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// crlWorkload is a workload certificate istiod signed, holding what its cluster's
// proxies hold: the published trust bundle, and the published istio-ca-crl, enforced
// as Envoy does (every CA of a peer's chain needs a current CRL).
func crlWorkload(t *testing.T, i *testenv.Istiod) workload {
	t.Helper()
	w := signWorkload(t, i)
	data, err := i.PublishedCRL(waitCtx(t), testenv.IstioNamespace)
	if err != nil {
		t.Fatalf("%s: %s: %v", i.Cluster.Name, testenv.CRLConfigMap, err)
	}
	if w.w.CRLs, err = ca.ParseCRLsPEM(data); err != nil || len(w.w.CRLs) == 0 {
		t.Fatalf("%s: published CRLs: %v (%d)", i.Cluster.Name, err, len(w.w.CRLs))
	}
	return w
}

// waitCRLTaken waits until the istiod of each cluster publishes the ca-crl.pem its
// cacerts Secret now holds, took on a hot reload, and checks the Secret with
// istiod's own loader.
func waitCRLTaken(t *testing.T, is []*testenv.Istiod, clients map[string]kubernetes.Interface) {
	t.Helper()
	waitCRLPublished(t, is, clients, true)
}

// waitCRLPublished is waitCRLTaken; reloaded false is for an istiod that found
// ca-crl.pem at its start (it logs no reload then).
func waitCRLPublished(t *testing.T, is []*testenv.Istiod, clients map[string]kubernetes.Interface, reloaded bool) {
	t.Helper()
	for _, i := range is {
		files := secretFiles(t, clients[i.Cluster.Name])
		if err := i.WaitPublishedCRL(waitCtx(t), files[ca.CRLFile]); err != nil {
			t.Fatalf("%v\n%s", err, i.LogSince(0))
		}
		if reloaded {
			if err := i.WaitLog(waitCtx(t), 0, testenv.LogCRL); err != nil {
				t.Fatalf("istiod in %s did not log taking the CRL file: %v", i.Cluster.Name, err)
			}
		}
		if i.Restarts() != 0 {
			t.Fatalf("istiod in %s was restarted: CRLs must be taken on a hot reload", i.Cluster.Name)
		}
		if ok, out := istiodLoads(t, filesDir(t, files)); !ok {
			t.Fatalf("%s: istiod's loader refuses cacerts with its CRLs: %s", i.Cluster.Name, out)
		}
	}
}

// logOffsets is where each istiod's log ends now, for WaitLog of what comes next.
func logOffsets(is []*testenv.Istiod) []int64 {
	offsets := make([]int64, len(is))
	for k, i := range is {
		offsets[k] = i.LogSize()
	}
	return offsets
}

// crlWorkloadsAfterReload waits until each istiod has logged a reload since
// offsets and took its Secret's CRLs (waitCRLTaken), then returns a workload
// certificate each signed, with the CRLs its cluster publishes.
func crlWorkloadsAfterReload(t *testing.T, is []*testenv.Istiod, offsets []int64, clients map[string]kubernetes.Interface) []workload {
	t.Helper()
	for k, i := range is {
		if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogReloaded); err != nil {
			t.Fatal(err)
		}
	}
	waitCRLTaken(t, is, clients)
	var ws []workload
	for _, i := range is {
		ws = append(ws, crlWorkload(t, i))
	}
	return ws
}

// cutOff waits until the istiods of is took their Secrets' new CRLs (revoked's CA
// among them), then checks that workloads they sign talk to each other and that
// each refuses revoked, and revoked them.
func cutOff(t *testing.T, is []*testenv.Istiod, clients map[string]kubernetes.Interface, revoked workload) {
	t.Helper()
	waitCRLTaken(t, is, clients)
	var rest []workload
	for _, i := range is {
		rest = append(rest, crlWorkload(t, i))
	}
	mustHandshake(t, "the others after revoking "+revoked.cluster, rest...)
	for _, w := range rest {
		handshakeFails(t, "after revoking "+revoked.cluster, w, revoked)
	}
}

func handshakeFails(t *testing.T, what string, a, b workload) {
	t.Helper()
	if err := ca.Handshake(waitCtx(t), a.w, b.w); err == nil {
		t.Errorf("%s: %s (server) accepted %s (client)", what, a.cluster, b.cluster)
	}
	if err := ca.Handshake(waitCtx(t), b.w, a.w); err == nil {
		t.Errorf("%s: %s (server) accepted %s (client)", what, b.cluster, a.cluster)
	}
}

// TestIstiodTakesMeshCRLs: three clusters with real istiod. crl sync gives every
// cluster the mesh CRL set; each istiod takes it on a hot reload (its own loader
// agrees), publishes it as istio-ca-crl, and workloads signed by the istiods complete
// mTLS across clusters with those CRLs enforced. Then revoke east: east's Secret is
// untouched, west's and north's istiods publish the new set, and every handshake
// with east fails while west and north still talk. A rerun writes nothing. rotate
// brings east back. Last, a fourth cluster, south, is bootstrapped into the mesh:
// its CA's CRL reaches the three istiods with its cacerts, and all four talk.
func TestIstiodTakesMeshCRLs(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west", "north", "south")
	three := func(args ...string) []string {
		return append(args, "--kubeconfig", kc, "--context", "east", "--context", "west", "--context", "north")
	}
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	rrWant(t, 0, nil, three("install", "--bundles", bundles)...)
	var is []*testenv.Istiod
	for _, c := range env.Clusters[:3] {
		i := startIstiod(t, c, false)
		if err := i.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
			t.Fatal(err)
		}
		is = append(is, i)
	}

	out, _ := rrWant(t, 0, nil, three("crl", "sync", "--root-dir", root)...)
	if !strings.Contains(out, "3 clusters: 3 updated") {
		t.Fatalf("crl sync:\n%s", out)
	}
	if st, err := os.Stat(filepath.Join(root, ca.RootCRLFile)); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("root CRL file: %v", err)
	}
	waitCRLTaken(t, is, clients)
	if out, _ := rrWant(t, 0, nil, three("status")...); !strings.Contains(out, "east: CRLs: 4, next update") || !strings.Contains(out, "mesh: OK") {
		t.Errorf("status with CRLs:\n%s", out)
	}
	var ws []workload
	for _, i := range is {
		ws = append(ws, crlWorkload(t, i))
	}
	mustHandshake(t, "with CRLs", ws...)

	// Revoke east.
	eastRV := func() string {
		s, err := clients["east"].CoreV1().Secrets(k8s.DefaultNamespace).Get(context.Background(), k8s.SecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.ResourceVersion
	}
	before := eastRV()
	out, _ = rrWant(t, 0, nil, append(three("revoke", "--root-dir", root, "-o", "json"), "east")...)
	var run struct {
		Revoked  []struct{ Cluster, Serial string } `json:"revoked"`
		Clusters []struct {
			Cluster string `json:"cluster"`
			Action  string `json:"action"`
			Revoked bool   `json:"revoked"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &run); err != nil {
		t.Fatalf("revoke -o json: %v\n%s", err, out)
	}
	if len(run.Revoked) != 1 || run.Revoked[0].Cluster != "east" || !run.Clusters[0].Revoked || run.Clusters[1].Action != "updated" || run.Clusters[2].Action != "updated" {
		t.Fatalf("revoke east: %s", out)
	}
	if eastRV() != before {
		t.Error("the revoked cluster's cacerts was written")
	}
	cutOff(t, is[1:], clients, ws[0])
	noRefusals(t, is)

	// Nothing due: a rerun changes nothing; revoking east again records nothing
	// new and changes nothing either (it spreads what is recorded).
	out, _ = rrWant(t, 0, nil, three("crl", "sync", "--root-dir", root)...)
	if !strings.Contains(out, "3 clusters: 2 unchanged, 1 revoked") {
		t.Errorf("crl sync rerun:\n%s", out)
	}
	out, _ = rrWant(t, 0, nil, append(three("revoke", "--root-dir", root), "east")...)
	if !strings.Contains(out, "was revoked already") || !strings.Contains(out, "3 clusters: 2 unchanged, 1 revoked") {
		t.Errorf("revoking east twice:\n%s", out)
	}
	// rotate never brings a revoked cluster back by itself: without --readmit,
	// east is left as it is (and reported), and nothing is written anywhere.
	before = eastRV()
	code, out, errOut := rrRun(t, three("rotate", "--root-dir", root, "--crl-settle", "1s", "-o", "json")...)
	if code != 1 || !strings.Contains(out, `"outcome": "revoked"`) || !strings.Contains(errOut, "--readmit") || eastRV() != before {
		t.Fatalf("rotate over a revoked east without --readmit: exit %d\n%s\n%s", code, out, errOut)
	}
	// rotate --readmit east gives every cluster a new CA (east too, which brings it
	// back) and, as CRLs are on, spreads the new CAs' CRLs before installing them:
	// the istiods reload, and all talk again.
	offsets := logOffsets(is)
	out, _ = rrWant(t, 0, nil, three("rotate", "--root-dir", root, "--force", "--readmit", "east", "--crl-settle", "1s", "-o", "json")...)
	var rot struct {
		Ahead []struct{ Cluster, Action string } `json:"crlsAhead"`
		CRLs  []struct{ Cluster, Action string } `json:"crls"`
	}
	if err := json.Unmarshal([]byte(out), &rot); err != nil || len(rot.CRLs) != 3 || len(rot.Ahead) != 3 || rot.Ahead[1].Action != "updated" {
		t.Fatalf("rotate -o json should report the CRL spread ahead and the refresh of 3 clusters: %v\n%s", err, out)
	}
	mustHandshake(t, "after rotate, east back with a new CA", crlWorkloadsAfterReload(t, is, offsets, clients)...)
	noRefusals(t, is)

	for _, bad := range [][]string{
		append(three("revoke", "--root-dir", root), "south"),
		three("revoke", "--root-dir", root, "--serial", "zz"),
	} {
		if code, _, errOut := rrRun(t, bad...); code != 2 || errOut == "" {
			t.Errorf("meshpki %v: exit %d, %q; want a clear error, exit 2", bad, code, errOut)
		}
	}

	// A fourth cluster joins: bootstrap spreads its CA's CRL to the three first and
	// installs its cacerts with the mesh set; its istiod starts on it, and all four
	// clusters' workloads talk with the published CRLs enforced.
	offsets = logOffsets(is)
	out, _ = rrWant(t, 0, nil, "bootstrap", "--kubeconfig", kc, "--context", "south", "--root-dir", root,
		"--mesh-context", "east", "--mesh-context", "west", "--mesh-context", "north", "--crl-settle", "1s", "-o", "json")
	var boot struct {
		Action string
		CRLs   []struct{ Cluster, Action string } `json:"crls"`
	}
	if err := json.Unmarshal([]byte(out), &boot); err != nil || boot.Action != "created" || len(boot.CRLs) != 3 || boot.CRLs[0].Action != "updated" {
		t.Fatalf("bootstrap south into the CRL mesh: %v\n%s", err, out)
	}
	southFiles := secretFiles(t, clients["south"])
	southCA, err := ca.ParseCertificatesPEM(southFiles[ca.CertFileName(ca.FormatIstio)])
	if err != nil {
		t.Fatal(err)
	}
	// Each of the three took the new set on a hot reload, since the bootstrap.
	for k, i := range is {
		if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogCRL); err != nil {
			t.Fatalf("istiod in %s did not take south's CA's CRL on a hot reload: %v", i.Cluster.Name, err)
		}
	}
	waitCRLTaken(t, is, clients)
	for _, i := range is {
		crls, err := ca.ParseCRLsPEM(secretFiles(t, clients[i.Cluster.Name])[ca.CRLFile])
		if err != nil || ca.CRLOf(crls, southCA[0]) == nil {
			t.Fatalf("%s's CRL set lacks south's CA: %v", i.Cluster.Name, err)
		}
	}
	south := startIstiod(t, env.Clusters[3], false)
	if err := south.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
		t.Fatal(err)
	}
	is = append(is, south)
	waitCRLPublished(t, is[3:], clients, false)
	var four []workload
	for _, i := range is {
		four = append(four, crlWorkload(t, i))
	}
	mustHandshake(t, "after bootstrapping south", four...)
	noRefusals(t, is)
	if out, _ := rrWant(t, 0, nil, "status", "--kubeconfig", kc, "--all-contexts"); !strings.Contains(out, "south: CRLs: 5, next update") || !strings.Contains(out, "mesh: OK") {
		t.Errorf("status of the four clusters:\n%s", out)
	}
}

// heldRootCRL is the root's CRL in cluster c's cacerts ca-crl.pem (the root as
// bundles/west holds it), or nil.
func heldRootCRL(t *testing.T, c *testenv.K8sCluster, bundles string) *x509.RevocationList {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	crls, err := ca.ParseCRLsPEM(secretFiles(t, cs)[ca.CRLFile])
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(bundles, "west", ca.RootCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	return ca.CRLOf(crls, root)
}

// TestRevokeWithVaultPKI: with the root in a Vault PKI mount, revoke goes through
// Vault (its record shows the revocation) and the root CRL every cluster gets is
// Vault's own, byte for byte, listing the revoked CA.
func TestRevokeWithVaultPKI(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	vaultEnv(t, v, v.Token)
	env := sharedMesh(t)
	kc := env.Kubeconfig
	bundles := filepath.Join(t.TempDir(), "bundles")
	expectExit(t, 0, "root", "create", "--vault-pki", "pki-crl", "--enable-mount")
	expectExit(t, 0, "intermediate", "create", "--vault-pki", "pki-crl", "--cluster", "east", "--cluster", "west", "--out", bundles)
	expectExit(t, 0, "install", "--kubeconfig", kc, "--context", "east", "--context", "west", "--bundles", bundles)
	if out, _ := expectExit(t, 0, "crl", "sync", "--kubeconfig", kc, "--context", "east", "--context", "west", "--vault-pki", "pki-crl"); !strings.Contains(out, "2 clusters: 2 updated") {
		t.Fatalf("crl sync:\n%s", out)
	}
	west, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(bundles, "west", ca.CACertFile)))
	if err != nil {
		t.Fatal(err)
	}
	out, errOut := expectExit(t, 0, "revoke", "--kubeconfig", kc, "--context", "east", "--context", "west", "--vault-pki", "pki-crl", "west")
	if !strings.Contains(out, "west: revoked") || !strings.Contains(errOut, "Vault records no revocation reason") {
		t.Errorf("revoke west:\n%s\n%s", out, errOut)
	}
	// Vault's record.
	s, err := admin.Logical().Read("pki-crl/cert/" + vaultHex(west.SerialNumber.Text(16)))
	if err != nil || s == nil || s.Data["revocation_time"] == nil || fmt.Sprint(s.Data["revocation_time"]) == "0" {
		t.Fatalf("Vault's record of west's CA: %v %v", s, err)
	}
	// Vault's CRL, as east holds it.
	s, err = admin.Logical().Read("pki-crl/issuer/default/crl")
	if err != nil {
		t.Fatal(err)
	}
	vaultCRLs, err := ca.ParseCRLsPEM([]byte(s.Data["crl"].(string)))
	if err != nil || len(vaultCRLs) != 1 {
		t.Fatalf("Vault's CRL: %v", err)
	}
	got := heldRootCRL(t, env.Clusters[0], bundles)
	if got == nil || !bytes.Equal(got.Raw, vaultCRLs[0].Raw) || !ca.IsRevoked(got, west.SerialNumber) {
		t.Error("east's root CRL is not Vault's CRL listing west's CA")
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vaultHex(hex string) string {
	if len(hex)%2 == 1 {
		hex = "0" + hex
	}
	var parts []string
	for i := 0; i < len(hex); i += 2 {
		parts = append(parts, hex[i:i+2])
	}
	return strings.Join(parts, "-")
}

// TestVerifyWithCRLs: verify reads each bundle's ca-crl.pem, checks that it covers
// every CA of every other bundle, and --mtls enforces it as Envoy does.
func TestVerifyWithCRLs(t *testing.T) {
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--out", bundles)
	r, err := ca.ReadRootDir(root, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rootCRL, _, err := ca.RootDirCRL(context.Background(), root, r, nil, ca.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]*x509.RevocationList{}
	for _, n := range []string{"east", "west"} {
		files, err := ca.ReadDir(filepath.Join(bundles, n))
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := ca.ParseBundle(files, ca.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if own[n], err = ca.SignCRL(b.Cert, b.Key, nil, nil, time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	write := func(n string, crls ...*x509.RevocationList) {
		if err := os.WriteFile(filepath.Join(bundles, n, ca.CRLFile), ca.EncodeCRLsPEM(crls...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("east", rootCRL, own["east"], own["west"])
	write("west", rootCRL, own["east"], own["west"])
	rrWant(t, 0, nil, "verify", "--mtls", filepath.Join(bundles, "east"), filepath.Join(bundles, "west"))
	write("east", rootCRL, own["east"]) // east lacks west's CA's CRL: the trap
	code, out, _ := rrRun(t, "verify", "--mtls", filepath.Join(bundles, "east"), filepath.Join(bundles, "west"))
	if code != 1 || !strings.Contains(out, "lacks a CRL of") || !strings.Contains(out, "CRL check") {
		t.Errorf("verify with east lacking west's CRL: exit %d\n%s", code, out)
	}
}

// TestIstiodRootRotationWithCRLs: two clusters with real multi-root istiods and CRLs
// on walk from root A to root B. Every root rotate run spreads the CRLs the step
// needs first; after every step each istiod has taken its Secret (published roots
// and CRLs, its own loader agreeing, no refusal), and workloads it signs, holding
// the published CRLs, complete mTLS across the clusters, also with workloads of
// the step before. Root B's key is in a PKCS#11 token (SoftHSM2, root create
// --key-uri): the rotation onto it, and its CRLs, are signed there.
func TestIstiodRootRotationWithCRLs(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west")
	rootA, _, bundles := twoRoots(t)
	h := testenv.NewSoftHSM(t)
	rootB, keyB := filepath.Join(t.TempDir(), "b-in-token"), h.URI("0b", "root-2027")
	rrWant(t, 0, nil, "root", "create", "--out", rootB, "--common-name", "Root CA 2027", "--key-uri", keyB)
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles)
	rrWant(t, 0, nil, "crl", "sync", "--kubeconfig", kc, "--all-contexts", "--root-dir", rootA)
	var is []*testenv.Istiod
	for _, c := range env.Clusters {
		i := startIstiod(t, c, true)
		if err := i.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
			t.Fatal(err)
		}
		is = append(is, i)
	}
	waitCRLPublished(t, is, clients, false)
	var prev []workload
	for _, i := range is {
		prev = append(prev, crlWorkload(t, i))
	}
	mustHandshake(t, "step 0 with CRLs", prev...)

	a, _ := ca.ParseCertificatePEM(must(os.ReadFile(filepath.Join(rootA, ca.RootCertFile))))
	b, _ := ca.ParseCertificatePEM(must(os.ReadFile(filepath.Join(rootB, ca.RootCertFile))))
	stepRoots := map[int][]*x509.Certificate{1: {a, b}, 2: {a, b}, 3: {b}}
	for step := 1; step <= 3; step++ {
		offsets := make([]int64, len(is))
		for k, i := range is {
			offsets[k] = i.LogSize()
		}
		out, _ := rrWant(t, 0, nil, "root", "rotate", "--kubeconfig", kc, "--all-contexts", "--new-root-dir", rootB, "--new-key-uri", keyB,
			"--min-step-interval", "0", "--crl-settle", "0", "-o", "json")
		var run struct {
			CRLs []struct{ Cluster, Action string } `json:"crls"`
		}
		if err := json.Unmarshal([]byte(out), &run); err != nil || len(run.CRLs) != 2 {
			t.Fatalf("step %d: root rotate -o json should report the CRL spread of 2 clusters: %v\n%s", step, err, out)
		}
		var cur []workload
		for k, i := range is {
			if err := i.WaitPublished(waitCtx(t), stepRoots[step]); err != nil {
				t.Fatalf("step %d: %v; refusals: %v", step, err, i.Refusals(offsets[k]))
			}
			if err := i.WaitLog(waitCtx(t), offsets[k], testenv.LogReloaded); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		waitCRLPublished(t, is, clients, false)
		for _, i := range is {
			w := crlWorkload(t, i)
			want := a
			if step >= 2 {
				want = b
			}
			if w.chain[1].CheckSignatureFrom(want) != nil {
				t.Fatalf("step %d, %s: istiod signs with an intermediate of the wrong root", step, i.Cluster.Name)
			}
			if ca.CRLOf(w.w.CRLs, b) == nil {
				t.Fatalf("step %d, %s: the published CRLs lack the new root's", step, i.Cluster.Name)
			}
			cur = append(cur, w)
		}
		noRefusals(t, is)
		mustHandshake(t, fmt.Sprintf("step %d with CRLs", step), cur...)
		// A workload of the step before (its certificate from then) whose proxy has
		// read the CRLs published now, as --crl-settle waits for, meets one of this
		// step in the other cluster (at step 3 the old root is gone: only steps 1
		// and 2 overlap).
		for k := range prev {
			prev[k].w.CRLs = cur[k].w.CRLs
		}
		if step < 3 {
			mustHandshake(t, fmt.Sprintf("step %d east with step %d west", step, step-1), cur[0], prev[1])
			mustHandshake(t, fmt.Sprintf("step %d west with step %d east", step, step-1), cur[1], prev[0])
		}
		prev = cur
	}
}

// TestRevokeWithVaultKV: with the root in a Vault KV secret, the revocation record
// is the CRL in the secret beside it (PATH/crl), and that CRL, byte for byte, is
// the root CRL every other cluster gets.
func TestRevokeWithVaultKV(t *testing.T) {
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	vaultEnv(t, v, v.Token)
	env := sharedMesh(t)
	kc := env.Kubeconfig
	bundles := filepath.Join(t.TempDir(), "bundles")
	expectExit(t, 0, "root", "create", "--vault-kv", "secret/meshpki/crl-root")
	expectExit(t, 0, "intermediate", "create", "--vault-kv", "secret/meshpki/crl-root", "--cluster", "east", "--cluster", "west", "--out", bundles)
	two := []string{"--kubeconfig", kc, "--context", "east", "--context", "west"}
	expectExit(t, 0, append([]string{"install", "--bundles", bundles}, two...)...)
	if out, _ := expectExit(t, 0, append([]string{"crl", "sync", "--vault-kv", "secret/meshpki/crl-root"}, two...)...); !strings.Contains(out, "2 clusters: 2 updated") {
		t.Fatalf("crl sync:\n%s", out)
	}
	west, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(bundles, "west", ca.CACertFile)))
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut := expectExit(t, 0, append(append([]string{"revoke", "--vault-kv", "secret/meshpki/crl-root"}, two...), "west")...); !strings.Contains(out, "west: revoked") {
		t.Errorf("revoke west:\n%s\n%s", out, errOut)
	}
	s, err := admin.Logical().Read("secret/data/meshpki/crl-root/crl")
	if err != nil || s == nil {
		t.Fatalf("the CRL secret beside the root: %v", err)
	}
	kept, err := ca.ParseCRLsPEM([]byte(s.Data["data"].(map[string]any)["crl"].(string)))
	if err != nil || len(kept) != 1 || !ca.IsRevoked(kept[0], west.SerialNumber) {
		t.Fatalf("the CRL kept in Vault KV does not list west's CA: %v", err)
	}
	if got := heldRootCRL(t, env.Clusters[0], bundles); got == nil || !bytes.Equal(got.Raw, kept[0].Raw) {
		t.Error("east's root CRL is not the one kept in Vault KV")
	}
	// A second revocation of west records nothing new: it spreads the record.
	if out, _ := expectExit(t, 0, append(append([]string{"revoke", "--vault-kv", "secret/meshpki/crl-root"}, two...), "west")...); !strings.Contains(out, "was revoked already") {
		t.Errorf("revoking twice: %s", out)
	}
	// An issuing CA kept in KV below that root keeps its CRL beside it too, and the
	// root's CRL (crl sign) checks as its upstream CRL.
	orgs := filepath.Join(t.TempDir(), "orgs")
	expectExit(t, 0, "intermediate", "create", "--vault-kv", "secret/meshpki/crl-root", "--cluster", "org", "--pathlen", "1", "--out", orgs)
	if _, err := admin.Logical().Write("secret/data/meshpki/crl-issuing", map[string]any{"data": map[string]any{
		"certificate": string(mustRead(t, filepath.Join(orgs, "org", ca.CACertFile))), "private_key": string(mustRead(t, filepath.Join(orgs, "org", ca.CAKeyFile))),
		"ca_chain": string(mustRead(t, filepath.Join(orgs, "org", ca.RootCertFile))),
	}}); err != nil {
		t.Fatal(err)
	}
	out, _ := rrWant(t, 0, nil, "crl", "sign", "--vault-kv", "secret/meshpki/crl-issuing")
	sc, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(orgs, "org", ca.CACertFile)))
	if err != nil {
		t.Fatal(err)
	}
	if crls, err := ca.ParseCRLsPEM([]byte(out)); err != nil || len(crls) != 1 || !ca.SignedBy(crls[0], sc) {
		t.Fatalf("crl sign of the KV issuing CA: %v\n%s", err, out)
	}
	if s, err := admin.Logical().Read("secret/data/meshpki/crl-issuing/crl"); err != nil || s == nil {
		t.Fatalf("the issuing CA's CRL is not kept beside it: %v", err)
	}
	out, _ = rrWant(t, 0, nil, "crl", "sign", "--vault-kv", "secret/meshpki/crl-root")
	rootCRLs, err := ca.ParseCRLsPEM([]byte(out))
	if err != nil || len(rootCRLs) != 1 || !bytes.Equal(rootCRLs[0].Raw, kept[0].Raw) {
		t.Fatalf("crl sign of the KV root should print the CRL kept there: %v", err)
	}
	root, _ := ca.ParseCertificatePEM(mustRead(t, filepath.Join(orgs, "org", ca.RootCertFile)))
	if _, err := ca.UpstreamCRLs([]*x509.Certificate{sc, root}, rootCRLs, time.Now()); err != nil {
		t.Errorf("the KV root's CRL as the issuing CA's upstream CRL: %v", err)
	}

	// A new cluster installed from a bundle folder into the CRL mesh: its CA's CRL
	// reaches east first, and its cacerts gets the mesh set (the root's CRL as
	// east holds it, listing west).
	expectExit(t, 0, "intermediate", "create", "--vault-kv", "secret/meshpki/crl-root", "--cluster", "north", "--out", bundles)
	expectExit(t, 0, "install", "--kubeconfig", kc, "--context", "north", "--mesh-context", "east", "--mesh-context", "west", "--crl-settle", "0", "--bundles", bundles)
	north, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(bundles, "north", ca.CACertFile)))
	if err != nil {
		t.Fatal(err)
	}
	eastCS, err := kubernetes.NewForConfig(env.Clusters[0].RESTConfig(env.Clusters[0].AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	eastCRLs, err := ca.ParseCRLsPEM(secretFiles(t, eastCS)[ca.CRLFile])
	if err != nil || ca.CRLOf(eastCRLs, north) == nil {
		t.Fatalf("east lacks the new cluster's CA's CRL after install --mesh-context: %v", err)
	}
	if got := heldRootCRL(t, env.Clusters[2], bundles); got == nil || !ca.IsRevoked(got, west.SerialNumber) {
		t.Error("the new cluster's cacerts lacks the root's CRL the mesh holds")
	}
	if out, _ := expectExit(t, 0, "status", "--kubeconfig", kc, "--context", "east", "--context", "north"); !strings.Contains(out, "mesh: OK") {
		t.Errorf("status of east and north:\n%s", out)
	}
}

// TestSigtermDuringCRLSettle: a bootstrap into a CRL mesh stopped by SIGTERM while
// it waits --crl-settle (the new CA's CRL already spread) exits 1 at once, installs
// nothing in the new cluster, and leaves no lock behind.
func TestSigtermDuringCRLSettle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI in its own process")
	}
	env := sharedMesh(t)
	kc := env.Kubeconfig
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--out", bundles)
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--context", "east", "--bundles", bundles)
	rrWant(t, 0, nil, "crl", "sync", "--kubeconfig", kc, "--context", "east", "--root-dir", root)
	clients := adminClients(t, env)
	crlCount := func() int {
		crls, _ := ca.ParseCRLsPEM(secretFiles(t, clients["east"])[ca.CRLFile])
		return len(crls)
	}
	if n := crlCount(); n != 2 {
		t.Fatalf("east holds %d CRLs, want the root's and its own", n)
	}
	p := startCLI(t, dir, "bootstrap", "--kubeconfig", kc, "--context", "west", "--root-dir", root, "--mesh-context", "east", "--crl-settle", "1h")
	for crlCount() < 3 { // west's new CA's CRL has reached east: the wait has begun
		select {
		case <-p.done:
			t.Fatal("bootstrap ended before the signal")
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond) // into the wait
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != exitFailed || !strings.Contains(p.err.String(), "not installed") {
		t.Fatalf("exit %d, want 1 naming what was not done; stderr:\n%s", code, p.err.String())
	}
	ctx := context.Background()
	if _, err := clients["west"].CoreV1().Secrets(k8s.DefaultNamespace).Get(ctx, k8s.SecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("west's cacerts after the interrupted bootstrap: %v", err)
	}
	if _, err := clients["west"].CoordinationV1().Leases(k8s.DefaultNamespace).Get(ctx, k8s.LeaseName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("west's lock after the interrupted bootstrap: %v", err)
	}
}

// TestRotateHealsBrokenClusterWithCRLs: in a mesh with CRLs on, a cluster whose
// cacerts no istiod can load (west's CA certificate garbled, north's CA expired)
// is what the rotate cron job is there to fix. rotate replaces it:
// its new CA's CRL reaches the others first, it gets the whole mesh set, istiod's
// loader takes every Secret, and all pairs talk with the CRLs enforced.
func TestRotateHealsBrokenClusterWithCRLs(t *testing.T) {
	env := sharedMesh(t)
	kc := env.Kubeconfig
	dir := t.TempDir()
	root, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	all := []string{"--kubeconfig", kc, "--all-contexts"}
	rrWant(t, 0, nil, append([]string{"install", "--bundles", bundles}, all...)...)
	rrWant(t, 0, nil, append([]string{"crl", "sync", "--root-dir", root}, all...)...)

	clients := adminClients(t, env)
	ctx := context.Background()
	secrets := clients["west"].CoreV1().Secrets(k8s.DefaultNamespace)
	s, err := secrets.Get(ctx, k8s.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data[ca.CACertFile] = []byte("-----BEGIN CERTIFICATE-----\nZ2FyYmxlZA==\n-----END CERTIFICATE-----\n")
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// North's CA, signed 4 minutes ago for one minute, expired 3 minutes ago (its
	// ca-crl.pem kept as the mesh set it had).
	r, err := ca.ReadRootDir(root, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := ca.IntermediateProfile("north", ca.DefaultOrg)
	p.TTL, p.Now = time.Minute, func() time.Time { return time.Now().Add(-4 * time.Minute) }
	expired, err := ca.Mint(ctx, ca.NewLocalIssuer(r), p)
	if err != nil {
		t.Fatal(err)
	}
	expiredFiles, err := expired.Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	secrets = clients["north"].CoreV1().Secrets(k8s.DefaultNamespace)
	if s, err = secrets.Get(ctx, k8s.SecretName, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	maps.Copy(s.Data, expiredFiles)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	out, errOut := rrWant(t, 0, nil, append([]string{"rotate", "--root-dir", root, "--crl-settle", "0", "-o", "json"}, all...)...)
	rep := parseRotateJSON(t, out)
	if !rep.OK || entryOf(t, rep, "west").Outcome != k8s.OutcomeRotated || entryOf(t, rep, "north").Outcome != k8s.OutcomeRotated || entryOf(t, rep, "east").Outcome != k8s.OutcomeNotDue {
		t.Fatalf("rotate:\n%s\n%s", out, errOut)
	}
	var ws []workload
	for _, name := range []string{"east", "west", "north"} {
		files := secretFiles(t, clients[name])
		if ok, msg := istiodLoadsIfBuilt(t, filesDir(t, files)); !ok {
			t.Errorf("%s: istiod's loader refuses cacerts after the rotation: %s", name, msg)
		}
		b, _, err := ca.ParseBundle(files, ca.VerifyOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", name), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if w.CRLs, err = ca.ParseCRLsPEM(files[ca.CRLFile]); err != nil || len(w.CRLs) == 0 {
			t.Fatalf("%s: %s after the rotation: %v", name, ca.CRLFile, err)
		}
		ws = append(ws, workload{cluster: name, w: w})
	}
	mustHandshake(t, "after rotate replaced west's broken and north's expired cacerts", ws...)
	if out, _ := rrWant(t, 0, nil, append([]string{"status"}, all...)...); !strings.Contains(out, "mesh: OK") {
		t.Errorf("status after the rotation:\n%s", out)
	}
}
