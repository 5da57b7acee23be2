package ca

import "crypto/x509"

// Anchor implements Issuer: the root li signs with.
func (li *LocalIssuer) Anchor() *x509.Certificate { return li.root.Cert }
