package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"time"
)

// File names of a root kept in a folder.
const (
	RootCertFile = "root-cert.pem"
	RootKeyFile  = "root-key.pem"
)

// Errors a root can fail with.
var (
	ErrNotCA         = errors.New("certificate is not a CA (basicConstraints CA:TRUE missing)")
	ErrNoCertSign    = errors.New("certificate's key usage lacks keyCertSign")
	ErrPathLenZero   = errors.New("certificate has pathlen 0, so it cannot sign intermediate CAs")
	ErrNotSelfSigned = errors.New("certificate is not self-signed: meshpki needs the root itself")
	ErrExpired       = errors.New("certificate has expired")
	ErrNotYetValid   = errors.New("certificate is not valid yet")
)

// Root is a CA certificate with the signer for its key.
type Root struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// RootProfile describes a new self-signed root.
type RootProfile struct {
	Subject pkix.Name
	TTL     time.Duration
	KeyType KeyType
	// MaxPathLen limits the CA levels below the root; negative means no limit (the default,
	// as in Istio's tools/certs). It must be at least 1 for the root to sign intermediates.
	MaxPathLen int
}

// Validate reports the first field of p that cannot make a root that signs
// intermediates: a positive TTL, a common name, a known key type, and a pathlen other
// than 0. CreateRoot and Vault's GenerateInternalRoot both check it.
func (p RootProfile) Validate() error {
	if p.TTL <= 0 {
		return fmt.Errorf("ttl must be positive, got %s", p.TTL)
	}
	if p.Subject.CommonName == "" {
		return errors.New("root subject needs a common name")
	}
	if err := checkOrganization(p.Subject.Organization); err != nil {
		return fmt.Errorf("root %w", err)
	}
	if p.MaxPathLen == 0 {
		return ErrPathLenZero
	}
	if p.KeyType != "" {
		if _, err := ParseKeyType(string(p.KeyType)); err != nil {
			return err
		}
	}
	return nil
}

// DefaultRootProfile is a 10-year ECDSA P-256 root "CN=Root CA, O=<org>". An empty
// org means "Istio", as in IntermediateProfile.
func DefaultRootProfile(org string) RootProfile {
	if org == "" {
		org = DefaultOrg
	}
	return RootProfile{
		Subject:    pkix.Name{Organization: []string{org}, CommonName: DefaultRootCN},
		TTL:        DefaultRootTTL,
		KeyType:    ECDSAP256,
		MaxPathLen: -1,
	}
}

// NewSerial returns a random 128-bit certificate serial number.
func NewSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// CreateRoot makes a self-signed root CA valid from now (backdated 5 minutes for
// clock skew) for p.TTL. It returns the root and its key in PEM.
func CreateRoot(p RootProfile, now time.Time) (*Root, []byte, error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	key, err := GenerateKey(p.KeyType)
	if err != nil {
		return nil, nil, err
	}
	root, err := CreateRootWithSigner(p, key, now)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return root, keyPEM, nil
}

