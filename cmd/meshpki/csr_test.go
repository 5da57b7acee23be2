package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/testenv"
)

// TestOfflineRootByCSR: the CSR flow as a team with an offline root runs it, the
// CSRs signed by CAs that are not meshpki: east by `openssl x509 -req` under the
// root, west by the real test Vault's sign-intermediate under the same root
// (imported into a Vault PKI mount). Status tells waiting from imported, verify
// tells a waiting folder apart, refused imports write nothing, and the imported
// bundles pass verify --mtls and install into real clusters.
func TestOfflineRootByCSR(t *testing.T) {
	t.Parallel() // its own servers, no environment set
	testenv.Tool(t, "openssl")
	v := testenv.StartVaultT(t)
	admin := vaultAdmin(t, v)
	dir := t.TempDir()
	csrs, signed := filepath.Join(dir, "csrs"), filepath.Join(dir, "signed")
	os.MkdirAll(signed, 0o700)

	// The offline root: made here with openssl, and kept in a Vault PKI mount too.
	rootKey, rootCert := filepath.Join(dir, "root-key.pem"), filepath.Join(dir, "root.pem")
	openssl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", rootKey, "-out", rootCert,
		"-days", "3650", "-subj", "/O=Example Corp/CN=Offline Root", "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	rootPEM, _ := os.ReadFile(rootCert)
	keyPEM, _ := os.ReadFile(rootKey)
	ctx := context.Background()
	l := admin.Logical()
	if _, err := l.WriteWithContext(ctx, "sys/mounts/pki-offline", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteWithContext(ctx, "pki-offline/config/ca", map[string]any{"pem_bundle": string(keyPEM) + string(rootPEM)}); err != nil {
		t.Fatal(err)
	}

	out, _ := rrWant(t, 0, []string{"waiting  east", "waiting  west"}, "intermediate", "csr", "--cluster", "east", "--cluster", "west", "--out", csrs, "--org", "Example Corp")
	noKeys(t, out)
	if st, _ := os.Stat(filepath.Join(csrs, "east", ca.CAKeyFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %o", st.Mode().Perm())
	}
	rrWant(t, 2, nil, "intermediate", "csr", "--cluster", "east", "--out", csrs) // exists
	rrWant(t, 0, []string{"waiting   east", "waiting   west"}, "intermediate", "status", "--out", csrs)
	vout, _ := rrWant(t, 1, nil, "verify", filepath.Join(csrs, "east"))
	if !strings.Contains(vout, "waits for the certificate a CA signs") {
		t.Fatalf("verify does not say the folder is waiting:\n%s", vout)
	}

	// east: openssl x509 -req, extensions copied from meshpki's CSR.
	openssl("x509", "-req", "-in", filepath.Join(csrs, "east", ca.CSRFile), "-CA", rootCert, "-CAkey", rootKey,
		"-days", "365", "-copy_extensions", "copy", "-set_serial", "0x6561737431", "-out", filepath.Join(signed, "east.pem"))
	time.Sleep(time.Second) // past the root's not-before, to the second
	// west: Vault's sign-intermediate. Vault refuses use_csr_values=true with a CSR
	// that asks for CA:true (vault sdk helper/certutil/helpers.go, "refusing to
	// accept CSR with Basic Constraints extension setting isCA=true"), so the
	// subject and SAN are given as parameters; Vault makes it a CA itself.
	csrWest, _ := os.ReadFile(filepath.Join(csrs, "west", ca.CSRFile))
	s, err := l.WriteWithContext(ctx, "pki-offline/root/sign-intermediate", map[string]any{
		"csr": string(csrWest), "common_name": "Intermediate CA", "organization": "Example Corp", "locality": "west",
		"alt_names": ca.DefaultIstiodSAN, "exclude_cn_from_sans": true, "ttl": "8760h", "max_path_length": 0, "format": "pem",
		"not_before_duration": "0s", // the root was made a moment ago
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(signed, "west.crt"), []byte(s.Data["certificate"].(string)), 0o600)

	// A certificate for another folder's key is refused, naming the file; nothing written.
	code, _, errOut := rrRun(t, "intermediate", "import", "--out", csrs, "--cluster", "west", "--cert", filepath.Join(signed, "east.pem"), "--root", rootCert)
	if code != 2 || !strings.Contains(errOut, filepath.Join(signed, "east.pem")+": certificate was signed for another key") {
		t.Fatalf("wrong key: exit %d\n%s", code, errOut)
	}
	rrWant(t, 0, []string{"waiting   west"}, "intermediate", "status", "--out", csrs)

	out, _ = rrWant(t, 0, []string{"imported  east", "imported  west", "issuer CN=Offline Root,O=Example Corp"},
		"intermediate", "import", "--out", csrs, "--signed", signed, "--root", rootCert)
	noKeys(t, out)
	rrWant(t, 0, []string{"imported  east", "imported  west"}, "intermediate", "status", "--out", csrs)
	rrWant(t, 2, nil, "intermediate", "import", "--out", csrs, "--cluster", "east", "--cert", filepath.Join(signed, "east.pem"), "--root", rootCert) // imported already
	rrWant(t, 0, []string{"mtls: 2 of 2 pairs accept each other"}, "verify", "--mtls", filepath.Join(csrs, "east"), filepath.Join(csrs, "west"))
	for _, cl := range []string{"east", "west"} {
		if ok, msg := istiodLoadsIfBuilt(t, filepath.Join(csrs, cl)); !ok {
			t.Fatalf("istiod's loader refuses %s: %s", cl, msg)
		}
	}

	env := parallelMesh(t, "east", "west")
	rrWant(t, 0, nil, "install", "--kubeconfig", env.Kubeconfig, "--all-contexts", "--bundles", csrs, "--namespace", "csr-flow")
	rrWant(t, 0, []string{"mesh: OK: all 2 clusters trust the same roots"}, "status", "--kubeconfig", env.Kubeconfig, "--all-contexts", "--namespace", "csr-flow")

	// The next CSR batch: status says which clusters are due, without any CA key.
	due := func(renewBefore string) int {
		out, _ := rrWant(t, 0, nil, "status", "--kubeconfig", env.Kubeconfig, "--all-contexts", "--namespace", "csr-flow", "-o", "json", "--renew-before", renewBefore)
		var rep struct{ Clusters []struct{ Due bool } }
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range rep.Clusters {
			if c.Due {
				n++
			}
		}
		return n
	}
	if n := due("30d"); n != 0 {
		t.Fatalf("%d clusters due a year before expiry", n)
	}
	if n := due("400d"); n != 2 {
		t.Fatalf("%d clusters due with --renew-before 400d, want 2", n)
	}
}

// istiodLoadsIfBuilt is istiodLoads when the istiod test build is there.
func istiodLoadsIfBuilt(t *testing.T, dir string) (bool, string) {
	if os.Getenv(testenv.EnvIstiodBin) == "" {
		return true, ""
	}
	return istiodLoads(t, dir)
}
