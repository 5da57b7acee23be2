package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// rotateRig is what TestRotateCommand's subtests share: three real clusters, a
// real Vault with a PKI root, and admin clients to look at the clusters.
type rotateRig struct {
	env      *testenv.K8s
	vault    *testenv.VaultServer
	admin    *api.Client
	clusters map[string]*k8s.Cluster
	dir      string
	nsN      int
	bundleN  int
}

func (r *rotateRig) newNS() string { r.nsN++; return fmt.Sprintf("rot-%d", r.nsN) }

func (r *rotateRig) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// install mints intermediates for clusters with ttl from Vault and installs them in
// namespace ns, as a user would.
func (r *rotateRig) install(t *testing.T, ns, ttl string, clusters ...string) {
	t.Helper()
	r.bundleN++
	out := filepath.Join(r.dir, fmt.Sprintf("bundles-%d", r.bundleN))
	args := []string{"intermediate", "create", "--vault-pki", "pki", "--ttl", ttl, "--out", out}
	inst := []string{"install", "--kubeconfig", r.env.Kubeconfig, "--bundles", out, "--namespace", ns}
	for _, c := range clusters {
		args = append(args, "--cluster", c)
		inst = append(inst, "--context", c)
	}
	k8sMustRun(t, args...)
	k8sMustRun(t, inst...)
}

func (r *rotateRig) secret(t *testing.T, cluster, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := r.clusters[cluster].Client.CoreV1().Secrets(ns).Get(r.ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cluster %s: %v", cluster, err)
	}
	return s
}

// versions maps each cluster to its cacerts' resourceVersion in ns ("" if none).
func (r *rotateRig) versions(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, cl := range r.clusters {
		s, err := cl.Client.CoreV1().Secrets(ns).Get(r.ctx(t), k8s.SecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			out[name] = ""
		case err != nil:
			t.Fatal(err)
		default:
			out[name] = s.ResourceVersion
		}
	}
	return out
}

func (r *rotateRig) backups(t *testing.T, cluster, ns string) []string {
	t.Helper()
	b, err := k8s.Backups(r.ctx(t), r.clusters[cluster], ns)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rotateRig) noLeases(t *testing.T, ns string) {
	t.Helper()
	for name, cl := range r.clusters {
		if _, err := cl.Client.CoordinationV1().Leases(ns).Get(r.ctx(t), k8s.LeaseName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s: Lease %s left in %s (%v)", name, k8s.LeaseName, ns, err)
		}
	}
}

func (r *rotateRig) bundle(t *testing.T, cluster, ns string) *ca.Bundle {
	t.Helper()
	b, _, err := ca.ParseBundle(k8s.SecretFiles(r.secret(t, cluster, ns, k8s.SecretName)), ca.VerifyOptions{})
	if err != nil {
		t.Fatalf("%s: installed bundle: %v", cluster, err)
	}
	return b
}

func parseRotateJSON(t *testing.T, out string) *mesh.RotateReport {
	t.Helper()
	var rep mesh.RotateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("rotate -o json: %v\n%s", err, out)
	}
	return &rep
}

func entryOf(t *testing.T, rep *mesh.RotateReport, cluster string) mesh.RotateEntry {
	t.Helper()
	for _, c := range rep.Clusters {
		if c.Cluster == cluster {
			return c
		}
	}
	t.Fatalf("no record for %s", cluster)
	return mesh.RotateEntry{}
}

