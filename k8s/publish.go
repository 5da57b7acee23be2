package k8s

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
)

// Where istiod publishes trust, by mode and release (read from Istio's code; see
// docs/kubernetes.md, "Where istiod publishes trust"):
//
//   - By default, the namespace controller writes ConfigMap istio-ca-root-cert (key
//     root-cert.pem) and, with CRLs (Istio 1.27+, PILOT_ENABLE_CA_CRL, default on),
//     istio-ca-crl (key ca-crl.pem; renamed by PILOT_CRL_CONFIGMAP from 1.29) in
//     every namespace (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go).
//   - With ENABLE_CLUSTER_TRUST_BUNDLE_API=true (1.26+), istiod writes
//     ClusterTrustBundle istio.io:istiod-ca:root-cert (signer istio.io/istiod-ca,
//     spec.trustBundle = root-cert.pem byte for byte; v1alpha1 in 1.26, v1beta1 from
//     1.27) and does not start the namespace controller at all: no istio-ca-root-cert
//     and no istio-ca-crl is written (pilot/pkg/serviceregistry/kube/controller/
//     multicluster.go; pilot/pkg/config/kube/clustertrustbundle/controller.go).
//   - Ambient: ztunnel (DaemonSet ztunnel) trusts the last element of istiod's CSR
//     response, all roots from ztunnel 1.26 (src/tls/certificate.rs), and checks
//     CRLs only when CRL_PATH is set (chart value peerCaCrl.enabled, 1.29+; inbound
//     from 1.29, outbound from 1.31), reading ConfigMap istio-ca-crl by that fixed
//     name (manifests/charts/ztunnel/templates/daemonset.yaml).
const (
	// TrustBundleName is the ClusterTrustBundle istiod writes in that mode.
	TrustBundleName = "istio.io:istiod-ca:root-cert"
	// CRLConfigMap is the default name of the ConfigMap istiod publishes CRLs in.
	CRLConfigMap = "istio-ca-crl"
	// IstiodDeployment is istiod's Deployment, whose env tells its mode.
	IstiodDeployment = "istiod"
	// ZtunnelDaemonSet is ambient's node proxy.
	ZtunnelDaemonSet = "ztunnel"
)

// Published-trust sources, as IstiodStatus.Source and IstioSetup.TrustBundle say them.
const (
	SourceConfigMap          = "ConfigMap " + RootConfigMap
	SourceClusterTrustBundle = "ClusterTrustBundle " + TrustBundleName
)

// IstioSetup is what a cluster's Istio does with trust and CRLs, read from istiod's
// Deployment and ztunnel's DaemonSet: what decides whether meshpki's CRLs and roots
// take effect there.
type IstioSetup struct {
	// ClusterTrustBundle: istiod publishes its roots as a ClusterTrustBundle (and
	// no CRL ConfigMap).
	ClusterTrustBundle bool `json:"clusterTrustBundle"`
	// CRLConfigMap is the ConfigMap istiod publishes CRLs in; "" when it publishes
	// none (ClusterTrustBundle mode, or PILOT_ENABLE_CA_CRL=false).
	CRLConfigMap string `json:"crlConfigMap,omitempty"`
	// Ztunnel describes ambient's ztunnel, nil when there is none in the namespace.
	Ztunnel *Ztunnel `json:"ztunnel,omitempty"`
	// Known is false when istiod's Deployment could not be read: the mode was then
	// told from the ClusterTrustBundle's presence alone, and the CRL settings are
	// Istio's defaults.
	Known bool `json:"known"`
}

// Ztunnel is ambient's node proxy as its DaemonSet shows it.
type Ztunnel struct {
	// Image is the istio-proxy container's image; Release is its Istio release
	// when the tag tells it (e.g. "1.28.2"), else "".
	Image   string `json:"image"`
	Release string `json:"release,omitempty"`
	// CRLCheck: CRL_PATH is set, so ztunnel checks its peers against CRLs.
	CRLCheck bool `json:"crlCheck"`
}

