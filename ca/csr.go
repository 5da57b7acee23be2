package ca

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/meshpki/meshpki/internal/textfmt"
)

// CSRFile is the certificate request a CSR folder holds beside its key
// (CAKeyFile) until the signed certificate is imported; it stays as the record of
// what was asked.
const CSRFile = "ca-csr.pem"

// Errors ImportSigned refuses a signed certificate with (besides ErrNotCA,
// ErrNoCertSign, ErrExpired, ErrNotYetValid and the chain errors of
// ParseSigningCA).
var (
	// ErrOtherKey means the certificate was signed for another key than the
	// folder's (another CSR).
	ErrOtherKey = errors.New("certificate was signed for another key")
	// ErrImportPathLen means the certificate would let its holder sign further CAs.
	ErrImportPathLen = errors.New("certificate allows further CAs below it")
	// ErrImportEKU means the certificate's extended key usage would break mTLS.
	ErrImportEKU = errors.New("certificate's extended key usage would break workload mTLS")
	// ErrOutlivesIssuer means the certificate is valid after a CA above it expires.
	ErrOutlivesIssuer = errors.New("certificate outlives its issuer")
	// ErrShortLife means the certificate has less life left than asked for.
	ErrShortLife = errors.New("certificate has too little life left")
	// ErrNotWaiting means the folder holds no CSR and key to import a signature for.
	ErrNotWaiting = errors.New("no certificate request waiting")
	// ErrImported means the folder already holds an imported certificate.
	ErrImported = errors.New("already imported")
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// NewCSR makes a key (p.KeyType) and a CSR for p's intermediate that any CA can sign
// as it stands: p's subject and SANs, and requested extensions basicConstraints
// CA:true with p's pathlen and keyUsage keyCertSign, cRLSign, digitalSignature (both
// critical), no extended key usage, which is the profile LocalIssuer signs.
func NewCSR(p Profile) (csrPEM, keyPEM []byte, err error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	key, err := GenerateKey(p.KeyType)
	if err != nil {
		return nil, nil, err
	}
	bc, err := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{true, p.MaxPathLen})
	if err != nil {
		return nil, nil, err
	}
	// keyCertSign (5), cRLSign (6), digitalSignature (0), as a DER bit string.
	ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x86}, BitLength: 7})
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: p.Subject, DNSNames: p.DNSNames, URIs: p.URIs,
		ExtraExtensions: []pkix.Extension{
			{Id: oidBasicConstraints, Critical: true, Value: bc},
			{Id: oidKeyUsage, Critical: true, Value: ku},
		},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	keyPEM, err = MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// ParseCSRPEM reads one PEM certificate request and checks its signature.
func ParseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM CERTIFICATE REQUEST found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	return csr, csr.CheckSignature()
}

// CSRState is where a CSR folder stands.
type CSRState string

// CSR folder states.
const (
	// CSRWaiting: key and CSR, no certificate yet.
	CSRWaiting CSRState = "waiting"
	// CSRImported: the signed certificate was imported; the folder is a bundle.
	CSRImported CSRState = "imported"
	// CSRBroken: neither (e.g. a CSR without its key).
	CSRBroken CSRState = "broken"
)

