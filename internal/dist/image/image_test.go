package image

import (
	"archive/tar"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/meshpki/meshpki/internal/dist/release"
)

var testStamp = release.Stamp{Version: "v9.8.7-test.1", Commit: "0123456789abcdef0123456789abcdef01234567", Date: time.Unix(1790000000, 0).UTC()}

// TestImage builds the image as `make image` does, from a real static meshpki,
// writes it as an OCI layout and a docker tarball, reads both back and checks what
// a cluster running it relies on: a non-root user, the entrypoint, the labels, CA
// roots that parse, the binary that runs and reports its version; and that the
// same inputs give the same digest.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the image's linux binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p := release.Platform{OS: "linux", Arch: runtime.GOARCH}
	binPath := filepath.Join(t.TempDir(), "meshpki")
	if err := release.BuildBinary(ctx, release.BuildOptions{ModuleDir: "../../.."}, testStamp, p, binPath); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Stamp: testStamp}
	img, err := Build(opts, p, bin)
	if err != nil {
		t.Fatal(err)
	}
	digest := mustDigest(t, img)

	// Reproducible: same inputs, same digest; another version, another digest.
	again, err := Build(opts, p, bin)
	if err != nil {
		t.Fatal(err)
	}
	if d := mustDigest(t, again); d != digest {
		t.Fatalf("two builds of the same inputs: %s and %s", digest, d)
	}
	other := opts
	other.Version = "v9.8.8"
	if img2, err := Build(other, p, bin); err != nil || mustDigest(t, img2) == digest {
		t.Fatalf("another version gives the same digest (%v)", err)
	}

	// Written as an OCI layout (with an index) and read back.
	dir := t.TempDir()
	idx, err := Index(opts, []release.Platform{p}, []v1.Image{img})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(filepath.Join(dir, "oci"), idx, testStamp.Version); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(filepath.Join(dir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	topM, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topM.Manifests) != 1 || topM.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testStamp.Version {
		t.Fatalf("index.json: %+v", topM.Manifests)
	}
	readIdx, err := top.ImageIndex(topM.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := readIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.OS != "linux" || im.Manifests[0].Platform.Architecture != p.Arch {
		t.Fatalf("image index: %+v", im.Manifests)
	}
	fromLayout, err := readIdx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if d := mustDigest(t, fromLayout); d != digest {
		t.Fatalf("layout holds %s, built %s", d, digest)
	}
	checkImage(t, fromLayout, p)

	// The docker tarball holds the same config and layer, tagged meshpki:VERSION.
	tarPath := filepath.Join(dir, "meshpki.tar")
	if err := WriteDockerTar(tarPath, "meshpki", testStamp.Version, img); err != nil {
		t.Fatal(err)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "meshpki:"+testStamp.Version {
		t.Fatalf("docker tarball manifest: %+v", m)
	}
	fromTar, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := img.ConfigName()
	c2, err := fromTar.ConfigName()
	if err != nil || c1 != c2 {
		t.Fatalf("docker tarball config %s, image %s (%v)", c2, c1, err)
	}
	checkImage(t, fromTar, p)
}

func checkImage(t *testing.T, img v1.Image, p release.Platform) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || strings.HasPrefix(c.User, "0") || c.User == "" || c.User == "root" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != BinaryPath {
		t.Errorf("entrypoint %v", c.Entrypoint)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  testStamp.Version,
		"org.opencontainers.image.revision": testStamp.Commit,
		"org.opencontainers.image.source":   DefaultSource,
		"org.opencontainers.image.created":  "2026-09-21T14:13:20Z",
	} {
		if c.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
		}
	}
	if cf.OS != "linux" || cf.Architecture != p.Arch || !cf.Created.Equal(testStamp.Date) {
		t.Errorf("config: %s/%s created %s", cf.OS, cf.Architecture, cf.Created)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string][]byte{}
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(testStamp.Date) {
			t.Errorf("%s: time %s, want the stamp's", h.Name, h.ModTime)
		}
		b, _ := io.ReadAll(tr)
		files["/"+h.Name], hdrs["/"+h.Name] = b, h
	}
	// The user exists, as the user the image runs as.
	if !strings.Contains(string(files["/etc/passwd"]), "nonroot:x:65532:65532:") || !strings.Contains(string(files["/etc/group"]), "nonroot:x:65532:") {
		t.Errorf("/etc/passwd:\n%s/etc/group:\n%s", files["/etc/passwd"], files["/etc/group"])
	}
	if h := hdrs["/home/nonroot/"]; h == nil || h.Uid != 65532 {
		t.Errorf("home: %+v", h)
	}
	// The binary: root-owned, not writable by the user, executable.
	h := hdrs[BinaryPath]
	if h == nil || h.Uid != 0 || h.Mode != 0o755 {
		t.Fatalf("%s: %+v", BinaryPath, h)
	}
	// CA roots for Vault's TLS: PEM certificates, all CAs.
	n := 0
	rest := files[CABundlePath]
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil || !cert.IsCA {
			t.Errorf("CA bundle: %v", err)
		}
		n++
	}
	if n < 100 || len(strings.TrimSpace(string(rest))) != 0 {
		t.Errorf("CA bundle: %d roots", n)
	}
	// The binary runs and says its version.
	bin := filepath.Join(t.TempDir(), "meshpki")
	if err := os.WriteFile(bin, files[BinaryPath], 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("the image's meshpki version: %v", err)
	}
	var v struct{ Version, Commit, OS, Arch string }
	if err := json.Unmarshal(out, &v); err != nil || v.Version != testStamp.Version || v.Commit != testStamp.Commit || v.OS != "linux" || v.Arch != p.Arch {
		t.Errorf("the image's meshpki version -o json: %s (%v)", out, err)
	}
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTag(t *testing.T) {
	for _, v := range []string{"v1.2.3", "5590011-dirty", "v1.0.0-rc.1"} {
		if _, err := Tag(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	for _, v := range []string{"", "v1+meta", ".v1", strings.Repeat("a", 129)} {
		if _, err := Tag(v); err == nil {
			t.Errorf("%q accepted as a tag", v)
		}
	}
}
