package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
)

// fakeLogical answers like a Vault PKI mount with one issuer, and lets a test change
// the answer to sign-intermediate: error paths a real Vault does not produce.
type fakeLogical struct {
	issuer *ca.Root
	sign   func(data map[string]any) (*api.Secret, error)
}

func (f *fakeLogical) ReadWithContext(_ context.Context, path string) (*api.Secret, error) {
	if strings.HasSuffix(path, "/issuer/default/json") {
		return &api.Secret{Data: map[string]any{"certificate": string(ca.EncodeCertificatesPEM(f.issuer.Cert)), "issuer_id": "id1"}}, nil
	}
	return nil, nil
}

func (f *fakeLogical) ListWithContext(_ context.Context, path string) (*api.Secret, error) {
	return &api.Secret{Data: map[string]any{"keys": []any{"id1"}}}, nil
}

func (f *fakeLogical) WriteWithContext(_ context.Context, path string, data map[string]any) (*api.Secret, error) {
	switch {
	case path == "sys/capabilities-self":
		return &api.Secret{Data: map[string]any{"capabilities": []any{"update"}}}, nil
	case strings.HasSuffix(path, "/sign-intermediate"):
		return f.sign(data)
	}
	return nil, errors.New("unexpected write to " + path)
}

// signWith signs the request's CSR with root, as Vault would, through ca's local
// issuer.
func signWith(t *testing.T, root *ca.Root, data map[string]any) *x509.Certificate {
	t.Helper()
	csr, err := parseCSR(data["csr"].(string))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewLocalIssuer(root).Issue(context.Background(), csr, hourProfile("east"))
	if err != nil {
		t.Fatal(err)
	}
	return iss.Cert
}

func TestPKIIssuerBadAnswers(t *testing.T) {
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := string(ca.EncodeCertificatesPEM(root.Cert))
	tests := []struct {
		name string
		sign func(t *testing.T, data map[string]any) (*api.Secret, error)
		kind error
		msg  string
	}{
		{name: "no data", sign: func(*testing.T, map[string]any) (*api.Secret, error) { return &api.Secret{}, nil },
			kind: ErrMalformed, msg: "returned no data"},
		{name: "garbage certificate", sign: func(*testing.T, map[string]any) (*api.Secret, error) {
			return &api.Secret{Data: map[string]any{"certificate": "nope", "ca_chain": []any{rootPEM}}}, nil
		}, kind: ErrMalformed, msg: "field certificate: no PEM data"},
		{name: "no chain", sign: func(t *testing.T, d map[string]any) (*api.Secret, error) {
			return &api.Secret{Data: map[string]any{"certificate": string(ca.EncodeCertificatesPEM(signWith(t, root, d)))}}, nil
		}, kind: ErrMalformed, msg: "neither ca_chain nor issuing_ca"},
		{name: "chain without a self-signed root", sign: func(t *testing.T, d map[string]any) (*api.Secret, error) {
			c := string(ca.EncodeCertificatesPEM(signWith(t, root, d)))
			inter := string(ca.EncodeCertificatesPEM(signWith(t, root, d)))
			return &api.Secret{Data: map[string]any{"certificate": c, "ca_chain": []any{c, inter}}}, nil
		}, kind: ErrMalformed, msg: "not self-signed"},
		{name: "signed by another root", sign: func(t *testing.T, d map[string]any) (*api.Secret, error) {
			c := string(ca.EncodeCertificatesPEM(signWith(t, other, d)))
			return &api.Secret{Data: map[string]any{"certificate": c, "ca_chain": []any{rootPEM}}}, nil
		}, msg: "does not verify against root-cert.pem"},
		{name: "5xx after retries", sign: func(*testing.T, map[string]any) (*api.Secret, error) {
			return nil, &api.ResponseError{StatusCode: 500, Errors: []string{"1 error occurred:\n\t* storage is on fire\n\n"}}
		}, kind: ErrServer, msg: "Vault failed on pki/root/sign-intermediate (HTTP 500, after retries): storage is on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeLogical{issuer: root}
			f.sign = func(d map[string]any) (*api.Secret, error) { return tt.sign(t, d) }
			iss, err := NewPKIIssuer(context.Background(), f, "pki", "")
			if err != nil {
				t.Fatal(err)
			}
			_, err = ca.Mint(context.Background(), iss, hourProfile("east"))
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %q", err, tt.msg)
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("error %v is not %v", err, tt.kind)
			}
		})
	}
}

// What Vault sends for a sign request: the CSR, its own values, pathlen and TTL.
func TestPKIIssuerRequest(t *testing.T) {
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	f := &fakeLogical{issuer: root, sign: func(d map[string]any) (*api.Secret, error) {
		got = d
		c := string(ca.EncodeCertificatesPEM(signWith(t, root, d)))
		return &api.Secret{Data: map[string]any{"certificate": c, "issuing_ca": string(ca.EncodeCertificatesPEM(root.Cert))}}, nil
	}}
	iss, err := NewPKIIssuer(context.Background(), f, "/pki/", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Mint(context.Background(), iss, hourProfile("east")); err != nil {
		t.Fatal(err)
	}
	if got["use_csr_values"] != true || got["max_path_length"] != 0 || got["ttl"] != "3600s" || got["format"] != "pem" ||
		!strings.HasPrefix(got["csr"].(string), "-----BEGIN CERTIFICATE REQUEST-----") {
		t.Errorf("request: %v", got)
	}
	if iss.SignPath() != "pki/root/sign-intermediate" {
		t.Errorf("SignPath = %s", iss.SignPath())
	}
}
