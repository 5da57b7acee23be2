package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The k8s examples need apiservers: `go test -run Install ./k8s/` selects
// ExampleInstall, so its TestMain must see it among the package's examples.
func TestExampleNames(t *testing.T) {
	got, err := exampleNames("../../k8s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExampleInstall", "ExampleRotate"} {
		if !slices.Contains(got, want) {
			t.Errorf("exampleNames(k8s) = %v, lacks %s", got, want)
		}
	}

	dir := t.TempDir()
	src := "package x\n\nfunc ExampleLocal() {}\n\ntype T struct{}\n\nfunc (T) ExampleMethod() {}\n\nfunc TestExampleish(t *testing.T) {}\n"
	if err := os.WriteFile(filepath.Join(dir, "x_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte("package x\n\nfunc ExampleNotATest() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := exampleNames(dir); err != nil || !slices.Equal(got, []string{"ExampleLocal"}) {
		t.Errorf("exampleNames = %v, %v; want [ExampleLocal]", got, err)
	}
}
