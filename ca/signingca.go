package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// Errors of a chain from a signing CA up to its root.
var (
	// ErrChainOrder means the chain holds the right certificates in the wrong
	// order: each must be signed by the next.
	ErrChainOrder = errors.New("chain is out of order")
	// ErrChainLink means no certificate of the chain signed one of them.
	ErrChainLink = errors.New("chain is missing a link")
	// ErrChainOtherRoot means the chain ends at a root other than the roots given.
	ErrChainOtherRoot = errors.New("chain ends at another root")
	// ErrChainNoRoot means the chain reaches no self-signed root.
	ErrChainNoRoot = errors.New("chain does not reach a root")
	// ErrPathLen means a CA of the chain allows too few CA levels below it for a
	// cluster CA to be signed under it.
	ErrPathLen = errors.New("pathlen leaves no room for the cluster CA")
)

// SigningCA is the CA that signs cluster intermediates in this process: the
// mesh's root itself, or an issuing CA below it (an organisation's CA signed by an
// offline root), with the chain from it up to the root.
type SigningCA struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
	// Chain holds the certificates above Cert, nearest first, ending with the
	// self-signed root; it is empty when Cert is the root.
	Chain []*x509.Certificate
	// Roots is what bundles trust (root-cert.pem): the root Chain ends at (or Cert,
	// when it is the root) first, then any other roots given with it.
	Roots []*x509.Certificate
}

// SigningCA returns r as the CA that signs: the root itself.
func (r *Root) SigningCA() *SigningCA {
	return &SigningCA{Cert: r.Cert, Signer: r.Signer, Roots: []*x509.Certificate{r.Cert}}
}

// Path is Cert then Chain: the signing CA up to and including the root.
func (s *SigningCA) Path() []*x509.Certificate {
	return append([]*x509.Certificate{s.Cert}, s.Chain...)
}

// Root is the root the signing CA chains to.
func (s *SigningCA) Root() *x509.Certificate { return s.Roots[0] }

// The parts of a signing CA, as SigningCAError names them (beside RootPartCertificate
// and RootPartKey).
const (
	PartChain = "chain"
	PartRoots = "roots"
)

// ParseSigningCA reads a signing CA from PEM bytes and checks, at time now, that it
// can sign cluster intermediates that istiod accepts:
//
//   - certPEM is one CA certificate allowed to sign certificates, with a strong
//     key, valid now, with no extended key usage istiod's chain check rejects and
//     no critical extension it cannot handle; keyPEM is its key;
//   - chainPEM holds the certificates above it, nearest first (the signing CA
//     itself at the start and the root at the end may be included): each is a CA
//     that passes the same checks and signed the one before it (ErrChainOrder,
//     ErrChainLink), and every constrained pathlen leaves room for the cluster CA
//     below (ErrPathLen);
//   - rootsPEM, when not empty, holds the roots bundles trust: the chain must end
//     at one of them, or at a certificate one of them signed (ErrChainOtherRoot).
//     When empty, the chain must end at a self-signed root (ErrChainNoRoot).
//
// A self-signed certPEM is a root: then chainPEM must be empty and ParseRoot's
// rules apply. Errors are *RootError naming the part (RootPartCertificate,
// RootPartKey, PartChain, PartRoots).
func ParseSigningCA(certPEM, keyPEM, chainPEM, rootsPEM []byte, now time.Time) (*SigningCA, error) {
	return parseSigningCA(certPEM, func() (crypto.Signer, error) { return ParsePrivateKeyPEM(keyPEM) }, chainPEM, rootsPEM, now)
}

// ParseSigningCAWithSigner is ParseSigningCA for a key held elsewhere (an HSM, a
// key service: kms.Open): key must be the signing CA certificate's.
func ParseSigningCAWithSigner(certPEM []byte, key crypto.Signer, chainPEM, rootsPEM []byte, now time.Time) (*SigningCA, error) {
	return parseSigningCA(certPEM, func() (crypto.Signer, error) { return key, nil }, chainPEM, rootsPEM, now)
}

