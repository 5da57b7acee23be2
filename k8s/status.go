package k8s

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/rotation"
)

// Verdict sums up one cluster's cacerts.
type Verdict string

// Verdicts, best first.
const (
	// VerdictOK: the bundle passes every check.
	VerdictOK Verdict = "ok"
	// VerdictWarning: istiod accepts it, a stricter check warns (e.g. expires soon).
	VerdictWarning Verdict = "warning"
	// VerdictBroken: istiod would refuse it (or refuse to start).
	VerdictBroken Verdict = "broken"
	// VerdictMissing: no cacerts; istiod uses its own self-signed CA.
	VerdictMissing Verdict = "missing"
	// VerdictError: the cluster could not be read.
	VerdictError Verdict = "error"
)

// ClusterStatus is one cluster's cacerts as Status read it. It never holds key material.
type ClusterStatus struct {
	Cluster         string  `json:"cluster"`
	Namespace       string  `json:"namespace"`
	Verdict         Verdict `json:"verdict"`
	ResourceVersion string  `json:"resourceVersion,omitempty"`
	// Report is the ca verification of the Secret's data, nil when there is none.
	Report *ca.Report `json:"report,omitempty"`
	// Istiod says whether istiod took cacerts' roots, nil when not checked.
	Istiod *IstiodStatus `json:"istiod,omitempty"`
	// Istio is where istiod publishes trust and CRLs, and ambient's ztunnel.
	Istio *IstioSetup `json:"istio,omitempty"`
	// RenewAt is when rotate, with StatusOptions.RenewBefore, renews the installed
	// intermediate; Due says it is due now (or cacerts is missing or broken). A team
	// whose root is offline reads the due clusters here to make a CSR batch.
	RenewAt time.Time `json:"renewAt,omitzero"`
	Due     bool      `json:"due"`
	// CRLs describes the cluster's ca-crl.pem, nil when it has none (CRLs off).
	CRLs *CRLStatus `json:"crls,omitempty"`
	// Trust says where the cluster's trust comes from (set by package mesh, which
	// sees the whole mesh): "shared root", "other root", "istiod self-signed" or
	// "istiod self-signed (adopted)".
	Trust string `json:"trust,omitempty"`
	// RootRotation is the record of the last root rotation (or convergence) step,
	// nil when none was made (AnnotationRootRotation).
	RootRotation *rotation.Record `json:"rootRotation,omitempty"`
	Error        string           `json:"error,omitempty"`

	// Chain is cert-chain.pem parsed, and CRLList ca-crl.pem: what a check of
	// the whole mesh needs (package mesh).
	Chain   []*x509.Certificate    `json:"-"`
	CRLList []*x509.RevocationList `json:"-"`
}

// CRLStatus is what a cluster's ca-crl.pem holds.
type CRLStatus struct {
	// CRLs lists each CRL: its issuer, number, next update and how many it revokes.
	CRLs []CRLSummary `json:"list"`
	// NextUpdate is the earliest nextUpdate: when the set must have been signed again.
	NextUpdate time.Time `json:"nextUpdate,omitzero"`
	// Revoked lists the serials (hex) the CRLs revoke.
	Revoked []string `json:"revokedSerials"`
}

// CRLSummary is one CRL of a ca-crl.pem.
type CRLSummary struct {
	Issuer     string    `json:"issuer"`
	Number     string    `json:"number,omitempty"`
	NextUpdate time.Time `json:"nextUpdate"`
	Revoked    int       `json:"revoked"`
}

func crlStatus(crls []*x509.RevocationList) *CRLStatus {
	st := &CRLStatus{CRLs: []CRLSummary{}, Revoked: []string{}, NextUpdate: ca.EarliestNextUpdate(crls)}
	for _, c := range crls {
		n := ""
		if c.Number != nil {
			n = c.Number.Text(16)
		}
		st.CRLs = append(st.CRLs, CRLSummary{Issuer: c.Issuer.String(), Number: n, NextUpdate: c.NextUpdate.UTC(), Revoked: len(c.RevokedCertificateEntries)})
		for _, e := range c.RevokedCertificateEntries {
			st.Revoked = append(st.Revoked, ca.FormatSerialNumber(e.SerialNumber))
		}
	}
	return st
}

