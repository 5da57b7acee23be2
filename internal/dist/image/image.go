// Package image builds meshpki's container image from scratch, with no container
// daemon and no base image: one layer holding the static binary, CA roots for
// reaching Vault over TLS (Mozilla's, as golang.org/x/crypto/x509roots/fallback
// ships them), and /etc/passwd and /etc/group entries for a non-root user. Every
// time in it is the stamp's date and every file has a fixed owner and mode, so the
// same binary and stamp give the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/meshpki/meshpki/internal/dist/release"
)

// What the image holds.
const (
	// UID and GID of the user the image runs as ("nonroot", as in distroless).
	UID = 65532
	GID = 65532
	// BinaryPath is meshpki in the image; the entrypoint.
	BinaryPath = "/usr/local/bin/meshpki"
	// CABundlePath is where Go's crypto/x509 looks first on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultSource is the source label's default.
	DefaultSource = "https://github.com/meshpki/meshpki"
	rootsModule   = "golang.org/x/crypto/x509roots/fallback"
)

// Options describe an image.
type Options struct {
	release.Stamp
	// Source is the org.opencontainers.image.source label (default DefaultSource).
	Source string
	// HSM makes the HSM image: the binary is the cgo build (PKCS#11), and the
	// image carries the glibc it and a vendor's PKCS#11 module need (glibcFiles)
	// and the empty folder PKCS11Dir to mount the module in.
	HSM bool
}

// Roots returns the CA roots put in the image as PEM: the NSS (Mozilla) trust
// store as golang.org/x/crypto/x509roots/fallback/bundle ships it, less the roots
// that carry a constraint PEM cannot express (a distrust-after date), which are
// left out rather than trusted without it.
func Roots() []byte {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return b.Bytes()
}

// rootsVersion is the version of the roots module linked into this program.
func rootsVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == rootsModule {
				return d.Version
			}
		}
	}
	return "unknown"
}

type file struct {
	name     string
	mode     int64
	uid, gid int
	data     []byte
	dir      bool
}

// Layer returns the image's one layer, uncompressed: a tar of the binary, the
// roots, passwd, group, nsswitch.conf, the user's home and /tmp.
func Layer(binary []byte, date time.Time) ([]byte, error) {
	return layer(binary, date, nil)
}

// layer is Layer with extra files (and folders) after the static image's.
func layer(binary []byte, date time.Time, extra []file) ([]byte, error) {
	files := []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID))},
		// Go's resolver reads it to order files and DNS.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID))},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: Roots()},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: "usr/local/bin/meshpki", mode: 0o755, data: binary},
	}
	files = append(files, extra...)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := date.UTC().Truncate(time.Second)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Labels are the image's labels (and its manifest's annotations).
func Labels(o Options) map[string]string {
	src := o.Source
	if src == "" {
		src = DefaultSource
	}
	title := "meshpki"
	if o.HSM {
		title = "meshpki-hsm"
	}
	return map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.description": "Per-cluster Istio intermediate CAs from one root, installed and rotated in every cluster",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Commit,
		"org.opencontainers.image.source":      src,
		"org.opencontainers.image.created":     o.Date.UTC().Format(time.RFC3339),
		"dev.meshpki.ca-roots":                 rootsModule + "@" + rootsVersion(),
	}
}

// Build returns the OCI image for platform p holding binary (a static meshpki
// built for p).
func Build(o Options, p release.Platform, binary []byte) (v1.Image, error) {
	if err := o.Stamp.Validate(); err != nil {
		return nil, err
	}
	var extra []file
	what := "meshpki " + o.Version + ", CA roots, nonroot user"
	if o.HSM {
		var err error
		if extra, err = hsmFiles(binary, p); err != nil {
			return nil, err
		}
		what = "meshpki " + o.Version + " (HSM build: cgo, glibc, " + PKCS11Dir + " for a vendor's PKCS#11 module), CA roots, nonroot user"
	}
	tarData, err := layer(binary, o.Date, extra)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarData)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression))
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	created := v1.Time{Time: o.Date.UTC().Truncate(time.Second)}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "meshpki-dist image", Comment: what},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created, cf.Author = p.OS, p.Arch, created, "meshpki"
	cf.Config.User = fmt.Sprintf("%d:%d", UID, GID)
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"--help"}
	cf.Config.WorkingDir = "/home/nonroot"
	cf.Config.Env = []string{"PATH=/usr/local/bin", "HOME=/home/nonroot", "SSL_CERT_FILE=" + CABundlePath}
	cf.Config.Labels = Labels(o)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, Labels(o)).(v1.Image), nil
}

// Index returns the multi-platform OCI index of images, in platforms' order.
func Index(o Options, platforms []release.Platform, images []v1.Image) (v1.ImageIndex, error) {
	if len(platforms) != len(images) {
		return nil, fmt.Errorf("%d platforms, %d images", len(platforms), len(images))
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range images {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: platforms[i].OS, Architecture: platforms[i].Arch}},
		})
	}
	return mutate.Annotations(idx, Labels(o)).(v1.ImageIndex), nil
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Tag checks that version can be an image tag.
func Tag(version string) (string, error) {
	if !tagRE.MatchString(version) {
		return "", fmt.Errorf("version %q is not a valid image tag", version)
	}
	return version, nil
}

// WriteLayout writes idx as an OCI image layout in dir (replaced if present),
// its index.json naming it tag (annotation org.opencontainers.image.ref.name), as
// skopeo's oci:DIR:TAG and crane push read it.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return nil
}

// WriteDockerTar writes img as a `docker load` / `podman load` tarball tagged
// repo:tag (e.g. meshpki:v1.2.0).
func WriteDockerTar(path, repo, tag string, img v1.Image) error {
	ref, err := name.NewTag(repo+":"+tag, name.WithDefaultRegistry(""))
	if err != nil {
		return fmt.Errorf("image name %s:%s: %w", repo, tag, err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