// parseSigningCA is ParseSigningCA with the key from loadKey, called once the
// certificate passed.
func parseSigningCA(certPEM []byte, loadKey func() (crypto.Signer, error), chainPEM, rootsPEM []byte, now time.Time) (*SigningCA, error) {
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, &RootError{Part: RootPartCertificate, Err: err}
	}
	if len(certs) != 1 {
		return nil, &RootError{Part: RootPartCertificate, Err: fmt.Errorf("holds %d certificates, want 1 (the signing CA; its issuers go in the chain)", len(certs))}
	}
	cert := certs[0]
	if IsSelfSigned(cert) && len(bytes.TrimSpace(chainPEM)) == 0 {
		root, err := parseRoot(certPEM, loadKey, now)
		if err != nil {
			return nil, err
		}
		sc := root.SigningCA()
		if len(bytes.TrimSpace(rootsPEM)) > 0 {
			roots, err := parseRoots(rootsPEM, now)
			if err != nil {
				return nil, err
			}
			if !ContainsCert(roots, cert) {
				return nil, &RootError{Part: PartRoots, Err: fmt.Errorf("%w: the signing CA is itself a root (%s), and the roots do not hold it", ErrChainOtherRoot, cert.Subject)}
			}
			sc.Roots = orderRoots(roots, cert)
		}
		return sc, nil
	}
	if err := CheckSigningCACert(cert, now); err != nil {
		return nil, &RootError{Part: RootPartCertificate, Err: err}
	}
	key, err := loadKey()
	if err == nil && !KeyMatches(key, cert.PublicKey) {
		err = ErrKeyMismatch
	}
	if err != nil {
		return nil, &RootError{Part: RootPartKey, Err: err}
	}
	var chain []*x509.Certificate
	if len(bytes.TrimSpace(chainPEM)) > 0 {
		if chain, err = ParseCertificatesPEM(chainPEM); err != nil {
			return nil, &RootError{Part: PartChain, Err: err}
		}
	}
	if len(chain) > 0 && chain[0].Equal(cert) {
		chain = chain[1:]
	}
	var roots []*x509.Certificate
	if len(bytes.TrimSpace(rootsPEM)) > 0 {
		if roots, err = parseRoots(rootsPEM, now); err != nil {
			return nil, err
		}
	}
	path, err := linkChain(cert, chain, roots)
	if err != nil {
		return nil, err
	}
	top := path[len(path)-1]
	if len(roots) == 0 {
		if err := CheckRootCert(top, now); err != nil {
			return nil, &RootError{Part: PartChain, Err: fmt.Errorf("root %s: %w", top.Subject, err)}
		}
		roots = []*x509.Certificate{top}
	}
	for i, c := range path[1 : len(path)-1] {
		if err := CheckSigningCACert(c, now); err != nil {
			return nil, &RootError{Part: PartChain, Err: fmt.Errorf("certificate %d (%s): %w", i+1, c.Subject, err)}
		}
	}
	if i, err := checkPathRoom(path, 0); err != nil {
		part := PartChain
		if i == 0 {
			part = RootPartCertificate
		}
		return nil, &RootError{Part: part, Err: err}
	}
	return &SigningCA{Cert: cert, Signer: key, Chain: path[1:], Roots: orderRoots(roots, top)}, nil
}

// parseRoots reads a roots file: self-signed CAs, valid at now.
func parseRoots(rootsPEM []byte, now time.Time) ([]*x509.Certificate, error) {
	roots, err := ParseCertificatesPEM(rootsPEM)
	if err != nil {
		return nil, &RootError{Part: PartRoots, Err: err}
	}
	for i, r := range roots {
		if err := CheckRootCert(r, now); err != nil {
			return nil, &RootError{Part: PartRoots, Err: fmt.Errorf("root %d (%s): %w", i+1, r.Subject, err)}
		}
	}
	return roots, nil
}

// orderRoots puts first in front of roots (it is among them).
func orderRoots(roots []*x509.Certificate, first *x509.Certificate) []*x509.Certificate {
	out := []*x509.Certificate{first}
	for _, r := range roots {
		if !r.Equal(first) {
			out = append(out, r)
		}
	}
	return out
}

