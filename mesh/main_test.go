package mesh

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cflog "github.com/cloudflare/cfssl/log"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// pool holds this package's real clusters: started on first use, stopped after
// every test ran.
var pool = testenv.NewK8sPool("east", "west", "north")

func TestMain(m *testing.M) {
	cflog.Level = cflog.LevelFatal // cfssl logs every signature otherwise
	// The examples find the clusters through $KUBECONFIG, as a user's program would.
	if testenv.ExamplesSelected() {
		if os.Getenv(testenv.EnvK8sBin) == "" {
			if !testenv.SkipExamples("^Example", testenv.EnvK8sBin+" is not set") {
				os.Exit(1)
			}
		} else if env, err := pool.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
			os.Exit(1)
		} else {
			os.Setenv("KUBECONFIG", env.Kubeconfig)
		}
	}
	code := m.Run()
	pool.Stop()
	os.Exit(code)
}

// realClusters returns a k8s.Cluster per test cluster, as the admin (or, with
// limited, as testenv.LimitedUser).
func realClusters(t testing.TB, limited bool) (*testenv.K8s, []*k8s.Cluster) {
	t.Helper()
	env := pool.Get(t)
	var out []*k8s.Cluster
	for _, c := range env.Clusters {
		tok := c.AdminToken
		if limited {
			tok = c.LimitedToken
		}
		cl, err := k8s.NewCluster(c.Name, c.RESTConfig(tok), k8s.ClusterOptions{Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cl)
	}
	return env, out
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// testNamespace is a fresh namespace name for t: namespaces are never really
// deleted here (no controller-manager), so every test uses its own.
func testNamespace(t testing.TB) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	return "t-" + name + "-" + hex.EncodeToString(b)
}

// testRoot is one root per test binary.
var testRoot = sync.OnceValues(func() (*ca.Root, error) {
	r, _, err := ca.CreateRoot(ca.DefaultRootProfile("meshpki-test"), time.Now())
	return r, err
})

func sharedRoot(t testing.TB) *ca.Root {
	t.Helper()
	r, err := testRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRoot(t testing.TB) *ca.Root {
	t.Helper()
	r, _, err := ca.CreateRoot(ca.DefaultRootProfile("meshpki-test-other"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mint makes a bundle for cluster under root (nil: the shared test root) and
// returns it with its files in Istio's layout.
func mint(t testing.TB, root *ca.Root, cluster string) (*ca.Bundle, map[string][]byte) {
	t.Helper()
	if root == nil {
		root = sharedRoot(t)
	}
	b, err := ca.Mint(context.Background(), ca.NewLocalIssuer(root), ca.IntermediateProfile(cluster, "Istio"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Files(ca.FormatIstio)
	if err != nil {
		t.Fatal(err)
	}
	return b, files
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func getSecret(t testing.TB, cl *k8s.Cluster, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := cl.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cluster %s: get %s/%s: %v", cl.Name, ns, name, err)
	}
	return s
}

func mustInstall(t testing.TB, cl *k8s.Cluster, files map[string][]byte, opts k8s.InstallOptions) *k8s.InstallResult {
	t.Helper()
	res, err := k8s.Install(testContext(t), cl, files, opts)
	if err != nil {
		t.Fatalf("install into %s: %v", cl.Name, err)
	}
	return res
}

// rotateOpts is a rotation with root (nil: the shared test root) as the current
// root, a lock holder named after the test, and otherwise the defaults.
func rotateOpts(t testing.TB, ns string, root *ca.Root) k8s.RotateOptions {
	if root == nil {
		root = sharedRoot(t)
	}
	return k8s.RotateOptions{Namespace: ns, Issuer: ca.NewLocalIssuer(root),
		Profile: ca.IntermediateProfile("", "Istio"), Lock: k8s.LeaseOptions{Holder: "test-" + t.Name()}}
}

// leaseExists reports whether the meshpki Lease exists in namespace ns of cl.
func leaseExists(t testing.TB, cl *k8s.Cluster, ns string) bool {
	t.Helper()
	_, err := cl.Client.CoordinationV1().Leases(ns).Get(context.Background(), k8s.LeaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatalf("cluster %s: get lease: %v", cl.Name, err)
	}
	return true
}

// applyRBAC creates deploy/rbac.yaml's Role and RoleBinding called name in ns,
// bound to testenv.LimitedUser.
func applyRBAC(t testing.TB, admin *k8s.Cluster, ns, name string) {
	t.Helper()
	if err := testenv.ApplyRBAC(testContext(t), admin.Client, "../deploy/rbac.yaml", ns, name); err != nil {
		t.Fatal(err)
	}
}

// heldCRL is a Source.CRLAuthority that gives crl, signed beforehand, as the
// source's CRL.
func heldCRL(crl *x509.RevocationList) func(context.Context) (ca.CRLAuthority, error) {
	return func(context.Context) (ca.CRLAuthority, error) { return fixedCRL{crl}, nil }
}

type fixedCRL struct{ crl *x509.RevocationList }

func (f fixedCRL) CRL(context.Context, []x509.RevocationListEntry, ca.CRLOptions) (*x509.RevocationList, bool, error) {
	return f.crl, false, nil
}
