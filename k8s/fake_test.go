package k8s

// Error paths a real API server will not produce on demand, on client-go's fake
// clientset. Everything else is tested against real kube-apiservers.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshpki/meshpki/ca"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var secretsGR = schema.GroupResource{Resource: "secrets"}

func fakeCluster(name string, objs ...runtime.Object) (*Cluster, *fake.Clientset) {
	cs := fake.NewClientset(objs...)
	return &Cluster{Name: name, Client: cs}, cs
}

func installed(t *testing.T, ns string, files map[string][]byte) *corev1.Secret {
	s, err := NewSecret(ns, files)
	if err != nil {
		t.Fatal(err)
	}
	s.ResourceVersion = "1"
	return s
}

func TestInstallGivesUpOnEndlessConflicts(t *testing.T) {
	_, old := mint(t, nil, "east")
	_, files := mint(t, nil, "east")
	cl, cs := fakeCluster("east", installed(t, "istio-system", old))
	cs.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(secretsGR, SecretName, errors.New("the object has been modified"))
	})
	res, err := Install(context.Background(), cl, files, InstallOptions{})
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "cluster east: gave up after 5 attempts") {
		t.Fatalf("got %v", err)
	}
	if res.Attempts != 5 {
		t.Fatalf("attempts %d", res.Attempts)
	}
}

func TestInstallPruneFailureIsAWarning(t *testing.T) {
	_, old := mint(t, nil, "east")
	_, files := mint(t, nil, "east")
	cl, cs := fakeCluster("east", installed(t, "istio-system", old))
	cs.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd is sad"))
	})
	res, err := Install(context.Background(), cl, files, InstallOptions{})
	if err != nil || res.Action != ActionUpdated || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "pruning old backups") {
		t.Fatalf("got %+v, %v", res, err)
	}
}

func TestForbiddenWithoutUserIsNotRBAC(t *testing.T) {
	_, files := mint(t, nil, "east")
	cl, cs := fakeCluster("east")
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(secretsGR, SecretName, errors.New("unable to create new content in namespace istio-system because it is being terminated"))
	})
	_, err := Install(context.Background(), cl, files, InstallOptions{})
	var fe *ForbiddenError
	if errors.As(err, &fe) || !strings.Contains(err.Error(), "cluster east: get secrets in namespace istio-system") || !strings.Contains(err.Error(), "being terminated") {
		t.Fatalf("got %v", err)
	}
}

func TestEachReportsUnstartedClusters(t *testing.T) {
	a, _ := fakeCluster("a")
	b, _ := fakeCluster("b")
	var mu sync.Mutex
	var done []string
	record := func(r Result[string]) {
		mu.Lock()
		defer mu.Unlock()
		done = append(done, r.Cluster.Name)
	}
	fn := func(ctx context.Context, cl *Cluster) (string, error) {
		if cl.Name == "a" {
			return "", errors.New("cluster a: down")
		}
		return "ok " + cl.Name, nil
	}
	res := Each(context.Background(), []*Cluster{a, b}, 0, fn, record)
	if res[0].Err == nil || res[1].Err != nil || res[1].Value != "ok b" || len(done) != 2 {
		t.Fatalf("one failure stopped another: %+v (done %v)", res, done)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done = nil
	res = Each(ctx, []*Cluster{a, b}, 1, fn, record)
	for _, r := range res {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "cluster "+r.Cluster.Name+": not started: context canceled") {
			t.Fatalf("%s: %+v", r.Cluster.Name, r)
		}
	}
	if strings.Join(done, ",") != "a,b" {
		t.Fatalf("done for %v", done)
	}
}

// TestAnnotateCACertsConflicts: the annotation goes onto cacerts only while it
// holds what the caller wrote; a concurrent change of metadata is retried, a change
// of data is not.
func TestAnnotateCACertsConflicts(t *testing.T) {
	_, files := mint(t, nil, "east")
	for _, tc := range []struct {
		name      string
		dataAfter map[string][]byte
		wantErr   string
	}{
		{"metadata changed: retried", files, ""},
		{"data changed: refused", map[string][]byte{ca.CACertFile: []byte("other")}, "was changed by someone else meanwhile (files ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, cs := fakeCluster("east", installed(t, "istio-system", files))
			var updates atomic.Int32
			cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if updates.Add(1) > 1 {
					return false, nil, nil
				}
				// Someone else writes first: metadata only, or the data too.
				s := installed(t, "istio-system", tc.dataAfter)
				s.ResourceVersion = "2"
				if err := cs.Tracker().Update(secretsGR.WithVersion("v1"), s, "istio-system"); err != nil {
					t.Fatal(err)
				}
				return true, nil, apierrors.NewConflict(secretsGR, SecretName, errors.New("the object has been modified"))
			})
			rv, err := AnnotateCACerts(context.Background(), cl, "istio-system", files, "example.com/note", `{"step":1}`)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.wantErr == "":
				s := getSecret(t, cl, "istio-system", SecretName)
				if !strings.Contains(s.Annotations["example.com/note"], `"step":1`) || rv == "" || updates.Load() != 2 {
					t.Fatalf("annotation %v, rv %q, %d updates", s.Annotations, rv, updates.Load())
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("got %v, want %q", err, tc.wantErr)
			}
		})
	}
}
