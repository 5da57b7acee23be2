package vault

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// Logical is the part of Vault's API this package uses: *api.Logical (from
// client.Logical()) implements it, and a test fake can add error paths.
type Logical interface {
	ReadWithContext(ctx context.Context, path string) (*api.Secret, error)
	WriteWithContext(ctx context.Context, path string, data map[string]any) (*api.Secret, error)
	ListWithContext(ctx context.Context, path string) (*api.Secret, error)
}

var _ Logical = (*api.Logical)(nil)

// PKIIssuer is a ca.Issuer that has a Vault PKI mount sign each intermediate: the
// root key stays in Vault, the intermediate key never leaves meshpki.
type PKIIssuer struct {
	l        Logical
	mount    string
	ref      string
	signPath string
	// issuerCert is the Vault issuer that signs; chain runs from it to the root
	// (as far as the issuer's ca_chain tells).
	issuerCert *x509.Certificate
	chain      []*x509.Certificate
	// issuerID is the issuer's ID in the mount, resolved from ref.
	issuerID string
	now      func() time.Time
	// skipPrecheck turns off the TTL check against the issuer's expiry made before
	// asking Vault (tests use it to exercise the check made after).
	skipPrecheck bool
}

var _ ca.Issuer = (*PKIIssuer)(nil)

// NewPKIIssuer prepares signing with the PKI mount's issuer ref (empty: the mount's
// default issuer, through <mount>/root/sign-intermediate; otherwise through
// <mount>/issuer/<ref>/sign-intermediate). It checks, before any signing, that the
// mount and issuer exist (reading the issuer's certificate, which needs no policy) and,
// when the token may ask, that its policies allow "update" on the signing path.
func NewPKIIssuer(ctx context.Context, l Logical, mount, ref string) (*PKIIssuer, error) {
	mount = strings.Trim(mount, "/")
	if err := checkMount(mount); err != nil {
		return nil, err
	}
	p := &PKIIssuer{l: l, mount: mount, ref: ref, now: time.Now}
	if ref == "" || ref == "default" {
		p.signPath = mount + "/root/sign-intermediate"
	} else {
		p.signPath = mount + "/issuer/" + ref + "/sign-intermediate"
	}
	issuers, err := listIssuers(ctx, l, mount)
	if err != nil {
		return nil, err
	}
	if len(issuers) == 0 {
		return nil, noIssuers(ctx, l, mount)
	}
	id, err := resolveIssuer(mount, ref, issuers)
	if err != nil {
		return nil, err
	}
	cert, chain, err := readIssuer(ctx, l, mount, id)
	if err != nil {
		return nil, err
	}
	p.issuerCert, p.chain, p.issuerID = cert, chain, id
	if now := p.now(); now.After(cert.NotAfter) {
		return nil, &Error{Kind: ErrIssuerNotFound, Path: p.signPath, Err: ca.ErrExpired,
			Msg: fmt.Sprintf("Vault issuer %s in %s expired on %s", issuerLabel(ref), mount, cert.NotAfter.UTC().Format(time.RFC3339))}
	}
	if err := checkCapability(ctx, l, p.signPath, "update"); err != nil {
		return nil, err
	}
	return p, nil
}

// SignPath is the Vault path the issuer writes CSRs to.
func (p *PKIIssuer) SignPath() string { return p.signPath }

// Anchor implements ca.Issuer: the certificate of the Vault issuer that signs.
func (p *PKIIssuer) Anchor() *x509.Certificate { return p.issuerCert }

// Chain implements ca.Issuer: the Vault issuer's certificate, then its ca_chain up
// to the root (only the issuer's certificate when Vault holds no chain for it).
func (p *PKIIssuer) Chain() []*x509.Certificate { return p.chain }

