package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/textfmt"
)

// verifyOptions is "verify": its flags and bundle folders as given (bind), then
// (Validate) the checks they mean.
type verifyOptions struct {
	cmd          cmdArgs
	MTLS         bool
	MinRemaining string
	Strict       bool
	AllowRootKey bool
	Output       string

	check ca.VerifyOptions // set by Validate
}

func verifyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "verify bundle folders as istiod would, and that they share one root",
		ArgsUsage: "DIR [DIR ...]",
		Description: `Checks each bundle folder (Istio's or the tls.* layout) with istiod's rules: all
files present, an unencrypted key that matches ca-cert.pem, a CA certificate that
verifies up to root-cert.pem through cert-chain.pem. Then stricter ones: chain order,
self-signed roots, validity, key strength (errors), pathlen and remaining life
(warnings). Finally all bundles must trust the same roots.

With --mtls each bundle also signs a throwaway workload certificate (SPIFFE URI, as
istiod would), and every ordered pair of bundles must accept each other: each
workload's chain is checked against every distinct set of roots in the mesh, and a
real mutual-TLS handshake over loopback runs between one representative pair per
pair of classes (bundles that trust the same roots and verify alike); each
handshake result says how many pairs it stands for.

Exit status: 0 when every bundle passes, 1 when any fails a check (an invalid
file in a bundle included), 2 on bad usage or a folder or file that cannot be read
(missing, a FIFO or device, over 4 MiB).

Examples:
   meshpki verify bundles/east bundles/west
   meshpki verify --mtls --output json bundles/*`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "mtls", Usage: "also check that workloads of every pair of bundles accept each other over mutual TLS (real handshakes, one per pair of classes)"},
			minRemainingFlag("warn when an intermediate has less life left"),
			&cli.BoolFlag{Name: "strict", Usage: "treat warnings as failures"},
			allowRootKeyFlag(),
			outputFlag(),
		},
		Action: actionOf(e, bindVerify),
	}
}

func bindVerify(c *cli.Context) *verifyOptions {
	return &verifyOptions{
		cmd:          bindArgs(c),
		MTLS:         c.Bool("mtls"),
		MinRemaining: c.String("min-remaining"),
		Strict:       c.Bool("strict"),
		AllowRootKey: c.Bool("allow-root-key"),
		Output:       c.String("output"),
	}
}

// Validate checks that folders are given, and the flags.
func (o *verifyOptions) Validate() error {
	if len(o.cmd.Args) == 0 {
		return inputError(errors.New("verify needs at least one bundle folder: meshpki verify DIR [DIR ...]"))
	}
	minRem, err := parseDuration("min-remaining", o.MinRemaining)
	if err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	o.check = ca.VerifyOptions{MinRemaining: minRem, AllowRootKey: o.AllowRootKey}
	return nil
}

// allowRootKeyFlag accepts a bundle whose signing CA is the mesh's root itself.
func allowRootKeyFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-root-key", Usage: "accept a bundle whose ca-cert.pem is the mesh's root itself (its key, the root key, then sits in the cluster)"}
}

type bundleVerdict struct {
	Dir string `json:"dir"`
	OK  bool   `json:"ok"`
	*ca.Report
}

