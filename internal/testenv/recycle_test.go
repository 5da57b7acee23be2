package testenv

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestRecycledClustersAreReset: a K8s handed back by one test reaches the next one
// that asks for the same names without what the first wrote (cacerts, published
// ConfigMaps, locks, RBAC granted), with its stopped apiserver running again, and
// with what kube-apiserver made for itself intact.
func TestRecycledClustersAreReset(t *testing.T) {
	var r K8sRecycler
	t.Cleanup(r.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var first *K8s
	t.Run("writer", func(t *testing.T) {
		first = r.Get(t, "east")
		c := first.Clusters[0]
		cs := clientFor(t, c)
		ns := "istio-system"
		create := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		create(err)
		meta := metav1.ObjectMeta{Name: "cacerts", Namespace: ns}
		_, err = cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: meta}, metav1.CreateOptions{})
		create(err)
		for _, n := range []string{ns, "default", "kube-system"} {
			_, err = cs.CoreV1().ConfigMaps(n).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio-ca-root-cert", Namespace: n}}, metav1.CreateOptions{})
			create(err)
		}
		_, err = cs.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "meshpki-rotate", Namespace: ns}}, metav1.CreateOptions{})
		create(err)
		_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "grant", Namespace: ns}}, metav1.CreateOptions{})
		create(err)
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "grant"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: LimitedUser}}}, metav1.CreateOptions{})
		create(err)
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("next", func(t *testing.T) {
		env := r.Get(t, "east")
		if env != first {
			t.Fatal("the idle K8s was not handed out again")
		}
		cs := clientFor(t, env.Clusters[0])
		gone := func(what string, err error) {
			t.Helper()
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s after the reset: %v, want not found", what, err)
			}
		}
		_, err := cs.CoreV1().Secrets("istio-system").Get(ctx, "cacerts", metav1.GetOptions{})
		gone("cacerts", err)
		for _, n := range []string{"istio-system", "default", "kube-system"} {
			_, err = cs.CoreV1().ConfigMaps(n).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
			gone(n+"/istio-ca-root-cert", err)
		}
		_, err = cs.CoordinationV1().Leases("istio-system").Get(ctx, "meshpki-rotate", metav1.GetOptions{})
		gone("the lock", err)
		_, err = cs.RbacV1().Roles("istio-system").Get(ctx, "grant", metav1.GetOptions{})
		gone("the Role", err)
		_, err = cs.RbacV1().ClusterRoleBindings().Get(ctx, "grant", metav1.GetOptions{})
		gone("the ClusterRoleBinding", err)
		if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "cluster-admin", metav1.GetOptions{}); err != nil {
			t.Errorf("kube-apiserver's own ClusterRole: %v", err)
		}
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-apiserver-legacy-service-account-token-tracking", metav1.GetOptions{}); err != nil {
			t.Errorf("kube-apiserver's own ConfigMap: %v", err)
		}
		// The limited user is back to nothing granted.
		limited, err := kubernetes.NewForConfig(env.Clusters[0].RESTConfig(env.Clusters[0].LimitedToken))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := limited.CoreV1().Secrets("istio-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("limited user after the reset: %v, want forbidden", err)
		}
	})
}

func clientFor(t *testing.T, c *K8sCluster) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
