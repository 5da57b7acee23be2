package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// crlWorkload is a workload of cluster cl as its cacerts Secret now makes it: signed
// by the installed CA, trusting the installed roots, enforcing the installed
// ca-crl.pem as Envoy does.
func crlWorkload(t *testing.T, cl *k8s.Cluster, ns string) (*ca.Workload, *ca.Bundle) {
	t.Helper()
	files := k8s.SecretFiles(getSecret(t, cl, ns, k8s.SecretName))
	b, _, err := ca.ParseBundle(files, ca.VerifyOptions{})
	if err != nil {
		t.Fatalf("%s: cacerts read back: %v", cl.Name, err)
	}
	w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", cl.Name), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if data, ok := files[ca.CRLFile]; ok {
		if w.CRLs, err = ca.ParseCRLsPEM(data); err != nil {
			t.Fatalf("%s: %s: %v", cl.Name, ca.CRLFile, err)
		}
	}
	return w, b
}

// crlMesh installs a fresh bundle under the shared test root into each of
// clusters (namespace ns) and gives them the mesh CRL set (SyncCRLs) with a root
// CRL good for an hour, which it returns.
func crlMesh(t *testing.T, clusters []*k8s.Cluster, ns string) *x509.RevocationList {
	t.Helper()
	root := sharedRoot(t)
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	rootCRL, err := ca.SignCRL(root.Cert, root.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}}); err != nil {
		t.Fatal(err)
	}
	return rootCRL
}

func handshakes(t *testing.T, a, b *ca.Workload) error {
	t.Helper()
	if err := ca.Handshake(testContext(t), a, b); err != nil {
		return err
	}
	return ca.Handshake(testContext(t), b, a)
}

