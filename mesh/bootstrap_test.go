package mesh

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// countingIssuer counts the intermediates it is asked for.
type countingIssuer struct {
	ca.Issuer
	n atomic.Int32
}

func (c *countingIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest, p ca.Profile) (*ca.Issued, error) {
	c.n.Add(1)
	return c.Issuer.Issue(ctx, csr, p)
}

// Bootstrap finds an existing cacerts (or a held lock) before it asks the issuer
// for anything, and otherwise mints and installs under the Lease.
func TestBootstrapChecksBeforeMinting(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t) // does not exist yet
	cl := clusters[0]
	iss := &countingIssuer{Issuer: ca.NewLocalIssuer(sharedRoot(t))}
	opts := BootstrapOptions{Source: &Source{Issuer: iss}, Profile: ca.IntermediateProfile("", "Istio"),
		Install: k8s.InstallOptions{Namespace: ns, CreateOnly: true, Lock: &k8s.LeaseOptions{Holder: "bootstrap-" + t.Name()}}}

	other, err := k8s.AcquireLease(testContext(t), cl, k8s.LeaseOptions{Namespace: ns, Holder: "rotate-run"})
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := bootstrapRun(testContext(t), cl, opts)
	var le *k8s.LockedError
	if !errors.As(err, &le) || res.LockedBy != "rotate-run" || iss.n.Load() != 0 {
		t.Fatalf("bootstrap while locked: %+v, %v, %d issued", res, err, iss.n.Load())
	}
	if err := other.Release(testContext(t)); err != nil {
		t.Fatal(err)
	}

	res, files, err := bootstrapRun(testContext(t), cl, opts)
	if err != nil || res.Action != k8s.ActionCreated || iss.n.Load() != 1 {
		t.Fatalf("bootstrap: %+v, %v, %d issued", res, err, iss.n.Load())
	}
	if got := getSecret(t, cl, ns, k8s.SecretName).Data; !maps.EqualFunc(got, files, bytes.Equal) {
		t.Fatal("cacerts is not the bundle Bootstrap returned")
	}
	b, rep, err := ca.ParseBundle(files, ca.VerifyOptions{})
	if err != nil || b.Cert.Subject.Locality[0] != cl.Name || !rep.OK() {
		t.Fatalf("bundle: %v %+v", err, rep)
	}
	if leaseExists(t, cl, ns) {
		t.Fatal("bootstrap left its lease behind")
	}

	_, _, err = bootstrapRun(testContext(t), cl, opts)
	if !errors.Is(err, k8s.ErrSecretExists) || iss.n.Load() != 1 || !strings.Contains(err.Error(), "cluster "+cl.Name) {
		t.Fatalf("second bootstrap: %v, %d issued (want the refusal before minting)", err, iss.n.Load())
	}
}

