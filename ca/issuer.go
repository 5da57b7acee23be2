package ca

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
)

// ErrTTLTruncated means the root expires before the intermediate would.
var ErrTTLTruncated = errors.New("root expires before the requested not-after")

// Issued is what an Issuer returns for one intermediate.
type Issued struct {
	Cert *x509.Certificate
	// Chain holds the certificates between Cert and the root, nearest first; it is
	// empty when the root signs Cert directly.
	Chain []*x509.Certificate
	// Roots is root-cert.pem: the root that anchors Cert first, then any other
	// roots the mesh trusts (during a root rotation).
	Roots []*x509.Certificate

	// signedHere is set by LocalIssuer: the certificate was signed in this process
	// directly under Roots[0], with a profile that sets no extended key usage, and
	// crypto/x509 verified the signature with the root's key as it signed. Mint
	// then does not verify that signature a second time (a quarter of its CPU).
	signedHere bool
}

// Issuer signs a CSR as an intermediate CA under a profile. The local implementation
// signs with a root in memory (files, Vault KV); package vault has one that asks a
// Vault PKI mount, so the root key never leaves Vault.
type Issuer interface {
	Issue(ctx context.Context, csr *x509.CertificateRequest, p Profile) (*Issued, error)
	// Anchor is the certificate the issuer signs under: every intermediate it
	// issues is signed by it and chains to it (the root itself, or the issuing CA
	// of a Vault PKI mount). Callers must not modify it.
	Anchor() *x509.Certificate
}

// LocalIssuer signs intermediates with a root held in memory, through cfssl's local
// signer with a CA profile, at the time the profile's clock (Profile.Now) says.
type LocalIssuer struct {
	root *Root
}

// NewLocalIssuer returns an Issuer that signs with root.
func NewLocalIssuer(root *Root) *LocalIssuer {
	return &LocalIssuer{root: root}
}

// oidSAN is subjectAltName, the one CSR extension the local issuer copies.
const oidSAN = "2.5.29.17"

// Issue implements Issuer. Subject and SANs come from the CSR, everything else from
// the profile. It refuses to cut the TTL short at the root's expiry unless
// p.AllowShortTTL is set.
func (li *LocalIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest, p Profile) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rootCert := li.root.Cert
	now := p.now()
	notBefore := now.Add(-5 * time.Minute).Truncate(time.Second)
	notAfter, err := notAfterWithin(now.Add(p.TTL), rootCert, p.AllowShortTTL)
	if err != nil {
		return nil, err
	}
	if rootCert.MaxPathLen >= 0 && (rootCert.MaxPathLen > 0 || rootCert.MaxPathLenZero) && p.MaxPathLen >= rootCert.MaxPathLen {
		return nil, fmt.Errorf("root allows pathlen %d below it, so it cannot sign an intermediate with pathlen %d", rootCert.MaxPathLen, p.MaxPathLen)
	}
	policy := &config.Signing{
		Profiles: map[string]*config.SigningProfile{},
		Default: &config.SigningProfile{
			Usage:                       []string{"cert sign", "crl sign", "digital signature"},
			Expiry:                      p.TTL,
			ClientProvidesSerialNumbers: true,
			CAConstraint: config.CAConstraint{
				IsCA:           true,
				MaxPathLen:     p.MaxPathLen,
				MaxPathLenZero: p.MaxPathLen == 0,
			},
			ExtensionWhitelist: map[string]bool{oidSAN: true},
		},
	}
	s, err := local.NewSigner(li.root.Signer, rootCert, signer.DefaultSigAlgo(li.root.Signer), policy)
	if err != nil {
		return nil, fmt.Errorf("signing policy: %w", err)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	req := signer.SignRequest{
		Request:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})),
		Serial:    serial,
		NotBefore: notBefore,
		NotAfter:  notAfter,
	}
	// cfssl drops DNS names from CA certificates; carry the CSR's SAN extension over.
	for _, ext := range csr.Extensions {
		if ext.Id.String() == oidSAN {
			req.Extensions = append(req.Extensions, signer.Extension{
				ID: config.OID(ext.Id), Critical: ext.Critical, Value: hex.EncodeToString(ext.Value),
			})
		}
	}
	certPEM, err := s.Sign(req)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("signed intermediate: %w", err)
	}
	return &Issued{Cert: cert, Roots: []*x509.Certificate{rootCert}, signedHere: true}, nil
}

// notAfterWithin returns want, or the root's not-after when allowShort is set and
// the root expires first.
func notAfterWithin(want time.Time, root *x509.Certificate, allowShort bool) (time.Time, error) {
	want = want.Truncate(time.Second)
	if !want.After(root.NotAfter) {
		return want, nil
	}
	if allowShort {
		return root.NotAfter, nil
	}
	return time.Time{}, fmt.Errorf("%w: root expires %s, intermediate asked to last until %s (shorten the TTL, rotate the root, or allow a shorter life)",
		ErrTTLTruncated, root.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339))
}
