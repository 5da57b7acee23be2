package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/rootsource"
)

// meshpki runs the CLI in-process and returns exit code, stdout and stderr.
func meshpki(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"meshpki"}, args...), &out, &errb)
	noKeys(t, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// noKeys fails if any output carries private key material.
func noKeys(t *testing.T, outs ...string) {
	t.Helper()
	for _, s := range outs {
		if strings.Contains(s, "-----BEGIN") {
			t.Fatalf("output contains PEM (key material must never be printed):\n%s", s)
		}
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := meshpki(t, args...)
	if code != 0 {
		t.Fatalf("meshpki %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestBinaryEndToEnd builds the real binary and runs the main job with it.
func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshpki")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runBin := func(want int, args ...string) (string, string) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		noKeys(t, out.String(), errb.String())
		if code != want {
			t.Fatalf("meshpki %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	runBin(0, "root", "create", "--out", "root")
	out, errs := runBin(0, "intermediate", "create", "--root-dir", "root", "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", "bundles")
	if strings.Count(out, "minted") != 3 {
		t.Errorf("stdout should list 3 minted clusters:\n%s", out)
	}
	if strings.Count(errs, "msg=minted") != 3 {
		t.Errorf("stderr (not a terminal) should have one line per cluster:\n%s", errs)
	}
	out, _ = runBin(0, "verify", "--mtls", "--output", "json", "bundles/east", "bundles/west", "bundles/north")
	var res struct {
		OK         bool
		Bundles    []struct{ OK bool }
		Handshakes []struct {
			OK    bool
			Pairs int
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("verify --output json: %v\n%s", err, out)
	}
	pairs := 0
	for _, h := range res.Handshakes {
		pairs += h.Pairs
	}
	if !res.OK || len(res.Bundles) != 3 || pairs != 6 {
		t.Fatalf("verify: ok=%v bundles=%d pairs=%d", res.OK, len(res.Bundles), pairs)
	}
	for _, h := range res.Handshakes {
		if !h.OK {
			t.Errorf("handshake failed: %s", out)
		}
	}
	// A second root's bundle breaks the mesh: exit 1, handshakes fail.
	runBin(0, "root", "create", "--out", "root2")
	runBin(0, "intermediate", "create", "--root-dir", "root2", "--cluster", "stray", "--out", "other")
	out, _ = runBin(1, "verify", "--mtls", "bundles/east", "other/stray")
	if !strings.Contains(out, "FAIL mesh") || !strings.Contains(out, "other roots than") || !strings.Contains(out, "FAIL mtls") {
		t.Errorf("verify of two roots should flag the mesh and mTLS:\n%s", out)
	}
	out, _ = runBin(0, "version")
	if !strings.HasPrefix(out, "meshpki ") {
		t.Errorf("version: %q", out)
	}
	out, _ = runBin(0, "intermediate", "create", "--help")
	if !strings.Contains(out, "Examples:") {
		t.Errorf("help has no examples:\n%s", out)
	}
}

// TestBadRootCorpus: every bad root of testdata/roots fails with its own message,
// exit code 2, and nothing written.
func TestBadRootCorpus(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "roots", "*"))
	if len(dirs) < 20 {
		t.Fatalf("corpus too small: %d", len(dirs))
	}
	for _, root := range dirs {
		t.Run(filepath.Base(root), func(t *testing.T) {
			w, _ := os.ReadFile(filepath.Join(root, "want"))
			want := strings.TrimSpace(string(w))
			want = strings.TrimPrefix(want, "mint: ") // refused before minting all the same
			out := filepath.Join(t.TempDir(), "out")
			code, _, errs := meshpki(t, "intermediate", "create", "--root-dir", root, "--cluster", "c1", "--out", out)
			if want == "ok" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errs)
				}
				return
			}
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errs, want) {
				t.Errorf("stderr %q does not contain %q", errs, want)
			}
			if exists(out) {
				t.Errorf("%s was written despite the bad root", out)
			}
		})
	}
}

func TestForceKeepsBackup(t *testing.T) {
	dir := t.TempDir()
	root, out := filepath.Join(dir, "root"), filepath.Join(dir, "out")
	mustRun(t, "root", "create", "--out", root)
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--cluster", "b", "--out", out)
	before, _ := ca.ReadDir(filepath.Join(out, "a"))

	// Without --force: refused before anything is minted, even for the new cluster c.
	code, _, errs := meshpki(t, "intermediate", "create", "--root-dir", root, "--cluster", "c", "--cluster", "a", "--out", out)
	if code != exitUsage || !strings.Contains(errs, "already exists") || !strings.Contains(errs, "for a") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if exists(filepath.Join(out, "c")) {
		t.Error("cluster c was written although the run was refused")
	}
	after, _ := ca.ReadDir(filepath.Join(out, "a"))
	if !bytes.Equal(before[ca.CAKeyFile], after[ca.CAKeyFile]) {
		t.Error("refused run changed bundle a")
	}

	out2 := mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", out, "--force")
	backups, _ := filepath.Glob(filepath.Join(out, "a.bak-*"))
	if len(backups) != 1 || !strings.Contains(out2, "previous kept in") {
		t.Fatalf("backups %v, stdout %q", backups, out2)
	}
	old, _ := ca.ReadDir(backups[0])
	for name, b := range before {
		if !bytes.Equal(old[name], b) {
			t.Errorf("backup %s differs from the old bundle", name)
		}
	}
	now, _ := ca.ReadDir(filepath.Join(out, "a"))
	if bytes.Equal(now[ca.CAKeyFile], before[ca.CAKeyFile]) {
		t.Error("forced run kept the old key")
	}
	mustRun(t, "verify", filepath.Join(out, "a"), filepath.Join(out, "b"))
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustRun(t, "root", "create", "--out", root)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"intermediate", "create", "--nope"}, "flag provided but not defined: -nope (see 'meshpki intermediate create --help')"},
		{"missing --out", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a"}, "--out is required"},
		{"no cluster", []string{"intermediate", "create", "--root-dir", root, "--out", dir + "/o"}, "no cluster given"},
		{"no root", []string{"intermediate", "create", "--cluster", "a", "--out", dir + "/o"}, "no root given"},
		{"bad key type", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", dir + "/o", "--key-type", "rsa-1024"}, "--key-type: unknown key type"},
		{"bad ttl", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", dir + "/o", "--ttl", "soon"}, "--ttl: bad duration"},
		{"bad cluster name", []string{"intermediate", "create", "--root-dir", root, "--cluster", "../x", "--out", dir + "/o"}, "only letters"},
		{"duplicate cluster", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a", "--cluster", "a", "--out", dir + "/o"}, `"a" given twice`},
		{"bad format", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", dir + "/o", "--format", "pkcs12"}, "unknown bundle format"},
		{"missing root dir", []string{"intermediate", "create", "--root-dir", dir + "/none", "--cluster", "a", "--out", dir + "/o"}, "no such file"},
		{"root exists", []string{"root", "create", "--out", root}, "already exists"},
		{"verify nothing", []string{"verify"}, "at least one bundle folder"},
		{"verify missing", []string{"verify", dir + "/none"}, "no such bundle folder"},
		{"bad output", []string{"verify", "--output", "yaml", root}, "unknown format"},
		{"stray arg", []string{"root", "create", "--out", dir + "/r2", "extra"}, "takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := meshpki(t, tc.args...)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d (want 2), stderr %q (want %q)", code, errs, tc.want)
			}
			if out != "" {
				t.Errorf("bad usage wrote to stdout (it carries only results):\n%s", out)
			}
			if exists(dir + "/o") {
				t.Error("output written")
			}
		})
	}
}

