package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
)

func getSecret(t testing.TB, cl *Cluster, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := cl.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cluster %s: get %s/%s: %v", cl.Name, ns, name, err)
	}
	return s
}

func mustInstall(t testing.TB, cl *Cluster, files map[string][]byte, opts InstallOptions) *InstallResult {
	t.Helper()
	res, err := Install(testContext(t), cl, files, opts)
	if err != nil {
		t.Fatalf("install into %s: %v", cl.Name, err)
	}
	return res
}

// noKeyMaterial fails if v's printed or JSON form carries a private key.
func noKeyMaterial(t testing.TB, what string, s string) {
	t.Helper()
	if strings.Contains(s, "PRIVATE KEY") {
		t.Fatalf("%s contains key material:\n%s", what, s)
	}
}

func TestInstallThreeClustersConcurrently(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	bundles := map[string]map[string][]byte{}
	for _, cl := range clusters {
		_, bundles[cl.Name] = mint(t, nil, cl.Name)
	}
	var finished atomic.Int32
	results := Each(testContext(t), clusters, 3, func(ctx context.Context, cl *Cluster) (*InstallResult, error) {
		return Install(ctx, cl, bundles[cl.Name], InstallOptions{Namespace: ns})
	}, func(Result[*InstallResult]) { finished.Add(1) })
	if finished.Load() != 3 {
		t.Fatalf("done called %d times, want 3", finished.Load())
	}
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Cluster.Name, r.Err)
		}
		res := r.Value
		if res.Action != ActionCreated || !res.NamespaceCreated || res.Before != nil || res.Backup != "" {
			t.Errorf("%s: got %+v, want created in a new namespace without backup", r.Cluster.Name, res)
		}
		s := getSecret(t, r.Cluster, ns, SecretName)
		if !maps.EqualFunc(s.Data, bundles[r.Cluster.Name], bytes.Equal) {
			t.Errorf("%s: Secret data differs from the bundle", r.Cluster.Name)
		}
		if _, ok := s.Data[ca.ReservedKey]; ok {
			t.Errorf("%s: reserved key written", r.Cluster.Name)
		}
		if s.Labels[LabelManagedBy] != ManagedBy || s.Type != corev1.SecretTypeOpaque {
			t.Errorf("%s: labels %v type %s", r.Cluster.Name, s.Labels, s.Type)
		}
		if res.ResourceVersion != s.ResourceVersion {
			t.Errorf("%s: result resourceVersion %s, Secret has %s", r.Cluster.Name, res.ResourceVersion, s.ResourceVersion)
		}
		noKeyMaterial(t, "result", fmt.Sprintf("%+v %+v %+v", res, res.After, res.Before))
	}
	// Status of the whole mesh: all fine, one root.
	statuses := Each(testContext(t), clusters, 0, func(ctx context.Context, cl *Cluster) (*ClusterStatus, error) {
		return Status(ctx, cl, StatusOptions{Namespace: ns})
	}, nil)
	var names []string
	var reps []*ca.Report
	for _, r := range statuses {
		if r.Err != nil || r.Value.Verdict != VerdictOK {
			t.Fatalf("%s: status %+v, %v", r.Cluster.Name, r.Value, r.Err)
		}
		names, reps = append(names, r.Cluster.Name), append(reps, r.Value.Report)
	}
	if p := ca.SameRoots(names, reps); p != nil {
		t.Fatalf("roots differ: %v", p)
	}
}

