package ca

import (
	"bytes"
	"crypto/x509"
	"time"
)

// SignedUnder reports whether b's signing certificate chains up to root through the
// certificates of b's chain, checking signatures only: not validity periods, key
// usages or constraints (VerifiesAt checks those). Roots that share a subject, as two
// roots made with the same profile do, are told apart by their keys. It is what a
// root rotation asks: which root does this intermediate come from?
func (b *Bundle) SignedUnder(root *x509.Certificate) bool {
	if b == nil || b.Cert == nil || root == nil {
		return false
	}
	cur := b.Cert
	for range len(b.Chain) + 1 {
		if cur.Equal(root) {
			return true
		}
		if bytes.Equal(cur.RawIssuer, root.RawSubject) && cur.CheckSignatureFrom(root) == nil {
			return true
		}
		var next *x509.Certificate
		for _, c := range b.Chain {
			if c.Equal(cur) || bytes.Equal(c.RawSubject, c.RawIssuer) || !bytes.Equal(cur.RawIssuer, c.RawSubject) {
				continue
			}
			if cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			return false
		}
		cur = next
	}
	return false
}

// VerifiesAt reports whether b's signing certificate passes crypto/x509's chain
// check at time now with anchor as the only root and b's chain as intermediates:
// signatures, validity periods, CA constraints and pathlen (any extended key
// usage). It is what rotate asks: is this intermediate good under the current root?
func (b *Bundle) VerifiesAt(anchor *x509.Certificate, now time.Time) bool {
	if b == nil || b.Cert == nil || anchor == nil {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inters := x509.NewCertPool()
	for _, c := range b.Chain {
		if !c.Equal(anchor) {
			inters.AddCert(c)
		}
	}
	_, err := b.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// ContainsCert reports whether certs holds c (the same DER).
func ContainsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}
