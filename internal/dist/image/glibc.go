package image

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/meshpki/meshpki/internal/dist/release"
)

// PKCS11Dir is the folder of the HSM image where a vendor's PKCS#11 module is
// mounted (docs/hsm.md): empty in the image.
const PKCS11Dir = "/usr/local/lib/pkcs11"

// triplets are Debian's multiarch names of the HSM image's platforms.
var triplets = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// vendorLibs are glibc libraries a vendor's PKCS#11 module commonly needs beside
// libc.so.6 (in glibc 2.34 and later most are stubs): the image carries them so
// that a module built for a glibc system loads without more.
var vendorLibs = []string{"libpthread.so.0", "libdl.so.2", "libm.so.6", "librt.so.1"}

// glibcFiles are the files of glibc a dynamically linked binary for p needs in
// an image with no base: its ELF interpreter at the path the binary names, and
// the libraries it needs (and they need) plus vendorLibs, in /lib/TRIPLET, which
// the interpreter searches by default. They are read from this machine: for its
// own platform from /lib/TRIPLET and /usr/lib/TRIPLET, for another from Debian's
// cross sysroot /usr/TRIPLET/lib (package libc6-ARCH-cross).
func glibcFiles(binary []byte, p release.Platform) ([]file, error) {
	t, ok := triplets[p.Arch]
	if p.OS != "linux" || !ok {
		return nil, fmt.Errorf("the HSM image is for linux/amd64 and linux/arm64, not %s", p)
	}
	dirs := []string{"/usr/" + t + "/lib"}
	if p.Arch == runtime.GOARCH {
		dirs = []string{"/lib/" + t, "/usr/lib/" + t}
	}
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		return nil, fmt.Errorf("the binary: %w", err)
	}
	interp := ""
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return nil, err
			}
			interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	if interp == "" {
		return nil, errors.New("the binary is static: the HSM image needs the cgo build (release.BuildOptions.CGO)")
	}
	find := func(name string) (string, []byte, error) {
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, name)) // follows the symlinks to the real file
			if err == nil {
				return filepath.Join(d, name), b, nil
			}
		}
		return "", nil, fmt.Errorf("%s for %s not found in %v (install libc6 for that architecture, e.g. libc6-%s-cross)", name, p, dirs, p.Arch)
	}
	var out []file
	_, b, err := find(path.Base(interp))
	if err != nil {
		return nil, err
	}
	out = append(out, file{name: interp[1:], mode: 0o755, data: b})
	seen := map[string]bool{path.Base(interp): true}
	queue, _ := f.ImportedLibraries()
	queue = append(queue, vendorLibs...)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		_, b, err := find(name)
		if err != nil {
			return nil, err
		}
		lf, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		needed, _ := lf.ImportedLibraries()
		queue = append(queue, needed...)
		out = append(out, file{name: "lib/" + t + "/" + name, mode: 0o755, data: b})
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].name < out[1+j].name })
	return out, nil
}

// hsmFiles are what the HSM image holds beyond the static image's files: glibc for
// binary (glibcFiles), the empty PKCS11Dir, and their folders.
func hsmFiles(binary []byte, p release.Platform) ([]file, error) {
	libc, err := glibcFiles(binary, p)
	if err != nil {
		return nil, err
	}
	return withParents(append(libc, file{name: PKCS11Dir[1:] + "/", mode: 0o755, dir: true})), nil
}

// withParents puts, before files, a directory entry for each of their folders
// not made already by the static image's files.
func withParents(files []file) []file {
	have := map[string]bool{"etc/": true, "usr/": true, "usr/local/": true, "usr/local/bin/": true, "home/": true, "tmp/": true}
	var dirs []file
	for _, f := range files {
		if f.dir {
			have[f.name] = true
		}
	}
	for _, f := range files {
		for d := path.Dir(f.name); d != "." && d != "/"; d = path.Dir(d) {
			if !have[d+"/"] {
				have[d+"/"] = true
				dirs = append(dirs, file{name: d + "/", mode: 0o755, dir: true})
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].name < dirs[j].name })
	return append(dirs, files...)
}
