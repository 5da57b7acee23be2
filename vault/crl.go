package vault

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/meshpki/meshpki/ca"
)

var _ ca.CRLAuthority = (*PKIIssuer)(nil)

// CRL implements ca.CRLAuthority with Vault's own revocation record and CRL: each
// serial of revoke is revoked through <mount>/revoke (Vault keeps the record, and
// every intermediate it signed is stored there), and the CRL is the issuer's own
// (<mount>/issuer/<id>/crl), which Vault signs anew on <mount>/crl/rotate. That is
// asked for when something was revoked, or when the CRL has less than opts.Refresh
// left, capped at half its life (Vault's default CRL lives 72h, less than meshpki's
// default refresh). Vault records no revocation reason, so the entries' reasons are
// not kept. A serial Vault did not issue is refused. opts.DryRun revokes nothing.
func (p *PKIIssuer) CRL(ctx context.Context, revoke []x509.RevocationListEntry, opts ca.CRLOptions) (*x509.RevocationList, bool, error) {
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	crl, err := p.readCRL(ctx)
	if err != nil {
		return nil, false, err
	}
	if opts.DryRun {
		return crl, len(revoke) > 0, nil
	}
	for _, e := range revoke {
		if crl != nil && ca.IsRevoked(crl, e.SerialNumber) {
			return nil, false, fmt.Errorf("serial %s: %w", ca.FormatSerialNumber(e.SerialNumber), ca.ErrAlreadyRevoked)
		}
		path := p.mount + "/revoke"
		if _, err := p.l.WriteWithContext(ctx, path, map[string]any{"serial_number": vaultSerial(ca.FormatSerialNumber(e.SerialNumber))}); err != nil {
			return nil, false, describe(err, "write", path)
		}
	}
	refresh := opts.Refresh
	if refresh <= 0 {
		refresh = ca.DefaultCRLRefresh
	}
	if crl != nil && !crl.NextUpdate.IsZero() {
		if half := crl.NextUpdate.Sub(crl.ThisUpdate) / 2; half < refresh {
			refresh = half
		}
	}
	if len(revoke) == 0 && crl != nil && !ca.NeedsRefresh(crl, now, refresh) {
		return crl, false, nil
	}
	path := p.mount + "/crl/rotate"
	if _, err := p.l.ReadWithContext(ctx, path); err != nil {
		return nil, false, describe(err, "read", path)
	}
	crl, err = p.readCRL(ctx)
	if err != nil {
		return nil, false, err
	}
	if crl == nil {
		return nil, false, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("Vault issuer %s in %s has no CRL after %s", issuerLabel(p.ref), p.mount, path)}
	}
	for _, e := range revoke {
		if !ca.IsRevoked(crl, e.SerialNumber) {
			return nil, false, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("Vault's CRL of %s does not list serial %s after revoking it", p.mount, ca.FormatSerialNumber(e.SerialNumber))}
		}
	}
	return crl, true, nil
}

// readCRL reads the issuer's CRL (nil when Vault has none yet), checked as istiod
// reads it: v2, and signed by the issuer.
func (p *PKIIssuer) readCRL(ctx context.Context) (*x509.RevocationList, error) {
	path := p.mount + "/issuer/" + p.issuerID + "/crl"
	s, err := p.l.ReadWithContext(ctx, path)
	if err != nil {
		return nil, describe(err, "read", path)
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	pemCRL, _ := s.Data["crl"].(string)
	if strings.TrimSpace(pemCRL) == "" {
		return nil, nil
	}
	crls, err := ca.ParseCRLsPEM([]byte(pemCRL))
	if err != nil || len(crls) != 1 {
		return nil, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: field crl: want one v2 CRL: %v", path, err)}
	}
	if !ca.SignedBy(crls[0], p.issuerCert) {
		return nil, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("%s: the CRL is not signed by the issuer", path)}
	}
	return crls[0], nil
}

// vaultSerial writes a hex serial as Vault does: colon-separated byte pairs.
func vaultSerial(hex string) string {
	if len(hex)%2 == 1 {
		hex = "0" + hex
	}
	var parts []string
	for i := 0; i < len(hex); i += 2 {
		parts = append(parts, hex[i:i+2])
	}
	return strings.Join(parts, ":")
}
