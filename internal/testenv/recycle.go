package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// K8sRecycler hands running clusters to tests that run in parallel, one test at a
// time per K8s: Get returns an idle K8s with the cluster names asked for, or
// starts one, and the test's cleanup gives it back, reset (K8s.Reset), for the next
// test that asks for the same names. Starting kube-apiservers is most of what such
// tests cost on a small machine; with t.Parallel's default of GOMAXPROCS tests at
// once, a few K8s serve them all. Its zero value is ready; Stop it in TestMain.
type K8sRecycler struct {
	mu      sync.Mutex
	idle    map[string][]*K8s // by cluster names
	all     []*K8s
	stopped bool
}

// Get returns clusters named names for t alone until t ends. Without
// K8S_TESTENV_BIN it skips t, or fails it when MESHPKI_REQUIRE_SERVERS=1.
func (r *K8sRecycler) Get(t testing.TB, names ...string) *K8s {
	t.Helper()
	bin := binFromEnv(t, EnvK8sBin, "k8s-testenv", "real kube-apiservers")
	key := strings.Join(names, ",")
	r.mu.Lock()
	var env *K8s
	if n := len(r.idle[key]); n > 0 {
		env, r.idle[key] = r.idle[key][n-1], r.idle[key][:n-1]
	}
	r.mu.Unlock()
	if env == nil {
		var err error
		if env, err = startK8sLogged(bin, names); err != nil {
			t.Fatalf("start clusters: %v", err)
		}
		r.mu.Lock()
		r.all = append(r.all, env)
		r.mu.Unlock()
	}
	t.Cleanup(func() { r.put(key, env) })
	return env
}

// put resets env and makes it idle; a K8s that does not reset is stopped.
func (r *K8sRecycler) put(key string, env *K8s) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.Reset(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: reset %s: %v: stopping it\n", env.Dir, err)
		r.drop(env)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if r.idle == nil {
		r.idle = map[string][]*K8s{}
	}
	r.idle[key] = append(r.idle[key], env)
}

func (r *K8sRecycler) drop(env *K8s) {
	r.mu.Lock()
	r.all = slices.DeleteFunc(r.all, func(e *K8s) bool { return e == env })
	r.mu.Unlock()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stop:", err)
	}
}

// Stop stops every K8s the recycler started.
func (r *K8sRecycler) Stop() {
	r.mu.Lock()
	all := r.all
	r.all, r.idle, r.stopped = nil, nil, true
	r.mu.Unlock()
	for _, env := range all {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stop:", err)
		}
	}
}

// systemNamespaces are the ones kube-apiserver keeps for itself: Reset leaves
// what is in them, but for the ConfigMaps istiod publishes.
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Reset brings every cluster back to how StartK8s left it, as far as a test can
// tell: each kube-apiserver runs (a test may have stopped one); in every namespace
// but the system ones the Secrets, ConfigMaps, Leases, Deployments, Roles and
// RoleBindings are deleted (what meshpki, istiod and the tests write: cacerts and
// its backups, the published roots and CRLs, the locks, istiod's Deployment, RBAC
// granted to LimitedUser); the ConfigMaps istiod publishes are deleted from the
// system namespaces too; and so are the ClusterRoles and ClusterRoleBindings that
// are not kube-apiserver's own. Namespaces stay (with no controller-manager, a
// deleted one would never go), and so do Istio's CRDs: both are what a test
// creates anyway.
func (env *K8s) Reset(ctx context.Context) error {
	var errs []error
	for _, c := range env.Clusters {
		if err := c.Start(ctx); err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(c.RESTConfig(c.AdminToken))
		if err != nil {
			return err
		}
		if err := resetCluster(ctx, cs); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// bootstrapRBACLabel labels the RBAC objects kube-apiserver makes at its start.
const bootstrapRBACLabel = "kubernetes.io/bootstrapping"

func resetCluster(ctx context.Context, cs kubernetes.Interface) error {
	all := metav1.ListOptions{}
	del := metav1.DeleteOptions{}
	nss, err := cs.CoreV1().Namespaces().List(ctx, all)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss.Items {
		n := ns.Name
		if slices.Contains(systemNamespaces, n) {
			for _, name := range []string{"istio-ca-root-cert", "istio-ca-crl"} {
				if err := cs.CoreV1().ConfigMaps(n).Delete(ctx, name, del); err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, err)
				}
			}
			continue
		}
		errs = append(errs,
			cs.CoreV1().Secrets(n).DeleteCollection(ctx, del, all),
			cs.CoreV1().ConfigMaps(n).DeleteCollection(ctx, del, all),
			cs.CoordinationV1().Leases(n).DeleteCollection(ctx, del, all),
			cs.AppsV1().Deployments(n).DeleteCollection(ctx, del, all),
			cs.AppsV1().DaemonSets(n).DeleteCollection(ctx, del, all),
			cs.RbacV1().Roles(n).DeleteCollection(ctx, del, all),
			cs.RbacV1().RoleBindings(n).DeleteCollection(ctx, del, all),
		)
	}
	notBootstrap := metav1.ListOptions{LabelSelector: "!" + bootstrapRBACLabel}
	errs = append(errs,
		cs.RbacV1().ClusterRoles().DeleteCollection(ctx, del, notBootstrap),
		cs.RbacV1().ClusterRoleBindings().DeleteCollection(ctx, del, notBootstrap),
		cs.CertificatesV1().ClusterTrustBundles().DeleteCollection(ctx, del, all), // istiod's, in its ClusterTrustBundle mode
	)
	return errors.Join(errs...)
}
