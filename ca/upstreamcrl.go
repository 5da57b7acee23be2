package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// SigningCACRLFile ("signing-ca-crl.pem") is the CRL of an issuing CA kept in a
// folder (ReadCADir), beside its ca-cert.pem and ca-key.pem: the durable record of
// the cluster CAs it revoked, as RootCRLFile is for a root folder. (It is not named
// ca-crl.pem, which in a cacerts folder is the whole mesh's set.)
const SigningCACRLFile = "signing-ca-crl.pem"

// ErrUpstreamCRL marks a problem with the CRLs brought in for the CAs above an
// issuing CA (UpstreamCRLs): the root's, an organisation CA's. meshpki cannot sign
// those, and Envoy demands a current one from every CA of a peer's chain.
var ErrUpstreamCRL = errors.New("the CRLs of the CAs above the signing CA")

// ReadCRLFile reads a file of PEM CRLs (ReadInputFile's limits), parsed as istiod
// parses them (ParseCRLsPEM: v2 only). Errors name the file.
func ReadCRLFile(name string) ([]*x509.RevocationList, error) {
	data, err := ReadInputFile(name)
	if err != nil {
		return nil, err
	}
	crls, err := ParseCRLsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(crls) == 0 {
		return nil, fmt.Errorf("%s: holds no CRL", name)
	}
	return crls, nil
}

// UpstreamCRLs checks the CRLs crls brought in from outside for the CAs above a
// signing CA, and returns the one each of them needs: path is the signing CA first,
// up to the root (Issuer.Chain). For every CA of path but the first, the newest CRL
// it signed must be there and current at now; none of them may list a CA of path
// (the signing CA would be cut off with the whole mesh); and every CRL must be
// signed by a CA above the signing CA: a CRL naming such a CA as its issuer (subject
// and key identifier) that it did not sign is forged, one of another CA is a wrong
// file. Errors wrap ErrUpstreamCRL (and ErrCRLMissing, ErrCRLStale or ErrRevoked).
//
// When path holds the signing CA alone (it is the root) there is nothing above it:
// crls must be empty.
func UpstreamCRLs(path []*x509.Certificate, crls []*x509.RevocationList, now time.Time) ([]*x509.RevocationList, error) {
	if len(path) == 0 {
		return nil, fmt.Errorf("%w: no signing CA", ErrUpstreamCRL)
	}
	above := path[1:]
	if len(above) == 0 && len(crls) > 0 {
		return nil, fmt.Errorf("%w: the signing CA %s is the root itself, with no CA above it: meshpki signs its CRL", ErrUpstreamCRL, path[0].Subject)
	}
	for _, crl := range crls {
		i := slices.IndexFunc(above, func(c *x509.Certificate) bool { return bytes.Equal(crl.RawIssuer, c.RawSubject) && claims(crl, c) })
		switch {
		case i >= 0 && crl.CheckSignatureFrom(above[i]) != nil:
			return nil, fmt.Errorf("%w: a CRL (number %v) names %s as its issuer and is not signed by it", ErrUpstreamCRL, crl.Number, above[i].Subject)
		case i < 0 && SignedBy(crl, path[0]):
			return nil, fmt.Errorf("%w: a CRL (number %v) is the signing CA %s's own, which meshpki keeps itself", ErrUpstreamCRL, crl.Number, path[0].Subject)
		case i < 0:
			return nil, fmt.Errorf("%w: a CRL (number %v) is from %s, which is not above the signing CA %s", ErrUpstreamCRL, crl.Number, crl.Issuer, path[0].Subject)
		}
	}
	out := make([]*x509.RevocationList, 0, len(above))
	for i, c := range above {
		crl := CRLOf(crls, c)
		if crl == nil {
			return nil, fmt.Errorf("%w: %w", ErrUpstreamCRL, crlError(c, ErrCRLMissing))
		}
		if err := CRLCurrent(crl, now); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUpstreamCRL, crlError(c, err))
		}
		if IsRevoked(crl, path[i].SerialNumber) {
			return nil, fmt.Errorf("%w: %s's CRL revokes %w", ErrUpstreamCRL, c.Subject, crlError(path[i], ErrRevoked))
		}
		out = append(out, crl)
	}
	return out, nil
}

// claims reports whether crl's key identifier (when it has one) is c's.
func claims(crl *x509.RevocationList, c *x509.Certificate) bool {
	return len(crl.AuthorityKeyId) == 0 || len(c.SubjectKeyId) == 0 || bytes.Equal(crl.AuthorityKeyId, c.SubjectKeyId)
}
