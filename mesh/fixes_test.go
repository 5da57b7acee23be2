package mesh

// Defects found by running the docs as a new user would (each test failed before
// its fix).

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/k8s"
)

// A rotate run whose root source is not the clusters' root (every cluster fails,
// ErrOtherRoot) writes nothing: not the foreign root's CRL, not a backup.
func TestRotateWithAnotherRootWritesNothing(t *testing.T) {
	_, all := realClusters(t, false)
	clusters := all[:2]
	ns := testNamespace(t)
	crlMesh(t, clusters, ns)
	other := newRoot(t)
	otherCRL, err := ca.SignCRL(other.Cert, other.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := secretVersions(t, clusters, ns)
	opts := RotateOptions{Rotate: rotateOpts(t, ns, other), CRLSettle: 0}
	opts.Rotate.Force = true
	rep := Rotate(testContext(t), clusters, &Source{Issuer: ca.NewLocalIssuer(other), CRLAuthority: heldCRL(otherCRL)}, opts)
	if rep.Verdict() != Failed || rep.Summary[k8s.OutcomeFailed] != 2 || !errors.Is(rep.Clusters[0].Err, k8s.ErrOtherRoot) {
		t.Fatalf("rotate under another root: %s %v %+v", rep.Verdict(), rep.Summary, rep.Clusters[0])
	}
	if after := secretVersions(t, clusters, ns); after != before {
		t.Fatalf("a run that could do nothing wrote: %s -> %s", before, after)
	}
}

// A cluster whose Lease another run holds, with CRLs on, is reported locked and by
// whom, not failed (the CRL spread ahead stops there).
func TestRotateLockedWithCRLsSaysWho(t *testing.T) {
	_, all := realClusters(t, false)
	clusters := all[:2]
	ns := testNamespace(t)
	rootCRL := crlMesh(t, clusters, ns)
	held, err := k8s.AcquireLease(testContext(t), clusters[0], k8s.LeaseOptions{Namespace: ns, Holder: "other-run"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())
	opts := RotateOptions{Rotate: rotateOpts(t, ns, nil)}
	opts.Rotate.Force = true
	rep := Rotate(testContext(t), clusters, &Source{Issuer: ca.NewLocalIssuer(sharedRoot(t)), CRLAuthority: heldCRL(rootCRL)}, opts)
	e := rep.Clusters[0]
	if rep.Verdict() != Failed || e.Outcome != k8s.OutcomeLocked || e.LockedBy != "other-run" {
		t.Fatalf("rotate while another run holds %s's Lease: %s, %+v", clusters[0].Name, rep.Verdict(), e.RotateResult)
	}
}

// A revoked cluster is never given a new CA without being named: rotate leaves it
// (OutcomeRevoked), root rotate refuses step 2; named in Readmit, both go on.
func TestRevokedClusterIsReadmittedOnlyByName(t *testing.T) {
	_, all := realClusters(t, false)
	clusters := all[:2]
	east := clusters[0]
	ns := testNamespace(t)
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	root, dir := sharedRoot(t), t.TempDir()
	src := &Source{Issuer: ca.NewLocalIssuer(root), CRLAuthority: func(context.Context) (ca.CRLAuthority, error) {
		return &ca.FolderCRL{Dir: dir, Root: root}, nil
	}}
	if rep := Revoke(testContext(t), clusters, src, RevokeOptions{CRLRunOptions: CRLRunOptions{Namespace: ns}, Clusters: []string{east.Name},
		Reason: ca.ReasonKeyCompromise}); rep.Verdict() != OK {
		t.Fatalf("revoke: %v", rep.Err)
	}
	before := secretVersions(t, clusters[:1], ns)
	opts := RotateOptions{Rotate: rotateOpts(t, ns, nil)}
	opts.Rotate.Force = true
	rep := Rotate(testContext(t), clusters, src, opts)
	if e := rep.Clusters[0]; rep.Verdict() != Failed || e.Outcome != k8s.OutcomeRevoked || !errors.Is(e.Err, ErrRevokedCA) || !strings.Contains(e.Error, "keyCompromise") {
		t.Fatalf("rotate --force over a revoked east: %s, %+v", rep.Verdict(), e)
	}
	if after := secretVersions(t, clusters[:1], ns); after != before {
		t.Fatal("the revoked cluster was written")
	}

	// A root rotation cannot take a revoked cluster along: step 1 is refused (its
	// CA's CRL is no longer signed), with nothing written.
	next := newRoot(t)
	nextCRL, err := ca.SignCRL(next.Cert, next.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rr := RootRotationOptions{Namespace: ns, NewRoot: next.Cert, Issuer: ca.NewLocalIssuer(next), CRLs: &CRLSyncOptions{},
		NewRootCRLs: func(context.Context) ([]*x509.RevocationList, error) { return []*x509.RevocationList{nextCRL}, nil }}
	before = secretVersions(t, clusters, ns)
	if _, err := RotateRoot(testContext(t), clusters, rr); !errors.Is(err, ErrRevokedCA) || !strings.Contains(err.Error(), "step 1") {
		t.Fatalf("step 1 over a revoked east: %v", err)
	}
	if after := secretVersions(t, clusters, ns); after != before {
		t.Fatalf("a refused step wrote: %s -> %s", before, after)
	}
	// Revoked at step 1 (the others took it first): step 2 would give east a new
	// intermediate, and is refused until east is named.
	ns2 := testNamespace(t)
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns2})
	}
	dir2 := t.TempDir()
	src.CRLAuthority = func(context.Context) (ca.CRLAuthority, error) { return &ca.FolderCRL{Dir: dir2, Root: root}, nil }
	if rep := CRLSync(testContext(t), clusters, src, CRLRunOptions{Namespace: ns2}); rep.Verdict() != OK {
		t.Fatalf("crl sync: %v", rep.Err)
	}
	rr.Namespace = ns2
	if _, err := RotateRoot(testContext(t), clusters, rr); err != nil {
		t.Fatalf("step 1: %v", err)
	}
	if rep := Revoke(testContext(t), clusters, src, RevokeOptions{CRLRunOptions: CRLRunOptions{Namespace: ns2}, Clusters: []string{east.Name},
		Reason: ca.ReasonKeyCompromise}); rep.Verdict() != OK {
		t.Fatalf("revoke at step 1: %v", rep.Err)
	}
	before = secretVersions(t, clusters, ns2)
	if st := RootRotationStatus(testContext(t), clusters, rr); !errors.Is(st.Err, ErrRevokedCA) || st.Verdict() != Failed {
		t.Fatalf("status before step 2: %v", st.Err)
	}
	if _, err := RotateRoot(testContext(t), clusters, rr); !errors.Is(err, ErrRevokedCA) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), east.Name+": its CA") {
		t.Fatalf("step 2 over a revoked east: %v", err)
	}
	if after := secretVersions(t, clusters, ns2); after != before {
		t.Fatalf("a refused step wrote: %s -> %s", before, after)
	}
	rr.Readmit = []string{east.Name}
	if rep, err := RotateRoot(testContext(t), clusters, rr); err != nil || rep.Plan.Target != rotation.StepSwitched {
		t.Fatalf("step 2 with east named: %v", err)
	}
}

// secretVersions is every cluster's cacerts resourceVersion in ns, as one string.
func secretVersions(t *testing.T, clusters []*k8s.Cluster, ns string) string {
	t.Helper()
	var out []string
	for _, cl := range clusters {
		out = append(out, cl.Name+"@"+getSecret(t, cl, ns, k8s.SecretName).ResourceVersion)
	}
	return strings.Join(out, " ")
}
