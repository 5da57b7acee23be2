package ca

import "crypto/x509"

// RootCert is the root certificate li signs with: the certificate every
// intermediate it issues chains to. Callers must not modify it.
func (li *LocalIssuer) RootCert() *x509.Certificate { return li.root.Cert }
