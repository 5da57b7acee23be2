package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// Severity says whether a problem fails verification.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Problem is one failed check, with a reason a person can act on.
type Problem struct {
	Severity Severity `json:"severity"`
	// Check is a stable identifier, e.g. "key-mismatch" or "chain".
	Check string `json:"check"`
	// File is the bundle file the problem is in, when there is one.
	File    string `json:"file,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.File != "" {
		return fmt.Sprintf("%s: %s: %s", p.Check, p.File, p.Message)
	}
	return p.Check + ": " + p.Message
}

// Report is the result of verifying one bundle.
type Report struct {
	Format           Format    `json:"format,omitempty"`
	Subject          string    `json:"subject,omitempty"`
	Issuer           string    `json:"issuer,omitempty"`
	Serial           string    `json:"serial,omitempty"`
	NotAfter         time.Time `json:"notAfter,omitzero"`
	KeyType          string    `json:"keyType,omitempty"`
	RootFingerprints []string  `json:"rootFingerprints,omitempty"`
	Problems         []Problem `json:"problems"`
}

// OK reports whether no problem is an error.
func (r *Report) OK() bool { return r.Err() == nil }

// Err returns the first error-level problem as an error, or nil.
func (r *Report) Err() error {
	for _, p := range r.Problems {
		if p.Severity == SeverityError {
			return &VerifyError{Problem: p}
		}
	}
	return nil
}

func (r *Report) add(sev Severity, check, file, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Severity: sev, Check: check, File: file, Message: fmt.Sprintf(format, args...)})
}

// VerifyError is a bundle that failed a check.
type VerifyError struct{ Problem Problem }

func (e *VerifyError) Error() string { return e.Problem.String() }

// ErrRootsDiffer means bundles of one mesh trust different roots.
var ErrRootsDiffer = errors.New("roots differ across the mesh")

// VerifyOptions tunes the stricter-than-istiod checks.
type VerifyOptions struct {
	// Now is the time to check validity at; zero means time.Now().
	Now time.Time
	// MinRemaining warns when the intermediate has less life left; zero means 30 days.
	MinRemaining time.Duration
	// AllowRootKey accepts a bundle whose signing certificate is the mesh's root
	// itself, which puts the root key in the cluster; by default that is an error.
	AllowRootKey bool
	// TrustDomain is the mesh's trust domain: the URI name constraints of every CA
	// of the bundle must allow its workloads' SPIFFE IDs. Empty means the trust
	// domain is not known: DefaultTrustDomain is checked, and a CA that excludes it
	// is a warning only (a mesh on another trust domain may be fine).
	TrustDomain string
}

// DefaultMinRemaining is the remaining life under which Verify warns.
const DefaultMinRemaining = 30 * 24 * time.Hour

func (o VerifyOptions) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// FormatSerial prints a certificate's serial number as FormatSerialNumber does.
func FormatSerial(c *x509.Certificate) string { return FormatSerialNumber(c.SerialNumber) }

// FormatSerialNumber prints a serial number in lower-case hex,
// byte by byte as openssl and Vault show it: an even number of digits, so a
// leading zero is kept ("0a3f...", not "a3f..."). ParseSerial reads it back, with
// or without that zero.
func FormatSerialNumber(n *big.Int) string {
	if n == nil {
		return ""
	}
	if n.Sign() < 0 {
		return "-" + FormatSerialNumber(new(big.Int).Neg(n))
	}
	if n.Sign() == 0 {
		return "00"
	}
	return hex.EncodeToString(n.Bytes())
}

// Fingerprint is the hex SHA-256 of a certificate's DER.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Verify checks a bundle given as file name -> content (a folder or a Secret's data)
// with istiod's rules, then stricter ones. istiod's rules (errors): all files
// present; an unencrypted ECDSA or RSA key that matches the signing certificate; the
// signing certificate is a CA; it verifies up to root-cert.pem through cert-chain.pem
// with Go's default options (so an EKU without serverAuth fails). Stricter rules:
// chain order, self-signed roots, validity, key strength (errors); pathlen and
// remaining life (warnings).
func Verify(files map[string][]byte, opts VerifyOptions) *Report {
	_, rep := parseAndVerify(files, opts)
	return rep
}

// Check runs Verify's checks on a bundle already in memory.
func (b *Bundle) Check(opts VerifyOptions) *Report {
	rep := &Report{Format: FormatIstio, Problems: []Problem{}}
	b.check(rep, layoutOf(FormatIstio), opts, nil)
	return rep
}

func parseAndVerify(files map[string][]byte, opts VerifyOptions) (*Bundle, *Report) {
	rep := &Report{Problems: []Problem{}}
	if _, ok := files[ReservedKey]; ok {
		rep.add(SeverityError, "reserved-key", ReservedKey, "present: it marks istiod's own self-signed CA, and istiod would ignore this bundle")
	}
	if _, waiting := files[CSRFile]; waiting {
		if _, ok := files[CACertFile]; !ok {
			rep.add(SeverityError, "csr-waiting", CACertFile, "missing: this folder waits for the certificate a CA signs for its %s; import it first", CSRFile)
			return nil, rep
		}
	}
	f, err := DetectFormat(files)
	if err != nil {
		rep.add(SeverityError, "missing-file", "", "%v", err)
		return nil, rep
	}
	rep.Format = f
	l := layoutOf(f)
	b := &Bundle{}
	parseCerts := func(name string) []*x509.Certificate {
		data, ok := files[name]
		if !ok {
			rep.add(SeverityError, "missing-file", name, "missing")
			return nil
		}
		certs, err := ParseCertificatesPEM(data)
		if err != nil {
			rep.add(SeverityError, "parse", name, "%v", err)
		}
		return certs
	}
	if chain := parseCerts(l.chain); len(chain) > 0 {
		b.Chain = chain
		b.Cert = chain[0]
	}
	if l.cert != l.chain {
		if certs := parseCerts(l.cert); len(certs) == 1 {
			b.Cert = certs[0]
		} else if len(certs) > 1 {
			rep.add(SeverityError, "parse", l.cert, "holds %d certificates, want 1 (the chain belongs in %s)", len(certs), l.chain)
		}
	}
	b.Roots = parseCerts(l.roots)
	if len(b.Roots) > 0 {
		b.RootsFile = files[l.roots]
	}
	if data, ok := files[l.key]; !ok {
		rep.add(SeverityError, "missing-file", l.key, "missing")
	} else if key, err := ParsePrivateKeyPEM(data); err != nil {
		check := "key"
		if errors.Is(err, ErrEncryptedKey) {
			check = "key-encrypted"
		}
		rep.add(SeverityError, check, l.key, "%v", err)
	} else if err := checkIstiodKeyPEM(data); err != nil {
		rep.add(SeverityError, "key", l.key, "%v", err)
	} else {
		b.Key = key
	}
	if data, ok := files[CRLFile]; ok {
		b.CRLFile = data
	}
	if !rep.OK() && (b.Cert == nil || len(b.Roots) == 0) {
		return nil, rep
	}
	b.check(rep, l, opts, nil)
	if !rep.OK() {
		return nil, rep
	}
	return b, rep
}

// checkBuilt tells check what Mint already knows of a bundle it assembled itself:
// the chain order and the roots' self-signatures are good (checked when the root
// was loaded or by CheckIssued), and with signedHere the intermediate's signature
// too (see Issued.signedHere).
type checkBuilt struct{ signedHere bool }

// check runs every rule that needs parsed certificates; built is nil for a bundle
// read from files or a Secret.
func (b *Bundle) check(rep *Report, l layout, opts VerifyOptions, built *checkBuilt) {
	now := opts.now()
	cert := b.Cert
	if cert == nil {
		return
	}
	rep.Subject = cert.Subject.String()
	rep.Issuer = cert.Issuer.String()
	rep.Serial = FormatSerial(cert)
	rep.NotAfter = cert.NotAfter.UTC()
	rep.KeyType = DescribeKey(cert.PublicKey)
	for _, r := range b.Roots {
		rep.RootFingerprints = append(rep.RootFingerprints, Fingerprint(r))
	}

	// istiod: the key matches the signing certificate.
	if b.Key != nil && !KeyMatches(b.Key, cert.PublicKey) {
		rep.add(SeverityError, "key-mismatch", l.key, "%v %s", ErrKeyMismatch, l.cert)
	}
	// istiod: the signing certificate is a CA.
	if !cert.BasicConstraintsValid || !cert.IsCA {
		rep.add(SeverityError, "not-ca", l.cert, "%v", ErrNotCA)
	} else if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		rep.add(SeverityError, "key-usage", l.cert, "%v", ErrNoCertSign)
	}
	// The root itself as the signing CA puts the mesh's root key in the cluster.
	if !opts.AllowRootKey && bytes.Equal(cert.RawSubject, cert.RawIssuer) && ContainsCert(b.Roots, cert) {
		rep.add(SeverityError, "root-key", l.cert, "is the root of %s itself, so %s is the mesh's root key, and whoever reads this cluster's cacerts can sign for every cluster: mint an intermediate instead (or allow it explicitly)", l.roots, l.key)
	}
	// istiod: the chain verifies with Go's default options (EKU serverAuth).
	if len(b.Roots) > 0 {
		b.checkChain(rep, l, now, built)
	}
	// Workloads: every CA of the chain and every root lets workload certificates
	// through (extended key usage, URI name constraints), as import and create
	// demand: istiod takes a bundle that fails here, and then its workloads'
	// handshakes fail.
	b.checkWorkloadPath(rep, l, opts.TrustDomain)
	// Stricter: strong keys, validity, pathlen, remaining life.
	if err := CheckKeyStrength(cert.PublicKey); err != nil {
		rep.add(SeverityError, "key-strength", l.cert, "%v", err)
	}
	for i, r := range b.Roots {
		if err := CheckKeyStrength(r.PublicKey); err != nil {
			rep.add(SeverityError, "key-strength", l.roots, "root %d: %v", i+1, err)
		}
	}
	if err := checkValidity(cert, now); err != nil {
		rep.add(SeverityError, "validity", l.cert, "%v", err)
	} else if left := cert.NotAfter.Sub(now); left < opts.minRemaining() {
		rep.add(SeverityWarning, "expires-soon", l.cert, "%s of life left (not after %s): every workload certificate it signs is cut to that",
			textfmt.Duration(left), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	switch {
	case cert.IsCA && (cert.MaxPathLen < 0 || cert.MaxPathLen == 0 && !cert.MaxPathLenZero):
		rep.add(SeverityWarning, "pathlen", l.cert, "no pathlen constraint: it could sign further CAs (Istio's tools/certs sets pathlen 0)")
	case cert.IsCA && cert.MaxPathLen > 0:
		rep.add(SeverityWarning, "pathlen", l.cert, "pathlen %d: it could sign further CAs (Istio's tools/certs sets pathlen 0)", cert.MaxPathLen)
	}
	if b.CRLFile != nil {
		b.checkCRLs(rep, l, now)
	}
}

// checkCRLs checks ca-crl.pem as istiod does (it refuses the whole bundle: v2 CRLs,
// one signed by every certificate of the chain file), then as the peers' Envoys will
// (current CRLs, no CA of this bundle's own chain revoked), since a stale or revoking
// CRL here cuts this cluster's workloads off from the mesh.
func (b *Bundle) checkCRLs(rep *Report, l layout, now time.Time) {
	crls, err := ParseCRLsPEM(b.CRLFile)
	if err != nil {
		rep.add(SeverityError, "crl", CRLFile, "%v", err)
		return
	}
	if len(crls) == 0 {
		rep.add(SeverityError, "crl", CRLFile, "holds no CRL: istiod would hand every proxy an empty CRL file")
		return
	}
	// istiod checks the certificates of its chain files: cert-chain.pem, or in the
	// tls layout tls.crt and ca.crt (pilot/pkg/bootstrap/istio_ca.go), so every
	// trusted root too.
	signers, files := b.Chain, l.chain
	if l.chain == TLSCertFile {
		signers, files = append(slices.Clone(b.Chain), b.Roots...), TLSCertFile+" and "+TLSCAFile
	}
	if crl, c := ForgedCRL(crls, append(slices.Clone(b.Chain), b.Roots...)); crl != nil {
		rep.add(SeverityError, "crl-forged", CRLFile, "a CRL (number %v) names %s (key id %x) as its issuer, and that CA did not sign it: a peer's Envoy may pick it for that CA and refuse every workload under it; remove it", crl.Number, c.Subject, c.SubjectKeyId)
	}
	if err := CheckIstiodCRLs(signers, crls); err != nil {
		rep.add(SeverityError, "crl-missing", CRLFile, "istiod refuses the bundle: a CA of %s has no CRL here: %v", files, err)
	}
	for i, c := range b.Chain {
		crl := CRLOf(crls, c)
		if crl == nil {
			continue // reported above
		}
		if err := CRLCurrent(crl, now); err != nil {
			rep.add(SeverityError, "crl-stale", CRLFile, "the CRL of %s: %v: every peer's Envoy refuses this cluster's workloads", c.Subject, err)
		} else if left := crl.NextUpdate.Sub(now); !crl.NextUpdate.IsZero() && left < DefaultCRLRefresh/2 {
			rep.add(SeverityWarning, "crl-expires-soon", CRLFile, "the CRL of %s is current for %s more (nextUpdate %s)", c.Subject, textfmt.Duration(left), crl.NextUpdate.UTC().Format(time.RFC3339))
		}
		if i > 0 && IsRevoked(crl, b.Chain[i-1].SerialNumber) {
			rep.add(SeverityError, "crl-revoked", CRLFile, "%s (serial %s) is revoked by %s: every peer refuses this cluster's workloads", b.Chain[i-1].Subject, FormatSerial(b.Chain[i-1]), c.Subject)
		}
	}
}

func (o VerifyOptions) minRemaining() time.Duration {
	if o.MinRemaining == 0 {
		return DefaultMinRemaining
	}
	return o.MinRemaining
}

func (b *Bundle) checkChain(rep *Report, l layout, now time.Time, built *checkBuilt) {
	cert := b.Cert
	roots := x509.NewCertPool()
	for i, r := range b.Roots {
		if !r.BasicConstraintsValid || !r.IsCA {
			rep.add(SeverityError, "root", l.roots, "root %d (%s): %v", i+1, r.Subject, ErrNotCA)
		} else if !bytes.Equal(r.RawSubject, r.RawIssuer) || built == nil && r.CheckSignatureFrom(r) != nil {
			rep.add(SeverityError, "root", l.roots, "root %d (%s): %v", i+1, r.Subject, ErrNotSelfSigned)
		} else if err := checkValidity(r, now); err != nil {
			rep.add(SeverityError, "validity", l.roots, "root %d (%s): %v", i+1, r.Subject, err)
		}
		roots.AddCert(r)
	}
	// Chain order: cert-chain.pem starts with the signing certificate and each
	// certificate is signed by the next one.
	if len(b.Chain) > 0 && built == nil {
		if !b.Chain[0].Equal(cert) {
			rep.add(SeverityError, "chain-order", l.chain, "does not start with the certificate in %s", l.cert)
		}
		if n := countDuplicates(b.Chain); n > 0 {
			rep.add(SeverityWarning, "chain-duplicate", l.chain, "holds %d duplicate certificates (%d in all): istiod sends every one to each peer; keep each certificate once", n, len(b.Chain))
		}
		for i := 0; i+1 < len(b.Chain); i++ {
			if b.Chain[i].Equal(b.Chain[i+1]) {
				continue // a repeat, warned about above; its signature was checked once
			}
			if err := b.Chain[i].CheckSignatureFrom(b.Chain[i+1]); err != nil {
				if cause := cannotSign(b.Chain[i], b.Chain[i+1]); cause != nil {
					rep.add(SeverityError, "chain", l.chain, "certificate %d (%s) names certificate %d (%s) as its issuer but %v", i+1, b.Chain[i].Subject, i+2, b.Chain[i+1].Subject, cause)
					break
				}
				rep.add(SeverityError, "chain-order", l.chain, "certificate %d (%s) is not signed by certificate %d (%s): the chain must run from the signing certificate up to the root",
					i+1, b.Chain[i].Subject, i+2, b.Chain[i+1].Subject)
				break
			}
		}
		last := b.Chain[len(b.Chain)-1]
		if len(b.Chain) < 2 || !ContainsCert(b.Roots, last) {
			rep.add(SeverityWarning, "chain-root", l.chain, "does not end with a root from %s (istio's cert-chain.pem runs up to and including the root)", l.roots)
		}
	}
	if built != nil && built.signedHere {
		return
	}
	inters := x509.NewCertPool()
	for _, c := range b.Chain {
		inters.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now}); err != nil {
		msg := err.Error()
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
			msg = "its extended key usage excludes serverAuth, which istiod's chain check requires (" + msg + ")"
		}
		rep.add(SeverityError, "chain", l.cert, "does not verify against %s as istiod checks it: %s", l.roots, msg)
	}
}

// checkWorkloadPath reports each CA of the chain and each root whose extended key
// usage or URI name constraints would refuse workload certificates (checkEKU,
// checkWorkloadNames). A usage without serverAuth on the chain is also reported by
// the chain check, as istiod sees it. With no trust domain given, name constraints
// excluding DefaultTrustDomain are a warning.
func (b *Bundle) checkWorkloadPath(rep *Report, l layout, trustDomain string) {
	namesSeverity := SeverityError
	if trustDomain == "" {
		namesSeverity = SeverityWarning
	}
	seen := map[string]bool{}
	check := func(file string, c *x509.Certificate) {
		if seen[string(c.Raw)] {
			return
		}
		seen[string(c.Raw)] = true
		if err := checkEKU(c); err != nil {
			rep.add(SeverityError, "workload-path", file, "%s: %v", c.Subject, err)
		}
		if err := checkWorkloadNames(c, trustDomain); err != nil {
			rep.add(namesSeverity, "workload-path", file, "%s: %v", c.Subject, err)
		}
	}
	chain := b.Chain
	if len(chain) == 0 && b.Cert != nil {
		chain = []*x509.Certificate{b.Cert}
	}
	for _, c := range chain {
		check(l.chain, c)
	}
	for _, r := range b.Roots {
		check(l.roots, r)
	}
}

// countDuplicates counts the certificates of certs that repeat an earlier one.
func countDuplicates(certs []*x509.Certificate) int {
	seen := make(map[string]bool, len(certs))
	n := 0
	for _, c := range certs {
		if seen[string(c.Raw)] {
			n++
		}
		seen[string(c.Raw)] = true
	}
	return n
}

// SameRoots checks that every report trusts the same set of roots. It returns a
// problem naming the bundles that differ from the first one, or nil.
func SameRoots(names []string, reps []*Report) *Problem {
	var ref string
	var refName string
	var differ []string
	for i, r := range reps {
		if len(r.RootFingerprints) == 0 {
			continue
		}
		set := strings.Join(sortedCopy(r.RootFingerprints), ",")
		if refName == "" {
			ref, refName = set, names[i]
			continue
		}
		if set != ref {
			differ = append(differ, names[i])
		}
	}
	if len(differ) == 0 {
		return nil
	}
	verb := "trust"
	if len(differ) == 1 {
		verb = "trusts"
	}
	return &Problem{Severity: SeverityError, Check: "mesh-roots",
		Message: fmt.Sprintf("%v: %s %s other roots than %s: cross-cluster mTLS will fail", ErrRootsDiffer, SummarizeNames(differ, 10), verb, refName)}
}

func sortedCopy(s []string) []string {
	return slices.Sorted(slices.Values(s))
}
