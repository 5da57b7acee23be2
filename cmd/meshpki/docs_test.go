package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/ca/catest"
	"github.com/meshpki/meshpki/internal/testenv"
)

// The docs are run as a user pastes them (issue 29): every shell block (```sh) of
// README.md and docs/*.md runs in TestDocsRun, in order, one folder per document,
// against real kube-apiservers and a real Vault, unless the line before its fence
// marks it:
//
//	<!-- doctest: skip: REASON -->    it needs what the harness lacks (REASON says what)
//	<!-- doctest: synopsis -->        a command's synopsis: its flags must exist
//	<!-- doctest: given NAME -->      run, after the test has done NAME first: what
//	                                  the user does elsewhere (docGivens)
//
// Clusters are named east, west and north (contexts of $KUBECONFIG), with no
// istiod; $VAULT_ADDR and $VAULT_TOKEN point at a Vault with KV v2 at secret/;
// MESHPKI_CRL_SETTLE=1s shortens the waits a user would sit through.

// docBlock is one fenced shell block of a document.
type docBlock struct {
	File string // path relative to the module root
	Line int    // of the opening fence
	Text string
	// Mark is "", "skip", "synopsis" or "given"; Arg is the reason or the given's name.
	Mark, Arg string
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

var docMarkRE = regexp.MustCompile(`^<!-- doctest: (skip|synopsis|given)(?:[: ] *(.*?))? *-->$`)

// docFiles are the documents whose shell blocks are run, in the order a new user
// reads them.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{filepath.Join("..", "..", "README.md")}, files...)
}

// parseDocBlocks returns the shell blocks (sh, bash, shell) of one Markdown file.
func parseDocBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(filepath.Join("..", ".."), file)
	var blocks []docBlock
	var cur *docBlock // the shell block being read
	inFence, prev := false, ""
	for i, line := range strings.Split(string(data), "\n") {
		fence := strings.HasPrefix(line, "```")
		switch {
		case inFence && fence:
			if cur != nil {
				blocks = append(blocks, *cur)
			}
			inFence, cur = false, nil
		case inFence:
			if cur != nil {
				cur.Text += line + "\n"
			}
		case fence:
			inFence = true
			switch strings.TrimSpace(strings.TrimPrefix(line, "```")) {
			case "sh", "bash", "shell":
				cur = &docBlock{File: rel, Line: i + 1}
				if m := docMarkRE.FindStringSubmatch(strings.TrimSpace(prev)); m != nil {
					cur.Mark, cur.Arg = m[1], m[2]
				}
			}
		}
		prev = line
	}
	if inFence {
		t.Fatalf("%s: a code fence is not closed", rel)
	}
	return blocks
}