func TestInstalledBundlesHandshakeAcrossClusters(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	var readBack []*ca.Bundle
	for _, cl := range clusters[:2] {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, InstallOptions{Namespace: ns})
		b, _, err := ca.ParseBundle(SecretFiles(getSecret(t, cl, ns, SecretName)), ca.VerifyOptions{})
		if err != nil {
			t.Fatalf("%s: bundle read back from the Secret: %v", cl.Name, err)
		}
		readBack = append(readBack, b)
	}
	server, err := readBack[0].IssueWorkload(ca.SPIFFEID("cluster.local", "default", "server"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := readBack[1].IssueWorkload(ca.SPIFFEID("cluster.local", "default", "client"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Handshake(testContext(t), server, client); err != nil {
		t.Fatalf("%s server, %s client: %v", clusters[0].Name, clusters[1].Name, err)
	}
	if err := ca.Handshake(testContext(t), client, server); err != nil {
		t.Fatalf("%s server, %s client: %v", clusters[1].Name, clusters[0].Name, err)
	}
}

func TestInstallIdempotentRerunWritesNothing(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)
	first := mustInstall(t, cl, files, InstallOptions{Namespace: ns})
	rv := getSecret(t, cl, ns, SecretName).ResourceVersion
	for i := range 2 {
		res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, RestartIstiod: true})
		if res.Action != ActionUnchanged || res.Backup != "" || len(res.ChangedFiles) != 0 || res.IstiodRestarted != nil {
			t.Fatalf("rerun %d: %+v, want unchanged with no backup and no restart", i, res)
		}
		if got := getSecret(t, cl, ns, SecretName).ResourceVersion; got != rv || res.ResourceVersion != rv {
			t.Fatalf("rerun %d wrote: resourceVersion %s -> %s (result says %s)", i, rv, got, res.ResourceVersion)
		}
	}
	if first.ResourceVersion != rv {
		t.Fatalf("first install reported resourceVersion %s, Secret has %s", first.ResourceVersion, rv)
	}
	if b, err := Backups(testContext(t), cl, ns); err != nil || len(b) != 0 {
		t.Fatalf("backups after unchanged reruns: %v, %v", b, err)
	}
}

func TestInstallUpdateKeepsBackupOfOldSecret(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[1]
	ns := testNamespace(t)
	oldBundle, oldFiles := mint(t, nil, cl.Name)
	mustInstall(t, cl, oldFiles, InstallOptions{Namespace: ns})
	old := getSecret(t, cl, ns, SecretName)
	newBundle, newFiles := mint(t, nil, cl.Name)
	now := time.Date(2026, 11, 26, 7, 41, 27, 0, time.UTC)
	res := mustInstall(t, cl, newFiles, InstallOptions{Namespace: ns, Now: func() time.Time { return now }})
	if res.Action != ActionUpdated || res.Attempts != 1 {
		t.Fatalf("got %+v, want updated in one attempt", res)
	}
	if res.Before == nil || res.Before.Serial != ca.FormatSerial(oldBundle.Cert) || res.After.Serial != ca.FormatSerial(newBundle.Cert) {
		t.Fatalf("before/after serials: %+v -> %+v", res.Before, res.After)
	}
	if want := []string{ca.CACertFile, ca.CAKeyFile, ca.CertChainFile}; strings.Join(res.ChangedFiles, ",") != strings.Join(want, ",") {
		t.Errorf("changed files %v, want %v", res.ChangedFiles, want)
	}
	if res.Backup != "cacerts-backup-20261126-074127" {
		t.Fatalf("backup name %q", res.Backup)
	}
	backup := getSecret(t, cl, ns, res.Backup)
	if !maps.EqualFunc(backup.Data, old.Data, bytes.Equal) || backup.Type != old.Type {
		t.Fatal("backup differs from the Secret it replaced")
	}
	if backup.Labels[LabelBackupOf] != SecretName || backup.Annotations[AnnotationBackupResourceVersion] != old.ResourceVersion {
		t.Fatalf("backup labels %v annotations %v", backup.Labels, backup.Annotations)
	}
	if cur := getSecret(t, cl, ns, SecretName); !maps.EqualFunc(cur.Data, newFiles, bytes.Equal) {
		t.Fatal("cacerts does not hold the new bundle")
	}

	// Five more updates, the same second and later: names stay unique, and only
	// the newest KeepBackups (2 here) remain.
	var made []string
	for i := range 5 {
		_, files := mint(t, nil, cl.Name)
		at := now.Add(time.Duration(i/2) * time.Second)
		res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, KeepBackups: 2, Now: func() time.Time { return at }})
		made = append(made, res.Backup)
	}
	got, err := Backups(testContext(t), cl, ns)
	if err != nil {
		t.Fatal(err)
	}
	if want := made[3:]; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("backups kept %v, want the newest two of %v", got, made)
	}
}

