// Package release builds meshpki's release artifacts: static binaries for each
// platform, a tar.gz archive per platform, a CycloneDX SBOM per binary and a
// SHA-256 checksums file, all stamped with one version. Every output is
// reproducible: the same source, version, commit, date and Go toolchain give the
// same bytes.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Platform is a GOOS/GOARCH pair.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// ParsePlatform parses "linux/amd64".
func ParsePlatform(s string) (Platform, error) {
	goos, goarch, ok := strings.Cut(s, "/")
	if !ok || goos == "" || goarch == "" || strings.Contains(goarch, "/") {
		return Platform{}, fmt.Errorf("platform %q: want GOOS/GOARCH, e.g. linux/amd64", s)
	}
	return Platform{goos, goarch}, nil
}

// DefaultPlatforms are the platforms of a release.
func DefaultPlatforms() []Platform {
	return []Platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}
}

// Stamp is what every artifact is stamped with.
type Stamp struct {
	// Version, e.g. v1.2.0 (make: git describe). Used in file names: letters,
	// digits and . _ + - only.
	Version string
	// Commit is the git commit (full hash) built.
	Commit string
	// Date is the time recorded in archives and SBOMs: the commit's time
	// (SOURCE_DATE_EPOCH), never the build's, so that builds reproduce.
	Date time.Time
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// Validate checks the stamp.
func (s Stamp) Validate() error {
	if !versionRE.MatchString(s.Version) {
		return fmt.Errorf("version %q: want letters, digits and . _ + - (e.g. v1.2.0)", s.Version)
	}
	if s.Commit == "" || strings.ContainsAny(s.Commit, " \t\n'\"") {
		return fmt.Errorf("commit %q: want a git commit hash", s.Commit)
	}
	if s.Date.IsZero() {
		return errors.New("no date: set SOURCE_DATE_EPOCH (the commit's time)")
	}
	return nil
}

// BuildOptions say how to build a binary.
type BuildOptions struct {
	// ModuleDir is the meshpki module's root folder.
	ModuleDir string
	// Go is the go command (default: "go" from PATH).
	Go string
	// Package is the main package (default ./cmd/meshpki).
	Package string
	// CGO builds with cgo, as PKCS#11 needs (the HSM build): the binary links
	// glibc dynamically, and uses Go's own DNS resolver and user lookup (netgo,
	// osusergo), so that it needs nothing of glibc but libc.so.6 and its loader.
	CGO bool
	// CC is the C compiler of a cgo build for another platform than this
	// machine's (CrossCC finds one).
	CC string
}

// CrossCC is the C compiler a cgo build for p needs on this machine: "" for this
// machine's own platform, else Debian's cross compiler for p (gcc-aarch64-linux-gnu,
// gcc-x86-64-linux-gnu), which must be on PATH.
func CrossCC(p Platform) (string, error) {
	if p.OS == runtime.GOOS && p.Arch == runtime.GOARCH {
		return "", nil
	}
	triplets := map[string]string{"linux/amd64": "x86_64-linux-gnu", "linux/arm64": "aarch64-linux-gnu"}
	t, ok := triplets[p.String()]
	if !ok {
		return "", fmt.Errorf("the HSM build (cgo) is made for linux/amd64 and linux/arm64, not %s", p)
	}
	cc := t + "-gcc"
	if _, err := exec.LookPath(cc); err != nil {
		return "", fmt.Errorf("the HSM build for %s needs the C cross compiler %s (Debian: apt-get install gcc-%s): %w", p, cc, strings.ReplaceAll(t, "_", "-"), err)
	}
	return cc, nil
}

// BuildBinary builds a static (CGO_ENABLED=0), trimmed, stamped binary for p at
// out (with o.CGO: linked to glibc, for PKCS#11). Build IDs and VCS stamping are
// off, so the same inputs give the same bytes.
func BuildBinary(ctx context.Context, o BuildOptions, s Stamp, p Platform, out string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	goCmd, pkg := o.Go, o.Package
	if goCmd == "" {
		goCmd = "go"
	}
	if pkg == "" {
		pkg = "./cmd/meshpki"
	}
	ldflags := fmt.Sprintf("-s -w -buildid= -X main.version=%s -X main.commit=%s", s.Version, s.Commit)
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out}
	cgo := "CGO_ENABLED=0"
	if o.CGO {
		args, cgo = append(args, "-tags", "netgo,osusergo"), "CGO_ENABLED=1"
	}
	cmd := exec.CommandContext(ctx, goCmd, append(args, pkg)...)
	cmd.Dir = o.ModuleDir
	cmd.Env = append(os.Environ(), cgo, "GOOS="+p.OS, "GOARCH="+p.Arch, "GOFLAGS=-mod=readonly", "GOWORK=off")
	if o.CGO && o.CC != "" {
		cmd.Env = append(cmd.Env, "CC="+o.CC)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s for %s: %w\n%s", pkg, p, err, stderr.String())
	}
	return nil
}

