// Command meshpki-dist builds meshpki's release artifacts and container image;
// the Makefile runs it (make release, make image).
//
//	meshpki-dist release -version V -commit C [-date UNIX] [-out dist/release] [-platform linux/amd64 ...]
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
		return errors.New("usage: meshpki-dist release|image [flags]")
	}
	switch args[0] {
	case "release":
		return runRelease(ctx, args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q (want release or image)", args[0])
	}
}

func runRelease(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	stamp := stampFlags(fs)
	out := fs.String("out", "dist/release", "folder to write")
	mod := fs.String("C", ".", "meshpki's module folder")
	var platforms platformsFlag
	fs.Var(&platforms, "platform", "GOOS/GOARCH to build (repeatable; default linux and darwin on amd64 and arm64)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stamp()
	if err != nil {
		return err
	}
	a, err := release.Build(ctx, release.Options{
		BuildOptions: release.BuildOptions{ModuleDir: *mod},
		Stamp:        s,
		Platforms:    platforms,
		Out:          *out,
		Extra:        []string{"README.md"},
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