func TestTLSFormatAndShortTTL(t *testing.T) {
	dir := t.TempDir()
	root, out := filepath.Join(dir, "root"), filepath.Join(dir, "out")
	mustRun(t, "root", "create", "--out", root, "--ttl", "30d", "--key-type", "ecdsa-p384")
	code, _, errs := meshpki(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", out)
	if code != exitUsage || !strings.Contains(errs, "root expires") {
		t.Fatalf("TTL beyond the root: exit %d, stderr %q", code, errs)
	}
	if exists(out) {
		t.Error("written despite the refused TTL")
	}
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", out, "--allow-short-ttl", "--format", "tls")
	files, _ := ca.ReadDir(filepath.Join(out, "a"))
	if _, ok := files[ca.TLSCertFile]; !ok || len(files) != 3 {
		t.Fatalf("tls format files: %v", len(files))
	}
	// 30 days left is under verify's default 720h threshold: a warning, still exit 0,
	// but --strict fails it.
	vout := mustRun(t, "verify", filepath.Join(out, "a"))
	if !strings.Contains(vout, "expires-soon") {
		t.Errorf("no expiry warning:\n%s", vout)
	}
	if code, _, _ := meshpki(t, "verify", "--strict", filepath.Join(out, "a")); code != exitFailed {
		t.Errorf("--strict with a warning: exit %d, want 1", code)
	}
}

// TestEveryCommandHasExamples: every command's --help, parents included, shows
// examples.
func TestEveryCommandHasExamples(t *testing.T) {
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			p := append(slices.Clone(path), c.Name)
			var out, errOut bytes.Buffer
			if code := run(append(append([]string{"meshpki"}, p...), "--help"), &out, &errOut); code != 0 {
				t.Errorf("%s --help: exit %d: %s", strings.Join(p, " "), code, errOut.String())
			}
			if !strings.Contains(out.String(), "Examples:") {
				t.Errorf("meshpki %s --help has no examples", strings.Join(p, " "))
			}
			walk(p, c.Subcommands)
		}
	}
	walk(nil, newApp(&env{stdout: io.Discard, stderr: io.Discard}).Commands)
}