// docGivens are what a user has done before a block (<!-- doctest: given NAME -->),
// or does elsewhere, done by the test in the document's folder: what an earlier
// page of the docs did (in shell, with meshpki), or what the organisation's CA does.
var docGivens = map[string]func(t *testing.T, d *docEnv){
	// Clusters as new: no cacerts, no Lease, nothing istiod would publish.
	"new-clusters": func(t *testing.T, d *docEnv) {
		if err := d.k8s.Reset(context.Background()); err != nil {
			t.Fatal(err)
		}
	},
	// A mesh on a folder root: root/, bundles/ minted and installed in every cluster.
	"mesh": func(t *testing.T, d *docEnv) {
		d.sh(t, `meshpki root create --out root
meshpki intermediate create --root-dir root --cluster east --cluster west --cluster north --out bundles
meshpki install --bundles bundles --all-contexts`)
	},
	// A mesh on a root generated in the Vault PKI mount pki.
	"vault-mesh": func(t *testing.T, d *docEnv) {
		d.sh(t, `meshpki root create --vault-pki pki --enable-mount
meshpki intermediate create --vault-pki pki --cluster east --cluster west --cluster north --out bundles
meshpki install --bundles bundles --all-contexts`)
	},
	// An offline root: root.pem and root-key.pem (made by the organisation), and an
	// empty signed/.
	"offline-root": func(t *testing.T, d *docEnv) {
		d.sh(t, `meshpki root create --out offline --org "Example Corp"
cp offline/root-cert.pem root.pem && cp offline/root-key.pem root-key.pem && mkdir -p signed`)
	},
	// csrs/west/ca-csr.pem and csrs/north/ca-csr.pem signed by the offline root into
	// signed/<cluster>.crt, as Vault's sign-intermediate (the block before) would.
	"signed-west-north": func(t *testing.T, d *docEnv) {
		signCSR(t, d.dir, "offline", "csrs/west/ca-csr.pem", "signed/west.crt", 0)
		signCSR(t, d.dir, "offline", "csrs/north/ca-csr.pem", "signed/north.crt", 0)
	},
	// csrs/*/ca-csr.pem signed by the folder root root/ into signed/<cluster>.pem, as
	// the organisation's CA would; root.pem is that root's certificate.
	"signed-csrs": func(t *testing.T, d *docEnv) {
		csrs, _ := filepath.Glob(filepath.Join(d.dir, "csrs", "*", ca.CSRFile))
		if len(csrs) == 0 {
			t.Fatal("no csrs/*/ca-csr.pem to sign")
		}
		os.MkdirAll(filepath.Join(d.dir, "signed"), 0o700)
		for _, f := range csrs {
			rel, _ := filepath.Rel(d.dir, f)
			signCSR(t, d.dir, "root", rel, filepath.Join("signed", filepath.Base(filepath.Dir(f))+".pem"), 0)
		}
		d.sh(t, "cp root/root-cert.pem root.pem")
	},
	// issuing-csr/issuing-2027/ca-csr.pem signed by root-2027/ as a CA with pathlen 1
	// into signed/issuing-2027.pem.
	"signed-issuing-2027": func(t *testing.T, d *docEnv) {
		os.MkdirAll(filepath.Join(d.dir, "signed"), 0o700)
		signCSR(t, d.dir, "root-2027", "issuing-csr/issuing-2027/ca-csr.pem", "signed/issuing-2027.pem", 1)
	},
	// org-issuing-ca/: the organisation's issuing CA (pathlen 1) under the folder
	// root root/, as docs/hierarchies.md describes it.
	"org-issuing-ca": func(t *testing.T, d *docEnv) {
		if _, err := os.Stat(filepath.Join(d.dir, "root")); err != nil {
			d.sh(t, "meshpki root create --out root")
		}
		root, err := ca.ReadRootDir(filepath.Join(d.dir, "root"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		parent := &catest.CA{Cert: root.Cert, Key: root.Signer}
		parent.Sub(t, catest.Options{CN: "Org Issuing CA", PathLen: catest.PathLen(1)}).WriteCADir(t, filepath.Join(d.dir, "org-issuing-ca"))
	},
}

// signCSR signs the CSR file csrFile with the root in rootDir as a CA of pathlen
// pathLen (the CSR's subject, SANs and public key; the profile's key usages), into
// out; paths are relative to dir.
func signCSR(t *testing.T, dir, rootDir, csrFile, out string, pathLen int) {
	t.Helper()
	root, err := ca.ReadRootDir(filepath.Join(dir, rootDir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSRPEM(mustRead(t, filepath.Join(dir, csrFile)))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, DNSNames: csr.DNSNames,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, csr.PublicKey, root.Signer)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, out), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// sh runs a given's shell script in the document's folder.
func (d *docEnv) sh(t *testing.T, script string) {
	t.Helper()
	d.run(t, docBlock{File: "given", Text: script})
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// docEnv is the environment the blocks of one document run in.
type docEnv struct {
	dir string
	env []string
	k8s *testenv.K8s
}

// newDocEnv makes the folder and environment of one document: meshpki on PATH (this
// test binary, run as the CLI), $KUBECONFIG with clusters east, west and north,
// and a Vault of its own when the document uses one.
func newDocEnv(t *testing.T, usesVault bool) *docEnv {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, bin := t.TempDir(), t.TempDir()
	if err := os.Symlink(self, filepath.Join(bin, "meshpki")); err != nil {
		t.Fatal(err)
	}
	k := parallelMesh(t, "east", "west", "north")
	env := []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + dir,
		"KUBECONFIG=" + k.Kubeconfig,
		asCLI + "=1",
		"MESHPKI_CRL_SETTLE=1s",
		"LANG=C.UTF-8",
	}
	if usesVault {
		v := testenv.StartVaultT(t)
		env = append(env, "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token)
	}
	env = append(env, cliGORACE())
	return &docEnv{dir: dir, env: env, k8s: k}
}

// run runs one block with bash -e -o pipefail, as pasted into a shell that stops at
// the first failing command, and fails t with the block's output if it fails.
func (d *docEnv) run(t *testing.T, b docBlock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-x", "-c", b.Text)
	cmd.Dir, cmd.Env = d.dir, d.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	noKeys(t, out.String())
	if err != nil {
		t.Fatalf("%s: the block fails as written (%v):\n%s\n-- output:\n%s", b, err, b.Text, out.String())
	}
	t.Logf("%s: ran:\n%s", b, out.String())
}

// TestDocsRun runs every shell block of the docs (see the top of this file).
func TestDocsRun(t *testing.T) {
	t.Parallel()                                             // its own clusters and Vaults
	for _, tool := range []string{"bash", "openssl", "jq"} { // the docs call them
		testenv.Tool(t, tool)
	}
	for _, file := range docFiles(t) {
		blocks := parseDocBlocks(t, file)
		runs := slices.DeleteFunc(slices.Clone(blocks), func(b docBlock) bool { return b.Mark == "skip" || b.Mark == "synopsis" })
		if len(runs) == 0 {
			continue
		}
		data, _ := os.ReadFile(file)
		t.Run(filepath.Base(file), func(t *testing.T) {
			d := newDocEnv(t, bytes.Contains(data, []byte("--vault-")))
			for _, b := range runs {
				if b.Mark == "given" {
					for _, g := range strings.Fields(b.Arg) {
						docGivens[g](t, d)
					}
				}
				d.run(t, b)
			}
		})
	}
}

// TestDocsMarked: every shell block runs, or says why not; every given is known;
// and every meshpki command line of every block, run or not, names a command that
// exists, with flags that command has.
func TestDocsMarked(t *testing.T) {
	app := newApp(&env{})
	for _, bad := range []string{"meshpki install --no-such-flag", "meshpki no-such-command"} {
		if checkCommandLine(app, bad) == nil {
			t.Fatalf("%q passes the check", bad)
		}
	}
	total, ran := 0, 0
	for _, file := range docFiles(t) {
		for _, b := range parseDocBlocks(t, file) {
			total++
			switch b.Mark {
			case "skip":
				if len(b.Arg) < 10 {
					t.Errorf("%s: skipped without a reason: say what the harness lacks", b)
				}
			case "given":
				for _, g := range strings.Fields(b.Arg) {
					if docGivens[g] == nil {
						t.Errorf("%s: no given named %q", b, g)
					}
				}
				ran++
			case "":
				ran++
			}
			for _, line := range meshpkiLines(b.Text, func(w string) bool { return findCommand(app.Commands, w) != nil }) {
				if err := checkCommandLine(app, line); err != nil {
					t.Errorf("%s: %s: %v", b, line, err)
				}
			}
		}
	}
	t.Logf("%d shell blocks, %d run by TestDocsRun", total, ran)
}

// shellSeparators split a shell line into the commands it runs.
var shellSeparators = regexp.MustCompile(`&&|\|\||;|\||\$\(`)

// meshpkiLines returns the meshpki command lines of a block: continuation lines
// joined, trailing comments cut, split at && ; | and $( ; and the command a comment
// line names (an alternative) when isCommand takes the word after meshpki (prose such
// as "meshpki makes the key" is not a command).
func meshpkiLines(text string, isCommand func(string) bool) []string {
	var lines []string
	joined := strings.ReplaceAll(text, "\\\n", " ")
	sc := bufio.NewScanner(strings.NewReader(joined))
	for sc.Scan() {
		line := sc.Text()
		if c, ok := strings.CutPrefix(strings.TrimSpace(line), "#"); ok {
			// A comment's command (an alternative, "# or: meshpki ..."): checked, not run.
			if i := strings.Index(c, "meshpki "); i >= 0 {
				cmd := strings.TrimRight(c[i:], ".)")
				if f := strings.Fields(cmd); len(f) > 1 && isCommand(f[1]) {
					lines = append(lines, cmd)
				}
			}
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		for _, part := range shellSeparators.Split(line, -1) {
			part = strings.TrimSpace(part)
			if strings.HasPrefix(part, "meshpki ") {
				lines = append(lines, part)
			}
		}
	}
	return lines
}

// checkCommandLine finds the command a meshpki line names and checks its flags.
func checkCommandLine(app *cli.App, line string) error {
	words := strings.Fields(line)[1:]
	cmds := app.Commands
	var cmd *cli.Command
	for len(words) > 0 && !strings.HasPrefix(words[0], "-") {
		next := findCommand(cmds, words[0])
		if next == nil {
			break
		}
		cmd, cmds, words = next, next.Subcommands, words[1:]
	}
	if cmd == nil {
		return fmt.Errorf("no such command")
	}
	known := map[string]bool{"help": true, "h": true}
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	for _, f := range app.Flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	for _, w := range words {
		if !strings.HasPrefix(w, "-") || w == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
		name = strings.Trim(name, "[]()|")
		if name != "" && !known[name] {
			return fmt.Errorf("%s has no flag --%s", cmd.FullName(), name)
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
