package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version and commit are set at build time by the Makefile (make build, make
// release, make image): -ldflags "-X main.version=... -X main.commit=...".
var (
	version = ""
	commit  = ""
)

// versionInfo is what `meshpki version` reports.
type versionInfo struct {
	Version string `json:"version"`
	// Commit is the git commit built, or "unknown" (e.g. go install ...@v1.2.3,
	// which records no VCS information).
	Commit string `json:"commit"`
	// CommitTime is the commit's time (RFC 3339) when the build recorded it.
	CommitTime string `json:"commitTime,omitempty"`
	// Modified is true when the binary was built from a work tree with changes.
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
}

// buildVersion reads the version stamped by the linker, falling back to what the
// Go toolchain recorded in the binary (module version, VCS settings).
func buildVersion() versionInfo {
	vi := versionInfo{Version: version, Commit: commit, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if vi.Version == "" {
		vi.Version = "(devel)"
		if ok && bi.Main.Version != "" {
			vi.Version = bi.Main.Version
		}
	}
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if vi.Commit == "" {
					vi.Commit = s.Value
				}
			case "vcs.time":
				vi.CommitTime = s.Value
			case "vcs.modified":
				vi.Modified = s.Value == "true"
			}
		}
	}
	if vi.Commit == "" {
		vi.Commit = "unknown"
	}
	return vi
}

func versionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print meshpki's version, commit, Go version and platform",
		Description: `Examples:
   meshpki version
   meshpki version -o json`,
		Flags: []cli.Flag{outputFlag()},
		Action: actionOf(e, func(c *cli.Context) *versionOptions {
			return &versionOptions{cmd: bindArgs(c), Output: c.String("output")}
		}),
	}
}

// versionOptions is "version".
type versionOptions struct {
	cmd    cmdArgs
	Output string
}

// Validate checks the options.
func (o *versionOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	_, err := parseOutputFormat(o.Output)
	return err
}

// Run prints the version (buildVersion).
func (o *versionOptions) Run(_ context.Context, e *env) error {
	vi := buildVersion()
	if o.Output == "json" {
		return writeJSON(e.stdout, true, vi)
	}
	dirty := ""
	if vi.Modified {
		dirty = ", modified"
	}
	fmt.Fprintf(e.stdout, "meshpki %s (commit %s%s) %s %s/%s\n", vi.Version, vi.Commit, dirty, vi.Go, vi.OS, vi.Arch)
	return nil
}
