package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func corpusRoot(name string) string { return filepath.Join("..", "..", "testdata", "roots", name) }

// TestInputErrorsBeforeKeygen: what the root cannot sign, or cannot be written, is bad
// input found before any key is generated: exit 2, nothing written.
func TestInputErrorsBeforeKeygen(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	mustRun(t, "root", "create", "--out", short, "--ttl", "30d")
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ttl beyond root", []string{"--root-dir", short, "--cluster", "a", "--out", filepath.Join(dir, "o")}, "root expires"},
		{"pathlen the root forbids", []string{"--root-dir", corpusRoot("ok-pathlen-1"), "--cluster", "a", "--pathlen", "1", "--out", filepath.Join(dir, "o")}, "root allows pathlen 1 below it"},
		{"out under a file", []string{"--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(file, "o")}, file + " is not a folder"},
		{"name constraints", []string{"--root-dir", corpusRoot("root-name-constraints-exclude-san"), "--cluster", "a", "--out", filepath.Join(dir, "o")}, "name constraints exclude the intermediate's SANs (istiod.istio-system.svc)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := meshpki(t, append([]string{"intermediate", "create"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d (want 2), stderr %q (want %q)", code, errs, tc.want)
			}
			if out != "" {
				t.Errorf("stdout: %q", out)
			}
			if exists(filepath.Join(dir, "o")) {
				t.Error("output written")
			}
		})
	}
	// The same root and pathlen 0 are fine.
	mustRun(t, "intermediate", "create", "--root-dir", corpusRoot("ok-pathlen-1"), "--cluster", "a", "--out", filepath.Join(dir, "o"))
}

// TestDurationOverflow: a duration too long for the clock is refused, never wrapped
// into a short one (213504d used to give a 25-minute certificate).
func TestDurationOverflow(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(dir, "o"), "--ttl", "213504d"},
		{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(dir, "o"), "--ttl", "106752d"},
		{"root", "create", "--out", filepath.Join(dir, "o"), "--ttl", "300000d"},
		{"verify", "--min-remaining", "213504d", dir},
	} {
		code, _, errs := meshpki(t, args...)
		if code != exitUsage || !strings.Contains(errs, "is too long: at most 106751d") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	if exists(filepath.Join(dir, "o")) {
		t.Error("output written")
	}
}