// ReadIstioSetup reads istiod's Deployment and ztunnel's DaemonSet in namespace ns.
// A Deployment that is missing or not readable leaves Known false (the defaults,
// and ClusterTrustBundle mode when that object exists); an unreadable DaemonSet
// leaves Ztunnel nil.
func ReadIstioSetup(ctx context.Context, cl *Cluster, ns string) *IstioSetup {
	s := &IstioSetup{CRLConfigMap: CRLConfigMap}
	d, err := cl.Client.AppsV1().Deployments(ns).Get(ctx, IstiodDeployment, metav1.GetOptions{})
	if err == nil {
		s.Known = true
		env := containerEnv(d, "discovery")
		s.ClusterTrustBundle = envTrue(env["ENABLE_CLUSTER_TRUST_BUNDLE_API"], false)
		if n := env["PILOT_CRL_CONFIGMAP"]; n != "" {
			s.CRLConfigMap = n
		}
		if !envTrue(env["PILOT_ENABLE_CA_CRL"], true) {
			s.CRLConfigMap = ""
		}
	} else if _, found, _ := readClusterTrustBundle(ctx, cl); found {
		s.ClusterTrustBundle = true
	}
	if s.ClusterTrustBundle {
		s.CRLConfigMap = ""
	}
	if ds, err := cl.Client.AppsV1().DaemonSets(ns).Get(ctx, ZtunnelDaemonSet, metav1.GetOptions{}); err == nil {
		z := &Ztunnel{}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Name == "istio-proxy" || len(ds.Spec.Template.Spec.Containers) == 1 {
				z.Image, z.Release = c.Image, imageRelease(c.Image)
				for _, e := range c.Env {
					if e.Name == "CRL_PATH" && (e.Value != "" || e.ValueFrom != nil) {
						z.CRLCheck = true
					}
				}
			}
		}
		s.Ztunnel = z
	}
	return s
}

// containerEnv is the literal env of the named container of d (the first one when
// none has that name).
func containerEnv(d *appsv1.Deployment, name string) map[string]string {
	cs := d.Spec.Template.Spec.Containers
	var c *corev1.Container
	for i := range cs {
		if cs[i].Name == name {
			c = &cs[i]
		}
	}
	if c == nil && len(cs) > 0 {
		c = &cs[0]
	}
	env := map[string]string{}
	if c != nil {
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
	}
	return env
}

// envTrue reads a boolean env value as Istio's env.Register does (strconv.ParseBool),
// def when empty or unreadable.
func envTrue(v string, def bool) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return def
	}
	return b
}

// imageRelease is the Istio release in an image tag ("docker.io/istio/ztunnel:1.28.2"
// or "...:1.28.2-distroless" -> "1.28.2"), "" when the tag is no release.
func imageRelease(image string) string {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return ""
	}
	tag, _, _ := strings.Cut(image[i+1:], "-")
	if _, ok := parseRelease(tag); !ok {
		return ""
	}
	return tag
}

var releaseRE = regexp.MustCompile(`^(\d+)\.(\d+)(\.\d+)?$`)

