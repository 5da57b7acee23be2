package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
)

// rrRun runs meshpki and returns exit code, stdout and stderr; it fails the test if
// either carries a private key. (Certificates may appear: root bundle --out -.)
func rrRun(t *testing.T, args ...string) (int, string, string) {
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

// rrWant runs meshpki, wants exit code want and every string of has in stdout.
func rrWant(t *testing.T, want int, has []string, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := rrRun(t, args...)
	if code != want {
		t.Fatalf("meshpki %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	for _, h := range has {
		if !strings.Contains(out, h) {
			t.Fatalf("meshpki %s: stdout lacks %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), h, out, errOut)
		}
	}
	return out, errOut
}

func TestRootBundle(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	rrWant(t, 0, nil, "root", "create", "--out", a)
	rrWant(t, 0, nil, "root", "create", "--out", b, "--common-name", "Root CA 2027")
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", a, "--cluster", "east", "--out", filepath.Join(dir, "bundles"))
	// a and b (one as a folder, one as a file), a again, and a two-root file.
	both := filepath.Join(dir, "both.pem")
	combined := filepath.Join(dir, "combined.pem")
	rrWant(t, 0, []string{"root bundle of 2 roots written to " + both}, "root", "bundle", "--out", both, a, filepath.Join(b, ca.RootCertFile))
	out, _ := rrWant(t, 0, []string{"root bundle of 2 roots", "CN=Root CA 2027", "duplicate dropped: " + filepath.Join(a, ca.RootCertFile), "duplicate dropped: " + both + " (certificate 1)"},
		"root", "bundle", "--out", combined, a, b, a, both)
	data, err := os.ReadFile(combined)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ca.ParseCertificatesPEM(data)
	if err != nil || len(certs) != 2 {
		t.Fatalf("bundle holds %d certificates (%v)", len(certs), err)
	}
	if !strings.Contains(out, "sha256:"+ca.Fingerprint(certs[0])) || !strings.Contains(certs[1].Subject.String(), "Root CA 2027") {
		t.Fatalf("order or fingerprints wrong:\n%s", out)
	}
	// To stdout: the PEM is the result, the summary goes to stderr.
	code, stdout, stderr := rrRun(t, "root", "bundle", "--out", "-", a, b)
	if code != 0 || stdout != string(data) || !strings.Contains(stderr, "written to stdout") {
		t.Fatalf("--out -: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// JSON summary.
	var res rootBundleResult
	out, _ = rrWant(t, 0, nil, "root", "bundle", "--out", combined, "--force", "-o", "json", a, b)
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Roots) != 2 {
		t.Fatalf("json: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", combined, a}, "already exists (pass --force to replace it)"},
		{[]string{"--out", filepath.Join(dir, "x.pem"), filepath.Join(dir, "bundles", "east", ca.CACertFile)}, "CN=Intermediate CA,O=Istio,L=east: certificate has pathlen 0"},
		{[]string{"--out", filepath.Join(dir, "x.pem"), filepath.Join(a, ca.RootKeyFile)}, "holds a private key: a root bundle takes certificates only"},
		{[]string{"--out", filepath.Join(dir, "x.pem"), filepath.Join(dir, "nope")}, "no such file"},
		{[]string{"--out", filepath.Join(dir, "x.pem")}, "no roots given"},
	} {
		code, _, errOut := rrRun(t, append([]string{"root", "bundle"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("root bundle %v: exit %d, want 2 and %q\n%s", tc.args, code, tc.want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.pem")); err == nil {
		t.Error("a refused bundle was written")
	}
}

// rrSecretVersions reads cacerts' resourceVersion in every context of kc.
func rrSecretVersions(t *testing.T, kc, ns string) map[string]string {
	t.Helper()
	cls, err := k8s.LoadClusters(k8s.ClusterOptions{Kubeconfig: kc, AllContexts: true})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, cl := range cls {
		st, err := k8s.Status(context.Background(), cl, k8s.StatusOptions{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		out[cl.Name] = st.ResourceVersion
	}
	return out
}

// TestRootRotateCommand walks two real clusters through a root rotation with the
// CLI: status, dry run, each step, reruns, refusals.
func TestRootRotateCommand(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	env := parallelMesh(t, "east", "west")
	dir := t.TempDir()
	kc := env.Kubeconfig
	rootA, rootB, bundles := filepath.Join(dir, "rootA"), filepath.Join(dir, "rootB"), filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "root", "create", "--out", rootA)
	rrWant(t, 0, nil, "root", "create", "--out", rootB, "--common-name", "Root CA 2027")
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", rootA, "--cluster", "east", "--cluster", "west", "--out", bundles)
	ns := "rr-cli"
	rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns)
	rot := func(extra ...string) []string {
		return append([]string{"root", "rotate", "--new-root-dir", rootB, "--kubeconfig", kc, "--all-contexts", "--namespace", ns}, extra...)
	}
	unchanged := func(t *testing.T, what, ns string, before map[string]string) {
		t.Helper()
		after := rrSecretVersions(t, kc, ns)
		for name, rv := range before {
			if after[name] != rv {
				t.Fatalf("%s wrote to %s (resourceVersion %s -> %s)", what, name, rv, after[name])
			}
		}
	}

	rrWant(t, 0, []string{"CLUSTER  STEP", "east     0 (old-root)  from old root  old", "trust both -> step 1",
		"mesh: all 2 clusters at step 0 (old-root)", "next: a run brings east, west to step 1 (trust both)"}, rot("--status")...)

	rvs := rrSecretVersions(t, kc, ns)
	rrWant(t, 0, []string{"would trust both -> step 1", "dry run, nothing changed: a run would bring east, west to step 1"}, rot("--dry-run")...)
	unchanged(t, "dry run", ns, rvs)

	_, errOut := rrWant(t, 0, []string{"trust both -> step 1, previous kept as cacerts-backup-", "mesh: all 2 clusters at step 1 (trust-both)",
		"next: wait until every workload of every cluster trusts the new root"}, rot()...)
	if !strings.Contains(errOut, "cluster=east") {
		t.Fatalf("no progress on stderr:\n%s", errOut)
	}

	// Reruns: too early (exit 0, nothing written), or pinned to step 1 (a no-op).
	rvs = rrSecretVersions(t, kc, ns)
	rrWant(t, 0, []string{"waiting: step 2 (switch) is allowed from", "nothing was changed"}, rot()...)
	rrWant(t, 0, []string{"east     1 (trust-both)  from old root  old + new", "unchanged", "nothing to do"}, rot("--step", "trust-both")...)
	unchanged(t, "reruns at step 1", ns, rvs)

	// Dropping the old root before the switch: refused, naming the clusters behind.
	code, out, errOut := rrRun(t, rot("--step", "3", "--min-step-interval", "0")...)
	if code != 1 || !strings.Contains(errOut, "behind: east (at step 1 (trust-both)), west (at step 1 (trust-both))") || !strings.Contains(out, "mesh: REFUSED") {
		t.Fatalf("early drop: exit %d\n%s\n%s", code, out, errOut)
	}
	unchanged(t, "refused drop", ns, rvs)

	rrWant(t, 0, []string{"switch -> step 2, new intermediate serial", "mesh: all 2 clusters at step 2 (switched)", "then rerun to drop the old root (step 3)"},
		rot("--min-step-interval", "0")...)
	var rep rootRotateOutput
	out, _ = rrWant(t, 0, nil, rot("--status", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Plan.MeshStep != rotation.StepSwitched || !rep.Waiting || rep.Plan.NextAllowed.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("status json (%v):\n%s", err, out)
	}
	if rep.Plan.Clusters[0].IntermediateFrom != "new" || len(rep.Plan.Clusters[0].Trusts) != 2 {
		t.Fatalf("status json clusters: %+v", rep.Plan.Clusters)
	}

	rrWant(t, 0, []string{"drop -> step 3", "root rotation complete"}, rot("--min-step-interval", "0")...)
	rvs = rrSecretVersions(t, kc, ns)
	rrWant(t, 0, []string{"root rotation complete"}, rot()...)
	unchanged(t, "rerun when done", ns, rvs)
	// The mesh now shares root B alone.
	b, err := ca.ReadRootDir(rootB, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rrWant(t, 0, []string{"mesh: OK: all 2 clusters trust the same roots (" + textfmt.Fingerprint(ca.Fingerprint(b.Cert)) + ")"},
		"status", "--kubeconfig", kc, "--all-contexts", "--namespace", ns)

	t.Run("an unreachable cluster stops the run", func(t *testing.T) {
		ns2 := "rr-cli-down"
		rrWant(t, 0, nil, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", bundles, "--namespace", ns2)
		cfg, err := clientcmd.LoadFromFile(kc)
		if err != nil {
			t.Fatal(err)
		}
		east := cfg.Contexts["east"]
		cfg.Clusters["south"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", CertificateAuthorityData: cfg.Clusters[east.Cluster].CertificateAuthorityData}
		cfg.Contexts["south"] = &clientcmdapi.Context{Cluster: "south", AuthInfo: east.AuthInfo}
		kc2 := filepath.Join(dir, "kubeconfig-with-south")
		if err := clientcmd.WriteToFile(*cfg, kc2); err != nil {
			t.Fatal(err)
		}
		rvs := rrSecretVersions(t, kc, ns2)
		code, out, errOut := rrRun(t, "root", "rotate", "--new-root-dir", rootB, "--kubeconfig", kc2, "--all-contexts", "--namespace", ns2, "--request-timeout", "3s")
		if code != 1 || !strings.Contains(out, "mesh: REFUSED: cluster state unknown: could not read south") || !strings.Contains(errOut, "could not read south") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		unchanged(t, "refused run", ns2, rvs)
	})

	t.Run("bad input exits 2", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"root", "rotate", "--kubeconfig", kc, "--all-contexts"}, "no new root given"},
			{[]string{"root", "rotate", "--new-root-dir", rootB, "--new-vault-kv", "secret/x", "--kubeconfig", kc, "--all-contexts"}, "pass only one of"},
			{[]string{"root", "rotate", "--new-vault-issuer", "x", "--new-root-dir", rootB, "--kubeconfig", kc, "--all-contexts"}, "--new-vault-issuer needs --new-vault-pki"},
			{[]string{"root", "rotate", "--new-vault-issuer", "x", "--kubeconfig", kc, "--all-contexts"}, "--new-vault-issuer needs --new-vault-pki"},
			{[]string{"root", "rotate", "--new-root-dir", rootB, "--kubeconfig", kc, "--all-contexts", "--crl-settle", "soon"}, "--crl-settle: bad duration"},
			{[]string{"status", "--kubeconfig", kc, "--all-contexts", "--renew-before", "zz"}, `meshpki: --renew-before: bad duration "zz"`},
			{rot("--step", "4"), "unknown root rotation step"},
			{rot("--status", "--dry-run"), "exclude each other"},
			{rot("--min-step-interval", "soon"), "--min-step-interval"},
			{rot("--keep-backups", "0"), "keep at least 1"},
			{[]string{"root", "rotate", "--new-root-dir", filepath.Join(dir, "nope"), "--kubeconfig", kc, "--all-contexts"}, "no such file"},
			{[]string{"root", "rotate", "--new-root-dir", rootB, "--kubeconfig", kc}, "no cluster chosen"},
		} {
			code, _, errOut := rrRun(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("meshpki %s: exit %d, want 2 and %q\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
			}
		}
	})
}
