package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
	"github.com/meshpki/meshpki/internal/testenv"
	"github.com/meshpki/meshpki/k8s"
)

// TestIstiodIssuingCAWithCRLs: a mesh under an organisation's issuing CA (--ca-dir;
// offline root -> org CA -> cluster CAs) switches CRLs on. meshpki signs the org
// CA's CRL (signing-ca-crl.pem in its folder) and the cluster CAs'; the offline
// root's CRL comes from outside with --upstream-crl and is checked first: missing,
// stale, revoking the org CA, or from another CA, the run is refused and nothing is
// written. With a good one, every Secret holds the root's, the org CA's and each
// cluster CA's CRL; each real istiod takes it on a hot reload and publishes it, and
// workloads talk across clusters with the CRLs enforced as Envoy does (every CA of
// a three-level chain). revoke east (recorded by the org CA): east is cut off, west
// and north still talk; the org CA itself cannot be revoked here. bootstrap --force
// brings east back, its new CA's CRL spread first; rotate renews all three.
func TestIstiodIssuingCAWithCRLs(t *testing.T) {
	t.Parallel() // mostly waits on its own servers: see istiodMesh
	env, kc, clients := istiodMesh(t, "east", "west", "north")
	all := func(args ...string) []string { return append(args, "--kubeconfig", kc, "--all-contexts") }
	dir := t.TempDir()
	root := catest.Root(t, catest.Options{CN: "Offline Root"})
	org := root.Sub(t, catest.Options{CN: "Org Issuing CA", PathLen: catest.PathLen(1)})
	sibling := root.Sub(t, catest.Options{CN: "Another Org CA", PathLen: catest.PathLen(1)})
	orgDir := org.WriteCADir(t, filepath.Join(dir, "org-ca"))
	bundles := filepath.Join(dir, "bundles")
	rrWant(t, 0, nil, "intermediate", "create", "--ca-dir", orgDir, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", bundles)
	rrWant(t, 0, nil, all("install", "--bundles", bundles)...)
	var is []*testenv.Istiod
	for _, c := range env.Clusters {
		i := startIstiod(t, c, false)
		if err := i.WaitLog(waitCtx(t), 0, testenv.LogPluggedIn); err != nil {
			t.Fatal(err)
		}
		is = append(is, i)
	}

	crlFile := func(name string, c *catest.CA, thisUpdate time.Time, ttl time.Duration, revoked ...*x509.Certificate) string {
		var entries []x509.RevocationListEntry
		for _, r := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: r.SerialNumber, RevocationTime: thisUpdate})
		}
		crl, err := ca.SignCRL(c.Cert, c.Key, entries, nil, thisUpdate, ttl)
		if err != nil {
			t.Fatal(err)
		}
		name = filepath.Join(dir, name)
		if err := os.WriteFile(name, ca.EncodeCRLsPEM(crl), 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	now := time.Now()
	rootCRL := crlFile("root.crl", root, now, 24*time.Hour, sibling.Cert)
	versions := func() map[string]string {
		v := map[string]string{}
		for name, cs := range clients {
			s, err := cs.CoreV1().Secrets(k8s.DefaultNamespace).Get(context.Background(), k8s.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v[name] = s.ResourceVersion
		}
		return v
	}

	// The root's CRL missing, stale, revoking the org CA, or not the root's: exit 2,
	// nothing signed, nothing written.
	before := versions()
	for _, c := range []struct {
		args []string
		want string
	}{
		{all("crl", "sync", "--ca-dir", orgDir), "--upstream-crl"},
		{all("crl", "sync", "--ca-dir", orgDir, "--upstream-crl", crlFile("stale.crl", root, now.Add(-2*time.Hour), time.Hour)), "not current"},
		{all("crl", "sync", "--ca-dir", orgDir, "--upstream-crl", crlFile("revokes-org.crl", root, now, time.Hour, org.Cert)), "revoke"},
		{all("crl", "sync", "--ca-dir", orgDir, "--upstream-crl", crlFile("sibling.crl", sibling, now, time.Hour)), "Another Org CA"},
		{all("crl", "sync", "--ca-dir", orgDir, "--upstream-crl", filepath.Join(orgDir, ca.CACertFile)), ca.CACertFile},
		{append(all("revoke", "--ca-dir", orgDir), "east"), "--upstream-crl"},
	} {
		code, out, errOut := rrRun(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "Offline Root") && c.want == "--upstream-crl" {
			t.Errorf("meshpki %s: exit %d, want 2 and an error naming %q\nstdout:\n%s\nstderr:\n%s", strings.Join(c.args, " "), code, c.want, out, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(orgDir, ca.SigningCACRLFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused run signed the org CA's CRL: %v", err)
	}
	if after := versions(); !maps.Equal(before, after) {
		t.Fatalf("a refused run wrote cacerts: %v -> %v", before, after)
	}

	// CRLs on, under the issuing CA.
	out, _ := rrWant(t, 0, []string{"CRL of CN=Offline Root,O=Example Corp passed on", "3 clusters: 3 updated"}, all("crl", "sync", "--ca-dir", orgDir, "--upstream-crl", rootCRL)...)
	if st, err := os.Stat(filepath.Join(orgDir, ca.SigningCACRLFile)); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("the org CA's CRL file: %v\n%s", err, out)
	}
	waitCRLTaken(t, is, clients)
	for name, cs := range clients {
		crls, err := ca.ParseCRLsPEM(secretFiles(t, cs)[ca.CRLFile])
		if err != nil || len(crls) != 5 || ca.CRLOf(crls, root.Cert) == nil || ca.CRLOf(crls, org.Cert) == nil {
			t.Fatalf("%s: ca-crl.pem holds %d CRLs (%v), want the root's, the org CA's and the 3 cluster CAs'", name, len(crls), err)
		}
	}
	var ws []workload
	for _, i := range is {
		w := crlWorkload(t, i)
		if len(w.chain) < 3 || !w.chain[2].Equal(org.Cert) {
			t.Fatalf("istiod in %s signs with a chain of %d, not through the org CA", i.Cluster.Name, len(w.chain))
		}
		ws = append(ws, w)
	}
	mustHandshake(t, "three levels with CRLs", ws...)
	if out, _ := rrWant(t, 0, nil, all("status")...); !strings.Contains(out, "east: CRLs: 5, next update") || !strings.Contains(out, "mesh: OK") {
		t.Errorf("status with CRLs under an issuing CA:\n%s", out)
	}

	// Revoke east, at the org CA.
	eastRV := versions()["east"]
	out, _ = rrWant(t, 0, nil, append(all("revoke", "--ca-dir", orgDir, "--upstream-crl", rootCRL, "-o", "json"), "east")...)
	var run struct {
		Revoked  []struct{ Cluster string } `json:"revoked"`
		RootCRL  struct{ CA string }        `json:"rootCRL"`
		Upstream []struct{ CA string }      `json:"upstreamCRLs"`
	}
	if err := json.Unmarshal([]byte(out), &run); err != nil || len(run.Revoked) != 1 || !strings.Contains(run.RootCRL.CA, "Org Issuing CA") || len(run.Upstream) != 1 {
		t.Fatalf("revoke -o json: %v\n%s", err, out)
	}
	recorded, err := ca.ReadCRLFile(filepath.Join(orgDir, ca.SigningCACRLFile))
	if err != nil || !ca.IsRevoked(recorded[0], ws[0].chain[1].SerialNumber) {
		t.Fatalf("the org CA's CRL file does not record east: %v", err)
	}
	if versions()["east"] != eastRV {
		t.Error("the revoked cluster's cacerts was written")
	}
	cutOff(t, is[1:], clients, ws[0])
	code, _, errOut := rrRun(t, all("revoke", "--ca-dir", orgDir, "--upstream-crl", rootCRL, "--serial", org.Cert.SerialNumber.Text(16))...)
	if code != 2 || !strings.Contains(errOut, "Org Issuing CA") {
		t.Errorf("revoking the org CA itself: exit %d, %s", code, errOut)
	}

	// bootstrap --force gives east a new CA under the org CA, its CRL spread to west
	// and north first (with the root's from --upstream-crl); then rotate gives every
	// cluster a new one, the CRLs going ahead. All talk again after each.
	offsets := logOffsets(is)
	rrWant(t, 0, []string{"east  updated"}, "bootstrap", "--kubeconfig", kc, "--context", "east", "--force", "--ca-dir", orgDir, "--upstream-crl", rootCRL,
		"--mesh-context", "west", "--mesh-context", "north", "--crl-settle", "1s")
	mustHandshake(t, "after bootstrapping east again under the org CA", crlWorkloadsAfterReload(t, is, offsets, clients)...)
	offsets = logOffsets(is)
	rrWant(t, 0, nil, all("rotate", "--ca-dir", orgDir, "--upstream-crl", rootCRL, "--force", "--crl-settle", "1s")...)
	mustHandshake(t, "after rotate under the org CA", crlWorkloadsAfterReload(t, is, offsets, clients)...)
	noRefusals(t, is)
}

// TestCRLSign: crl sign prints (or writes) the root source's own CRL, signing it
// only when missing or due, and records it beside the CA as crl sync does; that
// file is what a mesh under an issuing CA takes with --upstream-crl.
func TestCRLSign(t *testing.T) {
	dir := t.TempDir()
	root, orgs := filepath.Join(dir, "root"), filepath.Join(dir, "orgs")
	rrWant(t, 0, nil, "root", "create", "--out", root)
	out, errOut := rrWant(t, 0, nil, "crl", "sign", "--root-dir", root)
	crls, err := ca.ParseCRLsPEM([]byte(out))
	if err != nil || len(crls) != 1 || !strings.Contains(errOut, "CRL signed") {
		t.Fatalf("crl sign: %v (%d CRLs)\n%s\n%s", err, len(crls), out, errOut)
	}
	if !bytes.Equal([]byte(out), mustRead(t, filepath.Join(root, ca.RootCRLFile))) {
		t.Error("the printed CRL is not the one recorded beside the root")
	}
	file := filepath.Join(dir, "root.crl")
	_, errOut = rrWant(t, 0, nil, "crl", "sign", "--root-dir", root, "--out", file)
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o644 || !bytes.Equal(mustRead(t, file), []byte(out)) || !strings.Contains(errOut, "CRL kept") {
		t.Fatalf("a second run should write the same CRL, not sign another: %v\n%s", err, errOut)
	}

	// An issuing CA made under that root signs its own; the root's file checks as
	// its upstream CRL.
	rrWant(t, 0, nil, "intermediate", "create", "--root-dir", root, "--cluster", "org", "--pathlen", "1", "--out", orgs)
	org := filepath.Join(orgs, "org")
	out, _ = rrWant(t, 0, nil, "crl", "sign", "--ca-dir", org, "--crl-ttl", "30d", "--crl-refresh", "10d")
	own, err := ca.ParseCRLsPEM([]byte(out))
	if err != nil || len(own) != 1 || time.Until(own[0].NextUpdate) < 29*24*time.Hour {
		t.Fatalf("the issuing CA's CRL: %v", err)
	}
	if !bytes.Equal([]byte(out), mustRead(t, filepath.Join(org, ca.SigningCACRLFile))) {
		t.Errorf("the issuing CA's CRL is not recorded as %s", ca.SigningCACRLFile)
	}
	sc, err := ca.ReadCADir(org, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.UpstreamCRLs(sc.Path(), crls, time.Now()); err != nil {
		t.Errorf("the root's printed CRL as the issuing CA's upstream CRL: %v", err)
	}

	for _, bad := range [][]string{
		{"crl", "sign", "--root-dir", root, "extra"},
		{"crl", "sign", "--root-dir", root, "--crl-ttl", "1d", "--crl-refresh", "2d"},
		{"crl", "sign", "--root-dir", root, "--upstream-crl", file},
		{"crl", "sign"},
		{"crl", "sign", "--root-dir", filepath.Join(dir, "missing")},
		{"crl", "sign", "--root-dir", root, "--out", dir},
	} {
		if code, out, errOut := rrRun(t, bad...); code != 2 || out != "" || errOut == "" {
			t.Errorf("meshpki %s: exit %d, stdout %q, stderr %q; want exit 2 and an error", strings.Join(bad, " "), code, out, errOut)
		}
	}
}
