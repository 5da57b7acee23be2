package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// k8sRun runs meshpki with args and returns its exit code, stdout and stderr. It
// fails the test if either stream carries key material.
func k8sRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"meshpki"}, args...), &stdout, &stderr)
	for name, s := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
		if strings.Contains(s, "PRIVATE KEY") {
			t.Fatalf("meshpki %s: %s carries key material", strings.Join(args, " "), name)
		}
	}
	return code, stdout.String(), stderr.String()
}

func k8sMustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := k8sRun(t, args...)
	if code != 0 {
		t.Fatalf("meshpki %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestClusterCommands runs install, status and bootstrap against three real
// kube-apiservers. One top-level test owns the clusters (started once, stopped at
// its end); its subtests run in order and each uses its own namespace.
func TestClusterCommands(t *testing.T) {
	env := sharedMesh(t) // its own namespaces; stops west once, and starts it again
	dir := t.TempDir()
	kc := env.Kubeconfig
	root := filepath.Join(dir, "root")
	bundles := filepath.Join(dir, "bundles")
	k8sMustRun(t, "root", "create", "--out", root)
	k8sMustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	nsN := 0
	newNS := func() string { nsN++; return fmt.Sprintf("cli-%d", nsN) }

	t.Run("install all contexts, rerun, status", func(t *testing.T) {
		ns := newNS()
		out := k8sMustRun(t, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns)
		if !strings.Contains(out, "3 clusters: 3 created") {
			t.Fatalf("install:\n%s", out)
		}
		out = k8sMustRun(t, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns)
		if !strings.Contains(out, "3 clusters: 3 unchanged") {
			t.Fatalf("rerun:\n%s", out)
		}
		out = k8sMustRun(t, "status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
		for _, want := range []string{"CLUSTER  VERDICT", "east     ok", "L=west", "mesh: OK: all 3 clusters trust the same roots"} {
			if !strings.Contains(out, want) {
				t.Fatalf("status lacks %q:\n%s", want, out)
			}
		}
		var rep mesh.StatusReport
		if err := json.Unmarshal([]byte(k8sMustRun(t, "status", "--kubeconfig", kc, "--context", "west", "--namespace", ns, "-o", "json")), &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.OK || len(rep.Clusters) != 1 || rep.Clusters[0].Report == nil || !strings.Contains(rep.Clusters[0].Report.Subject, "L=west") {
			t.Fatalf("status json: %+v", rep)
		}
	})

	t.Run("KUBECONFIG lists several files", func(t *testing.T) {
		ns := newNS()
		t.Setenv("KUBECONFIG", filepath.Join(dir, "missing")+string(os.PathListSeparator)+kc)
		out := k8sMustRun(t, "install", "--context", "north", "--bundles", bundles, "--namespace", ns, "-o", "json")
		var rep mesh.InstallReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.OK || len(rep.Clusters) != 1 || rep.Clusters[0].Action != "created" {
			t.Fatalf("install json: %s", out)
		}
	})

	t.Run("context mapped to another bundle name", func(t *testing.T) {
		ns := newNS()
		out := k8sMustRun(t, "install", "--kubeconfig", kc, "--context", "east", "--cluster", "east=west", "--bundles", bundles, "--namespace", ns)
		if !strings.Contains(out, "west  created") || !strings.Contains(out, "L=west") {
			t.Fatalf("mapped install:\n%s", out)
		}
	})

	t.Run("dry run changes nothing", func(t *testing.T) {
		ns := newNS()
		out := k8sMustRun(t, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns, "--dry-run")
		if !strings.Contains(out, "dry run, nothing changed: 3 clusters: 3 would create") || !strings.Contains(out, "namespace "+ns+" would be created") {
			t.Fatalf("dry run:\n%s", out)
		}
		code, out, _ := k8sRun(t, "status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
		if code != 1 || strings.Count(out, " missing ") != 3 || !strings.Contains(out, "mesh: FAIL: east, north, west: no cacerts Secret") {
			t.Fatalf("status after dry run: exit %d\n%s", code, out)
		}
	})

	t.Run("status flags a cluster with another root", func(t *testing.T) {
		ns := newNS()
		root2, bundles2 := filepath.Join(dir, "root2"), filepath.Join(dir, "bundles2")
		k8sMustRun(t, "root", "create", "--out", root2)
		k8sMustRun(t, "intermediate", "create", "--root-dir", root2, "--cluster", "north", "--out", bundles2)
		k8sMustRun(t, "install", "--kubeconfig", kc, "--context", "east", "--context", "west", "--bundles", bundles, "--namespace", ns)
		k8sMustRun(t, "install", "--kubeconfig", kc, "--context", "north", "--bundles", bundles2, "--namespace", ns)
		code, out, _ := k8sRun(t, "status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
		if code != 1 || !strings.Contains(out, "mesh: FAIL: roots differ across the mesh: north trusts other roots than east") {
			t.Fatalf("status: exit %d\n%s", code, out)
		}
		// And install refuses to move a cluster to the other root.
		code, out, errOut := k8sRun(t, "install", "--kubeconfig", kc, "--context", "north", "--bundles", bundles, "--namespace", ns)
		if code != 1 || !strings.Contains(out, "north  FAILED") || !strings.Contains(out, "--allow-new-root") || !strings.Contains(errOut, "1 of 1 clusters failed (north)") {
			t.Fatalf("install onto another root: exit %d\n%s\n%s", code, out, errOut)
		}
		// Bundles of one run that trust different roots are refused up front.
		mixed := filepath.Join(dir, "mixed")
		if err := os.MkdirAll(mixed, 0o700); err != nil {
			t.Fatal(err)
		}
		for src, name := range map[string]string{filepath.Join(bundles, "east"): "east", filepath.Join(bundles2, "north"): "north"} {
			if err := os.Symlink(src, filepath.Join(mixed, name)); err != nil {
				t.Fatal(err)
			}
		}
		code, _, errOut = k8sRun(t, "install", "--kubeconfig", kc, "--context", "east", "--context", "north", "--bundles", mixed, "--namespace", newNS())
		if code != 2 || !strings.Contains(errOut, "other roots than") || !strings.Contains(errOut, "nothing was installed") {
			t.Fatalf("mixed roots: exit %d\n%s", code, errOut)
		}
	})

	t.Run("a down cluster fails alone, exit 1", func(t *testing.T) {
		ns := newNS()
		west := env.Clusters[1]
		if err := west.Stop(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := west.Start(context.Background()); err != nil {
				t.Fatalf("restart west: %v", err)
			}
		}()
		code, out, errOut := k8sRun(t, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns, "--request-timeout", "5s")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
		}
		for _, want := range []string{"east   created", "north  created", "west   FAILED", "connection refused", "3 clusters: 2 created, 1 failed"} {
			if !strings.Contains(out, want) {
				t.Fatalf("stdout lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(errOut, "meshpki: 1 of 3 clusters failed (west): cluster west:") || !strings.Contains(errOut, `cluster=west err=`) {
			t.Fatalf("stderr:\n%s", errOut)
		}
		code, out, _ = k8sRun(t, "status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)
		if code != 1 || !strings.Contains(out, "west     error") || !strings.Contains(out, "west: could not be read") {
			t.Fatalf("status with west down: exit %d\n%s", code, out)
		}
	})

	t.Run("forbidden user gets a clear message", func(t *testing.T) {
		ns := newNS()
		code, out, errOut := k8sRun(t, "install", "--kubeconfig", env.LimitedKubeconfig, "--context", "east", "--bundles", bundles, "--namespace", ns)
		want := fmt.Sprintf(`forbidden: user %q cannot get secrets in namespace %s of cluster east (grant it meshpki's Role: deploy/rbac.yaml)`, testenv.LimitedUser, ns)
		if code != 1 || !strings.Contains(out, want) || !strings.Contains(errOut, want) {
			t.Fatalf("exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
		}
	})

	t.Run("install needs the Roles deploy/rbac.yaml names for it", func(t *testing.T) {
		ns := newNS()
		c := env.Clusters[0]
		admin, err := k8s.NewCluster(c.Name, c.RESTConfig(c.AdminToken), k8s.ClusterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		applyRoles(t, admin, ns, "meshpki-install")
		code, out, _ := k8sRun(t, "install", "--kubeconfig", env.LimitedKubeconfig, "--context", "east", "--bundles", bundles, "--namespace", ns)
		if code != 1 || !strings.Contains(out, "leases in namespace "+ns) {
			t.Fatalf("install without the lock's Role: exit %d\n%s", code, out)
		}
		applyRoles(t, admin, ns, "meshpki-rotate")
		out = k8sMustRun(t, "install", "--kubeconfig", env.LimitedKubeconfig, "--context", "east", "--bundles", bundles, "--namespace", ns)
		if !strings.Contains(out, "east  created") {
			t.Fatalf("install with meshpki-install and meshpki-rotate:\n%s", out)
		}
		if _, err := admin.Client.CoordinationV1().Leases(ns).Get(context.Background(), k8s.LeaseName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the install's Lease is still there: %v", err)
		}
	})

	t.Run("bootstrap one new cluster", func(t *testing.T) {
		ns := newNS()
		out := filepath.Join(dir, "bootstrapped")
		stdout := k8sMustRun(t, "bootstrap", "--kubeconfig", kc, "--context", "north", "--root-dir", root, "--namespace", ns, "--out", out)
		if !strings.Contains(stdout, "north  created") || !strings.Contains(stdout, "bundle written to "+filepath.Join(out, "north")) {
			t.Fatalf("bootstrap:\n%s", stdout)
		}
		if st, err := os.Stat(filepath.Join(out, "north", "ca-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("bundle key file: %v %v", st, err)
		}
		code, _, errOut := k8sRun(t, "bootstrap", "--kubeconfig", kc, "--context", "north", "--root-dir", root, "--namespace", ns)
		if code != 1 || !strings.Contains(errOut, "cacerts already exists") || !strings.Contains(errOut, "--force") {
			t.Fatalf("second bootstrap: exit %d\n%s", code, errOut)
		}
		stdout = k8sMustRun(t, "bootstrap", "--kubeconfig", kc, "--context", "north", "--root-dir", root, "--namespace", ns, "--force")
		if !strings.Contains(stdout, "north  updated") || !strings.Contains(stdout, "previous kept as cacerts-backup-") {
			t.Fatalf("bootstrap --force:\n%s", stdout)
		}
		k8sMustRun(t, "status", "--kubeconfig", kc, "--context", "north", "--namespace", ns)
	})

	t.Run("bad input exits 2", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"install", "--kubeconfig", kc, "--bundles", bundles}, "no cluster chosen: pass --context CTX (repeatable) or --all-contexts"},
			{[]string{"install", "--kubeconfig", kc, "--context", "south", "--bundles", bundles}, `no such kubeconfig context "south"`},
			{[]string{"install", "--kubeconfig", kc, "--all-contexts", "--context", "east", "--bundles", bundles}, "exclude each other"},
			{[]string{"install", "--kubeconfig", kc, "--all-contexts", "--bundles", filepath.Join(dir, "nope")}, "no such folder"},
			{[]string{"install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--cluster", "east"}, "want CTX=NAME"},
			{[]string{"install", "--kubeconfig", kc, "--context", "east", "--mesh-context", "east", "--bundles", bundles}, "--mesh-context east is one of the clusters to install"},
			{[]string{"install", "--kubeconfig", kc, "--context", "east", "--mesh-context", "nowhere", "--bundles", bundles}, `--mesh-context: no such kubeconfig context "nowhere"`},
			{[]string{"install", "--kubeconfig", filepath.Join(dir, "nope"), "--all-contexts", "--bundles", bundles}, "load kubeconfig"},
			{[]string{"status", "--kubeconfig", kc, "--all-contexts", "-o", "yaml"}, "want text or json"},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east", "--context", "west", "--root-dir", root}, "pass --context once"},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east"}, "no root given"},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east", "--root-dir", root, "--mesh-context", "east"}, "--mesh-context east is the cluster being bootstrapped"},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east", "--root-dir", root, "--mesh-context", "west", "--mesh-context", "west"}, "given twice"},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east", "--root-dir", root, "--mesh-context", "south"}, `--mesh-context: no such kubeconfig context "south"`},
			{[]string{"bootstrap", "--kubeconfig", kc, "--context", "east", "--root-dir", root, "--crl-ttl", "1d", "--crl-refresh", "2d"}, "less than --crl-ttl"},
		} {
			code, _, errOut := k8sRun(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("meshpki %s: exit %d, want 2 and %q\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
			}
		}
	})
}