// More updates within one second than KeepBackups: pruning frees the second's
// first name, and a backup that took it again sorted first and was pruned at
// once, so the copy of the cacerts just replaced was lost (seen in a root
// rotation step: a CRL spread and the switch in the same second). Each backup
// now takes the number above the highest of its second.
func TestInstallPruneKeepsNewestWithinOneSecond(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[1]
	ns := testNamespace(t)
	at := time.Now()
	now := func() time.Time { return at }
	_, files := mint(t, nil, cl.Name)
	mustInstall(t, cl, files, InstallOptions{Namespace: ns, Now: now})
	var made []string
	for i := range 6 {
		replaced := getSecret(t, cl, ns, SecretName)
		_, files := mint(t, nil, cl.Name)
		res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, KeepBackups: 2, Now: now})
		if res.Backup == "" || slices.Contains(res.PrunedBackups, res.Backup) {
			t.Fatalf("update %d: backup %q pruned right after it was made (pruned %v)", i, res.Backup, res.PrunedBackups)
		}
		if b := getSecret(t, cl, ns, res.Backup); !maps.EqualFunc(b.Data, replaced.Data, bytes.Equal) {
			t.Fatalf("update %d: backup %s differs from the cacerts it replaced", i, res.Backup)
		}
		made = append(made, res.Backup)
	}
	got, err := Backups(testContext(t), cl, ns)
	if err != nil {
		t.Fatal(err)
	}
	if want := made[4:]; !slices.Equal(got, want) {
		t.Fatalf("backups kept %v, want the newest two of %v", got, made)
	}
}

