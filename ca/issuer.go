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
	// issues is signed by it and chains to it (the root itself, an issuing CA
	// below the root, or the issuer of a Vault PKI mount). Callers must not modify
	// it.
	Anchor() *x509.Certificate
	// Chain is Anchor, then each certificate above it, nearest first, up to and
	// including the root ([Anchor] when Anchor is the root): what Mint and
	// CheckProfiles check a new intermediate's TTL and pathlen against, and what
	// RootOf reads the root from. An issuer that cannot tell its chain (a Vault
	// issuer imported without one) returns what it knows, starting with Anchor.
	Chain() []*x509.Certificate
}

// RootOf is the self-signed root iss signs under: the last certificate of its
// Chain, or nil when that is not self-signed (the issuer does not know its root).
func RootOf(iss Issuer) *x509.Certificate {
	chain := iss.Chain()
	if len(chain) == 0 || !IsSelfSigned(chain[len(chain)-1]) {
		return nil
	}
	return chain[len(chain)-1]
}

// LocalIssuer signs intermediates with a CA held in memory (the root, or an issuing
// CA below it), through cfssl's local signer with a CA profile, at the time the
// profile's clock (Profile.Now) says.
type LocalIssuer struct {
	ca *SigningCA
}

// NewLocalIssuer returns an Issuer that signs with root.
func NewLocalIssuer(root *Root) *LocalIssuer {
	return &LocalIssuer{ca: root.SigningCA()}
}

// NewSigningCAIssuer returns an Issuer that signs with sc: each intermediate's
// cert-chain.pem runs through sc's chain to its root, and root-cert.pem holds sc's
// roots.
func NewSigningCAIssuer(sc *SigningCA) *LocalIssuer {
	return &LocalIssuer{ca: sc}
}

// SigningCA is the CA li signs with.
func (li *LocalIssuer) SigningCA() *SigningCA { return li.ca }

// oidSAN is subjectAltName, the one CSR extension the local issuer copies.
const oidSAN = "2.5.29.17"

// Issue implements Issuer. Subject and SANs come from the CSR, everything else from
// the profile. It refuses to cut the TTL short at the root's expiry unless
// p.AllowShortTTL is set.
func (li *LocalIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest, p Profile) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	signing := li.ca.Cert
	now := p.now()
	notBefore := now.Add(-5 * time.Minute).Truncate(time.Second)
	notAfter, err := notAfterWithinPath(now.Add(p.TTL), li.ca.Path(), p.AllowShortTTL)
	if err != nil {
		return nil, err
	}
	if _, err := checkPathRoom(li.ca.Path(), p.MaxPathLen); err != nil {
		return nil, err
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
	s, err := local.NewSigner(li.ca.Signer, signing, signer.DefaultSigAlgo(li.ca.Signer), policy)
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
	between := li.ca.Chain
	if len(between) > 0 {
		between = append([]*x509.Certificate{signing}, between[:len(between)-1]...)
	}
	return &Issued{Cert: cert, Chain: between, Roots: li.ca.Roots, signedHere: len(between) == 0}, nil
}

// notAfterWithinPath is notAfterWithin for every certificate of path: the
// intermediate may not outlive any CA it chains through.
func notAfterWithinPath(want time.Time, path []*x509.Certificate, allowShort bool) (time.Time, error) {
	first := path[0]
	for _, c := range path[1:] {
		if c.NotAfter.Before(first.NotAfter) {
			first = c
		}
	}
	return notAfterWithin(want, first, allowShort)
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
	what := "root"
	if !IsSelfSigned(root) {
		what = fmt.Sprintf("CA %s above it", root.Subject)
	}
	return time.Time{}, fmt.Errorf("%w: %s expires %s, intermediate asked to last until %s (shorten the TTL, rotate the root, or allow a shorter life)",
		ErrTTLTruncated, what, root.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339))
}
