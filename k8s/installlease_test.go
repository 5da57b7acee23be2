package k8s

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"testing"
	"time"
)

// An install that would write waits for (or gives up on) the Lease another run
// holds, and writes nothing meanwhile; one that would change nothing needs no lock;
// a dry run says who holds it.
func TestInstallTakesTheRotateLease(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	cl := clusters[1]
	_, oldFiles := mint(t, nil, cl.Name)
	mustInstall(t, cl, oldFiles, InstallOptions{Namespace: ns})
	rv := getSecret(t, cl, ns, SecretName).ResourceVersion
	_, newFiles := mint(t, nil, cl.Name)

	other, err := AcquireLease(testContext(t), cl, LeaseOptions{Namespace: ns, Holder: "rotate-run"})
	if err != nil {
		t.Fatal(err)
	}
	lock := &LeaseOptions{Holder: "install-" + t.Name(), Poll: 50 * time.Millisecond}
	res, err := Install(testContext(t), cl, newFiles, InstallOptions{Namespace: ns, Lock: lock})
	var le *LockedError
	if !errors.As(err, &le) || res.LockedBy != "rotate-run" {
		t.Fatalf("install while locked: %+v, %v", res, err)
	}
	if getSecret(t, cl, ns, SecretName).ResourceVersion != rv {
		t.Fatal("cacerts written while another run held the lock")
	}
	if res := mustInstall(t, cl, oldFiles, InstallOptions{Namespace: ns, Lock: lock}); res.Action != ActionUnchanged {
		t.Fatalf("unchanged install under a held lock: %+v", res)
	}
	if res := mustInstall(t, cl, newFiles, InstallOptions{Namespace: ns, Lock: lock, DryRun: true}); res.LockedBy != "rotate-run" || res.Action != ActionUpdated {
		t.Fatalf("dry run: %+v", res)
	}

	// Waiting: the other run lets go after 300 ms.
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := other.Release(context.Background()); err != nil {
			t.Errorf("release: %v", err)
		}
	}()
	wait := *lock
	wait.Wait = 30 * time.Second
	res = mustInstall(t, cl, newFiles, InstallOptions{Namespace: ns, Lock: &wait})
	if res.Action != ActionUpdated || !maps.EqualFunc(getSecret(t, cl, ns, SecretName).Data, newFiles, bytes.Equal) {
		t.Fatalf("install after the lock was released: %+v", res)
	}
	if _, ok := getLease(t, cl, ns); ok {
		t.Fatal("install left its lease behind")
	}
}
