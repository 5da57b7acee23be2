package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
	TrustDomain  string
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
			trustDomainFlag(""),
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
		TrustDomain:  c.String("trust-domain"),
		Output:       c.String("output"),
	}
}

// Validate checks that folders are given, and the flags.
func (o *verifyOptions) Validate() error {
	if len(o.cmd.Args) == 0 {
		return inputError(errors.New("verify needs at least one bundle folder: meshpki verify DIR [DIR ...]"))
	}
	if err := o.cmd.flagsFirst(); err != nil {
		return err
	}
	minRem, err := parseDuration("min-remaining", o.MinRemaining)
	if err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if err := checkTrustDomain(o.TrustDomain); err != nil {
		return err
	}
	o.check = ca.VerifyOptions{MinRemaining: minRem, AllowRootKey: o.AllowRootKey, TrustDomain: o.TrustDomain}
	return nil
}

// allowRootKeyFlag accepts a bundle whose signing CA is the mesh's root itself.
func allowRootKeyFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-root-key", Usage: "accept a bundle whose ca-cert.pem is the mesh's root itself (its key, the root key, then sits in the cluster)"}
}

// dirs are the folders to verify: a backup that --force kept (<cluster>.bak-<time>)
// among other folders, as "verify bundles/*" passes it, is not a cluster of the
// mesh and is left out, logged; named alone (or only backups), it is verified.
func (o *verifyOptions) dirs(e *env) []string {
	var dirs, backups []string
	for _, d := range o.cmd.Args {
		if ca.IsBackupName(filepath.Base(filepath.Clean(d))) {
			backups = append(backups, d)
			continue
		}
		dirs = append(dirs, d)
	}
	if len(dirs) == 0 {
		return o.cmd.Args
	}
	for _, b := range backups {
		e.log.Info("left out a backup folder (a bundle kept by --force, not a cluster of the mesh); name it alone to verify it", "folder", b)
	}
	return dirs
}

// Run verifies each bundle folder, that they make one mesh and, with --mtls, that
// they accept each other (ca.VerifyDirs); any failure exits 1.
func (o *verifyOptions) Run(ctx context.Context, e *env) error {
	res, err := ca.VerifyDirs(ctx, o.dirs(e), ca.VerifyDirsOptions{Check: o.check, Strict: o.Strict, MTLS: o.MTLS, Log: e.log})
	if err != nil {
		return inputError(err)
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, res.OK, res); err != nil {
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

func printVerify(e *env, res *ca.DirsReport) {
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
	// Only bundles whose roots were read are compared: a folder without
	// root-cert.pem, or a CSR folder still waiting, is not said to agree.
	var without []string
	for _, b := range res.Bundles {
		if len(b.RootFingerprints) == 0 {
			without = append(without, b.Dir)
		}
	}
	compared := len(res.Bundles) - len(without)
	switch {
	case len(res.Bundles) < 2 || len(res.Mesh) > 0:
	case len(without) == 0:
		fmt.Fprintf(w, "OK   mesh: all %d bundles trust the same roots\n", len(res.Bundles))
	case compared >= 2:
		fmt.Fprintf(w, "OK   mesh: the %d bundles with roots trust the same roots; not compared (no roots read): %s\n", compared, ca.SummarizeNames(without, 10))
	default:
		fmt.Fprintf(w, "SKIP mesh: roots not compared (fewer than 2 bundles with roots read; none read of %s)\n", ca.SummarizeNames(without, 10))
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
		fmt.Fprintf(w, "%s mtls: %d of %d pairs accept each other (%s, one per pair of classes of bundles)\n",
			map[bool]string{true: "OK  ", false: "FAIL"}[n == total], n, total, plural(len(res.Handshakes), "handshake"))
	}
}