// linkChain returns cert, chain... up to and including the root: the root chain
// ends with, or the root of roots that signed chain's last certificate. Each
// certificate must be signed by the next.
func linkChain(cert *x509.Certificate, chain, roots []*x509.Certificate) ([]*x509.Certificate, error) {
	path := []*x509.Certificate{cert}
	cur := cert
	for i, next := range chain {
		if IsSelfSigned(cur) && cur != cert {
			return nil, &RootError{Part: PartChain, Err: fmt.Errorf("certificate %d (%s) follows the root %s, where the chain ends: remove it (and any after it)", i+1, next.Subject, cur.Subject)}
		}
		if next.Equal(cur) {
			return nil, &RootError{Part: PartChain, Err: fmt.Errorf("certificate %d (%s) is repeated", i+1, next.Subject)}
		}
		if signedBy(cur, next) {
			path = append(path, next)
			cur = next
			continue
		}
		if err := cannotSign(cur, next); err != nil {
			return nil, &RootError{Part: PartChain, Err: fmt.Errorf("certificate %d (%s) is named as the issuer of %s but %w", i+1, next.Subject, cur.Subject, err)}
		}
		// Wrong order, or a certificate missing? Look for cur's issuer elsewhere.
		for j, other := range chain {
			if j != i && !other.Equal(cur) && signedBy(cur, other) {
				return nil, &RootError{Part: PartChain, Err: fmt.Errorf("%w: %s is signed by certificate %d (%s), not by the next one, certificate %d (%s): list each issuer right after the certificate it signed, up to the root",
					ErrChainOrder, cur.Subject, j+1, other.Subject, i+1, next.Subject)}
			}
		}
		return nil, &RootError{Part: PartChain, Err: fmt.Errorf("%w: nothing in the chain signed %s (its issuer is %s); certificate %d (%s) did not",
			ErrChainLink, cur.Subject, cur.Issuer, i+1, next.Subject)}
	}
	if IsSelfSigned(cur) {
		if len(roots) > 0 && !ContainsCert(roots, cur) {
			return nil, &RootError{Part: PartRoots, Err: fmt.Errorf("%w: the chain ends at root %s (%s), which the roots do not hold", ErrChainOtherRoot, cur.Subject, textfmt.Fingerprint(Fingerprint(cur)))}
		}
		return path, nil
	}
	for _, r := range roots {
		if signedBy(cur, r) {
			return append(path, r), nil
		}
	}
	for _, r := range roots {
		if err := cannotSign(cur, r); err != nil {
			return nil, &RootError{Part: PartRoots, Err: fmt.Errorf("root %s is named as the issuer of %s but %w", r.Subject, cur.Subject, err)}
		}
	}
	if len(roots) > 0 {
		return nil, &RootError{Part: PartRoots, Err: fmt.Errorf("%w: %s is signed by %s, and no root given signed it", ErrChainOtherRoot, cur.Subject, cur.Issuer)}
	}
	if len(chain) == 0 {
		return nil, &RootError{Part: PartChain, Err: fmt.Errorf("%w: the signing CA (%s) is not self-signed and no chain up to its root (issuer %s) was given", ErrChainNoRoot, cert.Subject, cert.Issuer)}
	}
	return nil, &RootError{Part: PartChain, Err: fmt.Errorf("%w: it ends at %s, which is not self-signed (its issuer is %s): add the certificates up to the root", ErrChainNoRoot, cur.Subject, cur.Issuer)}
}

// signedBy reports whether parent's key signed c and parent's subject is c's issuer.
func signedBy(c, parent *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, parent.RawSubject) && c.CheckSignatureFrom(parent) == nil
}

// cannotSign is why parent, named as c's issuer, is refused as its signer by
// crypto/x509 for a reason other than another key's signature: parent is not a
// CA or lacks keyCertSign, or c's signature uses an algorithm crypto/x509 (and so
// istiod) refuses, such as SHA-1. It is nil when the names differ or the
// signature is merely another key's (a missing link or wrong order, which the
// chain walk reports).
func cannotSign(c, parent *x509.Certificate) error {
	if !bytes.Equal(c.RawIssuer, parent.RawSubject) {
		return nil
	}
	err := c.CheckSignatureFrom(parent)
	var insecure x509.InsecureAlgorithmError
	var constraint x509.ConstraintViolationError
	switch {
	case errors.As(err, &insecure):
		return fmt.Errorf("its signature uses %w", err)
	case errors.As(err, &constraint):
		return fmt.Errorf("%w: crypto/x509, and so istiod, refuses it as an issuer (is it CA:true with keyCertSign?)", err)
	}
	return nil
}

// checkPathRoom checks that every CA of path (the signing CA first, the root last)
// allows the CA levels below it that a cluster CA with pathlen pathLen, signed by
// path[0], puts there: for path[i], i CAs between it and the cluster CA, the cluster
// CA, and pathLen more. Self-issued certificates do not count (RFC 5280 6.1.4).
func checkPathRoom(path []*x509.Certificate, pathLen int) (int, error) {
	below := 1 + pathLen
	for i, c := range path {
		if i > 0 && !bytes.Equal(path[i-1].RawSubject, path[i-1].RawIssuer) {
			below++
		}
		constrained := c.MaxPathLen > 0 || c.MaxPathLen == 0 && c.MaxPathLenZero
		if constrained && c.MaxPathLen < below {
			what := "the signing CA"
			if i > 0 {
				what = fmt.Sprintf("certificate %d above the signing CA", i)
			}
			return i, fmt.Errorf("%w: %s (%s) has pathlen %d, so it allows %d CA level(s) below it, and the cluster CA would make %d", ErrPathLen, what, c.Subject, c.MaxPathLen, c.MaxPathLen, below)
		}
	}
	return 0, nil
}

