package k8s

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
)

// What istiod has loaded. istiod publishes the roots it trusts as ConfigMap
// istio-ca-root-cert (key root-cert.pem) in every namespace, its own included; that is
// the only trace, short of its log, of whether it took a cacerts change: a refused
// change leaves the old roots there (pilot/pkg/bootstrap/istio_ca.go, handleEvent,
// keeps its old CA and logs "Updating new ROOT-CA not supported").
const (
	// RootConfigMap is the trust bundle istiod publishes.
	RootConfigMap = "istio-ca-root-cert"
	// RootConfigMapKey holds the roots in RootConfigMap.
	RootConfigMapKey = "root-cert.pem"
	// SelfSignedSecret holds istiod's own self-signed CA, made when it started without
	// cacerts.
	SelfSignedSecret = "istio-ca-secret"
	// DefaultIstiodGrace is how long after a cacerts change istiod is given to take it
	// before Status calls it refused: kubelet updates a Secret volume within its sync
	// period plus its cache TTL (about a minute each by default).
	DefaultIstiodGrace = 3 * time.Minute
)

// IstiodState says whether istiod took the roots of the cluster's cacerts.
type IstiodState string

// IstiodStates.
const (
	// IstiodLoaded: istiod publishes exactly the roots of cacerts.
	IstiodLoaded IstiodState = "loaded"
	// IstiodNotYet: cacerts changed less than the grace period ago.
	IstiodNotYet IstiodState = "not-yet"
	// IstiodRefused: istiod still publishes other roots, well after cacerts changed.
	IstiodRefused IstiodState = "refused"
	// IstiodSelfSigned: istiod signs with its own self-signed CA; it took no cacerts
	// when it started and does not switch on its own.
	IstiodSelfSigned IstiodState = "self-signed"
	// IstiodAbsent: no trust bundle published: no istiod runs (or it never started).
	IstiodAbsent IstiodState = "no-istiod"
	// IstiodUnknown: the ConfigMap could not be read.
	IstiodUnknown IstiodState = "unknown"
)

// IstiodStatus is what Status found of istiod's trust bundle in one cluster.
type IstiodStatus struct {
	State IstiodState `json:"state"`
	// PublishedRoots are the SHA-256 fingerprints (hex) of the roots istiod publishes.
	PublishedRoots []string `json:"publishedRoots,omitempty"`
	// Since is when cacerts last changed: for not-yet and refused, istiod has not taken
	// that change.
	Since time.Time `json:"since,omitzero"`
	// Reason explains every state but loaded, with the likely cause of a refusal.
	Reason string `json:"reason,omitempty"`
	// Source says where the published roots were read: SourceClusterTrustBundle
	// or SourceConfigMap.
	Source string `json:"source,omitempty"`
}

// ReadPublishedRoots reads istiod's trust bundle for namespace ns where that istiod
// publishes it (ReadTrustBundle: its ClusterTrustBundle, or the ConfigMap). found is
// false when no istiod published one.
func ReadPublishedRoots(ctx context.Context, cl *Cluster, ns string) (data []byte, found bool, err error) {
	p, err := ReadTrustBundle(ctx, cl, ns)
	return p.Data, p.Found, err
}

// ReadIstiod tells whether istiod in cl has taken the roots of secret (cacerts as read
// just now; nil when there is none). Errors reading the ConfigMaps become
// IstiodUnknown, not an error: istiod's state is a finding.
func ReadIstiod(ctx context.Context, cl *Cluster, ns string, secret *corev1.Secret, now time.Time, grace time.Duration) *IstiodStatus {
	return readIstiod(ctx, cl, ns, secret, now, grace, ReadIstioSetup(ctx, cl, ns))
}

func readIstiod(ctx context.Context, cl *Cluster, ns string, secret *corev1.Secret, now time.Time, grace time.Duration, setup *IstioSetup) *IstiodStatus {
	pub, selfSigned, err := readIstiodCA(ctx, cl, ns, setup)
	if err != nil && !pub.Found { // no trust bundle read; a refused istio-ca-secret only hides "self-signed"
		return &IstiodStatus{State: IstiodUnknown, Reason: err.Error(), Source: pub.Source}
	}
	st := JudgeIstiod(secret, pub.Data, pub.Found, selfSigned, now, grace)
	st.Source = pub.Source
	if !pub.Found && setup.ClusterTrustBundle {
		st.Reason = fmt.Sprintf("no ClusterTrustBundle %s, which istiod's Deployment says it publishes (ENABLE_CLUSTER_TRUST_BUNDLE_API): istiod is not running, or the apiserver does not serve certificates.k8s.io/v1beta1 clustertrustbundles, which istiod writes (--runtime-config on Kubernetes 1.37+)", TrustBundleName)
	}
	return st
}