// TestSyncCRLsMeshAndRevoke: three real clusters get the mesh CRL set, every pair
// completes mTLS with CRLs enforced, a cluster CA without a CRL in the set is
// refused (the trap), a second run changes nothing, and after the root revokes
// east's CA, east is cut off while west and north still talk.
func TestSyncCRLsMeshAndRevoke(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	root := sharedRoot(t)
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	now := time.Now()
	rootCRL, err := ca.SignCRL(root.Cert, root.Signer, nil, nil, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	res, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != k8s.ActionUpdated || !r.Signed || r.CRLs != 4 {
			t.Errorf("%s: %+v, want updated with its own CRL signed and 4 CRLs", r.Cluster, r)
		}
	}
	ws := map[string]*ca.Workload{}
	var bundles []*ca.Bundle
	for _, cl := range clusters {
		w, b := crlWorkload(t, cl, ns)
		ws[cl.Name], bundles = w, append(bundles, b)
		if err := ca.CheckIstiodCRLs(b.Chain, w.CRLs); err != nil {
			t.Errorf("%s: istiod's CRL rule: %v", cl.Name, err)
		}
	}
	for i, a := range clusters {
		for _, b := range clusters[i+1:] {
			if err := handshakes(t, ws[a.Name], ws[b.Name]); err != nil {
				t.Errorf("%s <-> %s with CRLs: %v", a.Name, b.Name, err)
			}
		}
	}
	// The trap: a cluster CA whose CRL the others lack is refused, revoked or not.
	stranger, _ := mint(t, nil, "south")
	sw, err := stranger.IssueWorkload(ca.SPIFFEID("cluster.local", "default", "south"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sw.CRLs = ws["west"].CRLs
	refused(t, ws["west"], sw, ca.ErrCRLMissing)
	// A new cluster's CA: its CRL reaches the others before its Secret exists.
	south, _ := mint(t, nil, "south")
	if _, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}, Pending: []*ca.Bundle{south}}); err != nil {
		t.Fatal(err)
	}
	if south.CRLFile == nil {
		t.Fatal("the pending bundle did not get the mesh set")
	}
	southW, err := south.IssueWorkload(ca.SPIFFEID("cluster.local", "default", "south"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if southW.CRLs, err = ca.ParseCRLsPEM(south.CRLFile); err != nil {
		t.Fatal(err)
	}
	if rep := south.Check(ca.VerifyOptions{}); !rep.OK() {
		t.Errorf("pending bundle with the mesh set fails verify: %v", rep.Err())
	}
	for _, cl := range clusters {
		ws[cl.Name], _ = crlWorkload(t, cl, ns)
		if err := handshakes(t, ws[cl.Name], southW); err != nil {
			t.Errorf("%s <-> the new cluster: %v", cl.Name, err)
		}
	}
	// A second run (the new cluster's CA's CRL is still current) writes nothing.
	res, err = SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != k8s.ActionUnchanged || r.Signed {
			t.Errorf("second run, %s: %+v, want unchanged", r.Cluster, r)
		}
	}
	// The root revokes east's CA.
	east := bundles[0]
	revoked, err := ca.SignCRL(root.Cert, root.Signer, []x509.RevocationListEntry{{SerialNumber: east.Cert.SerialNumber, RevocationTime: now, ReasonCode: ca.ReasonKeyCompromise}}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	eastBefore := getSecret(t, clusters[0], ns, k8s.SecretName).ResourceVersion
	res, err = SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{revoked}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Revoked || res[0].Action != ActionSkipped || res[1].Action != k8s.ActionUpdated || res[2].Action != k8s.ActionUpdated {
		t.Fatalf("after revoking east: %+v %+v %+v", res[0], res[1], res[2])
	}
	if got := getSecret(t, clusters[0], ns, k8s.SecretName).ResourceVersion; got != eastBefore {
		t.Error("the revoked cluster's cacerts was written")
	}
	for _, cl := range clusters {
		ws[cl.Name], _ = crlWorkload(t, cl, ns)
	}
	if err := handshakes(t, ws["west"], ws["north"]); err != nil {
		t.Errorf("west <-> north after revoking east: %v", err)
	}
	// The root source's CRL is the record: a cluster's CRL of the root never
	// overrides it, even with a higher number (root-crl.pem lost and started again).
	restarted, err := ca.SignCRL(root.Cert, root.Signer, nil, big.NewInt(1), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SyncCRLs(testContext(t), clusters[1:], CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{restarted}}); err != nil {
		t.Fatal(err)
	}
	w, _ := crlWorkload(t, clusters[1], ns)
	if got := ca.CRLOf(w.CRLs, root.Cert); got == nil || got.Number.Int64() != 1 {
		t.Errorf("west's root CRL is %v, want the root source's (number 1)", got.Number)
	}
	for _, other := range []string{"west", "north"} {
		refused(t, ws[other], ws["east"], ca.ErrRevoked)
	}
}

// TestRotateKeepsCRLs: rotating a cluster whose cacerts has CRLs keeps them and adds
// its new CA's (istiod refuses ca-crl.pem without it); a sync then gives it to the
// others, and the rotated cluster talks to them again.
func TestRotateKeepsCRLs(t *testing.T) {
	_, clusters := realClusters(t, false)
	clusters = clusters[:2]
	ns := testNamespace(t)
	rootCRL := crlMesh(t, clusters, ns)
	sync := func() {
		t.Helper()
		if _, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}}); err != nil {
			t.Fatal(err)
		}
	}
	_, oldWest := crlWorkload(t, clusters[1], ns)
	opts := rotateOpts(t, ns, nil)
	opts.Force = true
	if _, err := k8s.Rotate(testContext(t), clusters[1], opts); err != nil {
		t.Fatal(err)
	}
	w, b := crlWorkload(t, clusters[1], ns)
	if b.Cert.Equal(oldWest.Cert) || w.CRLs == nil {
		t.Fatal("rotate did not install a new CA with CRLs")
	}
	if ca.CRLOf(w.CRLs, b.Cert) == nil || ca.CRLOf(w.CRLs, oldWest.Cert) == nil {
		t.Error("rotated cacerts should hold the CRLs of the new CA and, while current, of the old one")
	}
	east, _ := crlWorkload(t, clusters[0], ns)
	refused(t, east, w, ca.ErrCRLMissing) // before the sync east lacks the new CA's CRL
	if p := crlMeshProblems(t, clusters, ns); len(p) != 1 || p[0].Check != "mesh-crl-missing" || !strings.Contains(p[0].Message, "east lacks a CRL") {
		t.Errorf("status before the sync: %v, want east lacking west's new CA's CRL", p)
	}
	sync()
	if p := crlMeshProblems(t, clusters, ns); len(p) != 0 {
		t.Errorf("status after the sync: %v", p)
	}
	east, _ = crlWorkload(t, clusters[0], ns)
	if err := handshakes(t, east, w); err != nil {
		t.Errorf("after the sync: %v", err)
	}

	// Minted ahead (what rotate does with CRLs on): the new CA's CRL reaches east
	// before west installs the CA, so east accepts it with no sync afterwards.
	minted, _, err := MintAhead(testContext(t), clusters, opts)
	if err != nil || len(minted) != 2 {
		t.Fatalf("MintAhead with Force: %d minted, %v", len(minted), err)
	}
	if _, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}, Pending: []*ca.Bundle{minted["west"]}}); err != nil {
		t.Fatal(err)
	}
	opts.Minted = map[string]*ca.Bundle{"west": minted["west"]}
	if _, err := k8s.Rotate(testContext(t), clusters[1], opts); err != nil {
		t.Fatal(err)
	}
	w, b = crlWorkload(t, clusters[1], ns)
	if !b.Cert.Equal(minted["west"].Cert) {
		t.Fatal("rotate did not install the intermediate minted ahead")
	}
	east, _ = crlWorkload(t, clusters[0], ns)
	if err := handshakes(t, east, w); err != nil {
		t.Errorf("minted ahead, no sync after: %v", err)
	}
	if p := crlMeshProblems(t, clusters, ns); len(p) != 0 {
		t.Errorf("status after a rotation minted ahead: %v", p)
	}
}

