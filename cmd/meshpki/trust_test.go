package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	certificatesv1beta1 "k8s.io/api/certificates/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// TestTrustWhereIstiodPublishes (issue 27), on a real kube-apiserver without
// istiod, the objects written by hand as istiod and Istio's charts write them:
// status reads the roots from the ClusterTrustBundle when istiod's Deployment says
// it publishes there (ENABLE_CLUSTER_TRUST_BUNDLE_API; v1beta1, as istiod writes
// it), and not from a stale ConfigMap; from the ConfigMap otherwise, and not from a
// stale bundle; it is "loaded" only while the bundle holds cacerts' roots. With
// CRLs on, it warns where they are not published (that mode) or not checked
// (ambient's ztunnel without CRL_PATH). TestIstiodInstallAndRotate,
// TestIstiodMergeMeshes and TestRootRotateWaitsForIstiod run real istiods in
// that mode.
func TestTrustWhereIstiodPublishes(t *testing.T) {
	t.Parallel()
	env := parallelMesh(t, "east")
	cs := adminClients(t, env)["east"]
	ctx := context.Background()
	kc := env.Kubeconfig
	dir := t.TempDir()
	rootA, rootB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	mustRun(t, "root", "create", "--out", rootA)
	mustRun(t, "root", "create", "--out", rootB)
	mustRun(t, "intermediate", "create", "--root-dir", rootA, "--cluster", "east", "--out", filepath.Join(dir, "bundles"))
	mustRun(t, "install", "--kubeconfig", kc, "--all-contexts", "--bundles", filepath.Join(dir, "bundles"))
	pemA := must(os.ReadFile(filepath.Join(rootA, ca.RootCertFile)))
	pemB := must(os.ReadFile(filepath.Join(rootB, ca.RootCertFile)))
	ns := k8s.DefaultNamespace

	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "istiod"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "istiod"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "istio/pilot:1.31.0",
					Env: []corev1.EnvVar{{Name: "ENABLE_CLUSTER_TRUST_BUNDLE_API", Value: "true"}, {Name: "PILOT_CRL_CONFIGMAP", Value: "mesh-crl"}}}}}},
		},
	}
	dep = must(cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}))
	type status struct {
		Clusters []struct {
			Istiod struct{ State, Source, Reason string }
			Istio  k8s.IstioSetup
			Report struct{ Problems []ca.Problem }
		}
	}
	read := func(want k8s.IstiodState, source string) status {
		t.Helper()
		_, out, errOut := meshpki(t, "status", "--kubeconfig", kc, "--all-contexts", "--istiod-grace", "1ms", "-o", "json")
		var st status
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Clusters) != 1 {
			t.Fatalf("status -o json: %v\n%s\n%s", err, out, errOut)
		}
		if i := st.Clusters[0].Istiod; i.State != string(want) || i.Source != source {
			t.Fatalf("istiod %s read from %q (%s), want %s from %q", i.State, i.Source, i.Reason, want, source)
		}
		return st
	}
	// Deployment says ClusterTrustBundle, none written yet: no istiod publishes.
	st := read(k8s.IstiodAbsent, k8s.SourceClusterTrustBundle)
	if !strings.Contains(st.Clusters[0].Istiod.Reason, "ClusterTrustBundle") || st.Clusters[0].Istio.CRLConfigMap != "" {
		t.Fatalf("reason %q, CRL ConfigMap %q", st.Clusters[0].Istiod.Reason, st.Clusters[0].Istio.CRLConfigMap)
	}
	ctb := &certificatesv1beta1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: k8s.TrustBundleName},
		Spec: certificatesv1beta1.ClusterTrustBundleSpec{SignerName: "istio.io/istiod-ca", TrustBundle: string(pemA)}}
	ctb = must(cs.CertificatesV1beta1().ClusterTrustBundles().Create(ctx, ctb, metav1.CreateOptions{}))
	stale := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: k8s.RootConfigMap, Namespace: ns}, Data: map[string]string{k8s.RootConfigMapKey: string(pemB)}}
	stale = must(cs.CoreV1().ConfigMaps(ns).Create(ctx, stale, metav1.CreateOptions{}))
	read(k8s.IstiodLoaded, k8s.SourceClusterTrustBundle) // the stale ConfigMap (root B) is not read
	// The bundle holds other roots than cacerts: not loaded (a gate would wait).
	ctb.Spec.TrustBundle = string(pemB)
	ctb = must(cs.CertificatesV1beta1().ClusterTrustBundles().Update(ctx, ctb, metav1.UpdateOptions{}))
	read(k8s.IstiodRefused, k8s.SourceClusterTrustBundle)
	// Back to ConfigMap mode: the ConfigMap is read, and the stale bundle is not.
	dep.Spec.Template.Spec.Containers[0].Env = nil
	dep = must(cs.AppsV1().Deployments(ns).Update(ctx, dep, metav1.UpdateOptions{}))
	read(k8s.IstiodRefused, k8s.SourceConfigMap)
	stale.Data[k8s.RootConfigMapKey] = string(pemA)
	must(cs.CoreV1().ConfigMaps(ns).Update(ctx, stale, metav1.UpdateOptions{}))
	st = read(k8s.IstiodLoaded, k8s.SourceConfigMap)
	if st.Clusters[0].Istio.CRLConfigMap != k8s.CRLConfigMap {
		t.Fatalf("CRL ConfigMap %q, want the default", st.Clusters[0].Istio.CRLConfigMap)
	}

	// CRLs on, ClusterTrustBundle mode: not published. Ambient's ztunnel without
	// CRL_PATH: not checked.
	mustRun(t, "crl", "sync", "--kubeconfig", kc, "--all-contexts", "--root-dir", rootA)
	dep.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "ENABLE_CLUSTER_TRUST_BUNDLE_API", Value: "1"}}
	must(cs.AppsV1().Deployments(ns).Update(ctx, dep, metav1.UpdateOptions{}))
	ctb.Spec.TrustBundle = string(pemA)
	must(cs.CertificatesV1beta1().ClusterTrustBundles().Update(ctx, ctb, metav1.UpdateOptions{}))
	zt := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Image: "docker.io/istio/ztunnel:1.29.1-distroless"}}}}}}
	must(cs.AppsV1().DaemonSets(ns).Create(ctx, zt, metav1.CreateOptions{}))
	st = read(k8s.IstiodLoaded, k8s.SourceClusterTrustBundle)
	checks := map[string]bool{}
	for _, p := range st.Clusters[0].Report.Problems {
		checks[p.Check] = true
	}
	if z := st.Clusters[0].Istio.Ztunnel; z == nil || z.Release != "1.29.1" || z.CRLCheck || !checks["crl-not-published"] || !checks["crl-ztunnel"] {
		t.Fatalf("ztunnel %+v, warnings %v: want ztunnel 1.29.1 without CRL check, crl-not-published and crl-ztunnel", z, checks)
	}
	code, out, _ := meshpki(t, "status", "--kubeconfig", kc, "--all-contexts", "--strict")
	if code != 1 || !strings.Contains(out, "loaded (ctb)") {
		t.Fatalf("status --strict: exit %d, want 1 (warnings) and the ISTIOD cell read from the bundle:\n%s", code, out)
	}
}