// Backups made by a host whose clock ran ahead carry later times in their names
// than the backup made now: pruning must go by the API server's creation time, or
// it deletes the only copy of the cacerts just replaced.
func TestInstallPruneKeepsBackupJustMadeDespiteClockSkew(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, oldFiles := mint(t, nil, cl.Name)
	mustInstall(t, cl, oldFiles, InstallOptions{Namespace: ns})
	old := getSecret(t, cl, ns, SecretName)
	future := time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 3 {
		b := NewBackup(old, future.Add(time.Duration(i)*time.Second), 0)
		if _, err := cl.Client.CoreV1().Secrets(ns).Create(testContext(t), b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // a later creation second than the three above
	_, newFiles := mint(t, nil, cl.Name)
	res := mustInstall(t, cl, newFiles, InstallOptions{Namespace: ns, KeepBackups: 3})
	if res.Backup == "" || slices.Contains(res.PrunedBackups, res.Backup) {
		t.Fatalf("backup %q pruned right after it was made (pruned %v)", res.Backup, res.PrunedBackups)
	}
	backup := getSecret(t, cl, ns, res.Backup)
	if !maps.EqualFunc(backup.Data, old.Data, bytes.Equal) {
		t.Fatal("backup differs from the Secret it replaced")
	}
	if len(res.PrunedBackups) != 1 || res.PrunedBackups[0] != BackupName(future, 0) {
		t.Fatalf("pruned %v, want only the oldest-created %s", res.PrunedBackups, BackupName(future, 0))
	}
}

// A change of some files (Rebase: what SyncCRLs writes) racing a rotation: the
// conflict makes Install read again and Rebase on the rotated cacerts, so the new
// CA stays; the old files read first are never written back.
func TestInstallRebaseKeepsRacingRotation(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[1]
	ns := testNamespace(t)
	_, first := mint(t, nil, cl.Name)
	mustInstall(t, cl, first, InstallOptions{Namespace: ns})
	_, rotated := mint(t, nil, cl.Name)
	opts := InstallOptions{Namespace: ns,
		Rebase: func(installed map[string][]byte) (map[string][]byte, error) {
			files := maps.Clone(installed)
			files["note.txt"] = []byte("rebased")
			return files, nil
		},
		beforeWrite: func(ctx context.Context, attempt int) error {
			if attempt != 1 {
				return nil
			}
			_, err := Install(ctx, cl, rotated, InstallOptions{Namespace: ns})
			return err
		}}
	res := mustInstall(t, cl, first, opts)
	if res.Attempts != 2 {
		t.Fatalf("attempts %d, want a second one after the conflict", res.Attempts)
	}
	cur := getSecret(t, cl, ns, SecretName)
	if !bytes.Equal(cur.Data[ca.CACertFile], rotated[ca.CACertFile]) || string(cur.Data["note.txt"]) != "rebased" {
		t.Fatal("the write undid the racing rotation, or lost its own change")
	}
	// cacerts deleted meanwhile: not created again from the first read.
	if err := cl.Client.CoreV1().Secrets(ns).Delete(testContext(t), SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.beforeWrite = nil
	if _, err := Install(testContext(t), cl, first, opts); !errors.Is(err, ErrSecretGone) {
		t.Fatalf("Rebase onto a deleted cacerts: %v, want ErrSecretGone", err)
	}
}

func TestInstallConflictRereadsAndDecidesAgain(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[2]
	ns := testNamespace(t)
	_, first := mint(t, nil, cl.Name)
	mustInstall(t, cl, first, InstallOptions{Namespace: ns})
	_, racing := mint(t, nil, cl.Name)
	_, ours := mint(t, nil, cl.Name)

	// Another writer updates cacerts between Install's read and its write.
	var calls []int
	opts := InstallOptions{Namespace: ns, beforeWrite: func(ctx context.Context, attempt int) error {
		calls = append(calls, attempt)
		if attempt != 1 {
			return nil
		}
		s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Data = racing
		_, err = cl.Client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err
	}}
	res := mustInstall(t, cl, ours, opts)
	if res.Action != ActionUpdated || res.Attempts != 2 || fmt.Sprint(calls) != "[1 2]" {
		t.Fatalf("got %+v (hook calls %v), want updated on the second attempt", res, calls)
	}
	if cur := getSecret(t, cl, ns, SecretName); !maps.EqualFunc(cur.Data, ours, bytes.Equal) {
		t.Fatal("cacerts does not hold our bundle")
	}
	// The racing writer's bundle was read on the second attempt and backed up:
	// nothing is lost.
	if b := getSecret(t, cl, ns, res.Backup); !maps.EqualFunc(b.Data, racing, bytes.Equal) {
		t.Fatal("the backup made on the second attempt is not the racing writer's bundle")
	}

	// A racing writer that installs the very bundle we want: the second attempt
	// finds it unchanged.
	_, same := mint(t, nil, cl.Name)
	opts.beforeWrite = func(ctx context.Context, attempt int) error {
		if attempt != 1 {
			return nil
		}
		s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Data = same
		_, err = cl.Client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err
	}
	if res := mustInstall(t, cl, same, opts); res.Action != ActionUnchanged || res.Attempts != 2 {
		t.Fatalf("got %+v, want unchanged on the second attempt", res)
	}

	// A racing creator: the Secret appears between our NotFound and our create.
	ns2 := testNamespace(t)
	opts = InstallOptions{Namespace: ns2, beforeWrite: func(ctx context.Context, attempt int) error {
		if attempt != 1 {
			return nil
		}
		sec, err := NewSecret(ns2, racing)
		if err != nil {
			return err
		}
		if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns2}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err = cl.Client.CoreV1().Secrets(ns2).Create(ctx, sec, metav1.CreateOptions{})
		return err
	}}
	res = mustInstall(t, cl, ours, opts)
	if res.Action != ActionUpdated || res.Attempts != 2 || res.Backup == "" {
		t.Fatalf("got %+v, want updated (with a backup of the racing creator's bundle) on the second attempt", res)
	}
}

func TestInstallRefusesNewRootUnlessAllowed(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)
	mustInstall(t, cl, files, InstallOptions{Namespace: ns})
	rv := getSecret(t, cl, ns, SecretName).ResourceVersion
	_, other := mint(t, newRoot(t), cl.Name)
	_, err := Install(testContext(t), cl, other, InstallOptions{Namespace: ns})
	if !errors.Is(err, ErrRootChanged) || !strings.Contains(err.Error(), "cluster "+cl.Name) {
		t.Fatalf("got %v, want ErrRootChanged naming the cluster", err)
	}
	if got := getSecret(t, cl, ns, SecretName).ResourceVersion; got != rv {
		t.Fatal("a refused install wrote cacerts")
	}
	if b, _ := Backups(testContext(t), cl, ns); len(b) != 0 {
		t.Fatalf("a refused install made backups %v", b)
	}
	res := mustInstall(t, cl, other, InstallOptions{Namespace: ns, AllowNewRoot: true})
	if res.Action != ActionUpdated || res.Backup == "" {
		t.Fatalf("with AllowNewRoot: %+v", res)
	}
}

func TestInstallRefusesBadBundleBeforeSending(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, a := mint(t, nil, cl.Name)
	_, b := mint(t, nil, cl.Name)
	a[ca.CAKeyFile] = b[ca.CAKeyFile] // the key of another certificate
	_, err := Install(testContext(t), cl, a, InstallOptions{Namespace: ns})
	if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "key-mismatch") {
		t.Fatalf("got %v, want ErrBundle for a mismatched key", err)
	}
	noKeyMaterial(t, "error", err.Error())
	if _, err := cl.Client.CoreV1().Namespaces().Get(testContext(t), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace created for a bundle that failed verification: %v", err)
	}
	// The reserved key is refused too, even next to a good bundle.
	_, good := mint(t, nil, cl.Name)
	good[ca.ReservedKey] = []byte("true")
	if _, err := Install(testContext(t), cl, good, InstallOptions{Namespace: ns}); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), ca.ReservedKey) {
		t.Fatalf("got %v, want a refusal of %s", err, ca.ReservedKey)
	}
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	env, clusters := realClusters(t, false)
	cl := clusters[1]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)

	// Nothing there: would create the namespace and the Secret.
	res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, DryRun: true})
	if res.Action != ActionCreated || !res.NamespaceCreated || !res.DryRun {
		t.Fatalf("dry run into a missing namespace: %+v", res)
	}
	if _, err := cl.Client.CoreV1().Namespaces().Get(testContext(t), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created the namespace: %v", err)
	}

	// Namespace there, Secret not: the server validates a dry-run create.
	if _, err := cl.Client.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res = mustInstall(t, cl, files, InstallOptions{Namespace: ns, DryRun: true})
	if res.Action != ActionCreated || res.NamespaceCreated {
		t.Fatalf("dry run create: %+v", res)
	}
	if _, err := cl.Client.CoreV1().Secrets(ns).Get(testContext(t), SecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created cacerts: %v", err)
	}

	// Installed: a dry-run update reports before and after, and writes nothing
	// (no backup, no restart).
	mustInstall(t, cl, files, InstallOptions{Namespace: ns})
	createIstiod(t, cl, ns)
	before := getSecret(t, cl, ns, SecretName)
	newBundle, newFiles := mint(t, nil, cl.Name)
	res = mustInstall(t, cl, newFiles, InstallOptions{Namespace: ns, DryRun: true, RestartIstiod: true})
	if res.Action != ActionUpdated || res.Before == nil || res.After.Serial != ca.FormatSerial(newBundle.Cert) || res.Backup == "" {
		t.Fatalf("dry run update: %+v", res)
	}
	if fmt.Sprint(res.IstiodRestarted) != "[istiod]" {
		t.Fatalf("dry run restart: %v", res.IstiodRestarted)
	}
	after := getSecret(t, cl, ns, SecretName)
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatal("dry run updated cacerts")
	}
	if b, _ := Backups(testContext(t), cl, ns); len(b) != 0 {
		t.Fatalf("dry run made backups %v", b)
	}
	dep, err := cl.Client.AppsV1().Deployments(ns).Get(testContext(t), "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dep.Spec.Template.Annotations[RestartedAtAnnotation]; ok {
		t.Fatal("dry run restarted istiod")
	}
	_ = env
}

