package ca

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"sort"
)

// File names of the two bundle formats istiod reads from the cacerts Secret.
const (
	CACertFile    = "ca-cert.pem"
	CAKeyFile     = "ca-key.pem"
	CertChainFile = "cert-chain.pem"
	// RootCertFile ("root-cert.pem") is shared with a root folder.

	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
	TLSCAFile   = "ca.crt"

	// ReservedKey marks istiod's own self-signed CA; meshpki never writes it.
	ReservedKey = "istio-generated"
)

// Format is a bundle's file layout.
type Format string

// The two layouts istiod reads.
const (
	// FormatIstio: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
	FormatIstio Format = "istio"
	// FormatTLS: tls.crt (cert and chain), tls.key, ca.crt (roots); istiod >= 1.15.
	FormatTLS Format = "tls"
)

// ParseFormat parses "istio" or "tls".
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case FormatIstio, FormatTLS:
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown bundle format %q (want istio or tls)", s)
}

// Bundle is one cluster's signing CA as istiod loads it.
type Bundle struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is cert-chain.pem: Cert, then each issuer up to and including the root.
	Chain []*x509.Certificate
	// Roots is root-cert.pem: the trusted roots (several during a root rotation).
	Roots []*x509.Certificate
	// RootsFile, when set, is root-cert.pem (ca.crt) byte for byte, as read from a
	// folder or a Secret or made by KeepRootsFile; it must hold exactly Roots. Files
	// writes it unchanged, since istiod compares roots files as bytes on a reload.
	// When nil, Files encodes Roots.
	RootsFile []byte
	// CRLFile, when set, is ca-crl.pem: the CRLs of every CA of the mesh (see
	// CheckIstiodCRLs and CheckChainCRLs), written unchanged by Files.
	CRLFile []byte
}

// NewBundle assembles a bundle from an Issuer's answer and the intermediate's key.
func NewBundle(key crypto.Signer, iss *Issued) *Bundle {
	chain := append([]*x509.Certificate{iss.Cert}, iss.Chain...)
	if len(iss.Roots) > 0 {
		chain = append(chain, iss.Roots[0])
	}
	return &Bundle{Cert: iss.Cert, Key: key, Chain: chain, Roots: iss.Roots}
}

// Files renders the bundle as file name -> content in format f.
func (b *Bundle) Files(f Format) (map[string][]byte, error) {
	keyPEM, err := MarshalPrivateKeyPEM(b.Key)
	if err != nil {
		return nil, err
	}
	chain := EncodeCertificatesPEM(b.Chain...)
	roots := b.RootsFile
	if roots == nil {
		roots = EncodeCertificatesPEM(b.Roots...)
	} else if certs, err := ParseCertificatesPEM(roots); err != nil || !SameCertificates(certs, b.Roots) {
		return nil, fmt.Errorf("bundle's roots file does not hold exactly its %d roots", len(b.Roots))
	}
	var files map[string][]byte
	switch f {
	case FormatIstio, "":
		files = map[string][]byte{
			CACertFile:    EncodeCertificatesPEM(b.Cert),
			CAKeyFile:     keyPEM,
			CertChainFile: chain,
			RootCertFile:  roots,
		}
	case FormatTLS:
		files = map[string][]byte{TLSCertFile: chain, TLSKeyFile: keyPEM, TLSCAFile: roots}
	default:
		return nil, fmt.Errorf("unknown bundle format %q", f)
	}
	if b.CRLFile != nil {
		files[CRLFile] = b.CRLFile
	}
	return files, nil
}

// IsKeyFile reports whether a file of that name holds a private key (ca-key.pem,
// tls.key, root-key.pem): written 0600, never printed.
func IsKeyFile(name string) bool {
	switch name {
	case CAKeyFile, TLSKeyFile, RootKeyFile:
		return true
	}
	return false
}

// DetectFormat tells which layout files use: istio when ca-cert.pem is present, tls
// when tls.crt is; istiod prefers the tls layout when both are present, and so does
// this.
func DetectFormat(files map[string][]byte) (Format, error) {
	if _, ok := files[TLSCertFile]; ok {
		return FormatTLS, nil
	}
	if _, ok := files[CACertFile]; ok {
		return FormatIstio, nil
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return "", fmt.Errorf("neither %s nor %s found (have %v)", CACertFile, TLSCertFile, names)
}

// RootsFileName is the file that holds the trusted roots in format f: root-cert.pem,
// or ca.crt in the tls layout.
func RootsFileName(f Format) string { return layoutOf(f).roots }

// CertFileName is the file that holds the signing certificate in format f:
// ca-cert.pem, or tls.crt in the tls layout.
func CertFileName(f Format) string { return layoutOf(f).cert }

// layout maps a format to its file names.
type layout struct{ cert, key, chain, roots string }

func layoutOf(f Format) layout {
	if f == FormatTLS {
		return layout{cert: TLSCertFile, key: TLSKeyFile, chain: TLSCertFile, roots: TLSCAFile}
	}
	return layout{cert: CACertFile, key: CAKeyFile, chain: CertChainFile, roots: RootCertFile}
}

// ParseBundle reads a bundle from file name -> content (a folder or a Secret's data),
// in either format, and runs the same checks as Verify. It fails with the first
// error-level problem.
func ParseBundle(files map[string][]byte, opts VerifyOptions) (*Bundle, *Report, error) {
	b, rep := parseAndVerify(files, opts)
	if err := rep.Err(); err != nil {
		return nil, rep, err
	}
	return b, rep, nil
}
