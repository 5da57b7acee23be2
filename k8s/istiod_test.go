package k8s

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
)

func TestJudgeIstiod(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	_, files := mint(t, nil, "east")
	rootA := files[ca.RootCertFile]
	_, other := mint(t, newRoot(t), "east")
	rootB := other[ca.RootCertFile]
	a, _ := ca.ParseCertificatePEM(rootA)
	b, _ := ca.ParseCertificatePEM(rootB)
	ab, ba := ca.EncodeCertificatesPEM(a, b), ca.EncodeCertificatesPEM(b, a)
	secret := func(roots []byte, changed time.Time) *corev1.Secret {
		data := map[string][]byte{}
		for k, v := range files {
			data[k] = v
		}
		data[ca.RootCertFile] = roots
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName, CreationTimestamp: metav1.NewTime(changed.Add(-time.Hour)),
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "meshpki", Time: &metav1.Time{Time: changed}}}}, Data: data}
	}
	long := now.Add(-time.Hour)
	for _, tc := range []struct {
		name       string
		secret     *corev1.Secret
		published  []byte
		found      bool
		selfSigned []byte
		want       IstiodState
		reason     string
	}{
		{"loaded", secret(rootA, long), rootA, true, nil, IstiodLoaded, ""},
		// istiod publishes its roots file byte for byte: other bytes were not taken.
		{"refused: byte rule (reordered)", secret(ba, long), ab, true, nil, IstiodRefused, "byte rule"},
		{"no istiod", secret(rootA, long), nil, false, nil, IstiodAbsent, "no trust bundle published"},
		{"not yet", secret(ab, now.Add(-10*time.Second)), rootA, true, nil, IstiodNotYet, "kubelet"},
		{"refused: multiroot off (extension)", secret(ab, long), rootA, true, nil, IstiodRefused, "ISTIO_MULTIROOT_MESH"},
		{"refused: root switch", secret(rootB, long), rootA, true, nil, IstiodRefused, "root switch"},
		{"self-signed, no cacerts", nil, rootB, true, rootB, IstiodSelfSigned, "no cacerts"},
		{"self-signed, cacerts installed after start", secret(rootA, long), rootB, true, rootB, IstiodSelfSigned, "kubectl rollout restart deployment/istiod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := JudgeIstiod(tc.secret, tc.published, tc.found, tc.selfSigned, now, time.Minute)
			if st.State != tc.want || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("got %s (%s), want %s with %q", st.State, st.Reason, tc.want, tc.reason)
			}
			if tc.want == IstiodRefused && !st.Since.Equal(long) {
				t.Fatalf("since %s, want the Secret's last change %s", st.Since, long)
			}
		})
	}
}

// TestInstallKeepsInstalledRootsBytes: a cacerts made by hand, whose root-cert.pem
// carries openssl's text before the block, is replaced by a bundle of the same root,
// then extended with a second root: the installed bytes are kept both times, so that
// istiod 1.20-1.29 (bytes.Contains) take each change.
func TestInstallKeepsInstalledRootsBytes(t *testing.T) {
	_, clusters := realClusters(t, false)
	cl := clusters[0]
	ns := testNamespace(t)
	_, files := mint(t, nil, cl.Name)
	hand := map[string][]byte{}
	for k, v := range files {
		hand[k] = v
	}
	hand[ca.RootCertFile] = append([]byte("Certificate:\n    Data:\n        Version: 3 (0x2)\n"), files[ca.RootCertFile]...)
	mustInstall(t, cl, hand, InstallOptions{Namespace: ns})
	st, err := Status(testContext(t), cl, StatusOptions{Namespace: ns})
	if err != nil || st.Verdict != VerdictOK {
		t.Fatalf("a hand-made cacerts with text before the PEM block: %s %v %+v", st.Verdict, err, st.Report)
	}

	_, renewed := mint(t, nil, cl.Name)
	res := mustInstall(t, cl, renewed, InstallOptions{Namespace: ns})
	got := getSecret(t, cl, ns, SecretName).Data[ca.RootCertFile]
	if !bytes.Equal(got, hand[ca.RootCertFile]) || res.Action != ActionUpdated {
		t.Fatalf("install of the same root re-encoded root-cert.pem (%s):\n%s", res.Action, got)
	}

	b, _ := mint(t, newRoot(t), cl.Name)
	a, _ := ca.ParseCertificatePEM(files[ca.RootCertFile])
	both := map[string][]byte{}
	for k, v := range renewed {
		both[k] = v
	}
	both[ca.RootCertFile] = ca.EncodeCertificatesPEM(b.Roots[0], a) // new root first: would be refused as is
	mustInstall(t, cl, both, InstallOptions{Namespace: ns, AllowNewRoot: true})
	next := getSecret(t, cl, ns, SecretName).Data[ca.RootCertFile]
	if !bytes.HasPrefix(next, hand[ca.RootCertFile]) {
		t.Fatalf("adding a root did not extend the installed bytes:\n%s", next)
	}
	if v := ca.IstiodTakesRootsChange(ca.IstioRelease{Major: 1, Minor: 20}, true, got, next); !v.Accepted {
		t.Fatal(v.Reason)
	}
}