// AnnotationRootRotation on cacerts records, as JSON (a rotation.Record), the last
// root rotation step meshpki made or first saw in that cluster, and when.
const AnnotationRootRotation = "meshpki.io/root-rotation"

// StatusOptions controls Status.
type StatusOptions struct {
	// Namespace holds cacerts; empty means DefaultNamespace.
	Namespace string
	// Verify tunes the checks.
	Verify ca.VerifyOptions
	// IstiodGrace is how long istiod gets to take a cacerts change before it is
	// reported refused; zero means DefaultIstiodGrace.
	IstiodGrace time.Duration
	// Now is the time istiod's state is judged at; nil means time.Now.
	Now func() time.Time
	// RenewBefore is rotate's renewal rule, for ClusterStatus.Due; the zero value
	// is rotate's default (a third of the lifetime).
	RenewBefore ca.RenewBefore
}

// Status reads cacerts from cl and verifies it as istiod would. A missing or broken
// Secret is a verdict, not an error; the error is for a cluster that could not be
// read, and then the status has VerdictError. The status is never nil.
func Status(ctx context.Context, cl *Cluster, opts StatusOptions) (*ClusterStatus, error) {
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	st := &ClusterStatus{Cluster: cl.Name, Namespace: ns}
	s, err := cl.Client.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		st.Verdict, st.Due = VerdictMissing, true
		st.Istio = ReadIstioSetup(ctx, cl, ns)
		st.Istiod = readIstiod(ctx, cl, ns, nil, now(opts.Now), opts.IstiodGrace, st.Istio)
		return st, nil
	case err != nil:
		err = apiError(cl.Name, "get", "secrets", ns, err)
		st.Verdict, st.Error = VerdictError, err.Error()
		return st, err
	}
	st.ResourceVersion = s.ResourceVersion
	if v, ok := s.Annotations[AnnotationRootRotation]; ok {
		var rec rotation.Record
		if json.Unmarshal([]byte(v), &rec) == nil {
			st.RootRotation = &rec
		}
	}
	// A cacerts that keeps istiod's own CA as signing CA is a convergence's step 1
	// (recorded): its root key is in the cluster on purpose, until step 2.
	if st.RootRotation != nil {
		opts.Verify.AllowRootKey = true
	}
	st.Report = ca.Verify(SecretFiles(s), opts.Verify)
	if data, ok := s.Data[ca.CRLFile]; ok {
		if crls, err := ca.ParseCRLsPEM(data); err == nil {
			st.CRLs, st.CRLList = crlStatus(crls), crls
		}
	}
	st.Istio = ReadIstioSetup(ctx, cl, ns)
	st.Istiod = readIstiod(ctx, cl, ns, s, now(opts.Now), opts.IstiodGrace, st.Istio)
	st.Report.Problems = append(st.Report.Problems, setupProblems(st.Istio, st.CRLs != nil, SecretFiles(s))...)
	if b, _, err := ca.ParseBundle(SecretFiles(s), opts.Verify); err == nil {
		st.Chain = b.Chain
		st.RenewAt = opts.RenewBefore.RenewAt(b.Cert).UTC()
		st.Due, _ = opts.RenewBefore.Due(b.Cert, now(opts.Now))
	} else {
		st.Due = true
	}
	switch {
	case !st.Report.OK():
		st.Verdict = VerdictBroken
	case len(st.Report.Problems) > 0:
		st.Verdict = VerdictWarning
	default:
		st.Verdict = VerdictOK
	}
	return st, nil
}

func now(f func() time.Time) time.Time {
	if f == nil {
		return time.Now()
	}
	return f()
}