// CreateRootWithSigner is CreateRoot for a key held elsewhere (an HSM, a key
// service: kms.Open): key signs the root's certificate and stays where it is.
// p.KeyType, when set, must be key's type.
func CreateRootWithSigner(p RootProfile, key crypto.Signer, now time.Time) (*Root, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	kt, err := KeyTypeOf(key.Public())
	if err != nil {
		return nil, err
	}
	if p.KeyType != "" && p.KeyType != kt {
		return nil, fmt.Errorf("the key is %s, the profile asks for %s", kt, p.KeyType)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               p.Subject,
		NotBefore:             now.Add(-5 * time.Minute).UTC(),
		NotAfter:              now.Add(p.TTL).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            p.MaxPathLen,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ski,
	}
	if p.MaxPathLen < 0 {
		tmpl.MaxPathLen = -1
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Root{Cert: cert, Signer: key}, nil
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// The two halves of a root, as RootError names them.
const (
	RootPartCertificate = "certificate"
	RootPartKey         = "key"
)

// RootError is a root ParseRoot refused. Part is RootPartCertificate or
// RootPartKey, so that callers can name the file or field that holds it.
type RootError struct {
	Part string
	Err  error
}

func (e *RootError) Error() string { return e.Part + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *RootError) Unwrap() error { return e.Err }

// ParseRoot reads a root CA from PEM bytes and checks that it can sign intermediates
// at time now: a self-signed CA certificate allowed to sign CAs, in its validity
// period, with a strong key that matches the certificate. It is the one root
// parser: ReadRootDir and Vault's KV root source use it. Errors are *RootError.
func ParseRoot(certPEM, keyPEM []byte, now time.Time) (*Root, error) {
	return parseRoot(certPEM, func() (crypto.Signer, error) { return ParsePrivateKeyPEM(keyPEM) }, now)
}

// ParseRootWithSigner is ParseRoot for a key held elsewhere (an HSM, a key
// service: kms.Open): key must be the certificate's.
func ParseRootWithSigner(certPEM []byte, key crypto.Signer, now time.Time) (*Root, error) {
	return parseRoot(certPEM, func() (crypto.Signer, error) { return key, nil }, now)
}

// parseRoot is ParseRoot with the key from loadKey, called once the certificate
// passed.
func parseRoot(certPEM []byte, loadKey func() (crypto.Signer, error), now time.Time) (*Root, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err == nil {
		err = CheckRootCert(cert, now)
	}
	if err != nil {
		return nil, &RootError{Part: RootPartCertificate, Err: err}
	}
	key, err := loadKey()
	if err == nil && !KeyMatches(key, cert.PublicKey) {
		err = ErrKeyMismatch
	}
	if err != nil {
		return nil, &RootError{Part: RootPartKey, Err: err}
	}
	return &Root{Cert: cert, Signer: key}, nil
}

// IsSelfSigned reports whether c is issued by itself: its issuer is its subject and
// its signature verifies with its own key.
func IsSelfSigned(c *x509.Certificate) bool {
	return c != nil && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// CheckRootCert checks that cert can serve as the root that signs intermediates.
func CheckRootCert(cert *x509.Certificate, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return ErrNotCA
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return ErrNoCertSign
	}
	if cert.MaxPathLen == 0 && cert.MaxPathLenZero {
		return ErrPathLenZero
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
	if err := cert.CheckSignatureFrom(cert); err != nil {
		var insecure x509.InsecureAlgorithmError
		switch {
		case !bytes.Equal(cert.RawSubject, cert.RawIssuer):
			return ErrNotSelfSigned
		case errors.As(err, &insecure):
			return fmt.Errorf("certificate is signed with %s, %w", cert.SignatureAlgorithm, ErrInsecureSigAlg)
		case errors.Is(err, x509.ErrUnsupportedAlgorithm):
			return fmt.Errorf("certificate's signature algorithm %s is not supported (want ECDSA or RSA with SHA-256 or better)", cert.SignatureAlgorithm)
		}
		return fmt.Errorf("%w (its self-signature does not verify)", ErrNotSelfSigned)
	}
	if err := CheckKeyStrength(cert.PublicKey); err != nil {
		return err
	}
	return checkValidity(cert, now)
}

func checkValidity(cert *x509.Certificate, now time.Time) error {
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%w (not after %s)", ErrExpired, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("%w (not before %s)", ErrNotYetValid, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// ReadRootDir reads DIR/root-cert.pem and DIR/root-key.pem with ParseRoot. Errors
// name the file.
func ReadRootDir(dir string, now time.Time) (*Root, error) {
	return readRootDir(dir, nil, now)
}

// ReadRootDirWithSigner reads DIR/root-cert.pem with ParseRootWithSigner: the
// root's key is key, held elsewhere. DIR/root-key.pem is not read. Errors name the
// file.
func ReadRootDirWithSigner(dir string, key crypto.Signer, now time.Time) (*Root, error) {
	if key == nil {
		return nil, errors.New("no key given")
	}
	return readRootDir(dir, key, now)
}

func readRootDir(dir string, key crypto.Signer, now time.Time) (*Root, error) {
	certFile, keyFile := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	certPEM, err := ReadInputFile(certFile)
	if err != nil {
		return nil, err
	}
	var root *Root
	if key != nil {
		root, err = ParseRootWithSigner(certPEM, key, now)
	} else {
		var keyPEM []byte
		if keyPEM, err = ReadInputFile(keyFile); err != nil {
			return nil, err
		}
		root, err = ParseRoot(certPEM, keyPEM, now)
	}
	var re *RootError
	switch {
	case err == nil:
		return root, nil
	case !errors.As(err, &re):
		return nil, err
	case re.Part == RootPartCertificate:
		return nil, fmt.Errorf("%s: %w", certFile, re.Err)
	case key != nil && errors.Is(re.Err, ErrKeyMismatch):
		return nil, fmt.Errorf("the key given is not the key of %s: %w", certFile, re.Err)
	case errors.Is(re.Err, ErrKeyMismatch):
		return nil, fmt.Errorf("%s: %w %s", keyFile, re.Err, RootCertFile)
	default:
		return nil, fmt.Errorf("%s: %w", keyFile, re.Err)
	}
}
