// Command meshpki-dist builds meshpki's release artifacts and container image;
// the Makefile runs it (make release, make image).
//
//	meshpki-dist release -version V -commit C [-date UNIX] [-out dist/release] [-platform linux/amd64 ...] [-hsm]
//	meshpki-dist manifests [-C .]   (deploy/cronjob.yaml from the Helm chart)
//	meshpki-dist image   -version V -commit C [-date UNIX] [-out dist/image] [-platform linux/amd64 ...] [-repo meshpki] [-hsm]
//
// -hsm makes the HSM build (cgo, for PKCS#11; docs/hsm.md) instead of the static one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meshpki/meshpki/internal/dist/chart"
	"github.com/meshpki/meshpki/internal/dist/image"
	"github.com/meshpki/meshpki/internal/dist/release"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshpki-dist:", err)
		os.Exit(1)
	}
}

// platformsFlag is a repeatable -platform GOOS/GOARCH.
type platformsFlag []release.Platform

func (p *platformsFlag) String() string { return fmt.Sprint(*p) }
func (p *platformsFlag) Set(s string) error {
	pl, err := release.ParsePlatform(s)
	if err != nil {
		return err
	}
	*p = append(*p, pl)
	return nil
}

// stampFlags adds -version, -commit and -date to fs.
func stampFlags(fs *flag.FlagSet) func() (release.Stamp, error) {
	v := fs.String("version", "", "version to stamp, e.g. v1.2.0")
	c := fs.String("commit", "", "git commit built")
	d := fs.String("date", os.Getenv("SOURCE_DATE_EPOCH"), "time recorded in the artifacts, Unix seconds (default $SOURCE_DATE_EPOCH)")
	return func() (release.Stamp, error) {
		secs, err := strconv.ParseInt(*d, 10, 64)
		if err != nil {
			return release.Stamp{}, fmt.Errorf("-date %q: want Unix seconds (the commit's time: git log -1 --format=%%ct): %w", *d, err)
		}
		s := release.Stamp{Version: *v, Commit: *c, Date: time.Unix(secs, 0).UTC()}
		return s, s.Validate()
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: meshpki-dist release|image|manifests [flags]")
	}
	switch args[0] {
	case "release":
		return runRelease(ctx, args[1:], stdout)
	case "image":
		return runImage(ctx, args[1:], stdout)
	case "manifests":
		return runManifests(args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q (want release, image or manifests)", args[0])
	}
}

func runRelease(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	stamp := stampFlags(fs)
	out := fs.String("out", "dist/release", "folder to write")
	mod := fs.String("C", ".", "meshpki's module folder")
	hsm := fs.Bool("hsm", false, "the HSM build: cgo binaries (PKCS#11) for linux/amd64 and linux/arm64, named meshpki-hsm_*")
	var platforms platformsFlag
	fs.Var(&platforms, "platform", "GOOS/GOARCH to build (repeatable; default linux and darwin on amd64 and arm64)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stamp()
	if err != nil {
		return err
	}
	extra := []string{"README.md"}
	if *hsm {
		extra = append(extra, "docs/hsm.md")
	}
	a, err := release.Build(ctx, release.Options{
		BuildOptions: release.BuildOptions{ModuleDir: *mod},
		Stamp:        s,
		Platforms:    platforms,
		Out:          *out,
		Extra:        extra,
		HSM:          *hsm,
	})
	if err != nil {
		return err
	}
	var names []string
	for _, f := range a.Archives {
		names = append(names, f)
	}
	for _, f := range a.SBOMs {
		names = append(names, f)
	}
	sort.Strings(names)
	names = append(names, a.Checksums)
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-60s %6.1f MB\n", filepath.Base(n), float64(fi.Size())/1e6)
	}
	fmt.Fprintf(stdout, "release %s (%s) in %s\n", s.Version, strings.TrimSpace(s.Commit), *out)
	return nil
}

func runImage(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	stamp := stampFlags(fs)
	out := fs.String("out", "dist/image", "folder to write")
	mod := fs.String("C", ".", "meshpki's module folder")
	repo := fs.String("repo", "meshpki", "repository name in the docker tarballs (docker load tags the image REPO:VERSION)")
	source := fs.String("source", image.DefaultSource, "org.opencontainers.image.source label")
	hsm := fs.Bool("hsm", false, "the HSM image: the cgo build with the glibc it and a vendor's PKCS#11 module need (tagged VERSION-hsm)")
	var platforms platformsFlag
	fs.Var(&platforms, "platform", "linux/ARCH to build (repeatable; default linux/amd64 and linux/arm64)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stamp()
	if err != nil {
		return err
	}
	tag, err := image.Tag(s.Version)
	if err != nil {
		return err
	}
	name := release.Name
	if *hsm {
		tag, name = tag+"-hsm", release.HSMName
	}
	if len(platforms) == 0 {
		platforms = platformsFlag{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(*out, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	opts := image.Options{Stamp: s, Source: *source, HSM: *hsm}
	var imgs []v1.Image
	for _, p := range platforms {
		if p.OS != "linux" {
			return fmt.Errorf("-platform %s: the image is for linux only", p)
		}
		bin := filepath.Join(work, p.OS+"-"+p.Arch, "meshpki")
		bo := release.BuildOptions{ModuleDir: *mod, CGO: *hsm}
		if *hsm {
			if bo.CC, err = release.CrossCC(p); err != nil {
				return err
			}
		}
		if err := release.BuildBinary(ctx, bo, s, p, bin); err != nil {
			return err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		img, err := image.Build(opts, p, data)
		if err != nil {
			return fmt.Errorf("image for %s: %w", p, err)
		}
		imgs = append(imgs, img)
		tarPath := filepath.Join(*out, name(s, p)+".docker.tar")
		if err := image.WriteDockerTar(tarPath, *repo, tag, img); err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		size, err := imageSize(img)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-12s %s  %5.1f MB compressed  %s\n", p, d, float64(size)/1e6, tarPath)
	}
	idx, err := image.Index(opts, platforms, imgs)
	if err != nil {
		return err
	}
	layoutDir := filepath.Join(*out, "oci")
	if *hsm {
		layoutDir = filepath.Join(*out, "oci-hsm")
	}
	if err := image.WriteLayout(layoutDir, idx, tag); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-12s %s  OCI layout %s (tag %s)\n", "index", d, layoutDir, tag)
	return nil
}

// imageSize is the size of an image's compressed layers.
func imageSize(img v1.Image) (int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			return 0, err
		}
		n += s
	}
	return n, nil
}

func runManifests(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("manifests", flag.ContinueOnError)
	mod := fs.String("C", ".", "meshpki's module folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	text, err := chart.Plain(*mod)
	if err != nil {
		return err
	}
	out := filepath.Join(*mod, chart.PlainOut)
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s from %s\n", out, chart.Dir)
	return nil
}