// refused wants the handshake between server and client to fail, and client's chain
// to fail server's CRL check for the reason want (the handshake's own error may be
// only the peer's alert).
func refused(t *testing.T, server, client *ca.Workload, want error) {
	t.Helper()
	if err := ca.Handshake(testContext(t), server, client); err == nil {
		t.Error("handshake succeeded, want it refused")
		return
	}
	leaf, err := x509.ParseCertificate(client.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range client.Cert.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: server.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("client chain does not verify: %v", err)
	}
	if err := ca.CheckChainCRLs(chains[0], server.CRLs, time.Now()); !errors.Is(err, want) {
		t.Errorf("CRL check of the client's chain: %v, want %v", err, want)
	}
}

// crlMeshProblems is status of clusters as one mesh, only the CRL findings.
func crlMeshProblems(t *testing.T, clusters []*k8s.Cluster, ns string) []ca.Problem {
	t.Helper()
	var sts []*k8s.ClusterStatus
	for _, cl := range clusters {
		st, err := k8s.Status(testContext(t), cl, k8s.StatusOptions{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		if st.CRLs == nil || len(st.CRLs.CRLs) == 0 {
			t.Fatalf("%s: status shows no CRLs", cl.Name)
		}
		sts = append(sts, st)
	}
	var out []ca.Problem
	for _, p := range MeshProblems(sts) {
		if strings.HasPrefix(p.Check, "mesh-crl") {
			out = append(out, p)
		}
	}
	return out
}

// TestSyncCRLsRefusesForgedCRL: a CRL in a cluster's ca-crl.pem that claims another
// cluster CA's name and key identifier, with a higher number, but was signed by
// another key (a tampered Secret) stops the run with an error naming the cluster
// and the CA, before anything is written anywhere; once it is removed, the run
// goes through and every cluster holds the real CRL.
func TestSyncCRLsRefusesForgedCRL(t *testing.T) {
	_, clusters := realClusters(t, false)
	clusters = clusters[:2]
	ns := testNamespace(t)
	root := sharedRoot(t)
	var bundles []*ca.Bundle
	for _, cl := range clusters {
		b, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
		bundles = append(bundles, b)
	}
	rootCRL, err := ca.SignCRL(root.Cert, root.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}}
	if _, err := SyncCRLs(testContext(t), clusters, opts); err != nil {
		t.Fatal(err)
	}
	// Forge "east's" CRL with another key into west's Secret.
	other, _ := mint(t, nil, "mallory")
	fake := *bundles[0].Cert
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().Add(time.Hour).UnixNano()),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}, &fake, other.Key)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, clusters[1], ns, k8s.SecretName)
	crls, _ := ca.ParseCRLsPEM(s.Data[ca.CRLFile])
	s.Data[ca.CRLFile] = ca.EncodeCRLsPEM(append(crls, forged)...)
	tampered, err := clusters[1].Client.CoreV1().Secrets(ns).Update(testContext(t), s, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, cl := range clusters {
		before[cl.Name] = getSecret(t, cl, ns, k8s.SecretName).ResourceVersion
	}
	// Due everywhere, so that a run that went on would write.
	due := opts
	due.Refresh = 2 * time.Hour
	res, err := SyncCRLs(testContext(t), clusters, due)
	if !errors.Is(err, ErrForgedCRL) || !strings.Contains(err.Error(), "cluster "+clusters[1].Name) || res[1].Err == nil {
		t.Fatalf("sync with a forged CRL in %s: %v", clusters[1].Name, err)
	}
	for _, cl := range clusters {
		if rv := getSecret(t, cl, ns, k8s.SecretName).ResourceVersion; rv != before[cl.Name] {
			t.Errorf("%s written although a forged CRL stopped the run", cl.Name)
		}
	}
	tampered.Data[ca.CRLFile] = ca.EncodeCRLsPEM(crls...)
	if _, err := clusters[1].Client.CoreV1().Secrets(ns).Update(testContext(t), tampered, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := SyncCRLs(testContext(t), clusters, due); err != nil {
		t.Fatal(err)
	}
	for _, cl := range clusters {
		got, err := ca.ParseCRLsPEM(getSecret(t, cl, ns, k8s.SecretName).Data[ca.CRLFile])
		if err != nil {
			t.Fatal(err)
		}
		for _, crl := range got {
			if bytes.Equal(crl.Raw, forged.Raw) {
				t.Errorf("%s holds the forged CRL after the sync", cl.Name)
			}
		}
		if ca.CRLOf(got, bundles[0].Cert) == nil {
			t.Errorf("%s lacks east's real CRL", cl.Name)
		}
	}
}

// TestInstallKeepsCRLs: installing a bundle without ca-crl.pem into a cluster with
// CRLs keeps them (byte for byte when its CA is unchanged, so a rerun writes
// nothing), and adds a CRL of a new CA, which istiod needs.
func TestInstallKeepsCRLs(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	root := sharedRoot(t)
	_, files := mint(t, nil, cl.Name)
	mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	rootCRL, err := ca.SignCRL(root.Cert, root.Signer, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SyncCRLs(testContext(t), clusters[:1], CRLSyncOptions{Namespace: ns, AnchorCRLs: []*x509.RevocationList{rootCRL}}); err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, cl, ns, k8s.SecretName).Data[ca.CRLFile]
	if res := mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns}); res.Action != k8s.ActionUnchanged {
		t.Errorf("reinstalling the same bundle: %s, want unchanged (CRLs kept as they are)", res.Action)
	}
	b2, files2 := mint(t, nil, cl.Name)
	res := mustInstall(t, cl, files2, k8s.InstallOptions{Namespace: ns})
	after := getSecret(t, cl, ns, k8s.SecretName).Data
	crls, err := ca.ParseCRLsPEM(after[ca.CRLFile])
	if err != nil || len(before) == 0 {
		t.Fatalf("CRLs after installing a new CA: %v", err)
	}
	if ca.CRLOf(crls, b2.Cert) == nil || ca.CRLOf(crls, root.Cert) == nil {
		t.Error("installing a new CA should keep the root's CRL and add the new CA's")
	}
	if rep := ca.Verify(after, ca.VerifyOptions{}); !rep.OK() {
		t.Errorf("installed cacerts fails istiod's checks: %v", rep.Err())
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "once the mesh CRL set is spread again") {
		t.Errorf("no warning that the mesh CRL set must be spread: %v", res.Warnings)
	}
}

