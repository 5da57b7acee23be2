package atomicfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteFileAtomic(t *testing.T) {
	name := filepath.Join(t.TempDir(), "root-key.pem")
	if err := WriteFile(name, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(name, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(name)
	got, _ := os.ReadFile(name)
	if string(got) != "two" || st.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %o", got, st.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(name))
	if len(entries) != 1 {
		t.Errorf("temp files left: %d entries", len(entries))
	}
}

func TestCreateFileNeverReplaces(t *testing.T) {
	name := filepath.Join(t.TempDir(), "root-key.pem")
	if err := CreateFile(name, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateFile(name, []byte("second"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second CreateFile: got %v, want ErrExist", err)
	}
	got, _ := os.ReadFile(name)
	entries, _ := os.ReadDir(filepath.Dir(name))
	if string(got) != "first" || len(entries) != 1 {
		t.Errorf("content %q, %d entries (temp files left?)", got, len(entries))
	}
}

func TestStage(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "out")
	dir := filepath.Join(parent, "east")
	for _, fsync := range []bool{true, false} {
		s, err := Stage(dir, map[string]File{"key": {Data: []byte("k")}, "cert": {Data: []byte("c"), Perm: 0o644}}, fsync)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("destination visible before the rename: %v", err)
		}
		if !fsync {
			if err := Sync([]*Staged{s}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Rename(); err != nil {
			t.Fatal(err)
		}
		mode := func(p string) os.FileMode {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			return st.Mode().Perm()
		}
		if m := mode(parent); m != 0o700 {
			t.Errorf("parent mode %o, want 700", m)
		}
		if m := mode(dir); m != 0o700 {
			t.Errorf("folder mode %o, want 700", m)
		}
		if m := mode(filepath.Join(dir, "key")); m != 0o600 {
			t.Errorf("default file mode %o, want 600", m)
		}
		if m := mode(filepath.Join(dir, "cert")); m != 0o644 {
			t.Errorf("asked-for file mode %o, want 644", m)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Stage(dir, map[string]File{"../escape": {}}, true); err == nil {
		t.Error("a file name with a path was accepted")
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestOrphans: a folder a run died while staging is found (and, with the folder
// locked, removed); a live destination and other hidden entries are kept.
func TestOrphans(t *testing.T) {
	parent := t.TempDir()
	s, err := Stage(filepath.Join(parent, "east"), map[string]File{"key": {Data: []byte("k")}}, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = s // never renamed: the run "died"
	for _, keep := range []string{"west", ".git", ".west.tmp-x"} {
		if err := os.Mkdir(filepath.Join(parent, keep), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := LockDir(context.Background(), parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	removed, err := RemoveOrphans(parent)
	if err != nil || len(removed) != 1 || !strings.HasPrefix(removed[0], ".east.tmp-") || !IsTemp(removed[0]) {
		t.Fatalf("removed %v, %v", removed, err)
	}
	entries, _ := os.ReadDir(parent)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{".git", ".west.tmp-x", "west"}
	if !SupportsDirLock() {
		want = append(want, removed[0])
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("left %v, want %v", names, want)
	}
}

func TestLockDirExcludes(t *testing.T) {
	if !SupportsDirLock() {
		t.Skip("no folder locks here")
	}
	dir := t.TempDir()
	first, err := LockDir(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	waited := 0
	if _, err := LockDir(ctx, dir, func() { waited++ }); err == nil || waited != 1 {
		t.Fatalf("second lock while held: %v, waited %d times", err, waited)
	}
	first.Unlock()
	second, err := LockDir(context.Background(), dir, nil)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	second.Unlock()
}

func TestCheckDirWritable(t *testing.T) {
	dir := t.TempDir()
	if err := CheckDirWritable(filepath.Join(dir, "a", "b")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckDirWritable(filepath.Join(file, "x")); err == nil || !strings.Contains(err.Error(), "is not a folder") {
		t.Fatalf("under a file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("probe left behind: %v", entries)
	}
}