func createIstiod(t testing.TB, cl *Cluster, ns string) {
	t.Helper()
	labels := map[string]string{"app": "istiod"}
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "istio/pilot:1.18.0"}}},
			},
		},
	}
	if _, err := cl.Client.AppsV1().Deployments(ns).Create(testContext(t), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestInstallRestartsIstiod(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[2]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)
	// No istiod yet: a warning, not a failure.
	res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, RestartIstiod: true})
	if len(res.IstiodRestarted) != 0 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no istiod") {
		t.Fatalf("without istiod: %+v", res)
	}
	createIstiod(t, cl, ns)
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	_, files = mint(t, nil, cl.Name)
	res = mustInstall(t, cl, files, InstallOptions{Namespace: ns, RestartIstiod: true, Now: func() time.Time { return now }})
	if fmt.Sprint(res.IstiodRestarted) != "[istiod]" {
		t.Fatalf("restarted %v", res.IstiodRestarted)
	}
	dep, err := cl.Client.AppsV1().Deployments(ns).Get(testContext(t), "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Annotations[RestartedAtAnnotation]; got != "2026-11-26T08:00:00Z" {
		t.Fatalf("pod template annotation %s = %q", RestartedAtAnnotation, got)
	}
}

// TestInstallClusterDownFailsAlone stops one apiserver: that cluster fails with an
// error naming it, the others install.
func TestInstallClusterDownFailsAlone(t *testing.T) {
	env, clusters := realClusters(t, false)
	ns := testNamespace(t)
	down := env.Clusters[1]
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := down.Start(context.Background()); err != nil {
			t.Errorf("restart %s: %v", down.Name, err)
		}
	})
	results := Each(testContext(t), clusters, 3, func(ctx context.Context, cl *Cluster) (*InstallResult, error) {
		_, files := mint(t, nil, cl.Name)
		return Install(ctx, cl, files, InstallOptions{Namespace: ns})
	}, nil)
	for _, r := range results {
		if r.Cluster.Name == down.Name {
			if r.Err == nil || !strings.Contains(r.Err.Error(), "cluster "+down.Name) || !strings.Contains(r.Err.Error(), "connection refused") {
				t.Errorf("down cluster: %v, want a connection error naming it", r.Err)
			}
			continue
		}
		if r.Err != nil || r.Value.Action != ActionCreated {
			t.Errorf("%s: %+v, %v", r.Cluster.Name, r.Value, r.Err)
		}
	}
}

