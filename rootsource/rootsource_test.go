package rootsource_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/rootsource"
)

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		spec rootsource.Spec
		want error
		kind rootsource.Kind
	}{
		{rootsource.Spec{}, rootsource.ErrNone, ""},
		{rootsource.Spec{Dir: "root", VaultPKI: "pki"}, rootsource.ErrSeveral, ""},
		{rootsource.Spec{VaultPKI: "pki", VaultKV: "secret/root"}, rootsource.ErrSeveral, ""},
		{rootsource.Spec{Dir: "root", VaultIssuer: "x"}, rootsource.ErrIssuerWithoutPKI, ""},
		{rootsource.Spec{Dir: "root"}, nil, rootsource.KindDir},
		{rootsource.Spec{VaultPKI: "pki", VaultIssuer: "r1"}, nil, rootsource.KindVaultPKI},
		{rootsource.Spec{VaultKV: "secret/meshpki/root"}, nil, rootsource.KindVaultKV},
	} {
		if err := c.spec.Validate(); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%+v: Validate = %v, want %v", c.spec, err, c.want)
		}
		if k := c.spec.Kind(); k != c.kind {
			t.Errorf("%+v: Kind = %q, want %q", c.spec, k, c.kind)
		}
	}
	if err := (rootsource.Spec{VaultKV: "secret"}).Validate(); err == nil {
		t.Error("a KV path without a secret path was accepted")
	}
}

// Open refuses what it cannot sign with, naming the folder or file, and a Vault
// source without a client.
func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := rootsource.Open(ctx, rootsource.Spec{Dir: filepath.Join(dir, "missing")}, rootsource.Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing folder: %v", err)
	}
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ca.RootCertFile), ca.EncodeCertificatesPEM(root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rootsource.Open(ctx, rootsource.Spec{Dir: dir}, rootsource.Options{}); err == nil || !strings.Contains(err.Error(), ca.RootKeyFile) {
		t.Errorf("folder without its key: %v", err)
	}
	if _, err := rootsource.Open(ctx, rootsource.Spec{VaultPKI: "pki"}, rootsource.Options{}); err == nil || !strings.Contains(err.Error(), "Vault PKI mount pki: no Vault client") {
		t.Errorf("Vault source without a client: %v", err)
	}
}
