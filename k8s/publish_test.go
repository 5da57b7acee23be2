package k8s

import (
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// TestSetupProblems: ztunnel before 1.26 trusts one root, so several roots in
// root-cert.pem are a warning for it (not for 1.26+, nor for a tag that is no
// release); CRLs on warn where istiod publishes none or ztunnel checks none.
func TestSetupProblems(t *testing.T) {
	var two []byte
	for range 2 {
		r, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		two = append(two, ca.EncodeCertificatesPEM(r.Cert)...)
	}
	files := map[string][]byte{ca.RootCertFile: two}
	for _, tc := range []struct {
		image string
		want  bool
	}{{"docker.io/istio/ztunnel:1.25.3", true}, {"gcr.io/istio-release/ztunnel:1.26.0-distroless", false}, {"ztunnel:latest", false}, {"registry:5000/ztunnel", false}} {
		ps := setupProblems(&IstioSetup{CRLConfigMap: CRLConfigMap, Ztunnel: &Ztunnel{Image: tc.image, Release: imageRelease(tc.image)}}, false, files)
		if got := len(ps) == 1 && ps[0].Check == "ztunnel-one-root"; got != tc.want {
			t.Errorf("%s: %v, want ztunnel-one-root %v", tc.image, ps, tc.want)
		}
	}
	for _, tc := range []struct {
		setup *IstioSetup
		want  []string
	}{
		{&IstioSetup{CRLConfigMap: CRLConfigMap}, nil},
		{&IstioSetup{ClusterTrustBundle: true}, []string{"crl-not-published"}},
		{&IstioSetup{}, []string{"crl-not-published"}}, // PILOT_ENABLE_CA_CRL=false
		{&IstioSetup{CRLConfigMap: CRLConfigMap, Ztunnel: &Ztunnel{}}, []string{"crl-ztunnel"}},
		{&IstioSetup{CRLConfigMap: CRLConfigMap, Ztunnel: &Ztunnel{CRLCheck: true}}, nil},
		{&IstioSetup{CRLConfigMap: "mesh-crl", Ztunnel: &Ztunnel{CRLCheck: true}}, []string{"crl-ztunnel"}}, // ztunnel reads istio-ca-crl
	} {
		var got []string
		for _, p := range setupProblems(tc.setup, true, nil) {
			got = append(got, p.Check)
		}
		if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
			t.Errorf("%+v: %v, want %v", tc.setup, got, tc.want)
		}
	}
}