// CheckSigningCACert checks that cert can sign CA certificates that istiod accepts
// at now: a CA with keyCertSign, a strong ECDSA or RSA key, no extended key usage
// without serverAuth, no unhandled critical extension, valid now. It is
// CheckRootCert without the self-signature, for the CAs between a root and the
// cluster CAs.
func CheckSigningCACert(cert *x509.Certificate, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return ErrNotCA
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return ErrNoCertSign
	}
	if cert.PublicKeyAlgorithm == x509.DSA {
		return fmt.Errorf("DSA %w", ErrUnsupportedKeyAlgorithm)
	}
	if err := checkEKU(cert); err != nil {
		return err
	}
	if err := checkCritical(cert); err != nil {
		return err
	}
	if err := CheckKeyStrength(cert.PublicKey); err != nil {
		return err
	}
	return checkValidity(cert, now)
}

// File names of a signing-CA folder (ReadCADir): the layout of an Istio cacerts
// bundle, holding the issuing CA instead of a cluster's CA.
const (
	// CADirCertFile (ca-cert.pem) is the signing CA's certificate.
	CADirCertFile = CACertFile
	// CADirKeyFile (ca-key.pem) is its key.
	CADirKeyFile = CAKeyFile
	// CADirChainFile (cert-chain.pem) is the chain from it up to the root.
	CADirChainFile = CertChainFile
	// CADirRootsFile (root-cert.pem, optional when the chain ends at the root)
	// holds the roots bundles trust.
	CADirRootsFile = RootCertFile
)

// ReadCADir reads a signing CA from a folder (CADirCertFile, CADirKeyFile,
// CADirChainFile and, when present, CADirRootsFile) with ParseSigningCA. Errors
// name the file.
func ReadCADir(dir string, now time.Time) (*SigningCA, error) {
	return readCADir(dir, nil, now)
}

// ReadCADirWithSigner is ReadCADir for a signing CA whose key is held elsewhere
// (an HSM, a key service: kms.Open): CADirKeyFile is not read.
func ReadCADirWithSigner(dir string, key crypto.Signer, now time.Time) (*SigningCA, error) {
	if key == nil {
		return nil, errors.New("no key given")
	}
	return readCADir(dir, key, now)
}

func readCADir(dir string, key crypto.Signer, now time.Time) (*SigningCA, error) {
	files := map[string]string{}
	for part, name := range map[string]string{
		RootPartCertificate: CADirCertFile, RootPartKey: CADirKeyFile, PartChain: CADirChainFile, PartRoots: CADirRootsFile,
	} {
		files[part] = filepath.Join(dir, name)
	}
	read := func(part string, optional bool) ([]byte, error) {
		b, err := ReadInputFile(files[part])
		if optional && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	certPEM, err := read(RootPartCertificate, false)
	if err != nil {
		return nil, err
	}
	var keyPEM []byte
	if key == nil {
		if keyPEM, err = read(RootPartKey, false); err != nil {
			return nil, err
		}
	}
	chainPEM, err := read(PartChain, false)
	if err != nil {
		return nil, err
	}
	rootsPEM, err := read(PartRoots, true)
	if err != nil {
		return nil, err
	}
	var sc *SigningCA
	if key != nil {
		sc, err = ParseSigningCAWithSigner(certPEM, key, chainPEM, rootsPEM, now)
	} else {
		sc, err = ParseSigningCA(certPEM, keyPEM, chainPEM, rootsPEM, now)
	}
	var re *RootError
	switch {
	case err == nil:
		return sc, nil
	case !errors.As(err, &re):
		return nil, err
	case key != nil && errors.Is(re.Err, ErrKeyMismatch):
		return nil, fmt.Errorf("the key given is not the key of %s: %w", files[RootPartCertificate], re.Err)
	case errors.Is(re.Err, ErrKeyMismatch):
		return nil, fmt.Errorf("%s: %w %s", files[RootPartKey], re.Err, CADirCertFile)
	case re.Part == RootPartCertificate && errors.Is(re.Err, ErrPathLen) && isClusterCA(certPEM):
		return nil, fmt.Errorf("%s: %w (a cluster's own CA has pathlen 0: this folder must hold the CA that signs cluster CAs)", files[RootPartCertificate], re.Err)
	default:
		return nil, fmt.Errorf("%s: %w", files[re.Part], re.Err)
	}
}

// isClusterCA reports whether certPEM is a CA with pathlen 0, as a cluster's CA is.
func isClusterCA(certPEM []byte) bool {
	c, err := ParseCertificatePEM(certPEM)
	return err == nil && c.MaxPathLen == 0 && c.MaxPathLenZero
}
