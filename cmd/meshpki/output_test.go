package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusOutputNames: status takes the same --output names as every other
// command (text, json), and still its old name for text (table).
func TestStatusOutputNames(t *testing.T) {
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
