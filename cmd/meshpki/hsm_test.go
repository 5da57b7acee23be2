package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/kms"
)

// hsmRun runs meshpki and checks that neither output shows the token's PIN.
func hsmRun(t *testing.T, h *testenv.SoftHSM, want int, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := rrRun(t, args...)
	if strings.Contains(out, h.PIN) || strings.Contains(errOut, h.PIN) {
		t.Fatalf("meshpki %s shows the PIN", strings.Join(args, " "))
	}
	if code != want {
		t.Fatalf("meshpki %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out, errOut
}

// TestHSMRoot: with the root's key in a real PKCS#11 token (SoftHSM2), for ECDSA
// P-256 and RSA-3072 keys: root create generates the key inside the token
// (sensitive and never extractable, as PKCS#11 itself reports) and writes
// root-cert.pem alone; the bundles it signs for three clusters pass istiod's own
// loader and verify --mtls. With the P-256 root: rotate re-signs a cluster's CA in
// the token; crl sync and revoke sign the
// root's CRL in the token and spread it to real clusters, where verify takes it
// (and, after the revoke, finds west cut off); crl sign prints it; an issuing CA
// whose key is in the token signs bundles that istiod loads. Bad input exits 2,
// names the flag and the URI, and writes nothing.
func TestHSMRoot(t *testing.T) {
	t.Parallel() // its own token and clusters, no environment set
	h := testenv.NewSoftHSM(t)
	env := parallelMesh(t, "east", "west")
	kc := env.Kubeconfig
	dir := t.TempDir()
	three := []string{"--cluster", "east", "--cluster", "west", "--cluster", "north"}

	roots := map[ca.KeyType]string{}
	for i, kt := range []ca.KeyType{ca.ECDSAP256, ca.RSA3072} {
		object := "root-" + string(kt)
		uri := h.URI("1"+string(rune('0'+i)), object)
		root, bundles := filepath.Join(dir, object), filepath.Join(dir, "bundles-"+string(kt))
		hsmRun(t, h, 0, "root", "create", "--out", root, "--key-type", string(kt), "--key-uri", uri)
		entries, err := os.ReadDir(root)
		if err != nil || len(entries) != 1 || entries[0].Name() != ca.RootCertFile {
			t.Fatalf("%s: root create with --key-uri should write root-cert.pem alone: %v %v", kt, entries, err)
		}
		a, err := h.PrivateKeyAttributes(object)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Sensitive || a.Extractable || !a.AlwaysSensitive || !a.NeverExtractable {
			t.Fatalf("%s: the root's key can leave the token: %+v", kt, a)
		}
		hsmRun(t, h, 0, append([]string{"intermediate", "create", "--root-dir", root, "--key-uri", uri, "--out", bundles}, three...)...)
		rootCert, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(root, ca.RootCertFile)))
		if err != nil {
			t.Fatal(err)
		}
		var dirs []string
		for _, c := range []string{"east", "west", "north"} {
			b := filepath.Join(bundles, c)
			if ok, msg := istiodLoads(t, b); !ok {
				t.Fatalf("%s, %s: istiod's loader refuses the bundle: %s", kt, c, msg)
			}
			cert, _ := ca.ParseCertificatePEM(mustRead(t, filepath.Join(b, ca.CACertFile)))
			if cert == nil || cert.CheckSignatureFrom(rootCert) != nil {
				t.Fatalf("%s, %s: the cluster CA is not signed by the token's root", kt, c)
			}
			dirs = append(dirs, b)
		}
		hsmRun(t, h, 0, append([]string{"verify", "--mtls"}, dirs...)...)
		roots[kt] = uri
	}

	root, uri := filepath.Join(dir, "root-"+string(ca.ECDSAP256)), roots[ca.ECDSAP256]
	rootCert, _ := ca.ParseCertificatePEM(mustRead(t, filepath.Join(root, ca.RootCertFile)))
	bundles := filepath.Join(dir, "bundles-"+string(ca.ECDSAP256))
	two := []string{"--kubeconfig", kc, "--context", "east", "--context", "west"}
	src := []string{"--root-dir", root, "--key-uri", uri}
	hsmRun(t, h, 0, append([]string{"install", "--bundles", bundles}, two...)...)
	hsmRun(t, h, 0, append(append([]string{"crl", "sync"}, src...), two...)...)
	clients := adminClients(t, env)
	secretDirs := func() []string {
		var out []string
		for _, c := range []string{"east", "west"} {
			out = append(out, filesDir(t, secretFiles(t, clients[c])))
		}
		return out
	}
	heldCRL := func(c string) *x509.RevocationList {
		crls, err := ca.ParseCRLsPEM(secretFiles(t, clients[c])[ca.CRLFile])
		if err != nil {
			t.Fatal(err)
		}
		return ca.CRLOf(crls, rootCert)
	}
	if crl := heldCRL("east"); crl == nil || crl.CheckSignatureFrom(rootCert) != nil {
		t.Fatal("east holds no root CRL signed by the token's root")
	}
	hsmRun(t, h, 0, append([]string{"verify", "--mtls"}, secretDirs()...)...)

	// The CronJob's rotate, with the token's root: each cluster gets a new CA
	// signed in the token, whose CRL reaches the other first.
	eastBefore, _ := ca.ParseCertificatePEM(secretFiles(t, clients["east"])[ca.CACertFile])
	hsmRun(t, h, 0, append(append([]string{"rotate", "--force", "--crl-settle", "0"}, src...), two...)...)
	eastAfter, _ := ca.ParseCertificatePEM(secretFiles(t, clients["east"])[ca.CACertFile])
	if eastAfter == nil || eastAfter.Equal(eastBefore) || eastAfter.CheckSignatureFrom(rootCert) != nil {
		t.Fatal("rotate with the token's root did not give east a new CA signed by it")
	}
	hsmRun(t, h, 0, append([]string{"verify", "--mtls"}, secretDirs()...)...)

	west, _ := ca.ParseCertificatePEM(secretFiles(t, clients["west"])[ca.CACertFile])
	hsmRun(t, h, 0, append(append(append([]string{"revoke"}, src...), two...), "west")...)
	if crl := heldCRL("east"); crl == nil || !ca.IsRevoked(crl, west.SerialNumber) || crl.CheckSignatureFrom(rootCert) != nil {
		t.Fatal("after revoke, east's root CRL, signed in the token, should list west's CA")
	}
	if code, out, _ := rrRun(t, append([]string{"verify", "--mtls"}, secretDirs()...)...); code != 1 || !strings.Contains(out, "revoked") {
		t.Fatalf("verify of the clusters after west was revoked: exit %d\n%s", code, out)
	}
	out, _ := hsmRun(t, h, 0, append([]string{"crl", "sign"}, src...)...)
	if crls, err := ca.ParseCRLsPEM([]byte(out)); err != nil || len(crls) != 1 || crls[0].CheckSignatureFrom(rootCert) != nil || !ca.IsRevoked(crls[0], west.SerialNumber) {
		t.Fatalf("crl sign with the token's root: %v\n%s", err, out)
	}

	// An issuing CA whose key is in the token, signed by the token's root.
	issuingURI := h.URI("20", "issuing")
	issuing := filepath.Join(dir, "issuing")
	makeIssuingCA(t, uri, issuingURI, rootCert, issuing)
	hsmRun(t, h, 0, "intermediate", "create", "--ca-dir", issuing, "--key-uri", issuingURI, "--cluster", "south", "--out", filepath.Join(dir, "b-issuing"))
	if ok, msg := istiodLoads(t, filepath.Join(dir, "b-issuing", "south")); !ok {
		t.Fatalf("istiod's loader refuses a bundle of the token's issuing CA: %s", msg)
	}

	t.Run("bad input exits 2 and writes nothing", func(t *testing.T) {
		wrongPIN := filepath.Join(t.TempDir(), "wrong-pin")
		os.WriteFile(wrongPIN, []byte("000000\n"), 0o600)
		os.WriteFile(filepath.Join(issuing, ca.CADirKeyFile), []byte("not used"), 0o600)
		defer os.Remove(filepath.Join(issuing, ca.CADirKeyFile))
		swap := func(from, to string) string { return strings.Replace(uri, from, to, 1) }
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"wrong PIN", []string{"--root-dir", root, "--key-uri", swap(h.PINFile, wrongPIN)}, "the token refused the PIN"},
			{"missing token", []string{"--root-dir", root, "--key-uri", swap("token="+h.Token, "token=nosuchtoken")}, "no such PKCS#11 token"},
			{"missing key", []string{"--root-dir", root, "--key-uri", swap("object=root-", "object=nosuch-")}, "no key at that URI"},
			{"another key than the root's", []string{"--root-dir", root, "--key-uri", issuingURI}, "the key given is not the key of " + filepath.Join(root, ca.RootCertFile)},
			{"module that does not load", []string{"--root-dir", root, "--key-uri", swap(h.Module, "/nonexistent/libvendor.so")}, "the PKCS#11 module does not load"},
			{"PIN in the URI", []string{"--root-dir", root, "--key-uri", h.URIWithoutPIN("10", "root-ecdsa-p256") + "?pin-value=" + h.PIN}, "--key-uri: "},
			{"a key file beside the URI", []string{"--ca-dir", issuing, "--key-uri", issuingURI}, "a key URI was given"},
			{"a key URI without a folder", []string{"--vault-kv", "secret/x", "--key-uri", uri}, "--key-uri needs --root-dir or --ca-dir"},
			{"an empty key URI (an unset variable), never taken for none", []string{"--root-dir", root, "--key-uri", ""}, "--key-uri is empty"},
			{"the PIN, percent-escaped, in the URI", []string{"--root-dir", root, "--key-uri", h.URIWithoutPIN("10", "root-ecdsa-p256") + ";pin%2Dvalue=" + h.PIN}, "a secret in the URI"},
		} {
			out := filepath.Join(t.TempDir(), "out")
			_, errOut := hsmRun(t, h, 2, append([]string{"intermediate", "create", "--cluster", "x", "--out", out}, tc.args...)...)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, tc.want, errOut)
			}
			if exists(out) {
				t.Errorf("%s: the refused run wrote %s", tc.name, out)
			}
		}
		// root create over a key in the token: refused, nothing written, the key kept.
		out := filepath.Join(t.TempDir(), "root")
		if _, errOut := hsmRun(t, h, 2, "root", "create", "--out", out, "--key-uri", uri); !strings.Contains(errOut, "a key already exists at that URI") || exists(out) {
			t.Errorf("root create over an existing key: %s", errOut)
		}
		// A run killed after it made the key and before it wrote the certificate
		// leaves the key: the rerun says to take it, and --existing-key does.
		if _, errOut := hsmRun(t, h, 2, "root", "create", "--out", out, "--key-uri", uri); !strings.Contains(errOut, "add --existing-key") {
			t.Errorf("root create over an existing key should name --existing-key: %s", errOut)
		}
		// ... and what a kill while writing root-cert.pem left is cleared.
		os.MkdirAll(out, 0o700)
		tmp := filepath.Join(out, "."+ca.RootCertFile+".tmp-4242")
		os.WriteFile(tmp, []byte("half"), 0o644)
		hsmRun(t, h, 0, "root", "create", "--out", out, "--key-uri", uri, "--existing-key")
		if exists(tmp) {
			t.Error("root create left an interrupted run's temporary file")
		}
		again, _ := ca.ParseCertificatePEM(mustRead(t, filepath.Join(out, ca.RootCertFile)))
		if again == nil || !ca.KeyMatchesPublic(again.PublicKey, rootCert.PublicKey) {
			t.Error("root create --existing-key signed another key than the one at the URI")
		}
		// root create into a folder that holds a root: refused before a key is made.
		if _, errOut := hsmRun(t, h, 2, "root", "create", "--out", root, "--key-uri", h.URI("30", "never-made")); !strings.Contains(errOut, "already exists") {
			t.Errorf("root create over a root folder: %s", errOut)
		}
		if _, err := kms.Open(context.Background(), h.URI("30", "never-made"), kms.Options{}); err == nil {
			t.Error("a refused root create left a key in the token")
		}
	})
}

