package ca

import (
	"bytes"
	"crypto/x509"
)

// ChainsTo reports whether b's signing certificate chains up to root through the
// certificates of b's chain, checking signatures (not validity). Roots that share
// a subject, as two roots made with the same profile do, are told apart by their
// keys.
func (b *Bundle) ChainsTo(root *x509.Certificate) bool {
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