// readIstiodCA reads what tells which CA istiod uses in namespace ns: the trust bundle it
// publishes where setup says (Found false when none) and the certificate of its own
// self-signed CA (nil when there is none). err is the first read that failed; what was
// read before it is returned with it.
func readIstiodCA(ctx context.Context, cl *Cluster, ns string, setup *IstioSetup) (pub Published, selfSigned []byte, err error) {
	pub, err = readTrustBundle(ctx, cl, ns, setup)
	if err != nil || !pub.Found {
		return pub, nil, err
	}
	s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SelfSignedSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return pub, nil, nil
	case err != nil:
		return pub, nil, apiError(cl.Name, "get", "secrets", ns, err)
	}
	return pub, s.Data[ca.CACertFile], nil
}

// onOwnCA reports whether the published roots hold the root of istiod's own CA.
func onOwnCA(pub, ownCA []*x509.Certificate) bool {
	return len(ownCA) > 0 && len(pub) > 0 && ca.SubsetOf(ownCA, pub)
}

// JudgeIstiod is ReadIstiod's decision, pure: secret is cacerts (nil when missing),
// published the trust bundle istiod publishes (found false when there is none),
// selfSigned the certificate of istiod's own CA (Secret istio-ca-secret; nil when
// there is none).
func JudgeIstiod(secret *corev1.Secret, published []byte, found bool, selfSigned []byte, now time.Time, grace time.Duration) *IstiodStatus {
	if grace <= 0 {
		grace = DefaultIstiodGrace
	}
	if !found {
		return &IstiodStatus{State: IstiodAbsent, Reason: fmt.Sprintf("no trust bundle published (ConfigMap %s, or ClusterTrustBundle %s): no istiod has run here", RootConfigMap, TrustBundleName)}
	}
	pub, _ := ca.ParseCertificatesPEM(published)
	st := &IstiodStatus{}
	for _, c := range pub {
		st.PublishedRoots = append(st.PublishedRoots, ca.Fingerprint(c))
	}
	ownCA, _ := ca.ParseCertificatesPEM(selfSigned)
	if secret == nil {
		st.State = IstiodSelfSigned
		st.Reason = "no cacerts: istiod signs with its own self-signed CA"
		return st
	}
	files := SecretFiles(secret)
	f, _ := ca.DetectFormat(files)
	name := ca.RootsFileName(f)
	want, err := ca.ParseCertificatesPEM(files[name])
	if err != nil {
		st.State, st.Reason = IstiodUnknown, fmt.Sprintf("cacerts %s does not parse: %v", name, err)
		return st
	}
	// istiod publishes its roots file byte for byte (certcontroller.go,
	// updateRootCertAndGenKeyCert: GetRootCertPem): the same certificates in other bytes
	// are a roots file it has not taken, as Istio 1.20-1.29 refuse a reordered one.
	if bytes.Equal(published, files[name]) {
		st.State = IstiodLoaded
		return st
	}
	if onOwnCA(pub, ownCA) {
		st.State = IstiodSelfSigned
		st.Reason = "istiod signs with its own self-signed CA (Secret " + SelfSignedSecret + "): it started before cacerts existed and does not switch on its own; restart it (kubectl rollout restart deployment/istiod)"
		return st
	}
	st.Since = lastChange(secret)
	if now.Sub(st.Since) < grace {
		st.State = IstiodNotYet
		st.Reason = fmt.Sprintf("cacerts changed at %s; kubelet updates the volume within about a minute or two", st.Since.UTC().Format(time.RFC3339))
		return st
	}
	st.State = IstiodRefused
	st.Reason = refusalReason(published, files[name])
	if len(ownCA) == 0 && !ca.Overlap(pub, want) {
		st.Reason += " (or istiod still signs with its own self-signed CA, started before cacerts existed: " + SelfSignedSecret + " could not be read to tell)"
	}
	return st
}

// refusalReason names the likely reason istiod kept loaded instead of next.
func refusalReason(loaded, next []byte) string {
	v120 := ca.IstiodTakesRootsChange(ca.IstioRelease{Major: 1, Minor: 20}, true, loaded, next)
	v130 := ca.IstiodTakesRootsChange(ca.IstioRelease{Major: 1, Minor: 30}, true, loaded, next)
	switch {
	case !v130.Accepted:
		return "the new roots neither extend nor trim the loaded ones (a root switch): istiod keeps its old CA until restarted; a root change belongs to a root rotation"
	case !v120.Accepted:
		return "byte rule: Istio 1.20-1.29 take a changed roots file only when one contains the other byte for byte, and this one was reordered or re-encoded; restart istiod, or restore the previous roots file and extend it"
	default:
		return "the roots file only extends or trims the loaded one, yet istiod did not take it: ISTIO_MULTIROOT_MESH is off, or Istio is older than 1.19 (no reload): set it, or restart istiod"
	}
}

