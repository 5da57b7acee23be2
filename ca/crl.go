package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"
)

// CRLFile ("ca-crl.pem") is the file of CRLs istiod (1.27 and later, with
// PILOT_ENABLE_CA_CRL, on by default) loads beside a plugged-in CA's bundle, checks,
// publishes as ConfigMap istio-ca-crl and hands every proxy's Envoy as the CRL of
// its validation context.
const CRLFile = "ca-crl.pem"

// CRLPEMType is the PEM block type of a CRL.
const CRLPEMType = "X509 CRL"

// Defaults for the CRLs meshpki signs: each lives DefaultCRLTTL and is signed again
// once less than DefaultCRLRefresh of it is left, so a daily rotate run keeps every
// CRL current with days to spare.
const (
	DefaultCRLTTL     = 7 * 24 * time.Hour
	DefaultCRLRefresh = 4 * 24 * time.Hour
)

// Errors of CRL sets, for errors.Is.
var (
	// ErrCRLVersion: a v1 CRL (no version field, what `openssl ca -gencrl` writes
	// without crl_extensions). istiod parses CRLs with Go's x509.ParseRevocationList,
	// which accepts only v2, and refuses the whole bundle.
	ErrCRLVersion = errors.New("not a v2 CRL (istiod accepts only v2: with openssl, set crl_extensions, e.g. authorityKeyIdentifier, so it writes v2)")
	// ErrCRLMissing: a CA of a chain has no CRL signed by it in the set.
	ErrCRLMissing = errors.New("no CRL signed by this CA")
	// ErrCRLStale: a CRL's nextUpdate has passed (or its thisUpdate is to come).
	ErrCRLStale = errors.New("CRL is not current")
	// ErrRevoked: a certificate of a chain is listed in its issuer's CRL.
	ErrRevoked = errors.New("revoked")
	// ErrCRLSign: a CA's keyUsage lacks cRLSign, so TLS stacks refuse its CRLs.
	ErrCRLSign = errors.New("CA's key usage lacks cRLSign")
)

// CRLError is a problem of one CA of a chain with the CRL set: the CA's subject, its
// serial, and the cause (one of the Err* sentinels, maybe wrapped).
type CRLError struct {
	Subject string
	Serial  string
	Err     error
}

func (e *CRLError) Error() string {
	return fmt.Sprintf("%s (serial %s): %v", e.Subject, e.Serial, e.Err)
}

func (e *CRLError) Unwrap() error { return e.Err }

func crlError(c *x509.Certificate, err error) *CRLError {
	return &CRLError{Subject: c.Subject.String(), Serial: FormatSerial(c), Err: err}
}

// ParseCRLsPEM parses every "X509 CRL" block of data as istiod does (Go's
// x509.ParseRevocationList: v2 only). Other blocks and text between them are
// refused: istiod would skip them silently, and a certificate pasted into a CRL file
// is a mistake worth naming. An empty file holds no CRLs.
func ParseCRLsPEM(data []byte) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	rest := bytes.TrimSpace(data)
	for n := 1; len(rest) > 0; n++ {
		block, r := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("block %d: not PEM", n)
		}
		if block.Type != CRLPEMType {
			return nil, fmt.Errorf("block %d: %q, want %q", n, block.Type, CRLPEMType)
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			if crlVersion(block.Bytes) == 0 {
				return nil, fmt.Errorf("block %d: %w", n, ErrCRLVersion)
			}
			return nil, fmt.Errorf("block %d: %w", n, err)
		}
		out = append(out, crl)
		rest = bytes.TrimSpace(r)
	}
	return out, nil
}

