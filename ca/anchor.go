package ca

import "crypto/x509"

// Anchor implements Issuer: the CA li signs with.
func (li *LocalIssuer) Anchor() *x509.Certificate { return li.ca.Cert }

// Chain implements Issuer: the CA li signs with up to its root.
func (li *LocalIssuer) Chain() []*x509.Certificate { return li.ca.Path() }
