package vault

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	cflog "github.com/cloudflare/cfssl/log"
	"github.com/hashicorp/vault/api"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
)

// vaultSrv is the package's real Vault server (nil when VAULTDEV_BIN is unset).
var vaultSrv *testenv.VaultServer

func TestMain(m *testing.M) {
	cflog.Level = cflog.LevelFatal // cfssl logs every signature
	os.Exit(testenv.WithVault(m, &vaultSrv))
}

// rootClient connects to the package's server with the root token.
func rootClient(t testing.TB) (*testenv.VaultServer, *api.Client) {
	t.Helper()
	v := testenv.NeedVault(t, vaultSrv)
	c, err := NewClient(context.Background(), Config{Address: v.Addr, Token: v.Token})
	if err != nil {
		t.Fatal(err)
	}
	return v, c
}

// tokenClient connects to v with token.
func tokenClient(t testing.TB, v *testenv.VaultServer, token string) *api.Client {
	t.Helper()
	c, err := NewClient(context.Background(), Config{Address: v.Addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPKIRoot mounts a fresh PKI engine and has it generate a root lasting ttl.
func newPKIRoot(t testing.TB, v *testenv.VaultServer, c *api.Client, ttl time.Duration) (string, *GeneratedRoot) {
	t.Helper()
	mount := v.Unique("pki")
	p := ca.DefaultRootProfile("Istio")
	p.TTL = ttl
	root, err := GenerateInternalRoot(context.Background(), c.Logical(), mount, p, RootOptions{EnableMount: true})
	if err != nil {
		t.Fatal(err)
	}
	return mount, root
}

// policyToken writes an ACL policy and returns a token holding only it (and the
// default policy when withDefault).
func policyToken(t testing.TB, v *testenv.VaultServer, c *api.Client, hcl string, withDefault bool) string {
	t.Helper()
	name := v.Unique("policy")
	if err := c.Sys().PutPolicyWithContext(context.Background(), name, hcl); err != nil {
		t.Fatal(err)
	}
	s, err := c.Logical().WriteWithContext(context.Background(), "auth/token/create", map[string]any{
		"policies": []string{name}, "no_default_policy": !withDefault, "ttl": "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// signOnlyPolicy allows exactly what PKI mode needs: update on the signing path.
func signOnlyPolicy(mount string) string {
	return fmt.Sprintf(`path "%s/root/sign-intermediate" { capabilities = ["update"] }`, mount)
}

// writeSecretFile writes a credential file (0600) in t's temp folder.
func writeSecretFile(t testing.TB, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// profiles are Istio's default intermediate profiles for clusters.
func profiles(clusters ...string) []ca.Profile {
	out := make([]ca.Profile, len(clusters))
	for i, c := range clusters {
		out[i] = ca.IntermediateProfile(c, "Istio")
	}
	return out
}

// mintAll mints every profile with iss and fails t on any error.
func mintAll(t testing.TB, iss ca.Issuer, ps []ca.Profile) []*ca.Bundle {
	t.Helper()
	bundles := make([]*ca.Bundle, len(ps))
	errs := ca.MintEach(context.Background(), iss, ps, 4, func(i int, b *ca.Bundle, err error) error {
		bundles[i] = b
		return err
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return bundles
}

// checkMesh asserts what a mesh operator cares about: each bundle passes istiod's
// rules, all share root, and workloads of any two clusters complete mutual TLS.
func checkMesh(t *testing.T, bundles []*ca.Bundle) {
	t.Helper()
	ctx := context.Background()
	var wls []*ca.Workload
	for i, b := range bundles {
		files, err := b.Files(ca.FormatIstio)
		if err != nil {
			t.Fatal(err)
		}
		if rep := ca.Verify(files, ca.VerifyOptions{}); !rep.OK() {
			t.Fatalf("bundle %d fails istiod's rules: %v", i, rep.Err())
		}
		if b.Cert.MaxPathLen != 0 || !b.Cert.MaxPathLenZero || !b.Cert.IsCA {
			t.Errorf("bundle %d: want CA:true pathlen:0, got IsCA=%v pathlen=%d", i, b.Cert.IsCA, b.Cert.MaxPathLen)
		}
		if got, want := ca.Fingerprint(b.Roots[0]), ca.Fingerprint(bundles[0].Roots[0]); got != want {
			t.Errorf("bundle %d trusts root %s, bundle 0 trusts %s", i, got, want)
		}
		w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", fmt.Sprintf("sa-%d", i)), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wls = append(wls, w)
	}
	for i := range wls {
		for j := range wls {
			if i == j {
				continue
			}
			if err := ca.Handshake(ctx, wls[i], wls[j]); err != nil {
				t.Errorf("mTLS server cluster %d, client cluster %d: %v", i, j, err)
			}
		}
	}
}

// hourProfile is Istio's profile for cluster with a one-hour TTL, for short roots.
func hourProfile(cluster string) ca.Profile {
	p := ca.IntermediateProfile(cluster, "Istio")
	p.TTL = time.Hour
	return p
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func parseCSR(s string) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no CSR")
	}
	return x509.ParseCertificateRequest(b.Bytes)
}

// csrFor makes a CSR for p with the bundle's key.
func csrFor(tb testing.TB, b *ca.Bundle, p ca.Profile) *x509.CertificateRequest {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: p.Subject, DNSNames: p.DNSNames}, b.Key)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		tb.Fatal(err)
	}
	return csr
}
