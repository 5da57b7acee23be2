package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// Errors of a root istiod would refuse every intermediate under.
var (
	ErrRootEKU                 = errors.New("excludes serverAuth, which istiod's chain check requires of every certificate in the chain")
	ErrClientAuthEKU           = errors.New("excludes clientAuth, which every workload's client certificate needs of each CA above it (crypto/x509 and Envoy nest extended key usages down a chain)")
	ErrCriticalExt             = errors.New("unhandled critical extension")
	ErrNameConstraints         = errors.New("root's name constraints exclude the intermediate's SANs")
	ErrWorkloadNames           = errors.New("name constraints exclude the workloads' SPIFFE IDs")
	ErrInsecureSigAlg          = errors.New("an insecure algorithm that crypto/x509, and so istiod, rejects")
	ErrUnsupportedKeyAlgorithm = errors.New("keys are not supported (want ECDSA or RSA)")
)

// DefaultTrustDomain is Istio's default trust domain (meshConfig.trustDomain): the
// host of every workload's SPIFFE ID, spiffe://<trust domain>/ns/<ns>/sa/<sa>.
const DefaultTrustDomain = "cluster.local"

// checkEKU is the one extended key usage rule for every CA of a mesh's paths (root,
// issuing CAs, cluster CA), in create, import and verify: no extended key usage,
// any, or both serverAuth and clientAuth. crypto/x509 with Go's default options,
// which istiod uses, wants serverAuth of every certificate of the chain
// (ErrRootEKU); and since extended key usages nest down a chain, a CA without
// clientAuth makes every workload's client certificate fail its peer's check
// (ErrClientAuthEKU), though istiod takes the bundle.
func checkEKU(c *x509.Certificate) error {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil
	}
	server, client := slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth), slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	if server && client {
		return nil
	}
	names := make([]string, 0, len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage))
	for _, u := range c.ExtKeyUsage {
		names = append(names, ekuName(u))
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	if !server {
		return fmt.Errorf("certificate's extended key usage (%s) %w", strings.Join(names, ", "), ErrRootEKU)
	}
	return fmt.Errorf("certificate's extended key usage (%s) %w", strings.Join(names, ", "), ErrClientAuthEKU)
}

// checkWorkloadNames refuses a CA whose URI name constraints exclude the SPIFFE ID
// of a workload in trustDomain (empty: DefaultTrustDomain): every workload
// certificate istiod signs below it would fail its peers' chain check. It runs
// crypto/x509's own check on a throwaway CA with c's URI constraints and a
// throwaway workload certificate; no real key signs anything.
func checkWorkloadNames(c *x509.Certificate, trustDomain string) error {
	if len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) == 0 {
		return nil
	}
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	id := SPIFFEID(trustDomain, "default", "default")
	now := time.Now()
	ca := &x509.Certificate{Subject: c.Subject, PermittedURIDomains: c.PermittedURIDomains, ExcludedURIDomains: c.ExcludedURIDomains}
	leaf := &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id}}
	if err := probeChain(ca, leaf, now); err != nil {
		return fmt.Errorf("%w (%s, trust domain %s: permitted URI domains %v, excluded %v), so every workload certificate below it fails its peers' check: %w",
			ErrWorkloadNames, id, trustDomain, c.PermittedURIDomains, c.ExcludedURIDomains, err)
	}
	return nil
}

// probeChain runs crypto/x509's chain check, at now, on a throwaway CA made from
// ca (its subject and name constraints) and a throwaway certificate made from
// below and signed by it, both with one throwaway key: no real key signs
// anything. It returns the chain check's error (one making the probe wraps
// errProbe).
func probeChain(ca, below *x509.Certificate, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("%w: %w", errProbe, err)
	}
	rt := *ca
	rt.SerialNumber, rt.NotBefore, rt.NotAfter = big.NewInt(1), now.Add(-time.Hour), now.Add(time.Hour)
	rt.BasicConstraintsValid, rt.IsCA, rt.MaxPathLen, rt.KeyUsage = true, true, -1, x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, &rt, &rt, key.Public(), key)
	if err != nil {
		return fmt.Errorf("%w: %w", errProbe, err)
	}
	probeCA, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: %w", errProbe, err)
	}
	lt := *below
	lt.SerialNumber, lt.NotBefore, lt.NotAfter = big.NewInt(2), now.Add(-time.Hour), now.Add(time.Hour)
	if der, err = x509.CreateCertificate(rand.Reader, &lt, probeCA, key.Public(), key); err != nil {
		return fmt.Errorf("%w: %w", errProbe, err)
	}
	probe, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: %w", errProbe, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(probeCA)
	_, err = probe.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// errProbe marks a failure to make probeChain's throwaway chain, not a finding.
var errProbe = errors.New("check the name constraints")

func ekuName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	case x509.ExtKeyUsageCodeSigning:
		return "codeSigning"
	case x509.ExtKeyUsageEmailProtection:
		return "emailProtection"
	case x509.ExtKeyUsageTimeStamping:
		return "timeStamping"
	case x509.ExtKeyUsageOCSPSigning:
		return "OCSPSigning"
	}
	return fmt.Sprintf("usage %d", u)
}

// checkCritical refuses critical extensions crypto/x509 does not understand: its
// chain check, and so istiod, rejects any certificate that has one.
func checkCritical(c *x509.Certificate) error {
	if len(c.UnhandledCriticalExtensions) == 0 {
		return nil
	}
	oids := make([]string, len(c.UnhandledCriticalExtensions))
	for i, oid := range c.UnhandledCriticalExtensions {
		oids[i] = oid.String()
	}
	return fmt.Errorf("certificate has an %w %s: crypto/x509, and so istiod, refuses every chain through it", ErrCriticalExt, strings.Join(oids, ", "))
}