// Issue implements ca.Issuer: it sends csr to the signing path with
// use_csr_values=true (subject and SANs from the CSR), max_path_length, and the ttl,
// then parses the certificate and the chain Vault returns. Roots[0] is the
// self-signed root at the end of Vault's ca_chain; Chain holds the certificates
// between. Unless p.AllowShortTTL, it refuses a TTL that the issuer's expiry (checked
// before asking) or Vault (checked after: Vault silently cuts a TTL at the issuer's
// expiry and at the mount's max_lease_ttl) would shorten.
func (p *PKIIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest, prof ca.Profile) (*ca.Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	asked := p.now()
	want := asked.Add(prof.TTL)
	if !p.skipPrecheck && !prof.AllowShortTTL && want.After(p.issuerCert.NotAfter) {
		return nil, fmt.Errorf("%w: Vault issuer %s in %s expires %s, intermediate asked to last until %s (shorten the TTL, rotate the root, or allow a shorter life)",
			ca.ErrTTLTruncated, issuerLabel(p.ref), p.mount, p.issuerCert.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339))
	}
	secs := int64(prof.TTL.Round(time.Second) / time.Second)
	resp, err := p.l.WriteWithContext(ctx, p.signPath, map[string]any{
		"csr":                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})),
		"use_csr_values":       true,
		"max_path_length":      prof.MaxPathLen,
		"ttl":                  fmt.Sprintf("%ds", secs),
		"format":               "pem",
		"exclude_cn_from_sans": true,
	})
	if err != nil {
		return nil, describe(err, "update", p.signPath)
	}
	if resp == nil || resp.Data == nil {
		return nil, &Error{Kind: ErrMalformed, Path: p.signPath, Msg: fmt.Sprintf("Vault returned no data from %s", p.signPath)}
	}
	certPEM, _ := resp.Data["certificate"].(string)
	cert, err := ca.ParseCertificatePEM([]byte(certPEM))
	if err != nil {
		return nil, &Error{Kind: ErrMalformed, Path: p.signPath, Err: err,
			Msg: fmt.Sprintf("Vault's answer from %s: field certificate: %v", p.signPath, err)}
	}
	chain, err := parseChain(resp.Data)
	if err != nil {
		return nil, &Error{Kind: ErrMalformed, Path: p.signPath, Err: err, Msg: fmt.Sprintf("Vault's answer from %s: %v", p.signPath, err)}
	}
	// Vault's ca_chain for sign-intermediate starts with the new certificate itself.
	for len(chain) > 0 && bytes.Equal(chain[0].Raw, cert.Raw) {
		chain = chain[1:]
	}
	between, root, err := splitChain(chain)
	if err != nil {
		return nil, &Error{Kind: ErrMalformed, Path: p.signPath, Err: err,
			Msg: fmt.Sprintf("Vault's answer from %s: %v (meshpki needs the root itself: give the issuer its full chain, e.g. with manual_chain)", p.signPath, err)}
	}
	if !prof.AllowShortTTL && cert.NotAfter.Before(want.Add(-time.Minute)) {
		msg := fmt.Sprintf("Vault cut the intermediate short: it ends %s, asked for %s (ttl %s)",
			cert.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339), prof.TTL)
		if len(resp.Warnings) > 0 {
			msg += "; Vault says: " + strings.Join(resp.Warnings, "; ")
		}
		return nil, fmt.Errorf("%w: %s (raise the mount's max_lease_ttl, shorten the TTL, or allow a shorter life)", ca.ErrTTLTruncated, msg)
	}
	return &ca.Issued{Cert: cert, Chain: between, Roots: []*x509.Certificate{root}}, nil
}

// parseChain reads ca_chain (issuer first, root last; Vault may put the signed
// certificate first), or issuing_ca when Vault sent no chain.
func parseChain(data map[string]any) ([]*x509.Certificate, error) {
	var pems []string
	switch v := data["ca_chain"].(type) {
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, errors.New("field ca_chain holds a non-string")
			}
			pems = append(pems, s)
		}
	case []string:
		pems = v
	}
	if len(pems) == 0 {
		s, _ := data["issuing_ca"].(string)
		if s == "" {
			return nil, errors.New("neither ca_chain nor issuing_ca present")
		}
		pems = []string{s}
	}
	var chain []*x509.Certificate
	for i, s := range pems {
		certs, err := ca.ParseCertificatesPEM([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("field ca_chain[%d]: %w", i, err)
		}
		chain = append(chain, certs...)
	}
	return chain, nil
}

