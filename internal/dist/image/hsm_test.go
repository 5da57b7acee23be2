package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshpki/meshpki/internal/dist/release"
)

// TestHSMReleaseAndImage builds the HSM release for this machine as `make
// release-hsm` does (the cgo build: one link, shared with the image below) and
// checks its archive, name, checksums and that the binary runs; then the HSM
// image's layer: the binary with its ELF interpreter and glibc, and the folder a
// vendor module is mounted in. As root, it runs the image's files in a chroot (no
// container runtime needed): meshpki starts, and with SoftHSM2's module and the
// libraries it needs mounted in /usr/local/lib/pkcs11 (LD_LIBRARY_PATH, as
// docs/hsm.md says), root create generates a root in a token from inside the image.
func TestHSMReleaseAndImage(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the HSM build is for linux/amd64 and linux/arm64")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p := release.Platform{OS: "linux", Arch: runtime.GOARCH}
	out := t.TempDir()
	a, err := release.Build(ctx, release.Options{BuildOptions: release.BuildOptions{ModuleDir: "../../.."}, Stamp: testStamp, Out: out,
		Platforms: []release.Platform{p}, Extra: []string{"README.md", "docs/hsm.md"}, HSM: true})
	if err != nil {
		t.Fatal(err)
	}
	name := release.HSMName(testStamp, p)
	if filepath.Base(a.Archives[p]) != name+".tar.gz" || filepath.Base(a.Checksums) != "meshpki-hsm_"+testStamp.Version+"_checksums.txt" {
		t.Fatalf("HSM release files: %v %s", a.Archives, a.Checksums)
	}
	files := untarGz(t, a.Archives[p])
	bin := files[name+"/meshpki"]
	if bin == nil || files[name+"/hsm.md"] == nil {
		t.Fatalf("HSM archive holds %d files, want meshpki, README.md and hsm.md", len(files))
	}
	ef, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	if libs, _ := ef.ImportedLibraries(); len(libs) == 0 {
		t.Fatal("the HSM binary is static: it cannot load a PKCS#11 module")
	}
	binPath := filepath.Join(t.TempDir(), "meshpki")
	if err := os.WriteFile(binPath, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if v, err := exec.Command(binPath, "version").Output(); err != nil || !strings.HasPrefix(string(v), "meshpki "+testStamp.Version) {
		t.Fatalf("the HSM binary: %q %v", v, err)
	}

	extra, err := hsmFiles(bin, p)
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := layer(bin, testStamp.Date, extra)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	names := extract(t, layerTar, root)
	for _, want := range []string{"usr/local/bin/meshpki", "usr/local/lib/pkcs11/", "lib/" + triplets[p.Arch] + "/libc.so.6"} {
		if !names[want] {
			t.Errorf("the HSM image lacks %s", want)
		}
	}
	if _, err := glibcFiles(bin[:0:0], p); err == nil {
		t.Error("glibcFiles of no binary")
	}

	if os.Geteuid() != 0 {
		t.Log("not root: the image's files are not run in a chroot")
		return
	}
	chroot := func(env []string, args ...string) ([]byte, error) {
		cmd := exec.Command("/usr/local/bin/meshpki", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Dir, cmd.Env = "/", append([]string{"PATH=/usr/local/bin"}, env...)
		return cmd.CombinedOutput()
	}
	if v, err := chroot(nil, "version"); err != nil || !strings.HasPrefix(string(v), "meshpki "+testStamp.Version) {
		t.Fatalf("meshpki in the HSM image's files: %q %v", v, err)
	}
	module := "/usr/lib/softhsm/libsofthsm2.so"
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(module); serr != nil || err != nil {
		if os.Getenv("MESHPKI_REQUIRE_SERVERS") == "1" {
			t.Fatal("SoftHSM2 is not installed and MESHPKI_REQUIRE_SERVERS=1")
		}
		t.Skip("SoftHSM2 is not installed")
	}
	// Mount the vendor's module (SoftHSM2) and the libraries it needs beyond glibc.
	pk := filepath.Join(root, PKCS11Dir)
	copyFile(t, module, filepath.Join(pk, "libvendor.so"))
	mf, err := elf.Open(module)
	if err != nil {
		t.Fatal(err)
	}
	needed, _ := mf.ImportedLibraries()
	mf.Close()
	for _, lib := range needed {
		if names["lib/"+triplets[p.Arch]+"/"+lib] {
			continue
		}
		copyFile(t, filepath.Join("/lib", triplets[p.Arch], lib), filepath.Join(pk, lib))
	}
	if err := os.MkdirAll(filepath.Join(root, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "softhsm2.conf"), []byte("directories.tokendir = /tokens\nobjectstore.backend = file\n"), 0o600)
	hostConf := filepath.Join(t.TempDir(), "softhsm2.conf")
	os.WriteFile(hostConf, []byte(fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\n", filepath.Join(root, "tokens"))), 0o600)
	os.WriteFile(filepath.Join(root, "tmp", "pin"), []byte("4321\n"), 0o600)
	init := exec.Command(util, "--init-token", "--free", "--label", "image", "--pin", "4321", "--so-pin", "87654321")
	init.Env = append(os.Environ(), "SOFTHSM2_CONF="+hostConf)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	uri := "pkcs11:module-path=" + PKCS11Dir + "/libvendor.so;token=image;id=01;object=root?pin-source=/tmp/pin"
	env := []string{"SOFTHSM2_CONF=/softhsm2.conf"}
	if out, err := chroot(env, "root", "create", "--out", "/tmp/root", "--key-uri", uri); err == nil || !strings.Contains(string(out), "does not load") {
		t.Fatalf("without LD_LIBRARY_PATH the module's libraries are not found, and meshpki should say so: %v\n%s", err, out)
	}
	if out, err := chroot(append(env, "LD_LIBRARY_PATH="+PKCS11Dir), "root", "create", "--out", "/tmp/root", "--key-uri", uri); err != nil {
		t.Fatalf("root create in a token from the HSM image: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "tmp", "root", "root-cert.pem")); err != nil {
		t.Fatal(err)
	}
}

func untarGz(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}

// extract writes a layer's tar into dir and returns the names it holds.
func extract(t *testing.T, layerTar []byte, dir string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(layerTar))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, os.FileMode(h.Mode)|0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, os.FileMode(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
