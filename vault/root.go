package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// RootOptions tune GenerateInternalRoot.
type RootOptions struct {
	// EnableMount mounts a PKI secrets engine at the mount first when none is there,
	// with max_lease_ttl set to the root's TTL.
	EnableMount bool
	// IssuerName names the new issuer. Without it the mount must hold no issuer yet;
	// with it, no issuer of that name.
	IssuerName string
}

// GeneratedRoot is a root made inside Vault.
type GeneratedRoot struct {
	Cert       *x509.Certificate
	IssuerID   string
	IssuerName string
	// Mounted is true when GenerateInternalRoot enabled the mount.
	Mounted bool
}

// GenerateInternalRoot has the PKI mount generate a self-signed root whose key never
// leaves Vault (<mount>/root/generate/internal). It never replaces a root: it refuses
// when the mount already has an issuer (or one named o.IssuerName). It also refuses,
// before generating, when the mount's max_lease_ttl (when readable) would cut the
// root's TTL, which Vault would do silently.
func GenerateInternalRoot(ctx context.Context, l Logical, mount string, p ca.RootProfile, o RootOptions) (*GeneratedRoot, error) {
	mount = strings.Trim(mount, "/")
	if err := checkMount(mount); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	keyType, keyBits, err := vaultKeyType(p.KeyType)
	if err != nil {
		return nil, err
	}
	secs := int64(p.TTL.Round(time.Second) / time.Second)
	out := &GeneratedRoot{}
	if o.EnableMount {
		path := "sys/mounts/" + mount
		_, err := l.WriteWithContext(ctx, path, map[string]any{
			"type":        "pki",
			"description": "meshpki mesh root",
			"config":      map[string]any{"max_lease_ttl": fmt.Sprintf("%ds", secs)},
		})
		var re *api.ResponseError
		switch {
		case err == nil:
			out.Mounted = true
		case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && hasMessage(re, "already in use"):
			// Mounted already: checked below like any other mount.
		default:
			return nil, describe(err, "update", path)
		}
	}
	issuers, err := listIssuers(ctx, l, mount)
	if err != nil {
		return nil, err
	}
	for id, name := range issuers {
		if o.IssuerName == "" || name == o.IssuerName {
			label := id
			if name != "" {
				label = fmt.Sprintf("%s (%s)", name, id)
			}
			msg := fmt.Sprintf("Vault PKI mount %s already holds a root (issuer %s): meshpki never replaces a root; use another mount, or add a second root under a new issuer name", mount, label)
			if o.IssuerName != "" {
				msg = fmt.Sprintf("Vault PKI mount %s already has an issuer named %s: choose another name", mount, label)
			}
			return nil, &Error{Kind: ErrExists, Path: mount + "/issuers", Msg: msg}
		}
	}
	if len(issuers) == 0 {
		// An empty list also comes from a missing mount or another engine.
		if typ, err := mountType(ctx, l, mount); err == nil && typ != "" && typ != "pki" {
			return nil, &Error{Kind: ErrMountNotFound, Path: "sys/internal/ui/mounts/" + mount,
				Msg: fmt.Sprintf("Vault mount %s/ is a %s engine, not PKI: choose another mount", mount, typ)}
		}
	}
	if maxTTL, ok := mountMaxTTL(ctx, l, mount); ok && maxTTL < p.TTL {
		return nil, fmt.Errorf("%w: Vault mount %s allows at most %s (max_lease_ttl) and would silently cut the root's %s to that: raise it first (vault secrets tune -max-lease-ttl=%dh %s)",
			ca.ErrTTLTruncated, mount, maxTTL, p.TTL, int64(p.TTL.Hours()+0.999), mount)
	}
	path := mount + "/root/generate/internal"
	data := map[string]any{
		"common_name":          p.Subject.CommonName,
		"ttl":                  fmt.Sprintf("%ds", secs),
		"key_type":             keyType,
		"key_bits":             keyBits,
		"max_path_length":      max(p.MaxPathLen, -1),
		"exclude_cn_from_sans": true,
		"format":               "pem",
	}
	for field, v := range map[string][]string{
		"organization": p.Subject.Organization, "ou": p.Subject.OrganizationalUnit, "country": p.Subject.Country,
		"locality": p.Subject.Locality, "province": p.Subject.Province,
	} {
		if len(v) > 0 {
			data[field] = v
		}
	}
	if o.IssuerName != "" {
		data["issuer_name"] = o.IssuerName
	}
	asked := time.Now()
	s, err := l.WriteWithContext(ctx, path, data)
	if err != nil {
		err = describe(err, "update", path)
		if errors.Is(err, ErrMountNotFound) && !o.EnableMount {
			err = &Error{Kind: ErrMountNotFound, Path: path, Err: err,
				Msg: fmt.Sprintf("no PKI secrets engine at %s/ in Vault: enable it (vault secrets enable -path=%s pki), or have GenerateInternalRoot mount it (RootOptions.EnableMount)", mount, mount)}
		}
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("Vault returned no data from %s", path)}
	}
	if _, leaked := s.Data["private_key"]; leaked {
		// An internal root never returns its key; refuse to go on if this one did.
		return nil, &Error{Kind: ErrMalformed, Path: path, Msg: fmt.Sprintf("Vault returned a private key from %s: the root is not internal", path)}
	}
	certPEM, _ := s.Data["certificate"].(string)
	cert, err := ca.ParseCertificatePEM([]byte(certPEM))
	if err != nil {
		return nil, &Error{Kind: ErrMalformed, Path: path, Err: err, Msg: fmt.Sprintf("Vault's answer from %s: field certificate: %v", path, err)}
	}
	out.Cert = cert
	out.IssuerID, _ = s.Data["issuer_id"].(string)
	out.IssuerName, _ = s.Data["issuer_name"].(string)
	if err := ca.CheckRootCert(cert, time.Now()); err != nil {
		return out, fmt.Errorf("Vault generated root %s in %s, but it cannot sign intermediates: %w", out.IssuerID, mount, err)
	}
	if cert.NotAfter.Before(asked.Add(p.TTL).Add(-time.Minute)) {
		msg := fmt.Sprintf("Vault generated root %s in %s but cut its life to %s (asked for %s)",
			out.IssuerID, mount, cert.NotAfter.UTC().Format(time.RFC3339), asked.Add(p.TTL).UTC().Format(time.RFC3339))
		if len(s.Warnings) > 0 {
			msg += "; Vault says: " + strings.Join(s.Warnings, "; ")
		}
		return out, fmt.Errorf("%w: %s", ca.ErrTTLTruncated, msg)
	}
	return out, nil
}

// mountMaxTTL reads the mount's max_lease_ttl, when the token may.
func mountMaxTTL(ctx context.Context, l Logical, mount string) (time.Duration, bool) {
	s, err := l.ReadWithContext(ctx, "sys/mounts/"+mount+"/tune")
	if err != nil || s == nil || s.Data == nil {
		return 0, false
	}
	n, err := jsonInt(s.Data["max_lease_ttl"])
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// vaultKeyType maps a ca.KeyType to Vault's key_type and key_bits.
func vaultKeyType(kt ca.KeyType) (string, int, error) {
	switch kt {
	case ca.ECDSAP256, "":
		return "ec", 256, nil
	case ca.ECDSAP384:
		return "ec", 384, nil
	case ca.RSA2048:
		return "rsa", 2048, nil
	case ca.RSA3072:
		return "rsa", 3072, nil
	case ca.RSA4096:
		return "rsa", 4096, nil
	}
	return "", 0, fmt.Errorf("unknown key type %q", kt)
}