// TestInstallForbidden: a user without the Role gets a clear message naming the
// user, the verb, the namespace and the cluster; with deploy/rbac.yaml's Roles
// bound it can install, prune and restart.
func TestInstallForbidden(t *testing.T) {
	_, admins := realClusters(t, false)
	_, limited := realClusters(t, true)
	cl, admin := limited[0], admins[0]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)

	_, err := Install(testContext(t), cl, files, InstallOptions{Namespace: ns})
	var fe *ForbiddenError
	if !errors.As(err, &fe) || !apierrors.IsForbidden(err) {
		t.Fatalf("got %v, want a ForbiddenError wrapping the API's answer", err)
	}
	want := fmt.Sprintf(`forbidden: user %q cannot get secrets in namespace %s of cluster %s`, testenv.LimitedUser, ns, cl.Name)
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %q, want it to start with %q", err, want)
	}
	st, err := Status(testContext(t), cl, StatusOptions{Namespace: ns})
	if !errors.As(err, &fe) || st.Verdict != VerdictError || !strings.Contains(st.Error, "cannot get secrets") {
		t.Fatalf("status as limited user: %+v, %v", st, err)
	}

	// Read-only: may get cacerts, not update it.
	mustInstall(t, admin, files, InstallOptions{Namespace: ns})
	applyRBAC(t, admin, ns, "meshpki-status")
	if st, err := Status(testContext(t), cl, StatusOptions{Namespace: ns}); err != nil || st.Verdict != VerdictOK {
		t.Fatalf("status with meshpki-status: %+v, %v", st, err)
	}
	_, newFiles := mint(t, nil, cl.Name)
	_, err = Install(testContext(t), cl, newFiles, InstallOptions{Namespace: ns})
	if want := fmt.Sprintf(`forbidden: user %q cannot create secrets in namespace %s of cluster %s`, testenv.LimitedUser, ns, cl.Name); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want %q (the backup is made first)", err, want)
	}

	// deploy/rbac.yaml's install Role is enough for everything install does.
	applyRBAC(t, admin, ns, "meshpki-install")
	createIstiod(t, admin, ns)
	for range 3 {
		_, newFiles = mint(t, nil, cl.Name)
		res, err := Install(testContext(t), cl, newFiles, InstallOptions{Namespace: ns, KeepBackups: 1, RestartIstiod: true})
		if err != nil || res.Action != ActionUpdated || len(res.Warnings) != 0 || len(res.IstiodRestarted) != 1 {
			t.Fatalf("with meshpki-install: %+v, %v", res, err)
		}
	}
	if b, _ := Backups(testContext(t), admin, ns); len(b) != 1 {
		t.Fatalf("backups %v, want 1 after pruning", b)
	}
}

