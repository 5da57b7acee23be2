package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	cflog "github.com/cloudflare/cfssl/log"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
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

// realClusters returns a Cluster per test cluster, as the admin (or, with
// limited, as testenv.LimitedUser).
func realClusters(t testing.TB, limited bool) (*testenv.K8s, []*Cluster) {
	t.Helper()
	env := pool.Get(t)
	var out []*Cluster
	for _, c := range env.Clusters {
		tok := c.AdminToken
		if limited {
			tok = c.LimitedToken
		}
		cl, err := NewCluster(c.Name, c.RESTConfig(tok), ClusterOptions{Timeout: 20 * time.Second})
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

// testRoot is one root per test binary (a root per test would be just as right,
// and slower to read in failures).
var testRoot = sync.OnceValues(func() (*ca.Root, error) {
	r, _, err := ca.CreateRoot(ca.DefaultRootProfile("meshpki-test"), time.Now())
	return r, err
})

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
		var err error
		if root, err = testRoot(); err != nil {
			t.Fatal(err)
		}
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