// lastChange is when a Secret's data was last written: the newest managedFields time,
// or its creation.
func lastChange(s *corev1.Secret) time.Time {
	t := s.CreationTimestamp.Time
	for _, m := range s.ManagedFields {
		if m.Time != nil && m.Time.After(t) {
			t = m.Time.Time
		}
	}
	return t
}

// istiodOnOwnCA reports whether istiod in namespace ns publishes the root of its own
// self-signed CA (Secret istio-ca-secret) as its trust bundle.
func istiodOnOwnCA(ctx context.Context, cl *Cluster, ns string) (bool, error) {
	pub, selfSigned, err := readIstiodCA(ctx, cl, ns, ReadIstioSetup(ctx, cl, ns))
	if err != nil || !pub.Found {
		return false, err
	}
	roots, _ := ca.ParseCertificatesPEM(pub.Data)
	own, _ := ca.ParseCertificatesPEM(selfSigned)
	return onOwnCA(roots, own), nil
}

// SelfSignedCA is istiod's own self-signed CA as istiod holds it, read to adopt it
// into a mesh (never printed: it holds the key).
type SelfSignedCA struct {
	// Cert is the CA's certificate, its own root.
	Cert *x509.Certificate
	Key  crypto.Signer
	// Secret names where it was read: istio-ca-secret, or cacerts marked
	// istio-generated (istiod's USE_CACERTS_FOR_SELF_SIGNED_CA).
	Secret string
}

// ErrNoSelfSignedCA means no self-signed CA of istiod was found in the namespace.
var ErrNoSelfSignedCA = errors.New("no self-signed CA of istiod")

// ReadSelfSignedCA reads the CA istiod signs with when it runs on its own CA: Secret
// istio-ca-secret (istiod prefers it), else a cacerts that istiod generated
// (ca.ReservedKey). Only ca-cert.pem and ca-key.pem are read, as istiod reads them
// (security/pkg/pki/ca/ca.go loadSelfSignedCaSecret; the Secret's own
// root-cert.pem goes stale when istiod renews the CA). A refused read names the
// permission it needs.
func ReadSelfSignedCA(ctx context.Context, cl *Cluster, ns string) (*SelfSignedCA, error) {
	var data map[string][]byte
	name := SelfSignedSecret
	s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SelfSignedSecret, metav1.GetOptions{})
	switch {
	case err == nil:
		data = s.Data
	case apierrors.IsNotFound(err):
		name = SecretName
		s, err = cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("cluster %s: %w: neither Secret %s nor a %s that istiod generated in namespace %s", cl.Name, ErrNoSelfSignedCA, SelfSignedSecret, SecretName, ns)
		case err != nil:
			return nil, selfSignedReadError(cl, ns, name, err)
		}
		if _, ok := s.Data[ca.ReservedKey]; !ok {
			return nil, fmt.Errorf("cluster %s: %w: no Secret %s, and %s in namespace %s is not one istiod generated", cl.Name, ErrNoSelfSignedCA, SelfSignedSecret, SecretName, ns)
		}
		data = s.Data
	default:
		return nil, selfSignedReadError(cl, ns, name, err)
	}
	cert, err := ca.ParseCertificatePEM(data[ca.CACertFile])
	if err != nil {
		return nil, fmt.Errorf("cluster %s: Secret %s in namespace %s: %s: %w", cl.Name, name, ns, ca.CACertFile, err)
	}
	key, err := ca.ParsePrivateKeyPEM(data[ca.CAKeyFile])
	if err != nil {
		return nil, fmt.Errorf("cluster %s: Secret %s in namespace %s: %s: %w", cl.Name, name, ns, ca.CAKeyFile, err)
	}
	if !ca.KeyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("cluster %s: Secret %s in namespace %s: %w", cl.Name, name, ns, ca.ErrKeyMismatch)
	}
	return &SelfSignedCA{Cert: cert, Key: key, Secret: name}, nil
}

func selfSignedReadError(cl *Cluster, ns, name string, err error) error {
	err = apiError(cl.Name, "get", "secrets", ns, err)
	var fe *ForbiddenError
	if errors.As(err, &fe) {
		return fmt.Errorf("%w: adopting istiod's own CA needs get on secrets/%s and secrets/%s in namespace %s", err, SelfSignedSecret, SecretName, ns)
	}
	return err
}