// SettleCRLs waits only after a spread that wrote something, never in a dry run, and
// gives up with the context.
func TestSettleCRLs(t *testing.T) {
	updated := []*CRLSyncResult{{Cluster: "a", Action: k8s.ActionUnchanged}, {Cluster: "b", Action: k8s.ActionUpdated}}
	unchanged := updated[:1]
	long := time.Hour
	for _, tc := range []struct {
		name string
		res  []*CRLSyncResult
		dry  bool
	}{{"nothing written", unchanged, false}, {"dry run", updated, true}} {
		if err := SettleCRLs(context.Background(), nil, long, tc.res, tc.dry); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("interrupted")
	cancel(stop)
	if err := SettleCRLs(ctx, nil, long, updated, false); !errors.Is(err, stop) {
		t.Errorf("cancelled wait: %v", err)
	}
	start := time.Now()
	if err := SettleCRLs(context.Background(), nil, 20*time.Millisecond, updated, false); err != nil || time.Since(start) < 20*time.Millisecond {
		t.Errorf("wait after an update: %v after %s", err, time.Since(start))
	}
}

// TestSpreadForInstall: installing new CAs into a mesh with CRLs on (a new CA for
// west, a first cacerts for north) spreads their CRLs to every cluster first, with
// the root's CRL the clusters hold, so that all pairs talk right after the
// installs, with no crl sync; a rerun with the same bundles spreads nothing.
func TestSpreadForInstall(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	east, west, north := clusters[0], clusters[1], clusters[2]
	crlMesh(t, []*k8s.Cluster{east, west}, ns)
	_, westFiles := mint(t, nil, west.Name)
	_, northFiles := mint(t, nil, north.Name)
	targets, files := []*k8s.Cluster{west, north}, []map[string][]byte{westFiles, northFiles}
	res, err := SpreadForInstall(testContext(t), targets, files, []*k8s.Cluster{east}, CRLSyncOptions{Namespace: ns})
	if err != nil || len(res) != 3 {
		t.Fatalf("spread: %d results, %v", len(res), err)
	}
	if files[0][ca.CRLFile] != nil || files[1][ca.CRLFile] == nil {
		t.Fatal("only the cluster without cacerts should get the mesh set in its files")
	}
	for i, cl := range targets {
		mustInstall(t, cl, files[i], k8s.InstallOptions{Namespace: ns})
	}
	ws := map[string]*ca.Workload{}
	for _, cl := range clusters {
		ws[cl.Name], _ = crlWorkload(t, cl, ns)
	}
	for i, a := range clusters {
		for _, b := range clusters[i+1:] {
			if err := handshakes(t, ws[a.Name], ws[b.Name]); err != nil {
				t.Errorf("%s <-> %s right after the install: %v", a.Name, b.Name, err)
			}
		}
	}
	if p := crlMeshProblems(t, clusters, ns); len(p) != 0 {
		t.Errorf("mesh CRL problems after the install: %v", p)
	}
	again := []map[string][]byte{k8s.SecretFiles(getSecret(t, west, ns, k8s.SecretName)), k8s.SecretFiles(getSecret(t, north, ns, k8s.SecretName))}
	delete(again[0], ca.CRLFile)
	delete(again[1], ca.CRLFile)
	if res, err := SpreadForInstall(testContext(t), targets, again, []*k8s.Cluster{east}, CRLSyncOptions{Namespace: ns}); err != nil || res != nil {
		t.Errorf("rerun with the installed bundles: %v, %v; want nothing spread", res, err)
	}

	// A cacerts no istiod can load (its CA certificate broken; its ca-crl.pem
	// intact) is replaced like a first one: the new CA's CRL reaches the others
	// first, the target is not read, and it gets the mesh set.
	broken := getSecret(t, west, ns, k8s.SecretName)
	broken.Data[ca.CACertFile] = []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
	if _, err := west.Client.CoreV1().Secrets(ns).Update(testContext(t), broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, westFiles = mint(t, nil, west.Name)
	res, err = SpreadForInstall(testContext(t), []*k8s.Cluster{west}, []map[string][]byte{westFiles}, []*k8s.Cluster{east, north}, CRLSyncOptions{Namespace: ns})
	if err != nil || len(res) != 3 || res[0].Action != ActionSkipped || westFiles[ca.CRLFile] == nil {
		t.Errorf("spread for a broken cacerts: %d results, CRL set in its files: %v, %v", len(res), westFiles[ca.CRLFile] != nil, err)
	}
	mustInstall(t, west, westFiles, k8s.InstallOptions{Namespace: ns})
	for _, cl := range clusters {
		ws[cl.Name], _ = crlWorkload(t, cl, ns)
	}
	for _, peer := range []*k8s.Cluster{east, north} {
		if err := handshakes(t, ws[west.Name], ws[peer.Name]); err != nil {
			t.Errorf("west (cacerts replaced) <-> %s: %v", peer.Name, err)
		}
	}
	if p := crlMeshProblems(t, clusters, ns); len(p) != 0 {
		t.Errorf("mesh CRL problems after replacing a broken cacerts: %v", p)
	}
}

// Two spreads at once (two rotate runs, a bootstrap beside a CronJob's rotate),
// each with its own pending CA: every cluster ends up holding both CRLs. A write
// computed from a read made before the other run wrote would drop the other's.
func TestConcurrentSpreadsKeepBothCRLs(t *testing.T) {
	_, clusters := realClusters(t, false)
	ns := testNamespace(t)
	anchors := []*x509.RevocationList{crlMesh(t, clusters, ns)}
	for round := range 5 {
		a, _ := mint(t, nil, "a")
		b, _ := mint(t, nil, "b")
		errs := make(chan error, 2)
		for run, p := range []*ca.Bundle{a, b} {
			go func() {
				_, err := SyncCRLs(testContext(t), clusters, CRLSyncOptions{Namespace: ns, AnchorCRLs: anchors, Pending: []*ca.Bundle{p},
					Lock: &k8s.LeaseOptions{Holder: fmt.Sprintf("run-%d", run), Wait: time.Minute}})
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		for _, cl := range clusters {
			crls, err := ca.ParseCRLsPEM(k8s.SecretFiles(getSecret(t, cl, ns, k8s.SecretName))[ca.CRLFile])
			if err != nil {
				t.Fatal(err)
			}
			for name, p := range map[string]*ca.Bundle{"a": a, "b": b} {
				if ca.CRLOf(crls, p.Cert) == nil {
					t.Errorf("round %d: %s lost the CRL of run %s's pending CA", round, cl.Name, name)
				}
			}
		}
	}
}

// Two rotate runs at once with CRLs on (both --force, as two CronJob runs that
// overlap) rotate each cluster once: the run that gets a cluster's Lease second
// finds it rotated since it minted ahead, and leaves it (issue: no Lease was held
// during the CRL settle, and the second run rotated again).
func TestOverlappingRotationsWithCRLsRotateOnce(t *testing.T) {
	_, all := realClusters(t, false)
	clusters := all[:2]
	ns := testNamespace(t)
	rootCRL := crlMesh(t, clusters, ns)
	src := &Source{Issuer: ca.NewLocalIssuer(sharedRoot(t)), CRLAuthority: heldCRL(rootCRL)}
	reports := make([]*RotateReport, 2)
	var wg sync.WaitGroup
	for k := range reports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The second run waits longer for its CRLs to settle: it decided (and
			// minted) before the first rotated, and reaches the clusters after.
			opts := RotateOptions{Rotate: rotateOpts(t, ns, nil), CRLSettle: time.Duration(k) * 3 * time.Second}
			opts.Rotate.Force, opts.Rotate.Lock.Holder, opts.Rotate.Lock.Wait = true, fmt.Sprintf("run-%d", k), time.Minute
			reports[k] = Rotate(testContext(t), clusters, src, opts)
		}()
	}
	wg.Wait()
	for _, cl := range clusters {
		rotated := 0
		for _, rep := range reports {
			if rep.Verdict() != OK {
				t.Fatalf("a run failed: %v", rep.Err)
			}
			for _, c := range rep.Clusters {
				if c.Cluster == cl.Name && c.Outcome == k8s.OutcomeRotated {
					rotated++
				}
			}
		}
		if rotated != 1 {
			t.Errorf("%s rotated %d times by two overlapping runs, want once", cl.Name, rotated)
		}
	}
}

// A revoke that one cluster refused (here: a bad token; an admission policy or an
// apiserver down do the same) is finished by running it again: the revocation is
// recorded already, so the rerun spreads it (exit 0) instead of refusing; until
// then status flags the cluster whose root CRL is behind (mesh-crl-behind).
func TestInterruptedRevokeIsFinishedByRerun(t *testing.T) {
	env, clusters := realClusters(t, false)
	ns := testNamespace(t)
	for _, cl := range clusters {
		_, files := mint(t, nil, cl.Name)
		mustInstall(t, cl, files, k8s.InstallOptions{Namespace: ns})
	}
	root := sharedRoot(t)
	dir := t.TempDir()
	src := &Source{Issuer: ca.NewLocalIssuer(root), CRLAuthority: func(context.Context) (ca.CRLAuthority, error) {
		return &ca.FolderCRL{Dir: dir, Root: root}, nil
	}}
	if rep := CRLSync(testContext(t), clusters, src, CRLRunOptions{Namespace: ns}); rep.Verdict() != OK {
		t.Fatalf("crl sync: %v", rep.Err)
	}
	east, west := clusters[0], clusters[1]
	broken, err := k8s.NewCluster(west.Name, env.Clusters[1].RESTConfig("not-a-token"), k8s.ClusterOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	revoke := RevokeOptions{CRLRunOptions: CRLRunOptions{Namespace: ns}, Clusters: []string{east.Name}, Reason: ca.ReasonKeyCompromise, ReasonName: "keyCompromise"}
	rep := Revoke(testContext(t), []*k8s.Cluster{east, broken, clusters[2]}, src, revoke)
	if rep.Verdict() != Failed || len(rep.Revoked) != 1 || rep.Revoked[0].Already {
		t.Fatalf("first revoke: %s, %v, %+v", rep.Verdict(), rep.Err, rep.Revoked)
	}
	behind := func() bool {
		st := Status(testContext(t), clusters, StatusOptions{Status: k8s.StatusOptions{Namespace: ns}})
		for _, p := range st.Mesh {
			if p.Check == "mesh-crl-behind" && strings.HasPrefix(p.Message, west.Name+" holds") {
				return true
			}
		}
		return false
	}
	if !behind() {
		t.Fatal("status does not flag west, whose root CRL lacks the revocation")
	}
	rep = Revoke(testContext(t), clusters, src, revoke)
	if rep.Verdict() != OK || len(rep.Revoked) != 1 || !rep.Revoked[0].Already {
		t.Fatalf("rerun: %s, %v, %+v", rep.Verdict(), rep.Err, rep.Revoked)
	}
	if behind() {
		t.Fatal("after the rerun, status still flags west")
	}
	ew, _ := crlWorkload(t, east, ns)
	ww, _ := crlWorkload(t, west, ns)
	if err := ca.Handshake(testContext(t), ww, ew); err == nil {
		t.Fatal("west still accepts east's workloads after the rerun")
	}
}