// promValue reads one cluster's sample of metric from a metrics file with
// Prometheus' own text parser; ok is false when there is none.
func promValue(t *testing.T, file, metric, cluster string) (float64, bool) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("metrics file does not parse: %v", err)
	}
	mf, ok := mfs[metric]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if m.GetTimestampMs() != 0 {
			t.Errorf("%s carries a timestamp: the textfile collector refuses those", metric)
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == "cluster" && l.GetValue() == cluster {
				if m.Counter != nil {
					return m.GetCounter().GetValue(), true
				}
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func mustProm(t *testing.T, file, metric, cluster string) float64 {
	t.Helper()
	v, ok := promValue(t, file, metric, cluster)
	if !ok {
		t.Fatalf("metrics file has no %s{cluster=%q}", metric, cluster)
	}
	return v
}

// helperArgs is the environment variable that makes TestRotateHelperProcess run
// meshpki with its value (the arguments as a JSON array).
const helperArgs = "MESHPKI_TEST_HELPER_ARGS"

// TestRotateHelperProcess is not a test of its own: subtests that need several
// meshpki processes at once (several cron runs) start this test binary again,
// which runs meshpki here. (urfave/cli's global flags forbid concurrent runs in one
// process.)
func TestRotateHelperProcess(t *testing.T) {
	v := os.Getenv(helperArgs)
	if v == "" {
		t.Skip("runs only as a helper process")
	}
	var args []string
	if err := json.Unmarshal([]byte(v), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(append([]string{"meshpki"}, args...), os.Stdout, os.Stderr))
}

// runProcess runs meshpki as a process of its own and returns its exit code,
// stdout and stderr.
func runProcess(args ...string) (int, string, string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRotateHelperProcess$")
	js, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), helperArgs+"="+string(js))
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		se.WriteString(err.Error())
	}
	return code, so.String(), se.String()
}