// TestHSMRootCreateTwoRunsAtOnce: two root create runs into one folder with one key
// URI, at once: one makes the root, the other is refused, and the token holds one
// key at the URI, the root's.
func TestHSMRootCreateTwoRunsAtOnce(t *testing.T) {
	t.Parallel()
	h := testenv.NewSoftHSM(t)
	out, uri := filepath.Join(t.TempDir(), "root"), h.URI("50", "race")
	type result struct {
		code   int
		stderr string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			code, _, errOut := rrRun(t, "root", "create", "--out", out, "--key-uri", uri)
			results <- result{code, errOut}
		}()
	}
	a, b := <-results, <-results
	if a.code+b.code != 2 || a.code*b.code != 0 {
		t.Fatalf("two runs at once exited %d and %d, want 0 and 2\n%s\n%s", a.code, b.code, a.stderr, b.stderr)
	}
	if _, err := h.PrivateKeyAttributes("race"); err != nil {
		t.Fatalf("the token after two runs at once: %v", err)
	}
	root, err := ca.ParseCertificatePEM(mustRead(t, filepath.Join(out, ca.RootCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := kms.Open(context.Background(), uri, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if !ca.KeyMatchesPublic(key.Public(), root.PublicKey) {
		t.Error("the root's certificate is not for the key at the URI")
	}
}

// TestHSMRootCreateTwoProcesses: two root create processes at once, into two
// folders, with one key URI: one makes the key and its root, the other is refused,
// and the token holds one key with that label.
func TestHSMRootCreateTwoProcesses(t *testing.T) {
	t.Parallel()
	h := testenv.NewSoftHSM(t)
	dir := t.TempDir()
	for round := range 3 {
		object := fmt.Sprintf("race-%d", round)
		uri := h.URI(fmt.Sprintf("6%d", round), object)
		a := startCLI(t, dir, "root", "create", "--out", fmt.Sprintf("a%d", round), "--key-uri", uri)
		b := startCLI(t, dir, "root", "create", "--out", fmt.Sprintf("b%d", round), "--key-uri", uri)
		ea, eb := a.wait(t), b.wait(t)
		if ea+eb != 2 || ea*eb != 0 {
			t.Fatalf("round %d: two processes exited %d and %d, want 0 and 2\n%s\n%s", round, ea, eb, a.err.String(), b.err.String())
		}
		if _, err := h.PrivateKeyAttributes(object); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// makeIssuingCA makes, in the token, the key of an issuing CA at issuingURI and
// writes its folder (ca-cert.pem signed by the token's root at rootURI,
// cert-chain.pem, root-cert.pem) without a key file.
func makeIssuingCA(t *testing.T, rootURI, issuingURI string, root *x509.Certificate, dir string) {
	t.Helper()
	ctx := context.Background()
	rootKey, err := kms.Open(ctx, rootURI, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rootKey.Close()
	key, err := kms.Create(ctx, issuingURI, ca.ECDSAP256, kms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "Issuing CA", Organization: []string{"Istio"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(2 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		ca.CADirCertFile:  ca.EncodeCertificatesPEM(cert),
		ca.CADirChainFile: ca.EncodeCertificatesPEM(cert, root),
		ca.CADirRootsFile: ca.EncodeCertificatesPEM(root),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
