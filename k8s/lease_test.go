package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

func getLease(t testing.TB, cl *Cluster, ns string) (*coordinationv1.Lease, bool) {
	t.Helper()
	l, err := cl.Client.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("cluster %s: get lease: %v", cl.Name, err)
	}
	return l, true
}

// putLease writes a Lease held by holder, renewed at renewed, as another process
// would have left it.
func putLease(t testing.TB, cl *Cluster, ns, holder string, renewed time.Time, d time.Duration) {
	t.Helper()
	l := newLease(LeaseOptions{Namespace: ns, Name: LeaseName, Holder: holder, Duration: d}, renewed)
	if _, err := createLease(testContext(t), cl, LeaseOptions{Namespace: ns, Name: LeaseName}, l); err != nil {
		t.Fatal(err)
	}
}

// One holder at a time; a waiter gets the Lease once it is released; the holder,
// duration and transitions are in the object for kubectl to see.
func TestLeaseOneHolderAtATime(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t) // does not exist yet: AcquireLease creates it
	ctx := testContext(t)

	a, err := AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-a", Duration: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, ok := getLease(t, cl, ns)
	if !ok || *l.Spec.HolderIdentity != "run-a" || *l.Spec.LeaseDurationSeconds != 30 || l.Spec.AcquireTime == nil || l.Spec.RenewTime == nil {
		t.Fatalf("lease after acquire: %+v", l)
	}

	_, err = AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-b"})
	var le *LockedError
	if !errors.As(err, &le) || le.Holder != "run-a" || !strings.Contains(err.Error(), "cluster "+cl.Name+": locked by run-a") {
		t.Fatalf("second holder: %v, want locked by run-a", err)
	}
	if holder, _, err := LeaseHolder(ctx, cl, LeaseOptions{Namespace: ns}); err != nil || holder != "run-a" {
		t.Fatalf("LeaseHolder: %q, %v", holder, err)
	}

	// b waits; a releases after 300 ms.
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := a.Release(context.Background()); err != nil {
			t.Errorf("release a: %v", err)
		}
	}()
	t0 := time.Now()
	b, err := AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-b", Wait: 10 * time.Second, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("b after a released: %v", err)
	}
	if w := time.Since(t0); w < 250*time.Millisecond {
		t.Fatalf("b got the lease after %s, before a released it", w)
	}
	if l, _ := getLease(t, cl, ns); *l.Spec.HolderIdentity != "run-b" {
		t.Fatalf("holder %q, want run-b", *l.Spec.HolderIdentity)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := getLease(t, cl, ns); ok {
		t.Fatal("lease still there after release")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
}

// A holder that died (its Lease expired) is taken over; one that renews is not.
func TestLeaseExpiredIsTakenOver(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[1]
	ns := testNamespace(t)
	ctx := testContext(t)
	putLease(t, cl, ns, "crashed-run", time.Now().Add(-2*time.Minute), time.Minute)

	l, err := AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-b"})
	if err != nil {
		t.Fatalf("expired lease not taken over: %v", err)
	}
	defer l.Release(ctx)
	if l.TookOver != "crashed-run" {
		t.Fatalf("TookOver %q", l.TookOver)
	}
	got, _ := getLease(t, cl, ns)
	if *got.Spec.HolderIdentity != "run-b" || *got.Spec.LeaseTransitions != 1 {
		t.Fatalf("lease after takeover: holder %q transitions %d", *got.Spec.HolderIdentity, *got.Spec.LeaseTransitions)
	}
}

// A held Lease is renewed while held; a Lease taken from under its holder cancels
// the holder's context, and its release leaves the new holder's Lease alone.
func TestLeaseRenewsAndNoticesLoss(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[2]
	ns := testNamespace(t)
	ctx := testContext(t)

	a, err := AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-a", Duration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := getLease(t, cl, ns)
	// Past its first duration, a still holds it: it renewed.
	time.Sleep(3500 * time.Millisecond)
	if _, err := AcquireLease(ctx, cl, LeaseOptions{Namespace: ns, Holder: "run-b"}); !errors.As(err, new(*LockedError)) {
		t.Fatalf("b after a's first duration: %v, want locked (a renews)", err)
	}
	renewed, _ := getLease(t, cl, ns)
	if !renewed.Spec.RenewTime.After(first.Spec.RenewTime.Time) {
		t.Fatalf("renew time did not move: %s -> %s", first.Spec.RenewTime, renewed.Spec.RenewTime)
	}
	if a.Context().Err() != nil {
		t.Fatalf("a's context ended while it held the lease: %v", context.Cause(a.Context()))
	}

	// Someone takes it (e.g. a's process stalled past the expiry).
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, _ := getLease(t, cl, ns)
		l.Spec.HolderIdentity = ptrTo("run-c")
		_, err := cl.Client.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a did not notice it lost the lease")
	}
	if cause := context.Cause(a.Context()); !errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("cause %v, want ErrLeaseLost", cause)
	}
	if err := a.Release(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("release after loss: %v", err)
	}
	if l, ok := getLease(t, cl, ns); !ok || *l.Spec.HolderIdentity != "run-c" {
		t.Fatal("a's release removed run-c's lease")
	}
}

func ptrTo[T any](v T) *T { return &v }
