package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSecretVolume: the folder looks as kubelet leaves a Secret volume, and an
// update swaps every file at once.
func TestWriteSecretVolume(t *testing.T) {
	dir := t.TempDir()
	read := func(k string) string {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if err := WriteSecretVolume(dir, map[string][]byte{"a": []byte("1"), "b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "a")); err != nil || l != filepath.Join("..data", "a") {
		t.Fatalf("a -> %q (%v), want ..data/a", l, err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if read("a") != "1" || read("b") != "2" {
		t.Fatalf("a=%s b=%s", read("a"), read("b"))
	}
	if err := WriteSecretVolume(dir, map[string][]byte{"a": []byte("1"), "b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != first {
		t.Fatal("unchanged data was written again")
	}
	if err := WriteSecretVolume(dir, map[string][]byte{"a": []byte("3"), "c": []byte("4")}); err != nil {
		t.Fatal(err)
	}
	if read("a") != "3" || read("c") != "4" {
		t.Fatalf("after update a=%s c=%s", read("a"), read("c"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "b")); !os.IsNotExist(err) {
		t.Fatal("removed key b still there")
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Fatal("old data folder not removed")
	}
}
