package mesh

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
	"github.com/meshpki/meshpki/k8s"
)

// actAsSelfSignedIstiod puts into namespace ns of cl what an istiod that started
// without cacerts leaves there (security/pkg/pki/ca/ca.go): Secret istio-ca-secret
// with its own CA (RSA 2048, O=cluster.local, ttl), and the trust bundle it
// publishes, that CA alone. It returns the CA's certificate.
func actAsSelfSignedIstiod(t *testing.T, cl *k8s.Cluster, ns string, ttl time.Duration) *x509.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: now, NotAfter: now.Add(ttl), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := ca.MarshalPrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := ca.EncodeCertificatesPEM(cert)
	ctx := testContext(t)
	_, _ = cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: k8s.SelfSignedSecret, Namespace: ns}, Type: "istio.io/ca-root",
		Data: map[string][]byte{ca.CACertFile: certPEM, ca.CAKeyFile: keyPEM, ca.RootCertFile: certPEM, ca.CertChainFile: nil, "key.pem": nil}}
	if _, err := cl.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: k8s.RootConfigMap, Namespace: ns}, Data: map[string]string{k8s.RootConfigMapKey: string(certPEM)}}
	if _, err := cl.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestConvergeRefusesBadInput: each refusal of a convergence, against real
// apiservers, before anything is written anywhere.
func TestConvergeRefusesBadInput(t *testing.T) {
	_, clusters := realClusters(t, false)
	_, limited := realClusters(t, true)
	east, west := clusters[0], clusters[1]
	target := newRoot(t)
	opts := func(ns string) RootRotationOptions {
		return RootRotationOptions{Namespace: ns, NewRoot: target.Cert, Issuer: ca.NewLocalIssuer(target), Adopt: true,
			MinStepInterval: 24 * time.Hour, Lock: &k8s.LeaseOptions{Holder: "converge"}}
	}
	// versions reads every Secret's resourceVersion of ns in both clusters.
	versions := func(ns string) string {
		var out []string
		for _, cl := range []*k8s.Cluster{east, west} {
			l, err := cl.Client.CoreV1().Secrets(ns).List(testContext(t), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range l.Items {
				out = append(out, cl.Name+"/"+s.Name+"@"+s.ResourceVersion)
			}
		}
		return strings.Join(out, " ")
	}
	refused := func(t *testing.T, ns string, cls []*k8s.Cluster, o RootRotationOptions, want error, has string) {
		t.Helper()
		before := versions(ns)
		rep, err := RotateRoot(testContext(t), cls, o)
		if !errors.Is(err, want) || !strings.Contains(err.Error(), has) || rep.Verdict() != Failed {
			t.Fatalf("got %v (verdict %s), want %v with %q", err, rep.Verdict(), want, has)
		}
		if after := versions(ns); after != before {
			t.Fatalf("written although refused: %s -> %s", before, after)
		}
	}

	t.Run("istiod not running", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		refused(t, ns, []*k8s.Cluster{east, west}, opts(ns), rotation.ErrUnreadable, "no istiod running")
	})
	t.Run("istio-ca-secret unreadable", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		actAsSelfSignedIstiod(t, west, ns, 10*365*24*time.Hour)
		applyRBAC(t, west, ns, "meshpki-status")
		applyRBAC(t, east, ns, "meshpki-status")
		refused(t, ns, []*k8s.Cluster{limited[0], limited[1]}, opts(ns), rotation.ErrUnreadable, "needs get on secrets/istio-ca-secret")
	})
	t.Run("a self-signed CA that expires before the end", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		actAsSelfSignedIstiod(t, west, ns, 30*time.Hour)
		refused(t, ns, []*k8s.Cluster{east, west}, opts(ns), rotation.ErrExpiresTooSoon, "cluster west signs with a self-signed CA")
	})
	t.Run("the target is a cluster's own CA", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		own := actAsSelfSignedIstiod(t, west, ns, 10*365*24*time.Hour)
		o := opts(ns)
		o.NewRoot = own
		refused(t, ns, []*k8s.Cluster{east, west}, o, rotation.ErrTargetInMesh, "is the CA of cluster west itself")
	})
	t.Run("without Adopt", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		actAsSelfSignedIstiod(t, west, ns, 10*365*24*time.Hour)
		o := opts(ns)
		o.Adopt = false
		refused(t, ns, []*k8s.Cluster{east, west}, o, rotation.ErrUnreadable, "no Secret cacerts")
	})
	t.Run("dry run adopts nothing", func(t *testing.T) {
		ns := testNamespace(t)
		_, files := mint(t, nil, east.Name)
		mustInstall(t, east, files, k8s.InstallOptions{Namespace: ns})
		actAsSelfSignedIstiod(t, west, ns, 10*365*24*time.Hour)
		before := versions(ns)
		o := opts(ns)
		o.DryRun = true
		rep, err := RotateRoot(testContext(t), []*k8s.Cluster{east, west}, o)
		if err != nil || rep.Verdict() != OK || rep.Clusters[1].Action != "adopt" || !rep.Clusters[1].DryRun {
			t.Fatalf("dry run: %v, %+v", err, rep.Clusters[1])
		}
		if after := versions(ns); after != before {
			t.Fatalf("a dry run wrote: %s -> %s", before, after)
		}
	})
}