// crlVersion tells a v1 CRL (0: no version field) from a v2 (1) or garbled one
// (-1), for a clear message: Go's parser only says "unsupported crl version".
func crlVersion(der []byte) int {
	// CertificateList ::= SEQUENCE { tbsCertList SEQUENCE { version INTEGER OPTIONAL, signature SEQUENCE ...
	skip := func(b []byte) ([]byte, byte, bool) { // enter one TLV, return its content and tag
		if len(b) < 2 {
			return nil, 0, false
		}
		tag, l, b := b[0], int(b[1]), b[2:]
		if l&0x80 != 0 {
			n := l & 0x7f
			if n == 0 || n > 4 || len(b) < n {
				return nil, 0, false
			}
			l = 0
			for _, x := range b[:n] {
				l = l<<8 | int(x)
			}
			b = b[n:]
		}
		if l > len(b) {
			return nil, 0, false
		}
		return b[:l], tag, true
	}
	outer, tag, ok := skip(der)
	if !ok || tag != 0x30 {
		return -1
	}
	tbs, tag, ok := skip(outer)
	if !ok || tag != 0x30 || len(tbs) == 0 {
		return -1
	}
	if tbs[0] == 0x02 { // INTEGER: version present
		return 1
	}
	return 0
}

// EncodeCRLsPEM encodes CRLs as a ca-crl.pem file, in the order given.
func EncodeCRLsPEM(crls ...*x509.RevocationList) []byte {
	var buf bytes.Buffer
	for _, c := range crls {
		_ = pem.Encode(&buf, &pem.Block{Type: CRLPEMType, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// SignCRL signs a v2 CRL by CA cert (with its key) listing revoked, valid from now
// for ttl. number is the CRL number; nil takes one from now (in nanoseconds, so a
// later CRL of the same CA has a higher number). The CRL carries the CA's key
// identifier (authorityKeyIdentifier), which TLS stacks use to match it to the CA.
func SignCRL(cert *x509.Certificate, key crypto.Signer, revoked []x509.RevocationListEntry, number *big.Int, now time.Time, ttl time.Duration) (*x509.RevocationList, error) {
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, crlError(cert, ErrCRLSign)
	}
	if ttl <= 0 {
		ttl = DefaultCRLTTL
	}
	if number == nil {
		number = big.NewInt(now.UnixNano())
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now.Add(-time.Minute).UTC().Truncate(time.Second), // a little clock skew
		NextUpdate:                now.Add(ttl).UTC().Truncate(time.Second),
		RevokedCertificateEntries: revoked,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, cert, key)
	if err != nil {
		return nil, fmt.Errorf("signing the CRL of %s: %w", cert.Subject, err)
	}
	return x509.ParseRevocationList(der)
}

// SignedBy reports whether crl was signed by CA c (its issuer name and signature).
func SignedBy(crl *x509.RevocationList, c *x509.Certificate) bool {
	return bytes.Equal(crl.RawIssuer, c.RawSubject) && crl.CheckSignatureFrom(c) == nil
}

// CRLOf returns the newest CRL of the set signed by CA c, or nil.
func CRLOf(crls []*x509.RevocationList, c *x509.Certificate) *x509.RevocationList {
	var best *x509.RevocationList
	for _, crl := range crls {
		if SignedBy(crl, c) && (best == nil || newerCRL(crl, best)) {
			best = crl
		}
	}
	return best
}

func newerCRL(a, b *x509.RevocationList) bool {
	if a.Number != nil && b.Number != nil && a.Number.Cmp(b.Number) != 0 {
		return a.Number.Cmp(b.Number) > 0
	}
	return a.ThisUpdate.After(b.ThisUpdate)
}

// ForgedCRL returns the first of crls that names one of cas as its issuer (subject
// and key identifier) and that this CA did not sign, with that CA. Envoy may pick
// such a CRL for the CA and then refuse every peer under it (docs/revocation.md).
func ForgedCRL(crls []*x509.RevocationList, cas []*x509.Certificate) (*x509.RevocationList, *x509.Certificate) {
	for _, crl := range crls {
		for _, c := range cas {
			if bytes.Equal(crl.RawIssuer, c.RawSubject) && bytes.Equal(crl.AuthorityKeyId, c.SubjectKeyId) && !SignedBy(crl, c) {
				return crl, c
			}
		}
	}
	return nil, nil
}

// IsRevoked reports whether crl lists the certificate with serial.
func IsRevoked(crl *x509.RevocationList, serial *big.Int) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

// CRLCurrent checks that crl is valid at now (thisUpdate <= now < nextUpdate).
func CRLCurrent(crl *x509.RevocationList, now time.Time) error {
	if now.Before(crl.ThisUpdate) {
		return fmt.Errorf("%w: thisUpdate %s is to come", ErrCRLStale, crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !crl.NextUpdate.IsZero() && !now.Before(crl.NextUpdate) {
		return fmt.Errorf("%w: nextUpdate %s has passed", ErrCRLStale, crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckIstiodCRLs is istiod's rule for ca-crl.pem (Verify in
// security/pkg/pki/util/keycertbundle.go): every certificate of cert-chain.pem
// (chain, the signing CA up to the root) must have signed one of the CRLs. CRLs of
// other CAs may be there too (a mesh's set holds every cluster's). istiod checks
// nothing else: a stale CRL passes it, and is refused later by Envoy.
func CheckIstiodCRLs(chain []*x509.Certificate, crls []*x509.RevocationList) error {
	var errs []error
	for _, c := range chain {
		if !slices.ContainsFunc(crls, func(crl *x509.RevocationList) bool { return crl.CheckSignatureFrom(c) == nil }) {
			errs = append(errs, crlError(c, ErrCRLMissing))
		}
	}
	return errors.Join(errs...)
}

// CheckChainCRLs checks a verified chain (leaf first, root last) against a CRL set as
// Envoy does when its validation context has CRLs and only_verify_leaf_cert_crl is
// unset, which is how Istio configures it: BoringSSL's X509_V_FLAG_CRL_CHECK |
// X509_V_FLAG_CRL_CHECK_ALL (envoy source/common/tls/cert_validator/default_validator.cc).
// Every certificate of the chain, the root included, needs a current CRL from its
// issuer (the root's own for the root), and none may be listed in it. So a peer whose
// chain has a CA without a CRL in the set is refused, revoked or not. The first
// problem is returned, as a *CRLError.
func CheckChainCRLs(chain []*x509.Certificate, crls []*x509.RevocationList, now time.Time) error {
	for i, c := range chain {
		issuer := c
		if i+1 < len(chain) {
			issuer = chain[i+1]
		}
		if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
			return crlError(issuer, ErrCRLSign)
		}
		crl := CRLOf(crls, issuer)
		if crl == nil {
			return crlError(issuer, ErrCRLMissing)
		}
		if err := CRLCurrent(crl, now); err != nil {
			return crlError(issuer, err)
		}
		if IsRevoked(crl, c.SerialNumber) {
			return crlError(c, ErrRevoked)
		}
	}
	return nil
}

// MergeCRLs returns one CRL per signing CA from lists, the newest of each (highest
// CRL number, then latest thisUpdate), ordered by issuer name then key identifier so
// that the same set always encodes to the same bytes (istiod reloads on any change
// of the file).
func MergeCRLs(lists ...[]*x509.RevocationList) []*x509.RevocationList {
	type id struct{ issuer, aki string }
	best := map[id]*x509.RevocationList{}
	for _, l := range lists {
		for _, crl := range l {
			k := id{string(crl.RawIssuer), string(crl.AuthorityKeyId)}
			if cur, ok := best[k]; !ok || newerCRL(crl, cur) {
				best[k] = crl
			}
		}
	}
	out := make([]*x509.RevocationList, 0, len(best))
	for _, crl := range best {
		out = append(out, crl)
	}
	slices.SortFunc(out, func(a, b *x509.RevocationList) int {
		if c := bytes.Compare(a.RawIssuer, b.RawIssuer); c != 0 {
			return c
		}
		return bytes.Compare(a.AuthorityKeyId, b.AuthorityKeyId)
	})
	return out
}

// NeedsRefresh reports whether crl should be signed again at now: less than
// refresh of its life is left (DefaultCRLRefresh when refresh is 0).
func NeedsRefresh(crl *x509.RevocationList, now time.Time, refresh time.Duration) bool {
	if refresh <= 0 {
		refresh = DefaultCRLRefresh
	}
	return crl == nil || crl.NextUpdate.IsZero() || crl.NextUpdate.Sub(now) < refresh
}

// CRLMember is one cluster of a mesh as CheckMeshCRLs sees it: its chain
// (cert-chain.pem) and the CRLs of its ca-crl.pem (nil: CRLs off there).
type CRLMember struct {
	Name  string
	Chain []*x509.Certificate
	CRLs  []*x509.RevocationList
}

// CheckMeshCRLs checks the clusters' CRL sets against each other as Envoy will: a
// cluster with CRLs must hold a current CRL of every CA of every other cluster's
// chain, or its Envoys refuse that cluster's workloads (mesh-crl-missing,
// mesh-crl-stale: errors). A cluster whose CA another's CRLs revoke is reported
// once per such cluster (mesh-crl-revoked: a warning, since revoking is meant).
func CheckMeshCRLs(members []CRLMember, now time.Time) []Problem {
	var problems []Problem
	var with, without []string
	for _, m := range members {
		if len(m.Chain) == 0 {
			continue
		}
		if m.CRLs == nil {
			without = append(without, m.Name)
		} else {
			with = append(with, m.Name)
		}
	}
	if len(with) > 0 && len(without) > 0 {
		problems = append(problems, Problem{Severity: SeverityError, Check: "mesh-crl-off",
			Message: fmt.Sprintf("%s %s no %s while %s %s: its Envoys check no CRL, and accept revoked CAs", SummarizeNames(without, 10), hasHave(len(without)), CRLFile, SummarizeNames(with, 10), hasHave(len(with)))})
	}
	for _, a := range members {
		if a.CRLs == nil {
			continue
		}
		for _, b := range members {
			if b.Name == a.Name || len(b.Chain) == 0 {
				continue
			}
			if serial, by, ok := revokedInChain(b.Chain, a.CRLs); ok {
				problems = append(problems, Problem{Severity: SeverityWarning, Check: "mesh-crl-revoked",
					Message: fmt.Sprintf("%s: its CRLs revoke %s's CA (serial %s, by %s): %s refuses %s's workloads", a.Name, b.Name, serial, by, a.Name, b.Name)})
				continue
			}
			for _, c := range b.Chain {
				crl := CRLOf(a.CRLs, c)
				switch {
				case crl == nil:
					problems = append(problems, Problem{Severity: SeverityError, Check: "mesh-crl-missing",
						Message: fmt.Sprintf("%s lacks a CRL of %s (in %s's chain): %s's Envoys refuse %s's workloads", a.Name, c.Subject, b.Name, a.Name, b.Name)})
				case CRLCurrent(crl, now) != nil:
					problems = append(problems, Problem{Severity: SeverityError, Check: "mesh-crl-stale",
						Message: fmt.Sprintf("%s holds a stale CRL of %s (in %s's chain, next update %s): its Envoys refuse the workloads of that chain", a.Name, c.Subject, b.Name, crl.NextUpdate.UTC().Format(time.RFC3339))})
				}
			}
		}
	}
	return append(problems, crlsBehind(members)...)
}

// crlsBehind finds clusters that hold an older CRL of a CA (a lower number) than
// another cluster holds, when the newer one revokes a serial the older does not
// list: the spread of a revocation did not reach them (an interrupted revoke), and
// their Envoys still accept the revoked CA (mesh-crl-behind: an error).
func crlsBehind(members []CRLMember) []Problem {
	newest := map[string]*x509.RevocationList{} // by issuer and key identifier
	key := func(c *x509.RevocationList) string { return string(c.RawIssuer) + "|" + string(c.AuthorityKeyId) }
	for _, m := range members {
		for _, c := range m.CRLs {
			if n := newest[key(c)]; n == nil || newerCRL(c, n) {
				newest[key(c)] = c
			}
		}
	}
	// A cluster whose own CA the newest CRLs revoke is out of the mesh until it is
	// given a new CA: revoke leaves its cacerts alone, so its CRLs stay behind.
	newestList := slices.Collect(maps.Values(newest))
	var problems []Problem
	for _, m := range members {
		if RevokedInChain(m.Chain, newestList) {
			continue
		}
		for _, c := range m.CRLs {
			n := newest[key(c)]
			if n == c || !newerCRL(n, c) {
				continue
			}
			var missing []string
			for _, e := range n.RevokedCertificateEntries {
				if !IsRevoked(c, e.SerialNumber) {
					missing = append(missing, FormatSerialNumber(e.SerialNumber))
				}
			}
			if len(missing) > 0 && !slices.ContainsFunc(m.CRLs, func(x *x509.RevocationList) bool { return x != c && key(x) == key(c) && !newerCRL(n, x) }) {
				problems = append(problems, Problem{Severity: SeverityError, Check: "mesh-crl-behind",
					Message: fmt.Sprintf("%s holds CRL number %v of %s, another cluster number %v, which also revokes %s: %s still accepts that CA", m.Name, c.Number, c.Issuer, n.Number, strings.Join(missing, ", "), m.Name)})
			}
		}
	}
	return problems
}

// RevocationOf says which revocation, if any, crls hold for a CA of chain (below the
// root), e.g. "its CA (serial 3f2a...) is revoked by CN=Root (keyCompromise, at
// 2026-12-01T10:00:00Z)"; "" when none.
func RevocationOf(chain []*x509.Certificate, crls []*x509.RevocationList) string {
	for i := 0; i+1 < len(chain); i++ {
		crl := CRLOf(crls, chain[i+1])
		if crl == nil {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(chain[i].SerialNumber) == 0 {
				return fmt.Sprintf("its CA (serial %s) is revoked by %s (%s, at %s)", FormatSerial(chain[i]), crl.Issuer, ReasonName(e.ReasonCode), e.RevocationTime.UTC().Format(time.RFC3339))
			}
		}
	}
	return ""
}

// revokedInChain tells whether a CA of chain (below the root) is listed by its
// issuer's CRL in crls, and which.
func revokedInChain(chain []*x509.Certificate, crls []*x509.RevocationList) (serial, by string, ok bool) {
	for i := 0; i+1 < len(chain); i++ {
		if crl := CRLOf(crls, chain[i+1]); crl != nil && IsRevoked(crl, chain[i].SerialNumber) {
			return FormatSerial(chain[i]), chain[i+1].Subject.String(), true
		}
	}
	return "", "", false
}

// RevokedInChain reports whether a CA of chain (below the root) is listed by its
// issuer's CRL in crls.
func RevokedInChain(chain []*x509.Certificate, crls []*x509.RevocationList) bool {
	_, _, ok := revokedInChain(chain, crls)
	return ok
}

// CurrentCRLs keeps the CRLs current at now (see CRLCurrent).
func CurrentCRLs(crls []*x509.RevocationList, now time.Time) []*x509.RevocationList {
	var out []*x509.RevocationList
	for _, crl := range crls {
		if CRLCurrent(crl, now) == nil {
			out = append(out, crl)
		}
	}
	return out
}

// EarliestNextUpdate is the earliest nextUpdate of crls (UTC): when the set must
// have been signed again. Zero for no CRLs.
func EarliestNextUpdate(crls []*x509.RevocationList) time.Time {
	var next time.Time
	for _, crl := range crls {
		if next.IsZero() || crl.NextUpdate.Before(next) {
			next = crl.NextUpdate
		}
	}
	return next.UTC()
}

func hasHave(n int) string {
	if n == 1 {
		return "has"
	}
	return "have"
}