// TestRotateCommand runs meshpki rotate against three real kube-apiservers and a
// real Vault whose PKI mount holds the root. Subtests run in order, each in its own
// namespace; sealing Vault comes last.
func TestRotateCommand(t *testing.T) {
	env := sharedMesh(t)
	v := testenv.StartVaultT(t)
	vaultEnv(t, v, v.Token)
	r := &rotateRig{env: env, vault: v, admin: vaultAdmin(t, v), clusters: map[string]*k8s.Cluster{}, dir: t.TempDir()}
	for _, c := range env.Clusters {
		cl, err := k8s.NewCluster(c.Name, c.RESTConfig(c.AdminToken), k8s.ClusterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.clusters[c.Name] = cl
	}
	k8sMustRun(t, "root", "create", "--vault-pki", "pki", "--enable-mount", "--ttl", "3650d")
	kc := env.Kubeconfig
	metricsFile := filepath.Join(r.dir, "meshpki.prom")

	t.Run("nothing due writes nothing", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "8760h", "east", "west", "north")
		before := r.versions(t, ns)
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns)
		if code != 0 || out != "3 clusters: 3 not due\n" {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		for _, c := range []string{"east", "west", "north"} {
			if !strings.Contains(errOut, c+": not due (364 days left; due on ") {
				t.Errorf("stderr lacks %s's line:\n%s", c, errOut)
			}
		}
		if after := r.versions(t, ns); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("cacerts written: %v -> %v", before, after)
		}
		r.noLeases(t, ns)
	})

	t.Run("one cluster near expiry is rotated alone", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "24h", "east")
		r.install(t, ns, "8760h", "west", "north")
		before := r.versions(t, ns)
		oldEast := r.bundle(t, "east", ns)
		oldFiles := r.secret(t, "east", ns, k8s.SecretName).Data
		t0 := time.Now().Truncate(time.Second)
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns,
			"--renew-before", "30d", "--metrics-file", metricsFile, "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		rep := parseRotateJSON(t, out)
		east := entryOf(t, rep, "east")
		if !rep.OK || rep.Summary[k8s.OutcomeRotated] != 1 || rep.Summary[k8s.OutcomeNotDue] != 2 || east.Outcome != k8s.OutcomeRotated {
			t.Fatalf("report: %s", out)
		}
		if !strings.Contains(errOut, "east: rotated (23h") || !strings.Contains(errOut, "3 clusters: 1 rotated, 2 not due") {
			t.Errorf("stderr:\n%s", errOut)
		}
		// Only east was written; its old bundle is kept as the one backup.
		after := r.versions(t, ns)
		if after["east"] == before["east"] || after["west"] != before["west"] || after["north"] != before["north"] {
			t.Fatalf("resourceVersions %v -> %v", before, after)
		}
		if b := r.backups(t, "east", ns); len(b) != 1 || b[0] != east.Backup {
			t.Fatalf("backups %v, report says %s", b, east.Backup)
		}
		if kept := r.secret(t, "east", ns, east.Backup).Data; fmt.Sprint(kept) != fmt.Sprint(oldFiles) {
			t.Fatal("backup differs from the old cacerts")
		}
		// The new bundle verifies, is a new key, and its workloads talk to west's and north's.
		nb := r.bundle(t, "east", ns)
		if nb.Cert.Equal(oldEast.Cert) || ca.KeyMatchesPublic(nb.Cert.PublicKey, oldEast.Cert.PublicKey) || !east.NotAfter.Equal(nb.Cert.NotAfter) {
			t.Fatal("east holds no new intermediate, or the report disagrees")
		}
		for _, other := range []string{"west", "north"} {
			ob := r.bundle(t, other, ns)
			e, err := nb.IssueWorkload(ca.SPIFFEID("cluster.local", "shop", "cart"), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			o, err := ob.IssueWorkload(ca.SPIFFEID("cluster.local", "shop", "pay"), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := ca.Handshake(r.ctx(t), e, o); err != nil {
				t.Errorf("east server, %s client: %v", other, err)
			}
			if err := ca.Handshake(r.ctx(t), o, e); err != nil {
				t.Errorf("%s server, east client: %v", other, err)
			}
		}
		r.noLeases(t, ns)

		// The metrics file holds what happened.
		if got := mustProm(t, metricsFile, "meshpki_intermediate_not_after_seconds", "east"); got != float64(nb.Cert.NotAfter.Unix()) {
			t.Errorf("east not_after %v, want %d", got, nb.Cert.NotAfter.Unix())
		}
		if got := mustProm(t, metricsFile, "meshpki_intermediate_not_after_seconds", "west"); got != float64(r.bundle(t, "west", ns).Cert.NotAfter.Unix()) {
			t.Errorf("west not_after %v", got)
		}
		for c, want := range map[string]float64{"east": 1, "west": 0, "north": 0} {
			if got := mustProm(t, metricsFile, "meshpki_rotations_total", c); got != want {
				t.Errorf("%s rotations %v, want %v", c, got, want)
			}
			if got := mustProm(t, metricsFile, "meshpki_rotation_failures_total", c); got != 0 {
				t.Errorf("%s failures %v", c, got)
			}
			if got := mustProm(t, metricsFile, "meshpki_rotation_healthy", c); got != 1 {
				t.Errorf("%s healthy %v", c, got)
			}
			if got := mustProm(t, metricsFile, "meshpki_rotation_last_success_timestamp_seconds", c); got < float64(t0.Unix()) || got > float64(time.Now().Unix()) {
				t.Errorf("%s last success %v, not within the run", c, got)
			}
		}
		if got := mustProm(t, metricsFile, "meshpki_rotation_last_rotation_timestamp_seconds", "west"); got != 0 {
			t.Errorf("west last rotation %v, want 0 (never)", got)
		}

		// Rerun: nothing due, counters kept.
		code, out, errOut = k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns,
			"--renew-before", "30d", "--metrics-file", metricsFile)
		if code != 0 || out != "3 clusters: 3 not due\n" {
			t.Fatalf("rerun: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := mustProm(t, metricsFile, "meshpki_rotations_total", "east"); got != 1 {
			t.Errorf("east rotations after a quiet rerun: %v", got)
		}
	})

	t.Run("a down apiserver fails alone, exit 1, JSON says which", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "8760h", "east", "west", "north")
		westNotAfter := mustProm(t, metricsFile, "meshpki_intermediate_not_after_seconds", "west")
		west := env.Clusters[1]
		if err := west.Stop(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := west.Start(context.Background()); err != nil {
				t.Fatalf("restart west: %v", err)
			}
		}()
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns,
			"--force", "--request-timeout", "5s", "--metrics-file", metricsFile, "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
		}
		rep := parseRotateJSON(t, out)
		w := entryOf(t, rep, "west")
		if rep.OK || w.Outcome != k8s.OutcomeFailed || !strings.Contains(w.Error, "cluster west") || !strings.Contains(w.Error, "connection refused") {
			t.Fatalf("west: %+v, %s", w.RotateResult, w.Error)
		}
		for _, c := range []string{"east", "north"} {
			if e := entryOf(t, rep, c); e.Outcome != k8s.OutcomeRotated || e.Error != "" || !strings.HasPrefix(e.Reason, "forced; ") {
				t.Errorf("%s: %+v %s", c, e.RotateResult, e.Error)
			}
		}
		if !strings.Contains(errOut, "west: failed: get secrets in namespace "+ns) || !strings.Contains(errOut, "meshpki: 1 of 3 clusters not healthy (west: failed)") {
			t.Errorf("stderr:\n%s", errOut)
		}
		// Counters carry over from the previous run's file.
		for c, want := range map[string]float64{"east": 2, "north": 1, "west": 0} {
			if got := mustProm(t, metricsFile, "meshpki_rotations_total", c); got != want {
				t.Errorf("%s rotations %v, want %v", c, got, want)
			}
		}
		if mustProm(t, metricsFile, "meshpki_rotation_failures_total", "west") != 1 || mustProm(t, metricsFile, "meshpki_rotation_healthy", "west") != 0 {
			t.Error("west's failure is not in the metrics")
		}
		if got := mustProm(t, metricsFile, "meshpki_intermediate_not_after_seconds", "west"); got != westNotAfter {
			t.Errorf("west's not_after %v, want the last known %v", got, westNotAfter)
		}
	})

	t.Run("concurrent runs rotate once", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "24h", "east")
		const runs = 3
		outs := make([]string, runs)
		errs := make([]string, runs)
		codes := make([]int, runs)
		var wg sync.WaitGroup
		for i := range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], outs[i], errs[i] = runProcess("rotate", "--kubeconfig", kc, "--context", "east", "--vault-pki", "pki", "--namespace", ns,
					"--renew-before", "30d", "-o", "json")
			}()
		}
		wg.Wait()
		rotated := 0
		for i := range runs {
			noKeys(t, outs[i], errs[i])
			if codes[i] != 0 {
				t.Fatalf("run %d: exit %d\n%s\n%s", i, codes[i], outs[i], errs[i])
			}
			switch e := entryOf(t, parseRotateJSON(t, outs[i]), "east"); e.Outcome {
			case k8s.OutcomeRotated:
				rotated++
			case k8s.OutcomeNotDue:
			default:
				t.Errorf("run %d: %s", i, e.Outcome)
			}
		}
		if rotated != 1 {
			t.Fatalf("%d runs rotated east, want 1:\n%s", rotated, strings.Join(errs, "\n"))
		}
		if b := r.backups(t, "east", ns); len(b) != 1 {
			t.Fatalf("backups %v, want 1", b)
		}
		r.noLeases(t, ns)
	})

	t.Run("a lock held by another run", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "8760h", "east")
		before := r.versions(t, ns)
		now := metav1.NewMicroTime(time.Now())
		holder, secs := "bastion-7_beef", int32(300)
		_, err := r.clusters["east"].Client.CoordinationV1().Leases(ns).Create(r.ctx(t), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k8s.LeaseName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--context", "east", "--vault-pki", "pki", "--namespace", ns,
			"--force", "--lock-wait", "0", "-o", "json")
		e := entryOf(t, parseRotateJSON(t, out), "east")
		if code != 1 || e.Outcome != k8s.OutcomeLocked || e.LockedBy != holder || !strings.Contains(errOut, "east: locked by bastion-7_beef (Lease meshpki-rotate in namespace "+ns) {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if after := r.versions(t, ns); after["east"] != before["east"] {
			t.Fatal("cacerts written while locked")
		}
	})

	t.Run("dry run decides and writes nothing", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "24h", "west")
		before := r.versions(t, ns)
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns, "--dry-run", "--renew-before", "30d")
		if code != 0 || out != "dry run, nothing changed: 3 clusters: 3 due (would rotate)\n" {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "east: due, would rotate: no cacerts Secret in namespace "+ns) || !strings.Contains(errOut, "west: due, would rotate: 23h") {
			t.Errorf("stderr:\n%s", errOut)
		}
		if after := r.versions(t, ns); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("dry run wrote: %v -> %v", before, after)
		}
		r.noLeases(t, ns)
	})

	t.Run("another root is refused unless allowed", func(t *testing.T) {
		ns := r.newNS()
		root2, bundles2 := filepath.Join(r.dir, "root2"), filepath.Join(r.dir, "bundles-root2")
		k8sMustRun(t, "root", "create", "--out", root2)
		k8sMustRun(t, "intermediate", "create", "--root-dir", root2, "--cluster", "north", "--out", bundles2)
		k8sMustRun(t, "install", "--kubeconfig", kc, "--context", "north", "--bundles", bundles2, "--namespace", ns)
		before := r.versions(t, ns)
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--context", "north", "--vault-pki", "pki", "--namespace", ns, "-o", "json")
		e := entryOf(t, parseRotateJSON(t, out), "north")
		if code != 1 || e.Outcome != k8s.OutcomeFailed || !strings.Contains(e.Error, "signed by another root") || !strings.Contains(e.Error, "--allow-new-root") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if after := r.versions(t, ns); after["north"] != before["north"] {
			t.Fatal("written despite another root")
		}
		code, out, errOut = k8sRun(t, "rotate", "--kubeconfig", kc, "--context", "north", "--vault-pki", "pki", "--namespace", ns, "--allow-new-root")
		if code != 0 || out != "1 cluster: 1 rotated\n" {
			t.Fatalf("allowed: exit %d\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("the CronJob example with Vault's Kubernetes auth", func(t *testing.T) {
		cronRotateArgs(t, r)
	})

	t.Run("bad usage exits 2 before any cluster or Vault", func(t *testing.T) {
		base := []string{"rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki"}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--renew-before", "400d"}, "not shorter than --ttl 365d"},
			{[]string{"--renew-before", "150%"}, "a percentage must be between 0 and 100"},
			{[]string{"--renew-before", "soon"}, "--renew-before: bad duration"},
			{[]string{"--dry-run", "--metrics-file", filepath.Join(r.dir, "m.prom")}, "a dry run does nothing"},
			{[]string{"--metrics-file", filepath.Join(r.dir, "m.txt")}, "only reads files ending in .prom"},
			{[]string{"--metrics-file", filepath.Join(r.dir, "nope", "m.prom")}, "no such file or directory"},
			{[]string{"--lock-wait", "-1s"}, "--lock-wait must be 0 or more"},
			{[]string{"--keep-backups", "0"}, "would delete the backup just made"},
			{[]string{"--format", "pkcs12"}, "unknown bundle format"},
			{[]string{"--context", "east"}, "exclude each other"},
		} {
			code, _, errOut := k8sRun(t, append(append([]string{}, base...), tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("%v: exit %d, want 2 and %q\n%s", tc.args, code, tc.want, errOut)
			}
		}
		out := k8sMustRun(t, "rotate", "--help")
		for _, want := range []string{"Examples:", "--renew-before", "--lock-wait", "--metrics-file", "Exit status"} {
			if !strings.Contains(out, want) {
				t.Errorf("help lacks %q", want)
			}
		}
	})

	t.Run("a revoked token touches no cluster", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "24h", "east", "west", "north")
		before := r.versions(t, ns)
		tok := policyToken(t, r.admin, "rotate-signer", `path "pki/root/sign-intermediate" { capabilities = ["update"] }`, true)
		if _, err := r.admin.Logical().WriteWithContext(r.ctx(t), "auth/token/revoke", map[string]any{"token": tok}); err != nil {
			t.Fatal(err)
		}
		vaultEnv(t, v, tok)
		mf := filepath.Join(r.dir, "revoked.prom")
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns,
			"--renew-before", "30d", "--metrics-file", mf, "-o", "json")
		rep := parseRotateJSON(t, out)
		if code != 1 || rep.OK || !strings.Contains(rep.Error, "invalid, expired or revoked") || !strings.Contains(errOut, "no cluster was touched") || len(rep.Clusters) != 3 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if after := r.versions(t, ns); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("written with a revoked token: %v -> %v", before, after)
		}
		r.noLeases(t, ns)
		for _, c := range []string{"east", "west", "north"} {
			if mustProm(t, mf, "meshpki_rotation_failures_total", c) != 1 || mustProm(t, mf, "meshpki_rotation_healthy", c) != 0 {
				t.Errorf("%s: the failure is not in the metrics", c)
			}
		}
		vaultEnv(t, v, v.Token)
	})

	t.Run("a sealed Vault touches no cluster", func(t *testing.T) {
		ns := r.newNS()
		r.install(t, ns, "24h", "east", "west", "north")
		before := r.versions(t, ns)
		if err := v.Seal(r.ctx(t)); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := k8sRun(t, "rotate", "--kubeconfig", kc, "--all-contexts", "--vault-pki", "pki", "--namespace", ns, "--renew-before", "30d")
		if code != 1 || out != "" || !strings.Contains(errOut, "Vault at "+v.Addr+" is sealed") || !strings.Contains(errOut, "no cluster was touched") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if after := r.versions(t, ns); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("written with Vault sealed: %v -> %v", before, after)
		}
		r.noLeases(t, ns)
	})
}

