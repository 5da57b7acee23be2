package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestStatusOutputNames: status takes the same --output names as every other
// command (text, json), and still its old name for text (table).
func TestStatusOutputNames(t *testing.T) {
	kc := unreachableKubeconfig(t)
	args := []string{"status", "--kubeconfig", kc, "--all-contexts", "--output"}
	_, text, _ := meshpki(t, append(args, "text")...)
	if !strings.HasPrefix(text, "CLUSTER") {
		t.Fatalf("-o text:\n%s", text)
	}
	code, table, _ := meshpki(t, append(args, "table")...)
	if code == exitUsage || table != text {
		t.Fatalf("-o table: exit %d, output differs from -o text:\n%s", code, table)
	}
	_, js, _ := meshpki(t, append(args, "json")...)
	if !json.Valid([]byte(js)) {
		t.Fatalf("-o json:\n%s", js)
	}
	if code, _, errs := meshpki(t, append(args, "yaml")...); code != exitUsage || !strings.Contains(errs, "want text or json") {
		t.Fatalf("-o yaml: exit %d: %s", code, errs)
	}
}

// unreachableKubeconfig is a kubeconfig whose one context, east, points at a port
// nothing listens on: commands get past their flags, and every read fails at once.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there: every read fails at once
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: east
  cluster: {server: "https://` + addr + `"}
users:
- name: u
  user: {token: t}
contexts:
- name: east
  context: {cluster: east, user: u}
current-context: east
`
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

// TestMinStepIntervalZero: any zero duration disables the wait between root
// rotation steps ("0m" was refused as not positive); a negative one is refused.
func TestMinStepIntervalZero(t *testing.T) {
	kc := unreachableKubeconfig(t)
	root := filepath.Join(t.TempDir(), "root")
	mustRun(t, "root", "create", "--out", root)
	for _, v := range []string{"0", "0s", "0m", "0h", "0d", "0h0m", " 0m "} {
		code, _, errs := meshpki(t, "root", "rotate", "--new-root-dir", root, "--kubeconfig", kc, "--all-contexts", "--status", "--min-step-interval", v)
		if code == exitUsage || strings.Contains(errs, "min-step-interval") {
			t.Errorf("--min-step-interval %q: exit %d: %s", v, code, errs)
		}
	}
	for _, v := range []string{"-1h", "-0m", "soon"} {
		code, _, errs := meshpki(t, "root", "rotate", "--new-root-dir", root, "--kubeconfig", kc, "--all-contexts", "--status", "--min-step-interval", v)
		if code != exitUsage || !strings.Contains(errs, "--min-step-interval") {
			t.Errorf("--min-step-interval %q: exit %d (want 2): %s", v, code, errs)
		}
	}
}

// TestStderrWritersSerialised: the logger and rotate's per-cluster lines write to
// stderr from many goroutines at once; a run's env serialises them (the race
// detector caught the two writing one buffer at once in TestRotateHealsBrokenClusterWithCRLs,
// when client-go logged an apiserver warning while a cluster's line was printed).
func TestStderrWritersSerialised(t *testing.T) {
	var buf bytes.Buffer
	e := newEnv(io.Discard, &buf)
	lines := &lineWriter{w: e.stderr}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() { defer wg.Done(); e.log.Warn("warning from the apiserver", "n", i) }()
		go func() { defer wg.Done(); lines.line("east: not due") }()
	}
	wg.Wait()
	if got := strings.Count(buf.String(), "\n"); got != 16 {
		t.Fatalf("%d lines, want 16:\n%s", got, buf.String())
	}
}