// Options say what Build makes.
type Options struct {
	BuildOptions
	Stamp
	// Platforms (default DefaultPlatforms).
	Platforms []Platform
	// Out is the folder written (created if missing; files of the same names are
	// replaced).
	Out string
	// Extra files put next to the binary in every archive, relative to
	// ModuleDir (e.g. README.md).
	Extra []string
	// HSM makes the HSM build instead: cgo binaries (PKCS#11) for linux only
	// (default HSMPlatforms), in files named meshpki-hsm_VERSION_OS_ARCH, with
	// their own checksums file.
	HSM bool
}

// HSMPlatforms are the platforms of the HSM build.
func HSMPlatforms() []Platform {
	return []Platform{{"linux", "amd64"}, {"linux", "arm64"}}
}

// Artifacts are the files Build wrote, as paths under Options.Out.
type Artifacts struct {
	Archives  map[Platform]string
	SBOMs     map[Platform]string
	Checksums string
}

// Name is the base name of a platform's files: meshpki_VERSION_OS_ARCH.
func Name(s Stamp, p Platform) string {
	return fmt.Sprintf("meshpki_%s_%s_%s", s.Version, p.OS, p.Arch)
}

// HSMName is the base name of the HSM build's files: meshpki-hsm_VERSION_OS_ARCH.
func HSMName(s Stamp, p Platform) string {
	return fmt.Sprintf("meshpki-hsm_%s_%s_%s", s.Version, p.OS, p.Arch)
}

// Build builds every platform's binary, archive and SBOM into o.Out, then the
// checksums file meshpki_VERSION_checksums.txt over all of them.
func Build(ctx context.Context, o Options) (*Artifacts, error) {
	if err := o.Stamp.Validate(); err != nil {
		return nil, err
	}
	platforms, name, product := o.Platforms, Name, "meshpki"
	if len(platforms) == 0 {
		platforms = DefaultPlatforms()
		if o.HSM {
			platforms = HSMPlatforms()
		}
	}
	if o.HSM {
		name, product = HSMName, "meshpki-hsm"
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.Out, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	a := &Artifacts{Archives: map[Platform]string{}, SBOMs: map[Platform]string{}}
	var sums []string
	for _, p := range platforms {
		name := name(o.Stamp, p)
		bin := filepath.Join(work, name, "meshpki")
		bo := o.BuildOptions
		if o.HSM {
			if p.OS != "linux" {
				return nil, fmt.Errorf("the HSM build is for linux only, not %s", p)
			}
			if bo.CC, err = CrossCC(p); err != nil {
				return nil, err
			}
			bo.CGO = true
		}
		if err := BuildBinary(ctx, bo, o.Stamp, p, bin); err != nil {
			return nil, err
		}
		files := []archiveFile{{name: "meshpki", path: bin, mode: 0o755}}
		for _, x := range o.Extra {
			files = append(files, archiveFile{name: filepath.Base(x), path: filepath.Join(o.ModuleDir, x), mode: 0o644})
		}
		archive := filepath.Join(o.Out, name+".tar.gz")
		if err := writeArchive(archive, name, files, o.Date); err != nil {
			return nil, fmt.Errorf("archive %s: %w", p, err)
		}
		sbom, err := SBOM(bin, o.Stamp)
		if err != nil {
			return nil, fmt.Errorf("SBOM %s: %w", p, err)
		}
		sbomFile := filepath.Join(o.Out, name+".cdx.json")
		if err := os.WriteFile(sbomFile, sbom, 0o644); err != nil {
			return nil, err
		}
		a.Archives[p], a.SBOMs[p] = archive, sbomFile
		sums = append(sums, archive, sbomFile)
	}
	a.Checksums = filepath.Join(o.Out, fmt.Sprintf("%s_%s_checksums.txt", product, o.Version))
	if err := writeChecksums(a.Checksums, sums); err != nil {
		return nil, err
	}
	return a, nil
}

type archiveFile struct {
	name string
	path string
	mode int64
}

// writeArchive writes a tar.gz holding files under folder dir/, with fixed
// owner (0:0), modes and times, so that it reproduces.
func writeArchive(path, dir string, files []archiveFile, date time.Time) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	hdr := func(name string, mode int64, size int64, typ byte) *tar.Header {
		return &tar.Header{Typeflag: typ, Name: name, Mode: mode, Size: size, ModTime: date.UTC().Truncate(time.Second), Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(dir+"/", 0o755, 0, tar.TypeDir)); err != nil {
		return err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr(dir+"/"+f.name, f.mode, int64(len(data)), tar.TypeReg)); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes(), 0o644)
}

// writeChecksums writes sha256sum's format ("HEX  NAME"), sorted by name, so that
// `sha256sum -c` checks it in the folder.
func writeChecksums(path string, files []string) error {
	sort.Slice(files, func(i, j int) bool { return filepath.Base(files[i]) < filepath.Base(files[j]) })
	var b strings.Builder
	for _, f := range files {
		sum, err := fileSHA256(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, filepath.Base(f))
	}
	return writeFileAtomic(path, []byte(b.String()), 0o644)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