// cronRotateArgs runs deploy/cronjob.yaml's job as the pod would, short of a pod:
// its objects are accepted by a real API server, its ServiceAccount's token logs in
// to Vault through Vault's Kubernetes auth (Vault reviews the token with that API
// server), and its arguments rotate clusters whose user holds only deploy/rbac.yaml's
// meshpki-install and meshpki-rotate Roles.
func cronRotateArgs(t *testing.T, r *rotateRig) {
	ctx := r.ctx(t)
	east := r.clusters["east"]
	data, err := os.ReadFile("../../deploy/cronjob.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var job *batchv1.CronJob
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if !strings.Contains(doc, "kind:") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("deploy/cronjob.yaml: %v", err)
		}
		cs := east.Client
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *batchv1.CronJob:
			job = o
			_, err = cs.BatchV1().CronJobs(o.Namespace).Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		default:
			t.Fatalf("deploy/cronjob.yaml: unexpected %T", obj)
		}
		if err != nil {
			t.Fatalf("deploy/cronjob.yaml: the API server refuses %T: %v", obj, err)
		}
	}
	if job == nil {
		t.Fatal("deploy/cronjob.yaml has no CronJob")
	}
	pod := job.Spec.JobTemplate.Spec.Template.Spec
	c := pod.Containers[0]
	saName := pod.ServiceAccountName

	// Vault: Kubernetes auth at its default mount, reviewing tokens with east's API
	// server using the client's own token (the ClusterRoleBinding above allows it),
	// a role for the ServiceAccount, and a policy that may only sign intermediates.
	if err := r.admin.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.admin.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": r.env.Clusters[0].Host, "kubernetes_ca_cert": string(r.env.Clusters[0].CAData), "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.admin.Sys().PutPolicyWithContext(ctx, "meshpki-rotate", `path "pki/root/sign-intermediate" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.admin.Logical().WriteWithContext(ctx, "auth/kubernetes/role/meshpki-rotate", map[string]any{
		"bound_service_account_names": []string{saName}, "bound_service_account_namespaces": []string{job.Namespace},
		"token_policies": []string{"meshpki-rotate"}, "token_ttl": "15m",
	}); err != nil {
		t.Fatal(err)
	}
	tr, err := east.Client.CoreV1().ServiceAccounts(job.Namespace).CreateToken(ctx, saName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(r.dir, "sa-token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}

	// The mesh clusters: cacerts installed; the limited user holds only the Roles.
	ns := r.newNS()
	r.install(t, ns, "8760h", "east", "west", "north")
	for _, cl := range r.clusters {
		applyRoles(t, cl, ns, "meshpki-install", "meshpki-rotate")
	}

	// The job's arguments and environment, with this test's paths and addresses.
	var args []string
	for _, a := range c.Args {
		switch {
		case strings.HasPrefix(a, "--kubeconfig="):
			a = "--kubeconfig=" + r.env.LimitedKubeconfig
		case strings.HasPrefix(a, "--vault-sa-token-file="):
			a = "--vault-sa-token-file=" + tokenFile
		}
		args = append(args, a)
	}
	if len(c.Command) != 0 || len(args) == 0 || args[0] != "rotate" {
		t.Fatalf("the CronJob does not run meshpki rotate: %v %v", c.Command, c.Args)
	}
	vaultEnv(t, r.vault, "") // no token: the job logs in with its ServiceAccount
	for _, ev := range c.Env {
		if ev.Name != "VAULT_ADDR" {
			t.Fatalf("the CronJob sets %s, which this test does not know", ev.Name)
		}
	}
	code, out, errOut := k8sRun(t, append(args, "--namespace", ns, "--force")...)
	if code != 0 || out != "3 clusters: 3 rotated\n" {
		t.Fatalf("the CronJob's rotate: exit %d\n%s\n%s", code, out, errOut)
	}
	vaultEnv(t, r.vault, r.vault.Token)
	for name := range r.clusters {
		if b := r.backups(t, name, ns); len(b) != 1 {
			t.Errorf("%s: backups %v", name, b)
		}
	}
}

// applyRoles creates deploy/rbac.yaml's Roles and RoleBindings named names in ns,
// bound to testenv.LimitedUser, and waits until they apply.
func applyRoles(t *testing.T, cl *k8s.Cluster, ns string, names ...string) {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile("../../deploy/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	found := 0
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if !strings.Contains(doc, "kind:") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("deploy/rbac.yaml: %v", err)
		}
		switch o := obj.(type) {
		case *rbacv1.Role:
			if !want[o.Name] {
				continue
			}
			o.Namespace = ns
			_, err = cl.Client.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			if !want[o.Name] {
				continue
			}
			o.Namespace = ns
			o.Subjects = []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: testenv.LimitedUser}}
			_, err = cl.Client.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		found++
	}
	if found != 2*len(names) {
		t.Fatalf("deploy/rbac.yaml: found %d Roles and RoleBindings named %v", found, names)
	}
	// RBAC is read through an informer: wait until a rule of the last Role applies.
	ra := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Name: k8s.LeaseName}
	if names[len(names)-1] != "meshpki-rotate" {
		ra = &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Resource: "secrets", Name: k8s.SecretName}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sar, err := cl.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: testenv.LimitedUser, ResourceAttributes: ra}}, metav1.CreateOptions{})
		if err == nil && sar.Status.Allowed {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: RBAC %v did not take effect", cl.Name, names)
}

func ptr[T any](v T) *T { return &v }