// hasNameConstraints reports whether c constrains the names below it.
func hasNameConstraints(c *x509.Certificate) bool {
	return len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.ExcludedIPRanges)+
		len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) > 0
}

// CheckProfile reports, before any key is generated, what would make root refuse to
// sign p's intermediate or istiod refuse the result: a TTL the root cannot cover
// (unless p.AllowShortTTL), a pathlen the root forbids, an extended key usage or
// unhandled critical extension on the root, and name constraints that exclude p's
// SANs. root is the certificate that signs the intermediates (for Vault, its issuer).
func CheckProfile(root *x509.Certificate, p Profile, now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if _, err := notAfterWithin(now.Add(p.TTL), root, p.AllowShortTTL); err != nil {
		return fmt.Errorf("ttl %s: %w", textfmt.Duration(p.TTL), err)
	}
	if err := checkPathLen(root, p.MaxPathLen); err != nil {
		return err
	}
	if err := checkEKU(root); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if err := checkCritical(root); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if err := checkWorkloadNames(root, p.TrustDomain); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if hasNameConstraints(root) {
		if err := probeNameConstraints(root, p, now); err != nil {
			return err
		}
	}
	return nil
}

// CheckProfileChain is CheckProfile for an issuer's whole chain (Issuer.Chain: the
// signing CA first, the root last): p's TTL must end before every certificate of
// it (unless p.AllowShortTTL), every constrained pathlen must leave room for p's
// intermediate, and no certificate may carry an extended key usage, critical
// extension or name constraint that makes istiod refuse p's intermediate.
func CheckProfileChain(chain []*x509.Certificate, p Profile, now time.Time) error {
	if len(chain) == 0 {
		return nil
	}
	if err := CheckProfile(chain[0], p, now); err != nil {
		return err
	}
	if len(chain) == 1 {
		return nil
	}
	if _, err := notAfterWithinPath(now.Add(p.TTL), chain, p.AllowShortTTL); err != nil {
		return fmt.Errorf("ttl %s: %w", textfmt.Duration(p.TTL), err)
	}
	if _, err := checkPathRoom(chain, p.MaxPathLen); err != nil {
		return err
	}
	for _, c := range chain[1:] {
		if err := checkEKU(c); err != nil {
			return fmt.Errorf("%s: %w", c.Subject, err)
		}
		if err := checkCritical(c); err != nil {
			return fmt.Errorf("%s: %w", c.Subject, err)
		}
		if err := checkWorkloadNames(c, p.TrustDomain); err != nil {
			return fmt.Errorf("%s: %w", c.Subject, err)
		}
		if hasNameConstraints(c) {
			if err := probeNameConstraints(c, p, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPathLen refuses an intermediate pathlen the root's own pathlen forbids.
func checkPathLen(root *x509.Certificate, pathLen int) error {
	if root.MaxPathLen >= 0 && (root.MaxPathLen > 0 || root.MaxPathLenZero) && pathLen >= root.MaxPathLen {
		return fmt.Errorf("root allows pathlen %d below it, so it cannot sign an intermediate with pathlen %d", root.MaxPathLen, pathLen)
	}
	return nil
}

// probeNameConstraints runs crypto/x509's own chain check on a throwaway chain: a
// root with root's subject and name constraints, and an intermediate with p's
// subject and SANs, both signed with a throwaway key. No real key signs anything.
func probeNameConstraints(root *x509.Certificate, p Profile, now time.Time) error {
	ca := &x509.Certificate{Subject: root.Subject,
		PermittedDNSDomainsCritical: root.PermittedDNSDomainsCritical,
		PermittedDNSDomains:         root.PermittedDNSDomains, ExcludedDNSDomains: root.ExcludedDNSDomains,
		PermittedIPRanges: root.PermittedIPRanges, ExcludedIPRanges: root.ExcludedIPRanges,
		PermittedEmailAddresses: root.PermittedEmailAddresses, ExcludedEmailAddresses: root.ExcludedEmailAddresses,
		PermittedURIDomains: root.PermittedURIDomains, ExcludedURIDomains: root.ExcludedURIDomains,
	}
	it := &x509.Certificate{Subject: p.Subject, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign, DNSNames: p.DNSNames, URIs: p.URIs}
	if err := probeChain(ca, it, now); errors.Is(err, errProbe) {
		return err
	} else if err != nil {
		return fmt.Errorf("%w (%s), so istiod would refuse every bundle: %v", ErrNameConstraints, describeSANs(p), err)
	}
	return nil
}

func describeSANs(p Profile) string {
	var s []string
	s = append(s, p.DNSNames...)
	for _, u := range p.URIs {
		s = append(s, u.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// checkSignedHere is the chain check of an intermediate LocalIssuer signed directly
// under root, without verifying the signature again (crypto/x509 verified it with
// the root's key as it signed): the issuer is the root, both are valid at now, no
// certificate has an extended key usage without serverAuth or an unhandled critical
// extension, and the root's pathlen allows it. A root with name constraints gets
// crypto/x509's full chain check instead: those rules are not re-implemented here.
func checkSignedHere(cert, root *x509.Certificate, now time.Time) (full bool, err error) {
	if hasNameConstraints(root) {
		return true, nil
	}
	if !bytes.Equal(cert.RawIssuer, root.RawSubject) {
		return false, errors.New("issuer is not the root's subject")
	}
	for _, c := range []*x509.Certificate{cert, root} {
		if err := checkValidity(c, now); err != nil {
			return false, err
		}
		if err := checkEKU(c); err != nil {
			return false, err
		}
		if err := checkCritical(c); err != nil {
			return false, err
		}
	}
	if !root.IsCA || root.KeyUsage != 0 && root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return false, ErrNotCA
	}
	return false, checkPathLen(root, 0)
}
