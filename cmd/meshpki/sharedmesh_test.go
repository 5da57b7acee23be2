package main

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// seqMesh is one east/west/north mesh of real kube-apiservers shared, one after
// another, by tests that do not run in parallel and touch only Secrets, ConfigMaps
// and Leases (in istio-system, or in namespaces of their own): starting three
// apiservers costs about 10 CPU-seconds, which each such test used to pay. TestMain
// stops it.
var seqMesh = testenv.NewK8sPool("east", "west", "north")

// parallelMeshes recycles the clusters of the tests that run in parallel.
var parallelMeshes testenv.K8sRecycler

// parallelMesh returns clusters named names for t alone until it ends; then they
// are reset (testenv.K8s.Reset) for the next parallel test that asks for the same
// names.
func parallelMesh(t *testing.T, names ...string) *testenv.K8s {
	t.Helper()
	return parallelMeshes.Get(t, names...)
}

// sharedMesh returns seqMesh for a test that must not call t.Parallel (it is
// marked so, and two tests on the mesh at once would see each other's Secrets).
// When the test ends, every Secret, ConfigMap and Lease it left in istio-system is
// deleted, so the next test finds the clusters as new.
func sharedMesh(t *testing.T) *testenv.K8s {
	t.Helper()
	env := seqMesh.Get(t)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, c := range env.Clusters {
			cs, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
			if err != nil {
				t.Errorf("shared mesh, %s: %v", c.Name, err)
				continue
			}
			ns, all := k8s.DefaultNamespace, metav1.ListOptions{}
			for what, err := range map[string]error{
				"secrets":    cs.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
				"configmaps": cs.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
				"leases":     cs.CoordinationV1().Leases(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
			} {
				if err != nil {
					t.Errorf("shared mesh, %s: deleting the %s left in %s: %v", c.Name, what, ns, err)
				}
			}
		}
	})
	return env
}