// With CRLs on in the mesh, Bootstrap gives the other clusters the new CA's CRL
// before the new cacerts exists, and the new cacerts the whole set: every pair
// talks with CRLs enforced from the new cluster's first moment. Without the root's
// CRL, or when a mesh cluster cannot take the new CRL, nothing is installed.
func TestBootstrapSpreadsItsCRLFirst(t *testing.T) {
	env, clusters := realClusters(t, false)
	ns := testNamespace(t)
	root := sharedRoot(t)
	mesh, newcomer := clusters[:2], clusters[2]
	rootCRL := crlMesh(t, mesh, ns)
	withCRL := &Source{Issuer: ca.NewLocalIssuer(root), CRLAuthority: heldCRL(rootCRL)}
	opts := BootstrapOptions{Source: &Source{Issuer: ca.NewLocalIssuer(root)}, Profile: ca.IntermediateProfile("", "Istio"),
		Install: k8s.InstallOptions{Namespace: ns, CreateOnly: true}, Mesh: mesh}

	// No root CRL: refused, nothing installed anywhere.
	before := map[string]string{}
	for _, cl := range mesh {
		before[cl.Name] = getSecret(t, cl, ns, k8s.SecretName).ResourceVersion
	}
	if _, _, err := bootstrapRun(testContext(t), newcomer, opts); !errors.Is(err, ErrNoRootCRL) {
		t.Fatalf("bootstrap into a CRL mesh without the root's CRL: %v, want ErrNoRootCRL", err)
	}
	// A mesh cluster that cannot be written (a bad token): the new cacerts is not
	// installed.
	broken, err := k8s.NewCluster(mesh[1].Name, env.Clusters[1].RESTConfig("not-a-token"), k8s.ClusterOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	withBroken := opts
	withBroken.Mesh, withBroken.Source = []*k8s.Cluster{mesh[0], broken}, withCRL
	if _, _, err := bootstrapRun(testContext(t), newcomer, withBroken); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("bootstrap with an unwritable mesh cluster: %v", err)
	}
	if rv := getSecret(t, mesh[1], ns, k8s.SecretName).ResourceVersion; rv != before[mesh[1].Name] {
		t.Errorf("%s: cacerts written with a bad token", mesh[1].Name)
	}
	if _, err := newcomer.Client.CoreV1().Secrets(ns).Get(testContext(t), k8s.SecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the new cacerts was installed although its CRL did not reach the mesh: %v", err)
	}

	opts.Source = withCRL
	// A dry run signs and checks, and writes nothing anywhere. (The run above did
	// give mesh[0] the new CA's CRL: harmless, no chain shows that CA.)
	before[mesh[0].Name] = getSecret(t, mesh[0], ns, k8s.SecretName).ResourceVersion
	dry := opts
	dry.Install.DryRun = true
	if res, _, err := bootstrapRun(testContext(t), newcomer, dry); err != nil || res.Action != k8s.ActionCreated || !res.DryRun {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if rv := getSecret(t, mesh[0], ns, k8s.SecretName).ResourceVersion; rv != before[mesh[0].Name] {
		t.Errorf("%s: cacerts written by a dry run", mesh[0].Name)
	}
	if _, err := newcomer.Client.CoreV1().Secrets(ns).Get(testContext(t), k8s.SecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a dry run created the new cacerts: %v", err)
	}

	res, files, err := bootstrapRun(testContext(t), newcomer, opts)
	if err != nil || res.Action != k8s.ActionCreated {
		t.Fatalf("bootstrap: %+v, %v", res, err)
	}
	if files[ca.CRLFile] == nil {
		t.Fatal("the new cacerts has no ca-crl.pem")
	}
	ws := map[string]*ca.Workload{}
	var bundles []*ca.Bundle
	var members []ca.CRLMember
	for _, cl := range clusters {
		w, b := crlWorkload(t, cl, ns)
		ws[cl.Name], bundles = w, append(bundles, b)
		members = append(members, ca.CRLMember{Name: cl.Name, Chain: b.Chain, CRLs: w.CRLs})
	}
	newCA := bundles[2].Cert
	for _, cl := range mesh {
		if ca.CRLOf(ws[cl.Name].CRLs, newCA) == nil {
			t.Errorf("%s lacks the new CA's CRL", cl.Name)
		}
	}
	if probs := ca.CheckMeshCRLs(members, time.Now()); len(probs) > 0 {
		t.Errorf("mesh CRL problems after bootstrap: %v", probs)
	}
	for i, a := range clusters {
		for _, b := range clusters[i+1:] {
			if err := handshakes(t, ws[a.Name], ws[b.Name]); err != nil {
				t.Errorf("%s <-> %s after bootstrap: %v", a.Name, b.Name, err)
			}
		}
	}
}

// bootstrapRun is Bootstrap with its report's install result and error apart.
func bootstrapRun(ctx context.Context, cl *k8s.Cluster, opts BootstrapOptions) (*k8s.InstallResult, map[string][]byte, error) {
	rep, files := Bootstrap(ctx, cl, opts)
	return rep.InstallResult, files, rep.Err
}