// CSRDirStatus describes one cluster's CSR folder.
type CSRDirStatus struct {
	Cluster string    `json:"cluster"`
	Dir     string    `json:"dir"`
	State   CSRState  `json:"state"`
	Subject string    `json:"subject,omitempty"`
	Asked   time.Time `json:"asked,omitzero"` // when the CSR was written
	// Serial, Issuer and NotAfter describe the imported certificate.
	Serial   string    `json:"serial,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	Problem  string    `json:"problem,omitempty"`
}

// ReadCSRDir tells where the CSR folder dir stands.
func ReadCSRDir(dir string) CSRDirStatus {
	st := CSRDirStatus{Cluster: filepath.Base(dir), Dir: dir, State: CSRBroken}
	csrFile := filepath.Join(dir, CSRFile)
	if fi, err := os.Stat(csrFile); err == nil {
		st.Asked = fi.ModTime().UTC()
	}
	if data, err := ReadInputFile(csrFile); err == nil {
		if csr, err := ParseCSRPEM(data); err == nil {
			st.Subject = csr.Subject.String()
		} else {
			st.Problem = fmt.Sprintf("%s: %v", CSRFile, err)
			return st
		}
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil {
		st.Problem = CAKeyFile + " is missing"
		return st
	}
	data, err := ReadInputFile(filepath.Join(dir, CACertFile))
	switch {
	case errors.Is(err, fs.ErrNotExist) && st.Subject != "":
		st.State = CSRWaiting
	case errors.Is(err, fs.ErrNotExist):
		st.Problem = "neither " + CSRFile + " nor " + CACertFile
	case err != nil:
		st.Problem = err.Error()
	default:
		if c, err := ParseCertificatePEM(data); err != nil {
			st.Problem = fmt.Sprintf("%s: %v", CACertFile, err)
		} else {
			st.State, st.Serial, st.Issuer, st.NotAfter = CSRImported, FormatSerial(c), c.Issuer.String(), c.NotAfter.UTC()
			st.Subject = c.Subject.String()
		}
	}
	return st
}

// ImportOptions tune ImportSigned.
type ImportOptions struct {
	// Now is the time validity is checked at; zero means time.Now().
	Now time.Time
	// MinRemaining is the least life the certificate must have left; zero means
	// DefaultMinRemaining.
	MinRemaining time.Duration
	// TrustDomain is the mesh's trust domain (empty: DefaultTrustDomain): the URI
	// name constraints of every CA of the path must allow its workloads' SPIFFE IDs.
	TrustDomain string
}

// ImportSigned assembles a bundle from a cluster CA certificate a CA outside
// meshpki signed for a CSR of NewCSR: keyPEM is the CSR's key, certPEM the signed
// certificate, chainPEM the certificates between it and the root (nearest first;
// the certificate itself at the start and the root at the end may be included),
// rootsPEM the roots to trust (the anchoring one first in the bundle). It refuses,
// with one reason, a certificate that is not for the key (ErrOtherKey), not a CA
// (ErrNotCA), without keyCertSign (ErrNoCertSign), allowed to sign further CAs
// (ErrImportPathLen), with an extended key usage that breaks workload mTLS
// (ErrImportEKU), not valid now or for opts.MinRemaining (ErrShortLife), valid
// after a CA above it expires (ErrOutlivesIssuer), or not chaining to the roots
// (the chain errors of ParseSigningCA); then the bundle must pass istiod's checks.
// Errors are *RootError naming the part (RootPartCertificate, RootPartKey,
// PartChain, PartRoots).
func ImportSigned(keyPEM, certPEM, chainPEM, rootsPEM []byte, opts ImportOptions) (*Bundle, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	minLeft := opts.MinRemaining
	if minLeft == 0 {
		minLeft = DefaultMinRemaining
	}
	certErr := func(err error) error { return &RootError{Part: RootPartCertificate, Err: err} }
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, &RootError{Part: RootPartKey, Err: err}
	}
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, certErr(err)
	}
	cert := certs[0]
	if len(certs) > 1 && len(bytes.TrimSpace(chainPEM)) == 0 {
		// A signed certificate often comes with its chain in one file.
		chainPEM = EncodeCertificatesPEM(certs[1:]...)
	} else if len(certs) > 1 {
		return nil, certErr(fmt.Errorf("holds %d certificates, want 1 (or pass the chain in this file alone)", len(certs)))
	}
	if !KeyMatches(key, cert.PublicKey) {
		return nil, certErr(fmt.Errorf("%w (not the key of this folder's CSR): sign this folder's %s", ErrOtherKey, CSRFile))
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, certErr(fmt.Errorf("%w: sign it with the CSR's extensions (CA:true, pathlen:0)", ErrNotCA))
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, certErr(fmt.Errorf("%w: istiod signs workload certificates with it", ErrNoCertSign))
	}
	if !(cert.MaxPathLen == 0 && cert.MaxPathLenZero) {
		return nil, certErr(fmt.Errorf("%w: pathlen is %s, want 0, so that a cluster's key cannot make CAs for the whole mesh", ErrImportPathLen, describePathLen(cert)))
	}
	if err := checkImportEKU(cert); err != nil {
		return nil, certErr(err)
	}
	if err := checkValidity(cert, now); err != nil {
		return nil, certErr(fmt.Errorf("%w: %w", ErrShortLife, err))
	}
	if left := cert.NotAfter.Sub(now); left < minLeft {
		return nil, certErr(fmt.Errorf("%w: %s left (not after %s), want at least %s", ErrShortLife, textfmt.Duration(left), cert.NotAfter.UTC().Format(time.RFC3339), textfmt.Duration(minLeft)))
	}
	if err := checkCritical(cert); err != nil {
		return nil, certErr(err)
	}
	var chain, roots []*x509.Certificate
	if len(bytes.TrimSpace(chainPEM)) > 0 {
		if chain, err = ParseCertificatesPEM(chainPEM); err != nil {
			return nil, &RootError{Part: PartChain, Err: err}
		}
	}
	if len(chain) > 0 && chain[0].Equal(cert) {
		chain = chain[1:]
	}
	if roots, err = parseRoots(rootsPEM, now); err != nil {
		return nil, err
	}
	path, err := linkChain(cert, chain, roots)
	if err != nil {
		return nil, err
	}
	for i, c := range path[1:] {
		if c.NotAfter.Before(cert.NotAfter) {
			return nil, certErr(fmt.Errorf("%w %s (not after %s): the certificate lasts until %s, and the chain stops verifying when its issuer expires; sign it for a shorter time",
				ErrOutlivesIssuer, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339)))
		}
		if i+1 < len(path)-1 {
			if err := CheckSigningCACert(c, now); err != nil {
				return nil, &RootError{Part: PartChain, Err: fmt.Errorf("certificate %d (%s): %w", i+1, c.Subject, err)}
			}
		}
	}
	if _, err := checkPathRoom(path[1:], 0); err != nil {
		return nil, &RootError{Part: PartChain, Err: err}
	}
	top := path[len(path)-1]
	b := &Bundle{Cert: cert, Key: key, Chain: path, Roots: orderRoots(roots, top)}
	if err := b.Check(VerifyOptions{Now: now, MinRemaining: minLeft, TrustDomain: cmp.Or(opts.TrustDomain, DefaultTrustDomain)}).Err(); err != nil {
		return nil, certErr(err)
	}
	return b, nil
}

// checkImportEKU is checkEKU (serverAuth and clientAuth, or none) wrapped as
// ErrImportEKU, with the fix for a certificate a CA outside meshpki signed.
func checkImportEKU(c *x509.Certificate) error {
	if err := checkEKU(c); err != nil {
		return fmt.Errorf("%w: %w: sign it with no extended key usage (the CSR asks for none)", ErrImportEKU, err)
	}
	return nil
}

// ImportDir completes the waiting CSR folder dir with ImportSigned's bundle from
// the given PEM bytes: cert-chain.pem, root-cert.pem and ca-cert.pem join the key
// and the CSR, in one atomic folder swap (WriteDir), so the folder is either still
// waiting or a complete bundle. A folder already imported is refused
// (ErrImported) unless force, which keeps the previous one as a backup. Errors
// name files, never key material.
func ImportDir(dir string, certPEM, chainPEM, rootsPEM []byte, force bool, opts ImportOptions) (*Bundle, error) {
	st := ReadCSRDir(dir)
	switch {
	case st.State == CSRImported && !force:
		return nil, fmt.Errorf("%s: %w (serial %s, issuer %s)", dir, ErrImported, st.Serial, st.Issuer)
	case st.State == CSRBroken:
		return nil, fmt.Errorf("%s: %w: %s", dir, ErrNotWaiting, st.Problem)
	}
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	// A key that is not the CSR's was swapped or replaced in the folder: no
	// signature fixes that, so say so before judging the certificate.
	if csrData, ok := files[CSRFile]; ok {
		csr, cerr := ParseCSRPEM(csrData)
		key, kerr := ParsePrivateKeyPEM(files[CAKeyFile])
		if cerr == nil && kerr == nil && !KeyMatches(key, csr.PublicKey) {
			return nil, fmt.Errorf("%s: %w: it is not the key of this folder's %s (the key file was replaced or swapped with another folder's); a certificate signed for %s needs that CSR's own key back in place",
				filepath.Join(dir, CAKeyFile), ErrKeyMismatch, CSRFile, CSRFile)
		}
	}
	b, err := ImportSigned(files[CAKeyFile], certPEM, chainPEM, rootsPEM, opts)
	if err != nil {
		var re *RootError
		if errors.As(err, &re) && re.Part == RootPartKey {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKeyFile), re.Err)
		}
		return nil, err
	}
	if csrData, ok := files[CSRFile]; ok {
		if csr, err := ParseCSRPEM(csrData); err == nil && !KeyMatchesPublic(csr.PublicKey, b.Cert.PublicKey) {
			return nil, &RootError{Part: RootPartCertificate, Err: fmt.Errorf("%w (not the key of %s)", ErrOtherKey, CSRFile)}
		}
	}
	out, err := b.Files(FormatIstio)
	if err != nil {
		return nil, err
	}
	out[CAKeyFile] = files[CAKeyFile] // byte for byte: the key never changes
	if csrData, ok := files[CSRFile]; ok {
		out[CSRFile] = csrData
	}
	backup, err := WriteDir(dir, out, WriteOptions{Force: true, Now: opts.Now})
	if err != nil {
		return nil, err
	}
	if backup != "" && st.State == CSRWaiting {
		// The waiting folder held only the key and CSR, both in the new folder.
		_ = os.RemoveAll(backup)
	}
	return b, nil
}
