package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// moduleDir is meshpki's module root, from this package's folder.
const moduleDir = "../../.."

var testStamp = Stamp{Version: "v9.8.7-test.1", Commit: "0123456789abcdef0123456789abcdef01234567", Date: time.Unix(1790000000, 0).UTC()}

// TestRelease builds what `make release` builds, for every platform, and checks
// what a user downloading it relies on: every archive holds a meshpki for its
// platform stamped with the version and commit, the host's one runs and says so,
// the checksums file checks, each SBOM lists the modules in its binary, and a
// second build gives the same bytes.
func TestRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out := t.TempDir()
	// A release is linux and darwin on amd64 and arm64. The test builds two of
	// them, the host's and the one that differs from it in both OS and
	// architecture: each build links a 50 MB binary, and make test runs on two
	// cores (make release builds all four the same way).
	if got := fmt.Sprint(DefaultPlatforms()); got != "[linux/amd64 linux/arm64 darwin/amd64 darwin/arm64]" {
		t.Fatalf("DefaultPlatforms %s", got)
	}
	platforms := []Platform{{"linux", "amd64"}, {"darwin", "arm64"}}
	a, err := Build(ctx, Options{BuildOptions: BuildOptions{ModuleDir: moduleDir}, Stamp: testStamp, Out: out, Platforms: platforms, Extra: []string{"README.md"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Archives) != len(platforms) {
		t.Fatalf("archives %v, want %v", a.Archives, platforms)
	}
	checkChecksums(t, a.Checksums, len(a.Archives)+len(a.SBOMs))
	ran := false
	for p, archive := range a.Archives {
		if want := Name(testStamp, p) + ".tar.gz"; filepath.Base(archive) != want {
			t.Errorf("%s: archive %s, want %s", p, filepath.Base(archive), want)
		}
		files := untar(t, archive)
		dir := Name(testStamp, p) + "/"
		bin, ok := files[dir+"meshpki"]
		if !ok || files[dir+"README.md"] == nil {
			t.Fatalf("%s: archive holds %v", p, keys(files))
		}
		binPath := filepath.Join(t.TempDir(), "meshpki")
		if err := os.WriteFile(binPath, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		checkPlatform(t, binPath, p)
		info, err := buildinfo.ReadFile(binPath)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["GOOS"] != p.OS || settings["GOARCH"] != p.Arch || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s: build settings %v", p, settings)
		}
		// (-trimpath keeps -ldflags out of the build settings: look for the strings.)
		if !bytes.Contains(bin, []byte(testStamp.Version)) || !bytes.Contains(bin, []byte(testStamp.Commit)) {
			t.Errorf("%s: not stamped with %s (commit %s)", p, testStamp.Version, testStamp.Commit)
		}
		checkSBOM(t, a.SBOMs[p], binPath, info)
		if p.OS == runtime.GOOS && p.Arch == runtime.GOARCH {
			ran = true
			runVersion(t, binPath, p)
			refusesPKCS11(t, binPath)
		}
	}
	if !ran && runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		t.Error("the linux/amd64 binary did not run")
	}

	// Reproducible: the same inputs again give the same archive and SBOM bytes.
	lin := Platform{"linux", "amd64"}
	out2 := t.TempDir()
	b, err := Build(ctx, Options{BuildOptions: BuildOptions{ModuleDir: moduleDir}, Stamp: testStamp, Out: out2, Platforms: []Platform{lin}, Extra: []string{"README.md"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{a.Archives[lin], b.Archives[lin]}, {a.SBOMs[lin], b.SBOMs[lin]}} {
		x, _ := os.ReadFile(pair[0])
		y, _ := os.ReadFile(pair[1])
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds of the same inputs", filepath.Base(pair[0]))
		}
	}
}

func TestStampValidate(t *testing.T) {
	for _, s := range []Stamp{
		{Version: "", Commit: "abc", Date: time.Now()},
		{Version: "v1 2", Commit: "abc", Date: time.Now()},
		{Version: "../v1", Commit: "abc", Date: time.Now()},
		{Version: "v1", Commit: "", Date: time.Now()},
		{Version: "v1", Commit: "abc"},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if _, err := ParsePlatform("linux"); err == nil {
		t.Error("platform without arch accepted")
	}
}

func runVersion(t *testing.T, bin string, p Platform) {
	t.Helper()
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("%s: meshpki version -o json: %v", p, err)
	}
	var v struct{ Version, Commit, Go, OS, Arch string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s: version -o json: %v\n%s", p, err, out)
	}
	if v.Version != testStamp.Version || v.Commit != testStamp.Commit || v.OS != p.OS || v.Arch != p.Arch || v.Go != runtime.Version() {
		t.Errorf("%s: version says %+v", p, v)
	}
	text, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(text), fmt.Sprintf("meshpki %s (commit %s) go", testStamp.Version, testStamp.Commit)) {
		t.Errorf("%s: meshpki version: %q %v", p, text, err)
	}
}