// TestRootCreateConcurrentRunsNeverOverwrite: runs racing on one folder leave one
// root whose key matches its certificate; every other run is refused (exit 2).
func TestRootCreateConcurrentRunsNeverOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// rootCreateOptions.Run, not run: run() sets process-wide state (cfssl's
			// logger, the CLI library's flags), and concurrent runs are separate processes.
			e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}
			o := &rootCreateOptions{Target: rootTarget{Out: dir}, Output: "text", profile: ca.DefaultRootProfile("Istio")}
			err := o.Run(context.Background(), e)
			var ee *exitError
			switch {
			case err == nil:
			case errors.As(err, &ee):
				codes[i] = ee.code
			default:
				codes[i] = -1
			}
		}()
	}
	wg.Wait()
	ok := 0
	for i, c := range codes {
		switch c {
		case 0:
			ok++
		case 2:
		default:
			t.Errorf("run %d: exit %d, want 0 or 2", i, c)
		}
	}
	if ok != 1 {
		t.Errorf("%d runs reported success, want exactly 1 (exit codes %v)", ok, codes)
	}
	if _, err := ca.ReadRootDir(dir, time.Now()); err != nil {
		t.Fatalf("root left behind: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("root folder holds %d entries, want root-cert.pem and root-key.pem only", len(entries))
	}
}

// TestIntermediateCreateInterruptedNamesClusters: clusters an interrupted run never
// started are reported as failed under their own names, and nothing is written.
func TestIntermediateCreateInterruptedNamesClusters(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if code := run([]string{"meshpki", "root", "create", "--out", root}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("root create: exit %d", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}
	o := &intermediateCreateOptions{Root: rootSource{Spec: rootsource.Spec{Dir: root}}, Out: filepath.Join(dir, "bundles"), format: ca.FormatIstio,
		profiles:    []ca.Profile{ca.IntermediateProfile("east", "Istio"), ca.IntermediateProfile("west", "Istio")},
		Concurrency: 1, Output: "json"}
	if err := o.Run(ctx, e); err == nil {
		t.Fatal("interrupted run succeeded")
	}
	var env struct {
		OK      bool
		Bundles []ca.MintDirResult
	}
	if err := json.Unmarshal(out.Bytes(), &env); err != nil || env.OK {
		t.Fatalf("ok %v, %v:\n%s", env.OK, err, out.String())
	}
	res := env.Bundles
	for i, want := range []string{"east", "west"} {
		if res[i].Cluster != want || res[i].Error == "" {
			t.Errorf("result %d: %+v, want cluster %s failed", i, res[i], want)
		}
	}
	if _, err := os.Stat(o.Out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundles folder written: %v", err)
	}
}