// handshakeResult is one real handshake, between Server and Client, standing for
// Pairs ordered pairs of bundles: every server of Server's class with every client
// of Client's (a class: bundles that trust the same roots and whose chains verify
// alike against every trust set of the mesh).
type handshakeResult struct {
	Server string `json:"server"`
	Client string `json:"client"`
	Pairs  int    `json:"pairs"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

type verifyResult struct {
	OK         bool              `json:"ok"`
	Bundles    []bundleVerdict   `json:"bundles"`
	Mesh       []ca.Problem      `json:"mesh"`
	Handshakes []handshakeResult `json:"handshakes,omitempty"`
}

// Run verifies each bundle folder (ca.ParseBundle), that they share one root and,
// with --mtls, that they accept each other; any failure exits 1.
func (o *verifyOptions) Run(ctx context.Context, e *env) error {
	res := verifyResult{OK: true, Mesh: []ca.Problem{}}
	var reps []*ca.Report
	var names []string
	bundles := map[int]*ca.Bundle{}
	for _, dir := range o.cmd.Args {
		st, err := os.Stat(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return inputError(fmt.Errorf("%s: no such bundle folder", dir))
			}
			return inputError(err)
		}
		if !st.IsDir() {
			return inputError(fmt.Errorf("%s: not a folder (verify takes bundle folders)", dir))
		}
		files, err := ca.ReadDir(dir)
		if err != nil {
			return inputError(err)
		}
		b, rep, _ := ca.ParseBundle(files, o.check)
		ok := rep.OK()
		if o.Strict && len(rep.Problems) > 0 {
			ok = false
		}
		if b != nil {
			bundles[len(res.Bundles)] = b
		}
		res.OK = res.OK && ok
		res.Bundles = append(res.Bundles, bundleVerdict{Dir: dir, OK: ok, Report: rep})
		reps = append(reps, rep)
		names = append(names, dir)
	}
	if p := ca.SameRoots(names, reps); p != nil {
		res.Mesh = append(res.Mesh, *p)
		res.OK = false
	}
	// With CRLs: each bundle's ca-crl.pem must cover every CA of every other bundle.
	var members []ca.CRLMember
	for i, name := range names {
		b := bundles[i]
		if b == nil {
			continue
		}
		m := ca.CRLMember{Name: name, Chain: b.Chain}
		if b.CRLFile != nil {
			m.CRLs, _ = ca.ParseCRLsPEM(b.CRLFile) // a bad file is the bundle's own error
		}
		members = append(members, m)
	}
	for _, p := range ca.CheckMeshCRLs(members, time.Now()) {
		res.Mesh = append(res.Mesh, p)
		if p.Severity == ca.SeverityError || o.Strict {
			res.OK = false
		}
	}
	if o.MTLS {
		hs, ok := mtlsMatrix(ctx, e, o.cmd.Args, bundles)
		res.Handshakes = hs
		res.OK = res.OK && ok
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, res); err != nil {
			return err
		}
	} else {
		printVerify(e, res)
	}
	if !res.OK {
		return silentFailure
	}
	return nil
}

// mtlsMatrix issues one workload per valid bundle and works out, for every ordered
// pair, whether they accept each other: each workload chain is checked against
// every distinct trust set, and one real handshake runs per ordered pair of classes
// (ca.CheckMeshMTLS), so 1,000 bundles take seconds, not hours.
func mtlsMatrix(ctx context.Context, e *env, dirs []string, bundles map[int]*ca.Bundle) ([]handshakeResult, bool) {
	ok := true
	var out []handshakeResult
	var ws []*ca.Workload
	var wdirs []string
	for i := range dirs {
		b := bundles[i]
		if b == nil {
			continue
		}
		sa := fmt.Sprintf("workload-%d", i)
		w, err := b.IssueWorkload(ca.SPIFFEID("cluster.local", "default", sa), time.Hour)
		if err != nil {
			out = append(out, handshakeResult{Server: dirs[i], Client: dirs[i], Pairs: 1, Error: "issue workload certificate: " + err.Error()})
			ok = false
			continue
		}
		ws, wdirs = append(ws, w), append(wdirs, dirs[i])
	}
	m, err := ca.CheckMeshMTLS(ctx, ws)
	if err != nil {
		return append(out, handshakeResult{Error: err.Error()}), false
	}
	e.log.Debug("mtls classes", "workloads", len(ws), "classes", len(m.Classes), "handshakes", len(m.Results))
	for _, r := range m.Results {
		h := handshakeResult{Server: wdirs[r.Server], Client: wdirs[r.Client], Pairs: r.Pairs, OK: r.Err == nil}
		if r.Err != nil {
			h.Error = r.Err.Error()
			ok = false
		}
		e.log.Debug("handshake", "server", h.Server, "client", h.Client, "pairs", h.Pairs, "ok", h.OK)
		out = append(out, h)
	}
	if len(ws) < len(dirs) {
		ok = false
	}
	return out, ok
}

func printVerify(e *env, res verifyResult) {
	w := e.stdout
	for _, b := range res.Bundles {
		verdict := "OK  "
		if !b.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "%s %s", verdict, b.Dir)
		if b.Subject != "" {
			left := time.Until(b.NotAfter)
			fmt.Fprintf(w, "  %s  %s  not after %s (%s left)", b.Subject, b.KeyType, b.NotAfter.Format(time.RFC3339), textfmt.Duration(left))
		}
		if len(b.RootFingerprints) > 0 {
			fmt.Fprintf(w, "  root %s", textfmt.Fingerprint(b.RootFingerprints[0]))
			if n := len(b.RootFingerprints); n > 1 {
				fmt.Fprintf(w, " (+%d more)", n-1)
			}
		}
		fmt.Fprintln(w)
		for _, p := range b.Problems {
			fmt.Fprintf(w, "     %s: %s\n", p.Severity, p)
		}
	}
	for _, p := range res.Mesh {
		fmt.Fprintf(w, "FAIL mesh: %s\n", problemText(p))
	}
	if len(res.Bundles) > 1 && len(res.Mesh) == 0 {
		fmt.Fprintf(w, "OK   mesh: all %d bundles trust the same roots\n", len(res.Bundles))
	}
	if len(res.Handshakes) > 0 {
		n, total := 0, 0
		for _, h := range res.Handshakes {
			total += h.Pairs
			if h.OK {
				n += h.Pairs
				continue
			}
			fmt.Fprintf(w, "FAIL mtls: server %s, client %s", h.Server, h.Client)
			if h.Pairs > 1 {
				fmt.Fprintf(w, " (and %d more pairs alike)", h.Pairs-1)
			}
			fmt.Fprintf(w, ": %s\n", h.Error)
		}
		fmt.Fprintf(w, "%s mtls: %d of %d pairs accept each other (%d handshakes, one per pair of classes of bundles)\n",
			map[bool]string{true: "OK  ", false: "FAIL"}[n == total], n, total, len(res.Handshakes))
	}
}