// refusesPKCS11: the static binary, which cannot load a PKCS#11 module, says so
// and points to the HSM build, with exit 2 and nothing written.
func refusesPKCS11(t *testing.T, bin string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "root")
	cmd := exec.Command(bin, "root", "create", "--out", out, "--key-uri", "pkcs11:token=mesh;id=01;object=root")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "cgo build") {
		t.Errorf("the static binary with a pkcs11 key: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the refused root create wrote its folder")
	}
}

// TestCrossCC: the native platform needs no cross compiler; darwin has no HSM build.
func TestCrossCC(t *testing.T) {
	if cc, err := CrossCC(Platform{runtime.GOOS, runtime.GOARCH}); cc != "" || err != nil {
		t.Errorf("native: %q %v", cc, err)
	}
	if _, err := CrossCC(Platform{"darwin", "arm64"}); err == nil {
		t.Error("darwin HSM build accepted")
	}
	if HSMName(testStamp, Platform{"linux", "arm64"}) != "meshpki-hsm_v9.8.7-test.1_linux_arm64" {
		t.Error(HSMName(testStamp, Platform{"linux", "arm64"}))
	}
}

// checkPlatform opens bin as the executable format and CPU of p.
func checkPlatform(t *testing.T, bin string, p Platform) {
	t.Helper()
	switch p.OS {
	case "linux":
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: not ELF: %v", p, err)
		}
		defer f.Close()
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Arch]
		if f.Machine != want {
			t.Errorf("%s: ELF machine %v", p, f.Machine)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: dynamically linked (has an interpreter)", p)
			}
		}
	case "darwin":
		f, err := macho.Open(bin)
		if err != nil {
			t.Fatalf("%s: not Mach-O: %v", p, err)
		}
		defer f.Close()
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[p.Arch]
		if f.Cpu != want {
			t.Errorf("%s: Mach-O CPU %v", p, f.Cpu)
		}
	}
}

func checkSBOM(t *testing.T, path, bin string, info *buildinfo.BuildInfo) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var bom BOM
	if err := json.Unmarshal(data, &bom); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	m := bom.Metadata.Component
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion != "1.6" || !strings.HasPrefix(bom.SerialNumber, "urn:uuid:") ||
		m.Name != "github.com/meshpki/meshpki" || m.Version != testStamp.Version || len(m.Hashes) != 1 || m.Hashes[0].Content != sum ||
		bom.Metadata.Timestamp != testStamp.Date.Format(time.RFC3339) {
		t.Errorf("%s: metadata %+v", filepath.Base(path), bom.Metadata)
	}
	have := map[string]bool{}
	for _, c := range bom.Components {
		have[c.PURL] = true
	}
	if !have["pkg:golang/stdlib@"+info.GoVersion] {
		t.Errorf("%s: no stdlib component", filepath.Base(path))
	}
	for _, d := range info.Deps {
		if !have[goPURL(d.Path, d.Version)] && (d.Replace == nil || !have[goPURL(d.Replace.Path, d.Replace.Version)]) {
			t.Errorf("%s: module %s@%s missing", filepath.Base(path), d.Path, d.Version)
		}
	}
	if len(info.Deps) < 10 || len(bom.Dependencies) != 1 || len(bom.Dependencies[0].DependsOn) != len(bom.Components) {
		t.Errorf("%s: %d modules, dependencies %d", filepath.Base(path), len(info.Deps), len(bom.Dependencies))
	}
}

// checkChecksums checks the file as `sha256sum -c` would.
func checkChecksums(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("checksums line %q", sc.Text())
		}
		got, err := fileSHA256(filepath.Join(filepath.Dir(path), name))
		if err != nil || got != sum {
			t.Errorf("%s: sha256 %s, file says %s (%v)", name, got, sum, err)
		}
		lines++
	}
	if lines != n {
		t.Errorf("checksums file has %d lines, want %d", lines, n)
	}
}

func untar(t *testing.T, path string) map[string][]byte {
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
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testStamp.Date) {
			t.Errorf("%s: owner %d:%d, time %s", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