// splitChain cuts a chain (nearest first) at its first self-signed certificate.
func splitChain(chain []*x509.Certificate) (between []*x509.Certificate, root *x509.Certificate, err error) {
	for i, c := range chain {
		if ca.IsSelfSigned(c) {
			return chain[:i], c, nil
		}
	}
	if len(chain) == 0 {
		return nil, nil, errors.New("no CA chain")
	}
	last := chain[len(chain)-1]
	return nil, nil, fmt.Errorf("the CA chain ends at %q, which is not self-signed", last.Subject)
}

func issuerLabel(ref string) string {
	if ref == "" {
		return "default"
	}
	return ref
}

func checkMount(mount string) error {
	if mount == "" {
		return errors.New("empty Vault mount name")
	}
	if strings.ContainsAny(mount, " \t\n?#") {
		return fmt.Errorf("Vault mount %q contains spaces or URL characters", mount)
	}
	return nil
}

// resolveIssuer turns ref (empty, "default", an issuer ID or name) into the ref to
// read. Reading an unknown issuer makes Vault answer 500 (which is retried), so names
// are looked up in the issuer list first.
func resolveIssuer(mount, ref string, issuers map[string]string) (string, error) {
	if ref == "" || ref == "default" {
		return "default", nil
	}
	if strings.ContainsAny(ref, "/ \t\n?#") {
		return "", fmt.Errorf("Vault issuer reference %q contains '/', spaces or URL characters", ref)
	}
	var names []string
	for id, name := range issuers {
		if id == ref || name == ref {
			return id, nil
		}
		if name == "" {
			name = id
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return "", &Error{Kind: ErrIssuerNotFound, Path: mount + "/issuers",
		Msg: fmt.Sprintf("Vault PKI mount %s has no issuer %q (issuers: %s)", mount, ref, strings.Join(names, ", "))}
}

// noIssuers explains an empty issuer list: no mount, another engine, or a PKI mount
// without a root.
func noIssuers(ctx context.Context, l Logical, mount string) error {
	path := mount + "/issuers"
	typ, err := mountType(ctx, l, mount)
	switch {
	case err != nil:
		return err
	case typ == "pki":
		return &Error{Kind: ErrIssuerNotFound, Path: path,
			Msg: fmt.Sprintf("Vault PKI mount %s has no root yet (no issuers): create one with root/generate/internal", mount)}
	case typ != "":
		return &Error{Kind: ErrMountNotFound, Path: path,
			Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault: it is a %s engine", mount, typ)}
	}
	return &Error{Kind: ErrMountNotFound, Path: path,
		Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault, or one without a root (it lists no issuers)", mount)}
}

// mountType asks sys/internal/ui/mounts (allowed to any token with some access under
// the mount) what engine is mounted at mount: "" when Vault will not say, an
// ErrMountNotFound error when nothing is.
func mountType(ctx context.Context, l Logical, mount string) (string, error) {
	path := "sys/internal/ui/mounts/" + mount
	s, err := l.ReadWithContext(ctx, path)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusForbidden && !hasMessage(re, "invalid token") || re.StatusCode == http.StatusBadRequest) {
			return "", nil // not allowed to ask, or an older Vault
		}
		return "", describe(err, "read", path)
	}
	if s == nil || s.Data == nil {
		return "", &Error{Kind: ErrMountNotFound, Path: path, Msg: fmt.Sprintf("nothing is mounted at %s/ in Vault", mount)}
	}
	typ, _ := s.Data["type"].(string)
	return typ, nil
}

// listIssuers returns issuer ID -> name (LIST <mount>/issuers needs no policy).
func listIssuers(ctx context.Context, l Logical, mount string) (map[string]string, error) {
	path := mount + "/issuers"
	s, err := l.ListWithContext(ctx, path)
	if err != nil {
		err = describe(err, "list", path)
		if errors.Is(err, ErrPermissionDenied) {
			// Listing issuers needs no policy in a PKI mount: a 403 means there is none.
			return nil, &Error{Kind: ErrMountNotFound, Path: path, Err: err,
				Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault (listing %s was refused; it needs no policy in a PKI mount)", mount, path)}
		}
		return nil, err
	}
	out := map[string]string{}
	if s == nil || s.Data == nil {
		return out, nil
	}
	keys, _ := s.Data["keys"].([]any)
	info, _ := s.Data["key_info"].(map[string]any)
	for _, k := range keys {
		id, _ := k.(string)
		name := ""
		if m, ok := info[id].(map[string]any); ok {
			name, _ = m["issuer_name"].(string)
		}
		out[id] = name
	}
	return out, nil
}

// readIssuer reads <mount>/issuer/<ref>/json (no policy needed) and returns the
// issuer's certificate.
func readIssuer(ctx context.Context, l Logical, mount, ref string) (*x509.Certificate, []*x509.Certificate, error) {
	path := mount + "/issuer/" + ref + "/json"
	s, err := l.ReadWithContext(ctx, path)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && hasMessage(re, "no default issuer") {
			return nil, nil, &Error{Kind: ErrIssuerNotFound, Path: path, Err: err,
				Msg: fmt.Sprintf("Vault PKI mount %s has issuers but no default one: name the issuer to sign with", mount)}
		}
		err = describe(err, "read", path)
		if errors.Is(err, ErrPermissionDenied) {
			// This path needs no policy inside a PKI mount: a 403 means there is none.
			return nil, nil, &Error{Kind: ErrMountNotFound, Path: path, Err: err,
				Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault (reading %s was refused; it needs no policy in a PKI mount)", mount, path)}
		}
		return nil, nil, err
	}
	if s == nil || s.Data == nil {
		return nil, nil, &Error{Kind: ErrMountNotFound, Path: path,
			Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault (nothing answers %s)", mount, path)}
	}
	certPEM, _ := s.Data["certificate"].(string)
	cert, err := ca.ParseCertificatePEM([]byte(certPEM))
	if err != nil {
		return nil, nil, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: field certificate: %v", path, err)}
	}
	chain := []*x509.Certificate{cert}
	if list, ok := s.Data["ca_chain"].([]any); ok {
		for i, v := range list {
			str, _ := v.(string)
			certs, err := ca.ParseCertificatesPEM([]byte(str))
			if err != nil {
				return nil, nil, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("%s: field ca_chain[%d]: %v", path, i, err)}
			}
			for _, c := range certs {
				if !ca.ContainsCert(chain, c) {
					chain = append(chain, c)
				}
			}
		}
	}
	return cert, chain, nil
}

// checkCapability asks Vault (sys/capabilities-self) whether the token may use
// capability on path. A token that may not ask (no default policy) passes: the real
// call will tell.
func checkCapability(ctx context.Context, l Logical, path, capability string) error {
	s, err := l.WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": []string{path}})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && !hasMessage(re, "invalid token") {
			return nil
		}
		return describe(err, "update", "sys/capabilities-self")
	}
	if s == nil || s.Data == nil {
		return nil
	}
	raw, ok := s.Data[path].([]any)
	if !ok {
		raw, _ = s.Data["capabilities"].([]any)
	}
	var caps []string
	for _, c := range raw {
		if c, ok := c.(string); ok {
			caps = append(caps, c)
		}
	}
	for _, c := range caps {
		if c == "root" || c == capability {
			return nil
		}
	}
	return &Error{Kind: ErrPermissionDenied, Path: path, Capability: capability,
		Msg: fmt.Sprintf("the Vault token may not %q %s (its policies grant %s): add `path %q { capabilities = [%q] }` to its policy",
			capability, path, describeCaps(caps), path, capability)}
}

func describeCaps(caps []string) string {
	if len(caps) == 0 || len(caps) == 1 && caps[0] == "deny" {
		return "nothing there"
	}
	return "only " + strings.Join(caps, ", ")
}
