package main

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
)

func corpusRoot(name string) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "roots", name))
	if err != nil {
		panic(err)
	}
	return p
}

// TestInputErrorsBeforeKeygen: what the root cannot sign, or cannot be written, is bad
// input found before any key is generated: exit 2, nothing written.
func TestInputErrorsBeforeKeygen(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	mustRun(t, "root", "create", "--out", short, "--ttl", "30d")
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ttl beyond root", []string{"--root-dir", short, "--cluster", "a", "--out", filepath.Join(dir, "o")}, "root expires"},
		{"pathlen the root forbids", []string{"--root-dir", corpusRoot("ok-pathlen-1"), "--cluster", "a", "--pathlen", "1", "--out", filepath.Join(dir, "o")}, "root allows pathlen 1 below it"},
		{"out under a file", []string{"--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(file, "o")}, file + " is not a folder"},
		{"name constraints", []string{"--root-dir", corpusRoot("root-name-constraints-exclude-san"), "--cluster", "a", "--out", filepath.Join(dir, "o")}, "name constraints exclude the intermediate's SANs (istiod.istio-system.svc)"},
		// issue 26, defect 8: up front, not at minting (exit 1).
		{"non-ASCII SAN", []string{"--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--san", "istiod.bücher.svc", "--out", filepath.Join(dir, "o")}, `SAN "istiod.bücher.svc" is not a DNS name: 'ü' at byte 8 is not printable ASCII`},
		{"non-ASCII URI SAN host", []string{"--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--uri-san", "spiffe://bücher/ns/x", "--out", filepath.Join(dir, "o")}, `host "bücher" has 'ü'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := meshpki(t, append([]string{"intermediate", "create"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d (want 2), stderr %q (want %q)", code, errs, tc.want)
			}
			if out != "" {
				t.Errorf("stdout: %q", out)
			}
			if exists(filepath.Join(dir, "o")) {
				t.Error("output written")
			}
		})
	}
	// The same root and pathlen 0 are fine.
	mustRun(t, "intermediate", "create", "--root-dir", corpusRoot("ok-pathlen-1"), "--cluster", "a", "--out", filepath.Join(dir, "o"))
}

// TestDurationOverflow: a duration too long for the clock is refused, never wrapped
// into a short one (213504d used to give a 25-minute certificate).
func TestDurationOverflow(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(dir, "o"), "--ttl", "213504d"},
		{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "a", "--out", filepath.Join(dir, "o"), "--ttl", "106752d"},
		{"root", "create", "--out", filepath.Join(dir, "o"), "--ttl", "300000d"},
		{"verify", "--min-remaining", "213504d", dir},
	} {
		code, _, errs := meshpki(t, args...)
		if code != exitUsage || !strings.Contains(errs, "is too long: at most 106751d") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	if exists(filepath.Join(dir, "o")) {
		t.Error("output written")
	}
}

// asCLI is set in the environment of a re-executed test binary: it runs the CLI.
const asCLI = "MESHPKI_TEST_AS_CLI"

func TestMain(m *testing.M) {
	setupLibraries()
	if os.Getenv(asCLI) == "1" {
		os.Exit(run(append([]string{"meshpki"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	code := m.Run()
	mesh20.stop()
	seqMesh.Stop()
	parallelMeshes.Stop()
	os.Exit(code)
}

// cliGORACE is GORACE for this test binary re-executed as the CLI: under the race
// detector a process sleeps a second at exit (atexit_sleep_ms=1000 by default) for
// the goroutines still running, which every CLI run of a test would wait for.
func cliGORACE() string {
	return "GORACE=atexit_sleep_ms=0 " + os.Getenv("GORACE")
}

// cliProcess is the CLI running in its own process (this test binary, re-executed).
type cliProcess struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	done     chan struct{}
}

func startCLI(t *testing.T, dir string, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(os.Args[0], args...), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), asCLI+"=1", cliGORACE())
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait returns the exit code, or fails the test if the process is still running
// after a minute: a safety net against a hang, not a timing assertion.
func (p *cliProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("meshpki %v still running after a minute (killed)\nstderr:\n%s", p.cmd.Args[1:], p.err.String())
	}
	noKeys(t, p.out.String(), p.err.String())
	return p.cmd.ProcessState.ExitCode()
}

// rootWith copies the good corpus root into a new folder, then lets edit replace
// its files with odd ones.
func rootWith(t *testing.T, edit func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"root-cert.pem", "root-key.pem"} {
		b, err := os.ReadFile(filepath.Join(corpusRoot("ok-ecdsa"), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	edit(dir)
	return dir
}

func mkfifo(t *testing.T, name string) {
	t.Helper()
	os.Remove(name)
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

// TestOddInputFiles: a FIFO, a device, a folder or a huge file where a root file,
// a cluster list or a bundle file should be is refused at once, naming the file and
// what it is (exit 2), in its own process: before, a FIFO blocked forever and
// /dev/zero was read until memory ran out.
func TestOddInputFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI in its own processes")
	}
	fifoRoot := rootWith(t, func(d string) { mkfifo(t, filepath.Join(d, "root-cert.pem")) })
	zeroKey := rootWith(t, func(d string) {
		os.Remove(filepath.Join(d, "root-key.pem"))
		if err := os.Symlink("/dev/zero", filepath.Join(d, "root-key.pem")); err != nil {
			t.Fatal(err)
		}
	})
	dirCert := rootWith(t, func(d string) {
		os.Remove(filepath.Join(d, "root-cert.pem"))
		os.Mkdir(filepath.Join(d, "root-cert.pem"), 0o700)
	})
	hugeCert := rootWith(t, func(d string) {
		if err := os.Truncate(filepath.Join(d, "root-cert.pem"), 64<<20); err != nil {
			t.Fatal(err)
		}
	})
	work := t.TempDir()
	fifoList := filepath.Join(work, "clusters.fifo")
	mkfifo(t, fifoList)
	bundle := filepath.Join(work, "bundle")
	mustRun(t, "intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "b", "--out", bundle)
	mkfifo(t, filepath.Join(bundle, "b", "ca-cert.pem"))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"fifo root cert", []string{"intermediate", "create", "--root-dir", fifoRoot, "--cluster", "a", "--out", "OUT"}, "root-cert.pem is a FIFO (named pipe), not a regular file"},
		{"dev zero key", []string{"intermediate", "create", "--root-dir", zeroKey, "--cluster", "a", "--out", "OUT"}, "root-key.pem is a character device, not a regular file"},
		{"folder cert", []string{"intermediate", "create", "--root-dir", dirCert, "--cluster", "a", "--out", "OUT"}, "root-cert.pem is a folder, not a regular file"},
		{"huge cert", []string{"intermediate", "create", "--root-dir", hugeCert, "--cluster", "a", "--out", "OUT"}, "root-cert.pem: 67108864 bytes, larger than 4 MiB"},
		{"fifo cluster list", []string{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--clusters-from", fifoList, "--out", "OUT"}, "clusters.fifo is a FIFO (named pipe)"},
		{"dev zero cluster list", []string{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--clusters-from", "/dev/zero", "--out", "OUT"}, "/dev/zero is a character device"},
		{"dev zero root bundle", []string{"root", "bundle", "--out", "-", "/dev/zero"}, "/dev/zero is a character device"},
		{"fifo bundle file", []string{"verify", filepath.Join(bundle, "b")}, "ca-cert.pem is a FIFO (named pipe)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			for i, a := range tc.args {
				if a == "OUT" {
					tc.args[i] = out
				}
			}
			p := startCLI(t, work, tc.args...)
			if code := p.wait(t); code != exitUsage || !strings.Contains(p.err.String(), tc.want) {
				t.Errorf("exit %d (want 2), stderr %q (want %q)", code, p.err.String(), tc.want)
			}
			if exists(out) {
				t.Error("output written")
			}
		})
	}
}

// TestSignalWhileReadingRoot: SIGTERM sent while the root file (a FIFO another
// process holds open without writing) is being read stops the CLI promptly, with a
// failure exit and nothing written.
func TestSignalWhileReadingRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI in its own process")
	}
	var fifo string
	root := rootWith(t, func(d string) { fifo = filepath.Join(d, "root-cert.pem"); mkfifo(t, fifo) })
	// A writer that never writes: a reader of the FIFO would wait for ever.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	work := t.TempDir()
	p := startCLI(t, work, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", "out")
	p.cmd.Process.Signal(syscall.SIGTERM)
	code := p.wait(t)
	if code == 0 {
		t.Errorf("exit 0 after SIGTERM with a FIFO root; stderr %q", p.err.String())
	}
	if exists(filepath.Join(work, "out")) {
		t.Error("output written")
	}
}

// TestVerifyMountedSecret: verify reads a folder laid out as kubelet mounts a Secret
// (KEY -> ..data/KEY, ..data -> ..<timestamp>/), following the links.
func TestVerifyMountedSecret(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--cluster", "east", "--out", dir)
	mount := filepath.Join(dir, "mount")
	ts := filepath.Join(mount, "..2026_12_02_01_00_00.123456789")
	if err := os.MkdirAll(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"} {
		if err := os.Rename(filepath.Join(dir, "east", f), filepath.Join(ts, f)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(mount, f)); err != nil {
			t.Fatal(err)
		}
	}
	out := mustRun(t, "verify", mount)
	if !strings.HasPrefix(out, "OK") {
		t.Errorf("verify of a mounted Secret:\n%s", out)
	}
	// A dangling link where a bundle file should be is named.
	os.Remove(filepath.Join(ts, "ca-key.pem"))
	code, _, errs := meshpki(t, "verify", mount)
	if code != exitUsage || !strings.Contains(errs, "ca-key.pem is a symbolic link that cannot be followed") {
		t.Errorf("dangling ca-key.pem: exit %d, stderr %q", code, errs)
	}
}

// TestKilledIntermediateCreate: after `intermediate create` is killed with SIGKILL
// while bundles are staged, the next run into the folder removes the temporary
// folders (each a working intermediate CA key) and says so.
func TestKilledIntermediateCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI in its own process")
	}
	work := t.TempDir()
	out := filepath.Join(work, "bundles")
	clusters := []string{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--out", out, "--concurrency", "1"}
	for i := range 30 {
		clusters = append(clusters, "--cluster", fmt.Sprintf("c%d", i))
	}
	// RSA keys are slow: bundles stay staged in temporary folders for a while, since
	// they are only renamed into place once every cluster is minted.
	p := startCLI(t, work, append(clusters, "--key-type", "rsa-3072")...)
	var staged []string
	for len(staged) == 0 {
		select {
		case <-p.done:
			t.Fatalf("finished before it could be killed: %s", p.err.String())
		case <-time.After(10 * time.Millisecond):
		}
		staged, _ = filepath.Glob(filepath.Join(out, ".c*.tmp-*"))
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	staged, _ = filepath.Glob(filepath.Join(out, ".c*.tmp-*"))
	if len(staged) == 0 {
		t.Fatal("no temporary folder left after kill -9: the test did not catch the run mid-way")
	}
	code, _, errs := meshpki(t, clusters...)
	if code != 0 {
		t.Fatalf("rerun: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "removed temporary folders an interrupted run left behind") || !strings.Contains(errs, filepath.Base(staged[0])) {
		t.Errorf("rerun does not say it removed %v:\n%s", staged, errs)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	mustRun(t, "verify", filepath.Join(out, "c0"), filepath.Join(out, "c29"))
}

// TestRootBundleForceOnlyReplacesRegularFiles: --force never renames the bundle over
// a device, a FIFO, a symbolic link or a folder (exit 2, left as it was).
func TestRootBundleForceOnlyReplacesRegularFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	odd := map[string]string{
		"fifo":    "a FIFO (named pipe)",
		"link":    "a symbolic link",
		"folder":  "a folder",
		"devnull": "a symbolic link",
	}
	mkfifo(t, filepath.Join(dir, "fifo"))
	os.Symlink(target, filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "folder"), 0o700)
	os.Symlink("/dev/null", filepath.Join(dir, "devnull"))
	for name, what := range odd {
		code, _, errs := meshpki(t, "root", "bundle", "--force", "--out", filepath.Join(dir, name), corpusRoot("ok-ecdsa"))
		if code != exitUsage || !strings.Contains(errs, "is "+what+": only a regular file is ever replaced") {
			t.Errorf("%s: exit %d, stderr %q", name, code, errs)
		}
	}
	st, err := os.Lstat(filepath.Join(dir, "fifo"))
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Error("the FIFO was replaced")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Error("the link's target was changed")
	}
	if dest, _ := os.Readlink(filepath.Join(dir, "devnull")); dest != "/dev/null" {
		t.Error("the link to /dev/null was replaced")
	}
	mustRun(t, "root", "bundle", "--force", "--out", target, corpusRoot("ok-ecdsa"))
}

// TestUnknownGlobalFlag: a flag the app does not know is one line on stderr and
// exit 2, as for commands; stdout (results only) stays empty.
func TestUnknownGlobalFlag(t *testing.T) {
	for _, args := range [][]string{{"--nope", "version"}, {"--nope"}, {"-x", "verify", "."}} {
		code, out, errs := meshpki(t, args...)
		if code != exitUsage || out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "flag provided but not defined") || !strings.Contains(errs, "meshpki --help") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

func corpusBundle(name string) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "bundles", name))
	if err != nil {
		panic(err)
	}
	return p
}

// TestRootKeyInBundle: a bundle whose CA is the mesh root itself fails verify (its
// key is the root key) unless --allow-root-key says so.
func TestRootKeyInBundle(t *testing.T) {
	code, out, _ := meshpki(t, "verify", corpusBundle("root-as-intermediate"))
	if code != exitFailed || !strings.Contains(out, "root-key: ca-cert.pem: is the root of root-cert.pem itself") {
		t.Errorf("exit %d, stdout:\n%s", code, out)
	}
	mustRun(t, "verify", "--allow-root-key", corpusBundle("root-as-intermediate"))
}

// TestOddNamesAndSettings: names that differ only in case, an empty --org, an
// over-long line in --clusters-from and thousands of existing bundles give one
// clear line and exit 2; loose permissions on the root key or output folder warn.
func TestOddNamesAndSettings(t *testing.T) {
	dir := t.TempDir()
	root := corpusRoot("ok-ecdsa")
	long := filepath.Join(dir, "long.txt")
	os.WriteFile(long, []byte("east\n# fine\n"+strings.Repeat("x", 100000)+"\n"), 0o600)
	many := filepath.Join(dir, "many")
	var names []string
	for i := range 10000 {
		n := fmt.Sprintf("cluster-%05d", i)
		names = append(names, n)
		if err := os.MkdirAll(filepath.Join(many, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	list := filepath.Join(dir, "many.txt")
	os.WriteFile(list, []byte(strings.Join(names, "\n")), 0o600)
	o := filepath.Join(dir, "o")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"case", []string{"intermediate", "create", "--root-dir", root, "--cluster", "East", "--cluster", "east", "--out", o}, `"East" and "east" differ only in case`},
		{"empty org", []string{"intermediate", "create", "--root-dir", root, "--cluster", "a", "--org", "", "--out", o}, "--org must not be empty"},
		{"empty root org", []string{"root", "create", "--org", "", "--out", o}, "--org must not be empty"},
		{"long line", []string{"intermediate", "create", "--root-dir", root, "--clusters-from", long, "--out", o}, long + ":3: a line of 100000 bytes is no cluster name"},
		{"10000 exist", []string{"intermediate", "create", "--root-dir", root, "--clusters-from", list, "--out", many}, "cluster-00009 and 9990 more (pass --force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := meshpki(t, tc.args...)
			if code != exitUsage || !strings.Contains(errs, tc.want) || out != "" {
				t.Errorf("exit %d (want 2), stdout %q, stderr %.300q (want %q)", code, out, errs, tc.want)
			}
			if len(errs) > 1000 {
				t.Errorf("stderr is %d bytes: summarise", len(errs))
			}
			if exists(o) {
				t.Error("output written")
			}
		})
	}
	// Loose permissions: warned about, the run goes on.
	loose := rootWith(t, func(d string) { os.Chmod(filepath.Join(d, "root-key.pem"), 0o644) })
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	code, _, errs := meshpki(t, "intermediate", "create", "--root-dir", loose, "--cluster", "a", "--out", open)
	if code != 0 || !strings.Contains(errs, "root key can be read or written by others than its owner: chmod 600") || !strings.Contains(errs, "mode=0644") {
		t.Errorf("loose root key: exit %d, stderr %q", code, errs)
	}
	if !strings.Contains(errs, "output folder is writable by others") || !strings.Contains(errs, "mode=0777") {
		t.Errorf("0777 output folder: stderr %q", errs)
	}
}

// TestSigtermDuringMinting: SIGTERM in the middle of a long run stops it: clusters
// not started are named as failed, exit 1, and no temporary folder is left.
func TestSigtermDuringMinting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI in its own process")
	}
	work := t.TempDir()
	out := filepath.Join(work, "bundles")
	args := []string{"intermediate", "create", "--root-dir", corpusRoot("ok-ecdsa"), "--out", out, "--concurrency", "1", "--key-type", "rsa-3072"}
	for i := range 30 {
		args = append(args, "--cluster", fmt.Sprintf("c%d", i))
	}
	p := startCLI(t, work, args...)
	for {
		if staged, _ := filepath.Glob(filepath.Join(out, ".c*.tmp-*")); len(staged) > 0 {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("finished before the signal: %s", p.err.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != exitFailed {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, p.err.String())
	}
	if !strings.Contains(p.err.String(), "stopping") || !strings.Contains(p.out.String(), "FAILED  c29: cluster c29: not started: interrupted by terminated") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", p.out.String(), p.err.String())
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestConcurrentRuns: in-process runs at once (as the parallel tests make them)
// share no state: under -race this fails if a library global is written by a run
// (urfave/cli's --help flag was; see setupLibraries).
func TestConcurrentRuns(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := [][]string{{"crl", "sign", "--help"}, {"version"}, {"root", "create", "--out", t.TempDir() + "/root"}}[i%3]
			if code, _, errOut := rrRun(t, args...); code != 0 {
				t.Errorf("meshpki %v: exit %d: %s", args, code, errOut)
			}
		}()
	}
	wg.Wait()
}

// writeRootDir writes r as a --root-dir folder.
func writeRootDir(t *testing.T, r *catest.CA) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{ca.RootCertFile: r.CertPEM(), ca.RootKeyFile: r.KeyPEM(t)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A root whose URI name constraints leave out the mesh's trust domain is refused
// before any key, naming the trust domain and the flag that sets it; the same root
// is fine for a mesh in a permitted trust domain. And verify refuses a bundle whose
// cluster CA has serverAuth without clientAuth, which import already refused
// (issue 26, defect 2).
func TestWorkloadPathRuleInTheCLI(t *testing.T) {
	dir := t.TempDir()
	root := writeRootDir(t, catest.Root(t, catest.Options{CN: "Example URIs Root", PermittedURIDomains: []string{"example.org"}}))
	code, out, errs := meshpki(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", filepath.Join(dir, "o"))
	if code != exitUsage || !strings.Contains(errs, "spiffe://cluster.local/ns/default/sa/default") || out != "" || exists(filepath.Join(dir, "o")) {
		t.Fatalf("exit %d (want 2), stdout %q, stderr %q: want the SPIFFE ID named, nothing written", code, out, errs)
	}
	if code, _, errs := meshpki(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", filepath.Join(dir, "o"), "--trust-domain", "Example.org/x"); code != exitUsage || !strings.Contains(errs, "--trust-domain") {
		t.Fatalf("bad --trust-domain: exit %d, %q", code, errs)
	}
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "a", "--out", filepath.Join(dir, "o"), "--trust-domain", "example.org")
	mustRun(t, "verify", "--trust-domain", "example.org", filepath.Join(dir, "o", "a"))
	if code, out, _ := meshpki(t, "verify", filepath.Join(dir, "o", "a")); code != exitFailed || !strings.Contains(out, "trust domain cluster.local") {
		t.Fatalf("verify for trust domain cluster.local of a bundle whose root excludes it: exit %d, %q", code, out)
	}

	r := catest.Root(t, catest.Options{CN: "Root"})
	cluster := r.Sub(t, catest.Options{CN: "Server Only", PathLen: catest.PathLen(0), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	b := filepath.Join(dir, "server-only")
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		ca.CACertFile: cluster.CertPEM(), ca.CAKeyFile: cluster.KeyPEM(t),
		ca.CertChainFile: append(cluster.CertPEM(), r.CertPEM()...), ca.RootCertFile: r.CertPEM(),
	} {
		if err := os.WriteFile(filepath.Join(b, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ = meshpki(t, "verify", b)
	if code != exitFailed || !strings.Contains(out, "excludes clientAuth") {
		t.Fatalf("verify of a serverAuth-only cluster CA: exit %d, stdout %q", code, out)
	}
}

// verify says the mesh's bundles trust the same roots only of bundles whose roots
// it read (issue 26, defect 7): a folder without root-cert.pem or a CSR folder
// still waiting is named as not compared.
func TestVerifyMeshLineCountsOnlyBundlesWithRoots(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustRun(t, "root", "create", "--out", root)
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--cluster", "north", "--out", filepath.Join(dir, "b"))
	mustRun(t, "intermediate", "csr", "--cluster", "south", "--out", filepath.Join(dir, "csrs"))
	if err := os.Remove(filepath.Join(dir, "b", "north", "root-cert.pem")); err != nil {
		t.Fatal(err)
	}
	east, west, north, south := filepath.Join(dir, "b", "east"), filepath.Join(dir, "b", "west"), filepath.Join(dir, "b", "north"), filepath.Join(dir, "csrs", "south")
	code, out, _ := meshpki(t, "verify", east, west, north, south)
	if code != exitFailed || strings.Contains(out, "all 4 bundles") || !strings.Contains(out, "OK   mesh: the 2 bundles with roots trust the same roots; not compared (no roots read): ") ||
		!strings.Contains(out, north) || !strings.Contains(out, south) {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}
	code, out, _ = meshpki(t, "verify", east, south)
	if code != exitFailed || strings.Contains(out, "OK   mesh") || !strings.Contains(out, "SKIP mesh: roots not compared (fewer than 2 bundles with roots read; none read of "+south+")") {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}
}

// Issue 26, questionable items decided: verify warns of a key file others may read
// and of two bundles holding one CA (--strict fails them); import refuses
// --min-remaining 0 as verify does (it silently meant 30d); root create warns of a
// root that lives less than import's 30 days.
func TestQuestionableItemsDecided(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustRun(t, "root", "create", "--out", root)
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--out", filepath.Join(dir, "b"))
	east, west, twin := filepath.Join(dir, "b", "east"), filepath.Join(dir, "b", "west"), filepath.Join(dir, "twin")
	if err := os.MkdirAll(twin, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"} {
		b, err := os.ReadFile(filepath.Join(east, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(twin, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(west, "ca-key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := meshpki(t, "verify", east, west, twin)
	if code != 0 || !strings.Contains(out, "warning: key-mode: ca-key.pem: is readable by its group or others (0644)") ||
		!strings.Contains(out, east+" and "+twin+" hold the same CA certificate") {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}
	if code, _, _ := meshpki(t, "verify", "--strict", east, twin); code != exitFailed {
		t.Fatalf("--strict with two bundles on one CA: exit %d", code)
	}
	if code, _, errs := meshpki(t, "intermediate", "import", "--out", dir, "--signed", dir, "--root", filepath.Join(root, "root-cert.pem"), "--min-remaining", "0"); code != exitUsage || !strings.Contains(errs, "--min-remaining") {
		t.Fatalf("import --min-remaining 0: exit %d, %q", code, errs)
	}
	_, errs := rrWant(t, 0, nil, "root", "create", "--out", filepath.Join(dir, "short"), "--ttl", "1h")
	if !strings.Contains(errs, "the root lives less than 30 days") {
		t.Fatalf("root create --ttl 1h: stderr %q", errs)
	}
}

// Issue 29, messages: a flag after an argument is named as such (not taken for a
// folder), an unknown command exits 2 naming it, verify bundles/* leaves out the
// backups --force keeps.
func TestMessagesForNewUsers(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustRun(t, "root", "create", "--out", root)
	out := filepath.Join(dir, "b")
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--cluster", "west", "--out", out)
	mustRun(t, "intermediate", "create", "--root-dir", root, "--cluster", "east", "--out", out, "--force")
	dirs, err := filepath.Glob(filepath.Join(out, "*"))
	if err != nil || len(dirs) != 3 {
		t.Fatalf("want east, its backup and west: %v %v", dirs, err)
	}
	code, stdout, errs := meshpki(t, append([]string{"verify"}, dirs...)...)
	if code != 0 || !strings.Contains(stdout, "OK   mesh: all 2 bundles trust the same roots") || !strings.Contains(errs, "left out a backup folder") {
		t.Fatalf("verify bundles/*: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
	if code, _, errs := meshpki(t, "verify", filepath.Join(out, "east"), "--strict"); code != exitUsage || !strings.Contains(errs, `"--strict" comes after an argument`) {
		t.Fatalf("flag after argument: exit %d, %q", code, errs)
	}
	for _, args := range [][]string{{"frobnicate"}, {"intermediate", "frob"}} {
		if code, _, errs := meshpki(t, args...); code != exitUsage || !strings.Contains(errs, `unknown command "`+args[len(args)-1]+`"`) {
			t.Fatalf("%v: exit %d, %q", args, code, errs)
		}
	}
	// One wording for an --out that exists, whichever command writes it.
	taken := filepath.Join(dir, "taken.pem")
	os.WriteFile(taken, nil, 0o600)
	for _, args := range [][]string{{"root", "bundle", "--out", taken, root}, {"crl", "sign", "--root-dir", root, "--out", taken}} {
		if code, _, errs := meshpki(t, args...); code != exitUsage || !strings.Contains(errs, "--out "+taken+": already exists (pass --force to replace it)") {
			t.Errorf("%v over an existing file: exit %d, %q", args[:2], code, errs)
		}
	}
}

// crl sign --out names a file in the working folder (found by comparing this
// binary with the one before the mesh package): it was refused as "in , the CA's
// own folder" when the source had no issuing-CA folder, after the CRL had been
// signed and kept. A refused --out now leaves no CRL signed.
func TestCRLSignOutInWorkingFolder(t *testing.T) {
	t.Chdir(t.TempDir())
	mustRun(t, "root", "create", "--out", "root")
	mustRun(t, "crl", "sign", "--root-dir", "root", "--out", "root.crl")
	if !exists("root.crl") {
		t.Fatal("root.crl not written")
	}
	mustRun(t, "root", "create", "--out", "other")
	if code, _, errs := meshpki(t, "crl", "sign", "--root-dir", "other", "--out", filepath.Join("other", "x.crl")); code != exitUsage || !strings.Contains(errs, "the CA's own folder") {
		t.Fatalf("exit %d, %q", code, errs)
	}
	if exists(filepath.Join("other", "root-crl.pem")) {
		t.Fatal("a refused --out left a CRL signed in the root folder")
	}
}

// Issue 26, defects 1, 3 and 4, each of which this test failed on before its fix:
// crl sign --out never writes over a key file, into the CA's folder, or over any
// file without --force; a backup folder that csr --force keeps is not taken for a
// waiting cluster, and a backup-shaped name is no cluster name; crl sign re-signs
// a kept CRL that is not valid yet, or that does not cover --crl-ttl.
func TestCRLSignAndBackupDefects(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustRun(t, "root", "create", "--out", root)
	keyPath := filepath.Join(root, "root-key.pem")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "elsewhere")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(other, "ca-key.pem")
	if err := os.WriteFile(otherKey, key, 0o600); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(other, "notes.txt")
	if err := os.WriteFile(plain, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		out, want string
		force     bool
	}{
		{keyPath, "the CA's own folder", true},
		{otherKey, "holds a private key: never written over", true},
		{plain, "already exists (pass --force to replace it)", false},
	} {
		args := []string{"crl", "sign", "--root-dir", root, "--out", tc.out}
		if tc.force {
			args = append(args, "--force")
		}
		if code, _, errs := meshpki(t, args...); code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("--out %s: exit %d, %q (want %q)", tc.out, code, errs, tc.want)
		}
	}
	if b, _ := os.ReadFile(keyPath); string(b) != string(key) {
		t.Fatal("the root key was written over")
	}
	if b, _ := os.ReadFile(otherKey); string(b) != string(key) {
		t.Fatal("a key file was written over")
	}
	if b, _ := os.ReadFile(plain); string(b) != "mine" {
		t.Fatal("a file was replaced without --force")
	}

	// Defect 3: backups of csr --force are not waiting clusters.
	csrs := filepath.Join(dir, "csrs")
	mustRun(t, "intermediate", "csr", "--cluster", "east", "--out", csrs)
	mustRun(t, "intermediate", "csr", "--cluster", "east", "--out", csrs, "--force")
	if m, _ := filepath.Glob(filepath.Join(csrs, "east.bak-*")); len(m) != 1 {
		t.Fatalf("want one backup, got %v", m)
	}
	code, _, errs := meshpki(t, "intermediate", "import", "--out", csrs, "--signed", filepath.Join(dir, "signed"), "--root", filepath.Join(root, "root-cert.pem"))
	if code != exitUsage || strings.Contains(errs, ".bak-") || !strings.Contains(errs, "east") {
		t.Errorf("import --signed with a backup beside east: exit %d, %q: the backup must not be a waiting cluster", code, errs)
	}
	if code, _, errs := meshpki(t, "intermediate", "csr", "--cluster", "east.bak-20200101T000000Z", "--out", csrs); code != exitUsage || !strings.Contains(errs, "backup") {
		t.Errorf("a backup-shaped cluster name: exit %d, %q", code, errs)
	}

	// Defect 4: a kept CRL from a clock that ran ahead is signed again.
	r, err := ca.ReadRootDir(root, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := ca.SignCRL(r.Cert, r.Signer, nil, big.NewInt(5), time.Now().Add(2*time.Hour), 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ca.RootCRLFile), ca.EncodeCRLsPEM(ahead), 0o644); err != nil {
		t.Fatal(err)
	}
	crl := func(args ...string) *x509.RevocationList {
		code, out, errs := rrRun(t, append([]string{"crl", "sign", "--root-dir", root}, args...)...)
		if code != 0 {
			t.Fatalf("crl sign: exit %d, %s", code, errs)
		}
		crls, err := ca.ParseCRLsPEM([]byte(out))
		if err != nil || len(crls) != 1 {
			t.Fatalf("crl sign printed %q: %v", out, err)
		}
		return crls[0]
	}
	got := crl()
	if got.Number.Int64() != 6 || got.ThisUpdate.After(time.Now()) {
		t.Fatalf("a CRL not valid yet was handed out again: number %v, thisUpdate %s", got.Number, got.ThisUpdate)
	}
	// The questionable item: --crl-ttl 30d is not served by the kept 7-day CRL.
	if got = crl("--crl-ttl", "30d"); got.Number.Int64() != 7 || got.NextUpdate.Sub(got.ThisUpdate) < 30*24*time.Hour {
		t.Fatalf("--crl-ttl 30d: number %v, valid %s", got.Number, got.NextUpdate.Sub(got.ThisUpdate))
	}
}