// parseRelease reads "1.28" or "1.28.2".
func parseRelease(s string) (ca.IstioRelease, bool) {
	m := releaseRE.FindStringSubmatch(s)
	if m == nil {
		return ca.IstioRelease{}, false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return ca.IstioRelease{Major: major, Minor: minor}, true
}

// readClusterTrustBundle reads istiod's ClusterTrustBundle: certificates.k8s.io/v1
// first (served by default from Kubernetes 1.37), then v1beta1 (what istiod writes,
// served on request, and by default nowhere). Both share one storage.
func readClusterTrustBundle(ctx context.Context, cl *Cluster) (data []byte, found bool, err error) {
	v1, err := cl.Client.CertificatesV1().ClusterTrustBundles().Get(ctx, TrustBundleName, metav1.GetOptions{})
	if err == nil {
		return []byte(v1.Spec.TrustBundle), true, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, false, apiError(cl.Name, "get", "clustertrustbundles", "", err)
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Details != nil && st.Status().Details.Name == TrustBundleName {
		return nil, false, nil // v1 is served and the object is absent: v1beta1 shares its storage
	}
	b1, err := cl.Client.CertificatesV1beta1().ClusterTrustBundles().Get(ctx, TrustBundleName, metav1.GetOptions{})
	switch {
	case err == nil:
		return []byte(b1.Spec.TrustBundle), true, nil
	case apierrors.IsNotFound(err):
		return nil, false, nil
	}
	return nil, false, apiError(cl.Name, "get", "clustertrustbundles", "", err)
}

// Published is istiod's trust bundle as ReadTrustBundle found it.
type Published struct {
	Data  []byte
	Found bool
	// Source says where it was read (SourceConfigMap or SourceClusterTrustBundle).
	Source string
}

// ReadTrustBundle reads the roots istiod publishes where that istiod publishes them
// (ReadIstioSetup): the ClusterTrustBundle in that mode, else ConfigMap
// istio-ca-root-cert in namespace ns. A ClusterTrustBundle left over from a mode
// istiod no longer runs in is not read when the Deployment says so. Found is false
// when nothing is published there.
func ReadTrustBundle(ctx context.Context, cl *Cluster, ns string) (Published, error) {
	return readTrustBundle(ctx, cl, ns, ReadIstioSetup(ctx, cl, ns))
}

func readTrustBundle(ctx context.Context, cl *Cluster, ns string, setup *IstioSetup) (Published, error) {
	if setup.ClusterTrustBundle || !setup.Known {
		data, found, err := readClusterTrustBundle(ctx, cl)
		switch {
		case found:
			return Published{Data: data, Found: true, Source: SourceClusterTrustBundle}, nil
		case err != nil && setup.ClusterTrustBundle:
			var fe *ForbiddenError
			if errors.As(err, &fe) {
				err = fmt.Errorf("%w: istiod publishes its roots as ClusterTrustBundle %s: grant get on clustertrustbundles (deploy/rbac.yaml, ClusterRole meshpki-trust-bundles)", err, TrustBundleName)
			}
			return Published{Source: SourceClusterTrustBundle}, err
		case setup.ClusterTrustBundle:
			return Published{Source: SourceClusterTrustBundle}, nil
		}
	}
	cm, err := cl.Client.CoreV1().ConfigMaps(ns).Get(ctx, RootConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Published{Source: SourceConfigMap}, nil
	}
	if err != nil {
		return Published{Source: SourceConfigMap}, apiError(cl.Name, "get", "configmaps", ns, err)
	}
	return Published{Data: []byte(cm.Data[RootConfigMapKey]), Found: true, Source: SourceConfigMap}, nil
}

// setupProblems are the warnings of a cluster whose Istio would not apply what its
// cacerts holds: CRLs istiod does not publish or ztunnel does not check, a roots
// file with several roots for a ztunnel that trusts one.
func setupProblems(s *IstioSetup, crlsOn bool, files map[string][]byte) []ca.Problem {
	var ps []ca.Problem
	warn := func(check, msg string) {
		ps = append(ps, ca.Problem{Severity: ca.SeverityWarning, Check: check, Message: msg})
	}
	if crlsOn && s.CRLConfigMap == "" {
		if s.ClusterTrustBundle {
			warn("crl-not-published", "CRLs are on in cacerts, but istiod publishes its roots as a ClusterTrustBundle (ENABLE_CLUSTER_TRUST_BUNDLE_API) and, in that mode, no "+CRLConfigMap+
				" ConfigMap (its namespace controller does not run: pilot/pkg/serviceregistry/kube/controller/multicluster.go): no proxy here enforces the CRLs, and a revoked CA is still trusted")
		} else {
			warn("crl-not-published", "CRLs are on in cacerts, but istiod runs with PILOT_ENABLE_CA_CRL=false and publishes no CRL ConfigMap: no proxy here enforces the CRLs")
		}
	}
	if z := s.Ztunnel; z != nil {
		if crlsOn && !z.CRLCheck {
			warn("crl-ztunnel", "CRLs are on in cacerts, but ambient's ztunnel checks no CRLs (no CRL_PATH: Helm value peerCaCrl.enabled, Istio 1.29+): traffic through ztunnel accepts revoked CAs")
		}
		if crlsOn && z.CRLCheck && s.CRLConfigMap != "" && s.CRLConfigMap != CRLConfigMap {
			warn("crl-ztunnel", "ztunnel reads ConfigMap "+CRLConfigMap+" (a fixed name in its chart) and istiod publishes the CRLs as "+s.CRLConfigMap+" (PILOT_CRL_CONFIGMAP): ztunnel checks no CRLs")
		}
		if r, ok := parseRelease(z.Release); ok && (r.Major == 1 && r.Minor < 26) {
			if roots, err := ca.ParseCertificatesPEM(files[ca.RootCertFile]); err == nil && len(roots) > 1 {
				warn("ztunnel-one-root", "root-cert.pem holds "+strconv.Itoa(len(roots))+" roots, and ztunnel "+z.Release+" trusts only the last certificate of istiod's answer (all roots from ztunnel 1.26, src/tls/certificate.rs): during a root rotation, ambient workloads refuse peers of the other root; upgrade ztunnel before rotating")
			}
		}
	}
	return ps
}
