package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshpki/meshpki/ca"
)

// Source is the CA that signs the mesh's cluster CAs, opened: the root itself, or
// an issuing CA below it (rootsource.Open makes the Issuer from files or Vault).
type Source struct {
	// Issuer signs cluster intermediates; its Chain is the signing path up to the
	// root.
	Issuer ca.Issuer
	// CRLAuthority opens the signing CA's revocation record (rootsource.CRLAuthority).
	// It is called only when the mesh uses CRLs; nil, or an error wrapping
	// ErrNoRootCRL, means the source keeps none (bad input where one is needed).
	CRLAuthority func(context.Context) (ca.CRLAuthority, error)
	// Upstream are the CRLs of the CAs above an issuing CA, as the caller read
	// them (meshpki cannot sign them): checked (ca.UpstreamCRLs) before anything
	// is signed, and passed on to every cluster.
	Upstream []*x509.RevocationList
	// CRLTTL is the life of each CRL signed (zero: ca.DefaultCRLTTL); a CRL with
	// less than CRLRefresh left is signed again (zero: ca.DefaultCRLRefresh).
	CRLTTL, CRLRefresh time.Duration
	// Log receives what is worth a line: a CRL signed, an upstream CRL close to its
	// next update. nil logs nothing.
	Log *slog.Logger
	// Now is the time CRLs are signed and checked at; nil means time.Now.
	Now func() time.Time
}

// ErrNoUpstreamCRL means the signing CA is below the root and the CRLs of the CAs
// above it were not given (Source.Upstream): the mesh would lack them.
var ErrNoUpstreamCRL = errors.New("the CRLs of the CAs above the signing CA were not given")

func (s *Source) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Source) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Source) refresh() time.Duration {
	if s.CRLRefresh <= 0 {
		return ca.DefaultCRLRefresh
	}
	return s.CRLRefresh
}

// UpstreamCRLs checks Upstream against the signing path (ca.UpstreamCRLs) and
// returns the ones the mesh needs; errors are bad input (ErrInvalid).
func (s *Source) UpstreamCRLs() ([]*x509.RevocationList, error) {
	path := s.Issuer.Chain()
	picked, err := ca.UpstreamCRLs(path, s.Upstream, s.now())
	switch {
	case err == nil:
		return picked, nil
	case len(s.Upstream) == 0:
		return nil, invalid(fmt.Errorf("the signing CA %s is below the root: %w (%w)", path[0].Subject, ErrNoUpstreamCRL, err))
	}
	return nil, invalid(err)
}

// AnchorCRLs is the source's part of the mesh CRL set (CRLSyncOptions.AnchorCRLs):
// the signing CA's own CRL, signed again when due or when revoke adds entries
// (signed tells), first; then the checked Upstream ones. A dry run signs what it
// must and records nothing. A revocation recorded already is bad input
// (ca.ErrAlreadyRevoked).
func (s *Source) AnchorCRLs(ctx context.Context, revoke []x509.RevocationListEntry, dryRun bool) (crls []*x509.RevocationList, signed bool, err error) {
	if s.CRLAuthority == nil {
		return nil, false, invalid(fmt.Errorf("%w: the root source keeps no CRL", ErrNoRootCRL))
	}
	up, err := s.UpstreamCRLs()
	if err != nil {
		return nil, false, err
	}
	auth, err := s.CRLAuthority(ctx)
	if errors.Is(err, ErrNoRootCRL) {
		return nil, false, invalid(err)
	} else if err != nil {
		return nil, false, err
	}
	crl, changed, err := auth.CRL(ctx, revoke, ca.CRLOptions{TTL: s.CRLTTL, Refresh: s.CRLRefresh, DryRun: dryRun})
	switch {
	case errors.Is(err, ca.ErrAlreadyRevoked):
		return nil, false, invalid(err)
	case err != nil:
		return nil, false, err
	}
	if changed && !dryRun {
		s.log().Info("CRL signed", "ca", crl.Issuer.String(), "number", crl.Number.Text(16), "revoked", len(crl.RevokedCertificateEntries))
	}
	for _, u := range up {
		if ca.NeedsRefresh(u, s.now(), s.refresh()) {
			s.log().Warn("an upstream CRL expires soon: bring a fresh one (signed where that CA is) before then, or every cluster's Envoys refuse the whole mesh", "ca", u.Issuer.String(), "nextUpdate", u.NextUpdate.UTC().Format(time.RFC3339))
		}
	}
	return append([]*x509.RevocationList{crl}, up...), changed, nil
}

// rootCRLs is AnchorCRLs without revocations, as the jobs that only spread CRLs
// take it (BootstrapOptions.RootCRLs, RootRotationOptions.NewRootCRLs); nil for a
// nil source.
func (s *Source) rootCRLs(dryRun bool) func(context.Context) ([]*x509.RevocationList, error) {
	if s == nil {
		return nil
	}
	return func(ctx context.Context) ([]*x509.RevocationList, error) {
		crls, _, err := s.AnchorCRLs(ctx, nil, dryRun)
		return crls, err
	}
}
