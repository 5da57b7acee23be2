package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestJSONEnvelope (issue 29): every command's --output json is one JSON object
// whose "ok" is a boolean that agrees with the exit code (true with exit 0), with
// lists in named fields, never a bare array; a command refused before it did
// anything (exit 2) prints nothing on stdout. Clusters: real kube-apiservers.
func TestJSONEnvelope(t *testing.T) {
	t.Parallel()
	env := parallelMesh(t, "east", "west", "north")
	dir := t.TempDir()
	in := func(p string) string { return filepath.Join(dir, p) }
	kc := []string{"--kubeconfig", env.Kubeconfig}
	mustRun(t, "root", "create", "--out", in("root"))
	mustRun(t, "root", "create", "--out", in("root-2027"))
	os.MkdirAll(in("csrs/broken"), 0o700)
	os.WriteFile(in("csrs/broken/ca-csr.pem"), []byte("no key beside it"), 0o600)
	steps := []struct {
		want  int
		field string // a list the object must hold, when not ""
		args  []string
	}{
		{0, "", []string{"version"}},
		{0, "", []string{"root", "create", "--out", in("root-3")}},
		{0, "bundles", []string{"intermediate", "create", "--root-dir", in("root"), "--cluster", "east", "--cluster", "west", "--out", in("bundles")}},
		{2, "", []string{"intermediate", "create", "--root-dir", in("root"), "--cluster", "east", "--out", in("bundles")}}, // exists
		{0, "csrs", []string{"intermediate", "csr", "--cluster", "c1", "--out", in("csrs")}},
		{1, "csrs", []string{"intermediate", "status", "--out", in("csrs")}}, // csrs/broken
		{0, "bundles", []string{"verify", in("bundles/east"), in("bundles/west")}},
		{1, "bundles", []string{"verify", in("bundles/east"), in("csrs/broken")}},
		{0, "", []string{"root", "bundle", "--out", in("roots.pem"), in("root"), in("root-2027")}},
		{0, "", []string{"crl", "sign", "--root-dir", in("root"), "--out", in("root.crl")}},
		{0, "clusters", append([]string{"install", "--bundles", in("bundles"), "--context", "east", "--context", "west"}, kc...)},
		{0, "", append([]string{"bootstrap", "--context", "north", "--root-dir", in("root")}, kc...)},
		{0, "clusters", append([]string{"status", "--all-contexts"}, kc...)},
		{1, "clusters", append([]string{"status", "--all-contexts", "--min-remaining", "400d", "--strict"}, kc...)},
		{0, "clusters", append([]string{"rotate", "--root-dir", in("root"), "--all-contexts"}, kc...)},
		{0, "clusters", append([]string{"crl", "sync", "--root-dir", in("root"), "--all-contexts"}, kc...)},
		{0, "clusters", append(append([]string{"revoke", "--root-dir", in("root"), "--all-contexts", "--dry-run"}, kc...), "west")},
		{0, "", append([]string{"root", "rotate", "--new-root-dir", in("root-2027"), "--all-contexts", "--status"}, kc...)},
	}
	for _, s := range steps {
		words := 1 // the command's own words, then -o json before its flags
		if s.args[0] == "root" || s.args[0] == "intermediate" || s.args[0] == "crl" {
			words = 2
		}
		args := append(append(slices.Clone(s.args[:words]), "-o", "json"), s.args[words:]...)
		code, out, errOut := meshpki(t, args...)
		what := strings.Join(s.args[:words], " ")
		if code != s.want {
			t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, code, s.want, out, errOut)
			continue
		}
		if code == exitUsage {
			if out != "" {
				t.Errorf("%s: refused (exit 2) yet printed on stdout:\n%s", what, out)
			}
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &obj); err != nil {
			t.Errorf("%s -o json: not one JSON object: %v\n%s", what, err, out)
			continue
		}
		var ok bool
		if err := json.Unmarshal(obj["ok"], &ok); err != nil || ok != (code == 0) {
			t.Errorf("%s -o json: ok is %s with exit %d, want a boolean that is true exactly with exit 0", what, obj["ok"], code)
		}
		if s.field != "" {
			var list []json.RawMessage
			if err := json.Unmarshal(obj[s.field], &list); err != nil || len(list) == 0 {
				t.Errorf("%s -o json: no list %q: %s", what, s.field, out)
			}
		}
	}
}
