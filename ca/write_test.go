package ca

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteDir(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bundles")
	dir := filepath.Join(out, "east")
	v1 := map[string][]byte{CACertFile: []byte("cert v1"), CAKeyFile: []byte("key v1")}
	if b, err := WriteDir(dir, v1, WriteOptions{}); err != nil || b != "" {
		t.Fatalf("first write: backup %q err %v", b, err)
	}
	mode := func(p string) os.FileMode {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	if m := mode(out); m != 0o700 {
		t.Errorf("parent folder mode %o, want 700", m)
	}
	if m := mode(dir); m != 0o700 {
		t.Errorf("bundle folder mode %o, want 700", m)
	}
	if m := mode(filepath.Join(dir, CAKeyFile)); m != 0o600 {
		t.Errorf("key mode %o, want 600", m)
	}
	if m := mode(filepath.Join(dir, CACertFile)); m != 0o644 {
		t.Errorf("cert mode %o, want 644", m)
	}

	// Without force: refused, old intact.
	v2 := map[string][]byte{CACertFile: []byte("cert v2"), CAKeyFile: []byte("key v2")}
	if _, err := WriteDir(dir, v2, WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite without force: got %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, CAKeyFile)); string(got) != "key v1" {
		t.Fatal("refused write changed the old bundle")
	}

	// With force: replaced, old kept whole as a backup.
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	backup, err := WriteDir(dir, v2, WriteOptions{Force: true, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if want := dir + ".bak-20261126T080000Z"; backup != want {
		t.Errorf("backup %q, want %q", backup, want)
	}
	old, _ := ReadDir(backup)
	cur, _ := ReadDir(dir)
	if string(old[CAKeyFile]) != "key v1" || string(old[CACertFile]) != "cert v1" || string(cur[CAKeyFile]) != "key v2" {
		t.Errorf("backup %q / current %q", old, cur)
	}
	// A second forced write in the same second gets its own backup.
	backup2, err := WriteDir(dir, v1, WriteOptions{Force: true, Now: now})
	if err != nil || backup2 == backup || !strings.HasPrefix(backup2, backup) {
		t.Errorf("second backup %q (first %q) err %v", backup2, backup, err)
	}
	// No temporary folders are left behind.
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if _, err := WriteDir(dir, map[string][]byte{"../escape": nil}, WriteOptions{Force: true}); err == nil {
		t.Error("a file name with a path was accepted")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, CAKeyFile)); !bytes.Equal(got, []byte("key v1")) {
		t.Error("a failed write changed the bundle")
	}
}
