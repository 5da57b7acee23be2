package vault

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// PKI mode end to end: the root is generated inside Vault, three clusters are minted
// with a token that may do nothing but update sign-intermediate (so it can read no key
// at all), and the bundles form one mesh.
func TestPKIModeEndToEnd(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, root := newPKIRoot(t, v, admin, 10*365*24*time.Hour)
	if root.IssuerID == "" || !root.Mounted {
		t.Fatalf("GenerateInternalRoot: issuer %q, mounted %v", root.IssuerID, root.Mounted)
	}

	signer := tokenClient(t, v, policyToken(t, v, admin, signOnlyPolicy(mount), false))
	iss, err := NewPKIIssuer(ctx, signer.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := iss.SignPath(); got != mount+"/root/sign-intermediate" {
		t.Errorf("SignPath = %s", got)
	}
	// The sign-only token can read nothing, not even the issuer's configuration.
	if _, err := signer.Logical().ReadWithContext(ctx, mount+"/issuer/default"); !errors.Is(describe(err, "read", mount+"/issuer/default"), ErrPermissionDenied) {
		t.Fatalf("sign-only token read the issuer: %v", err)
	}

	asked := time.Now()
	bundles := mintAll(t, iss, profiles("east", "west", "north"))
	checkMesh(t, bundles)
	for i, b := range bundles {
		if !bytes.Equal(b.Roots[0].Raw, root.Cert.Raw) {
			t.Errorf("bundle %d: root is not Vault's root", i)
		}
		if len(b.Chain) != 2 || !bytes.Equal(b.Chain[1].Raw, root.Cert.Raw) {
			t.Errorf("bundle %d: cert-chain.pem should be intermediate then Vault's root, has %d certs", i, len(b.Chain))
		}
		cluster := []string{"east", "west", "north"}[i]
		if got := b.Cert.Subject.String(); got != "CN=Intermediate CA,O=Istio,L="+cluster {
			t.Errorf("bundle %d: subject %q", i, got)
		}
		if strings.Join(b.Cert.DNSNames, ",") != ca.DefaultIstiodSAN {
			t.Errorf("bundle %d: DNS SANs %v, want only %s", i, b.Cert.DNSNames, ca.DefaultIstiodSAN)
		}
		if d := b.Cert.NotAfter.Sub(asked.Add(ca.DefaultIntermediateTTL)); d < -time.Minute || d > time.Minute {
			t.Errorf("bundle %d: not after %s, want about %s", i, b.Cert.NotAfter, asked.Add(ca.DefaultIntermediateTTL))
		}
	}
}

// Each mistake a user can make with PKI mode gets an error that says what is wrong
// and where, before anything is signed.
func TestPKIIssuerErrors(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, _ := newPKIRoot(t, v, admin, 24*time.Hour)
	empty := v.Unique("pki-empty")
	if err := admin.Sys().MountWithContext(ctx, empty, &api.MountInput{Type: "pki"}); err != nil {
		t.Fatal(err)
	}
	// A token with the default policy (so it may ask for its capabilities) but no
	// right to sign; and one without even that.
	readOnly := policyToken(t, v, admin, `path "`+mount+`/*" { capabilities = ["read", "list"] }`, true)
	bare := policyToken(t, v, admin, `path "`+mount+`/issuers" { capabilities = ["list"] }`, false)

	tests := []struct {
		name         string
		token        string
		mount, ref   string
		kind         error
		msg          []string
		failsOnIssue bool
	}{
		{name: "no such mount", token: v.Token, mount: v.Unique("nope"), kind: ErrMountNotFound, msg: []string{"no PKI secrets engine at nope-"}},
		{name: "no such mount, limited token", token: readOnly, mount: v.Unique("nope"), kind: ErrMountNotFound, msg: []string{"no PKI secrets engine"}},
		{name: "mount is not PKI", token: v.Token, mount: "secret", kind: ErrMountNotFound, msg: []string{"no PKI secrets engine at secret/"}},
		{name: "PKI mount without a root", token: v.Token, mount: empty, kind: ErrIssuerNotFound, msg: []string{"has no root yet", "create one with root/generate/internal"}},
		{name: "mount is not PKI, limited token", token: readOnly, mount: "secret", kind: ErrMountNotFound, msg: []string{"no PKI secrets engine at secret/"}},
		{name: "no such issuer", token: v.Token, mount: mount, ref: "nosuch", kind: ErrIssuerNotFound, msg: []string{`has no issuer "nosuch"`}},
		{name: "issuer ref with a slash", token: v.Token, mount: mount, ref: "a/b", msg: []string{"contains '/'"}},
		{name: "policy lacks update, checked up front", token: readOnly, mount: mount, kind: ErrPermissionDenied,
			msg: []string{`may not "update" ` + mount + "/root/sign-intermediate", `path "` + mount + `/root/sign-intermediate" { capabilities = ["update"] }`}},
		{name: "policy lacks update, found on signing", token: bare, mount: mount, kind: ErrPermissionDenied, failsOnIssue: true,
			msg: []string{`denied "update" on ` + mount + "/root/sign-intermediate", "HTTP 403", `capabilities = ["update"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tokenClient(t, v, tt.token)
			iss, err := NewPKIIssuer(ctx, c.Logical(), tt.mount, tt.ref)
			if tt.failsOnIssue {
				if err != nil {
					t.Fatal(err)
				}
				_, err = ca.Mint(ctx, iss, hourProfile("east"))
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
		})
	}
}

// A named issuer (--vault-issuer) signs through <mount>/issuer/<ref>/sign-intermediate
// and its root is the one in the bundle; root create never replaces a root.
func TestPKINamedIssuer(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, first := newPKIRoot(t, v, admin, 30*24*time.Hour)

	p := ca.DefaultRootProfile("Istio")
	p.TTL = 30 * 24 * time.Hour
	if _, err := GenerateInternalRoot(ctx, admin.Logical(), mount, p, RootOptions{}); !errors.Is(err, ErrExists) ||
		!strings.Contains(err.Error(), "already holds a root") {
		t.Fatalf("second root in the same mount: %v", err)
	}
	p.Subject.CommonName = "Root CA B"
	second, err := GenerateInternalRoot(ctx, admin.Logical(), mount, p, RootOptions{IssuerName: "root-b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateInternalRoot(ctx, admin.Logical(), mount, p, RootOptions{IssuerName: "root-b"}); !errors.Is(err, ErrExists) {
		t.Fatalf("issuer name reused: %v", err)
	}

	policy := `path "` + mount + `/issuer/root-b/sign-intermediate" { capabilities = ["update"] }`
	signer := tokenClient(t, v, policyToken(t, v, admin, policy, true))
	for _, ref := range []string{"root-b", second.IssuerID} {
		iss, err := NewPKIIssuer(ctx, signer.Logical(), mount, ref)
		if ref == second.IssuerID {
			// By ID the path differs from the policy's: the up-front check says so.
			if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "/issuer/"+second.IssuerID+"/sign-intermediate") {
				t.Fatalf("by ID: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := ca.Mint(ctx, iss, hourProfile("east"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Roots[0].Raw, second.Cert.Raw) || bytes.Equal(b.Roots[0].Raw, first.Cert.Raw) {
			t.Errorf("signed under %s, want root-b", b.Roots[0].Subject)
		}
	}
}

// A root close to expiry: Vault would silently cut the intermediate at the root's
// expiry; meshpki refuses unless a shorter life is allowed, and Vault is not even asked.
func TestPKITruncationRefused(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, root := newPKIRoot(t, v, admin, 2*time.Hour)
	iss, err := NewPKIIssuer(ctx, admin.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	issued := func() int {
		s, err := admin.Logical().ListWithContext(ctx, mount+"/certs")
		if err != nil || s == nil {
			t.Fatalf("list certs: %v", err)
		}
		return len(s.Data["keys"].([]any))
	}
	before := issued()

	p := ca.IntermediateProfile("east", "") // one year, the root has two hours left
	_, err = ca.Mint(ctx, iss, p)
	if !errors.Is(err, ca.ErrTTLTruncated) || !strings.Contains(err.Error(), "expires "+root.Cert.NotAfter.UTC().Format(time.RFC3339)) {
		t.Fatalf("want a truncation error naming the root's expiry, got %v", err)
	}
	if n := issued(); n != before {
		t.Errorf("Vault issued %d certificates for a refused request", n-before)
	}

	// Without the checks made up front (Mint's against the anchor, the issuer's
	// own), the check after Vault answered catches it.
	iss.skipPrecheck = true
	_, err = ca.Mint(ctx, anchorless{iss}, p)
	if !errors.Is(err, ca.ErrTTLTruncated) || !strings.Contains(err.Error(), "Vault cut the intermediate short") {
		t.Fatalf("want Vault's truncation caught, got %v", err)
	}
	iss.skipPrecheck = false

	p.AllowShortTTL = true
	b, err := ca.Mint(ctx, iss, p)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Cert.NotAfter.Equal(root.Cert.NotAfter) {
		t.Errorf("allowed short life: not after %s, want the root's %s", b.Cert.NotAfter, root.Cert.NotAfter)
	}
}

// The mount's max_lease_ttl also cuts a TTL silently; the error quotes Vault.
func TestPKIMountMaxTTLRefused(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	mount, _ := newPKIRoot(t, v, admin, 10*365*24*time.Hour)
	maxTTL := "48h"
	if err := admin.Sys().TuneMountAllowNilWithContext(ctx, mount, api.TuneMountConfigInput{MaxLeaseTTL: &maxTTL}); err != nil {
		t.Fatal(err)
	}
	iss, err := NewPKIIssuer(ctx, admin.Logical(), mount, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.Mint(ctx, iss, ca.IntermediateProfile("east", ""))
	if !errors.Is(err, ca.ErrTTLTruncated) || !strings.Contains(err.Error(), "max_lease_ttl") || !strings.Contains(err.Error(), "maxTTL") {
		t.Fatalf("want a truncation error quoting Vault's max TTL warning, got %v", err)
	}

	// Generating a root longer than the mount allows is refused before Vault is asked.
	p := ca.DefaultRootProfile("")
	_, err = GenerateInternalRoot(ctx, admin.Logical(), mount, p, RootOptions{IssuerName: "long"})
	if !errors.Is(err, ca.ErrTTLTruncated) || !strings.Contains(err.Error(), "vault secrets tune -max-lease-ttl=87600h "+mount) {
		t.Fatalf("root longer than the mount's max: %v", err)
	}
}

func TestGenerateRootErrors(t *testing.T) {
	v, admin := rootClient(t)
	ctx := context.Background()
	p := ca.DefaultRootProfile("")
	tests := []struct {
		name  string
		mount string
		p     func(ca.RootProfile) ca.RootProfile
		opts  RootOptions
		kind  error
		msg   string
	}{
		{name: "no mount", mount: v.Unique("none"), kind: ErrMountNotFound, msg: "enable it (vault secrets enable -path=none-"},
		{name: "KV mount", mount: "secret", opts: RootOptions{EnableMount: true}, kind: ErrMountNotFound, msg: "secret/ is a kv engine, not PKI"},
		{name: "pathlen 0", mount: v.Unique("pki"), p: func(p ca.RootProfile) ca.RootProfile { p.MaxPathLen = 0; return p }, kind: ca.ErrPathLenZero},
		{name: "no common name", mount: v.Unique("pki"), p: func(p ca.RootProfile) ca.RootProfile { p.Subject.CommonName = ""; return p }, msg: "needs a common name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := p
			if tt.p != nil {
				p = tt.p(p)
			}
			_, err := GenerateInternalRoot(ctx, admin.Logical(), tt.mount, p, tt.opts)
			if err == nil || tt.kind != nil && !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %v %q", err, tt.kind, tt.msg)
			}
		})
	}
}

// anchorless hides an issuer's anchor, so that Mint cannot check a profile
// against it before asking.
type anchorless struct{ *PKIIssuer }

func (anchorless) Anchor() *x509.Certificate  { return nil }
func (anchorless) Chain() []*x509.Certificate { return nil }
