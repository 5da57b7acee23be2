package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshpki/meshpki/internal/fanout"
)

// Mint makes one cluster's intermediate: it generates the key and CSR locally, has
// iss sign the CSR, checks what came back (a CA with the asked pathlen and subject,
// chaining to the returned root, not cut short) and returns the verified bundle.
// Times are read from p.Now (time.Now when nil).
func Mint(ctx context.Context, iss Issuer, p Profile) (*Bundle, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if chain := iss.Chain(); len(chain) > 0 {
		// Before the key: what the issuer cannot sign, or istiod would refuse.
		if err := CheckProfileChain(chain, p, p.now()); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", p.Cluster, err)
		}
	}
	key, err := GenerateKey(p.KeyType)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", p.Cluster, err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  p.Subject,
		DNSNames: p.DNSNames,
		URIs:     p.URIs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: create CSR: %w", p.Cluster, err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", p.Cluster, err)
	}
	asked := p.now()
	iss2, err := iss.Issue(ctx, csr, p)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", p.Cluster, err)
	}
	if err := CheckIssued(iss2, csr, p, asked); err != nil {
		return nil, fmt.Errorf("cluster %s: issuer returned a bad certificate: %w", p.Cluster, err)
	}
	signedHere := iss2.signedHere
	if signedHere {
		// The cheap part of the chain check on every mint; a root with name
		// constraints gets crypto/x509's full check below instead.
		full, err := checkSignedHere(iss2.Cert, iss2.Roots[0], p.now())
		if err != nil {
			return nil, fmt.Errorf("cluster %s: the intermediate would not verify as istiod checks it: %w", p.Cluster, err)
		}
		signedHere = !full
	}
	b := NewBundle(key, iss2)
	rep := &Report{Format: FormatIstio}
	b.check(rep, layoutOf(FormatIstio), VerifyOptions{Now: p.now(), TrustDomain: p.TrustDomain}, &checkBuilt{signedHere: signedHere})
	if err := rep.Err(); err != nil {
		return nil, fmt.Errorf("cluster %s: minted bundle fails verification: %w", p.Cluster, err)
	}
	return b, nil
}

// CheckIssued checks an Issuer's answer for csr against p, asked for at time asked:
// the certificate carries the CSR's key and subject, is a CA with p's pathlen, and
// lasts for p.TTL from asked (unless p.AllowShortTTL), since issuers such as Vault
// silently cut a TTL short at the root's expiry.
func CheckIssued(iss *Issued, csr *x509.CertificateRequest, p Profile, asked time.Time) error {
	c := iss.Cert
	if c == nil || len(iss.Roots) == 0 {
		return fmt.Errorf("no certificate or no root")
	}
	if !KeyMatchesPublic(csr.PublicKey, c.PublicKey) {
		return fmt.Errorf("certificate's key is not the CSR's")
	}
	if !bytes.Equal(c.RawSubject, csr.RawSubject) {
		return fmt.Errorf("subject is %q, asked for %q", c.Subject, csr.Subject)
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return ErrNotCA
	}
	if c.MaxPathLen != p.MaxPathLen || (p.MaxPathLen == 0 && !c.MaxPathLenZero) {
		return fmt.Errorf("pathlen is %s, asked for %d", describePathLen(c), p.MaxPathLen)
	}
	// The signature itself is checked once, by the chain verification Mint runs next.
	// One minute of slack for issuers that round times.
	if want := asked.Add(p.TTL).Add(-time.Minute); c.NotAfter.Before(want) && !p.AllowShortTTL {
		return fmt.Errorf("%w: certificate ends %s, asked for %s (ttl %s); the issuer cut it short",
			ErrTTLTruncated, c.NotAfter.UTC().Format(time.RFC3339), asked.Add(p.TTL).UTC().Format(time.RFC3339), p.TTL)
	}
	return nil
}

func describePathLen(c *x509.Certificate) string {
	if c.MaxPathLen < 0 || c.MaxPathLen == 0 && !c.MaxPathLenZero {
		return "unlimited"
	}
	return fmt.Sprint(c.MaxPathLen)
}

// KeyMatchesPublic reports whether two public keys are equal.
func KeyMatchesPublic(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// MintEach mints every profile with iss on up to workers goroutines and calls
// each(i, bundle, err) from the worker as profile i finishes, so that writing the
// bundle runs concurrently too. each's error becomes profile i's error. It returns
// the error of every profile, indexed like profiles (nil for success).
func MintEach(ctx context.Context, iss Issuer, profiles []Profile, workers int, each func(i int, b *Bundle, err error) error) []error {
	errs := make([]error, len(profiles))
	started := make([]bool, len(profiles))
	fanout.Each(ctx, len(profiles), workers, func(ctx context.Context, i int) {
		started[i] = true
		b, err := Mint(ctx, iss, profiles[i])
		errs[i] = each(i, b, err)
	})
	for i := range errs {
		if !started[i] {
			errs[i] = fmt.Errorf("cluster %s: not started: %w", profiles[i].Cluster, context.Cause(ctx))
		}
	}
	return errs
}