// applyRBAC creates deploy/rbac.yaml's Role and RoleBinding called name in ns,
// bound to testenv.LimitedUser.
func applyRBAC(t testing.TB, admin *Cluster, ns, name string) {
	t.Helper()
	if err := testenv.ApplyRBAC(testContext(t), admin.Client, "../deploy/rbac.yaml", ns, name); err != nil {
		t.Fatal(err)
	}
}

// TestInstallReplacesSelfSignedCA: a cacerts istiod made for its own self-signed CA
// (marked istio-generated) is another root: refused unless AllowNewRoot, and the
// marker is gone after the install.
func TestInstallReplacesSelfSignedCA(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, selfSigned := mint(t, newRoot(t), cl.Name)
	selfSigned[ca.ReservedKey] = []byte("")
	if _, err := cl.Client.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: ns}, Data: selfSigned}
	if _, err := cl.Client.CoreV1().Secrets(ns).Create(testContext(t), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, files := mint(t, nil, cl.Name)
	if _, err := Install(testContext(t), cl, files, InstallOptions{Namespace: ns}); !errors.Is(err, ErrRootChanged) {
		t.Fatalf("got %v, want ErrRootChanged", err)
	}
	res := mustInstall(t, cl, files, InstallOptions{Namespace: ns, AllowNewRoot: true})
	if res.Action != ActionUpdated || !slices.Contains(res.ChangedFiles, ca.ReservedKey) {
		t.Fatalf("got %+v", res)
	}
	s := getSecret(t, cl, ns, SecretName)
	if _, ok := s.Data[ca.ReservedKey]; ok || !maps.EqualFunc(s.Data, files, bytes.Equal) {
		t.Fatalf("cacerts keys after install: %v", slices.Sorted(maps.Keys(s.Data)))
	}
	if b := getSecret(t, cl, ns, res.Backup); !maps.EqualFunc(b.Data, selfSigned, bytes.Equal) {
		t.Fatal("backup is not the self-signed cacerts")
	}
}
