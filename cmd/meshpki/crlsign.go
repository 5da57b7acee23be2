package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/atomicfs"
)

// crlSignCommand is `meshpki crl sign`: the root source's own CRL, for the CAs
// below it that take it with --upstream-crl.
func crlSignCommand(e *env) *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write the CRL (PEM) to this `FILE` (atomically, mode 0644: a CRL is public) instead of stdout"},
		&cli.BoolFlag{Name: "dry-run", Usage: "sign in memory and print, record nothing"},
	}
	flags = append(flags, crlSettingFlags("")[:2]...) // --crl-ttl, --crl-refresh
	return &cli.Command{
		Name:  "sign",
		Usage: "sign (when due) and print the root source's own CRL, touching no cluster",
		Description: `Signs the CRL of the root source when it is missing or due, as crl sync does
(` + ca.RootCRLFile + ` beside a root folder, ` + ca.SigningCACRLFile + ` in an issuing CA's --ca-dir,
PATH/crl beside a Vault KV secret, or the Vault PKI issuer's CRL), and prints it.
This is how an offline root kept by meshpki gives its CRL to a mesh signed by an
issuing CA below it: run it where the root is, carry the file to where the mesh's
crl sync and rotate run, and pass it with --upstream-crl. Give it a --crl-ttl longer
than the time between two such visits.

Examples:
   meshpki crl sign --root-dir offline-root --crl-ttl 30d --out offline-root.crl
   meshpki crl sync --ca-dir issuing-ca --upstream-crl offline-root.crl --all-contexts`,
		Flags: append(flags, rootSourceFlags()...),
		Action: actionOf(e, func(c *cli.Context) *crlSignOptions {
			return &crlSignOptions{cmd: bindArgs(c), Source: bindRootSource(c, bindVaultConn(c)), Times: bindCRLSettings(c),
				Out: c.String("out"), DryRun: c.Bool("dry-run")}
		}),
	}
}

type crlSignOptions struct {
	cmd    cmdArgs
	Source rootSource
	Times  crlSettings
	Out    string
	DryRun bool
}

func (o *crlSignOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.Source.Validate(); err != nil {
		return err
	}
	if st, err := os.Stat(o.Out); o.Out != "" && err == nil && !st.Mode().IsRegular() {
		return inputError(fmt.Errorf("--out %s: is a folder or a special file, not a file meshpki may replace", o.Out))
	}
	return o.Times.Validate()
}

func (o *crlSignOptions) Run(ctx context.Context, e *env) error {
	iss, err := o.Source.issuer(ctx, e)
	if err != nil {
		return err
	}
	auth, err := crlAuthority(ctx, e, o.Source, iss)
	if err != nil {
		return err
	}
	crl, changed, err := auth.CRL(ctx, nil, ca.CRLOptions{TTL: o.Times.ttl, Refresh: o.Times.refresh, DryRun: o.DryRun})
	if err != nil {
		if o.Source.UsesVault() {
			return vaultError(err)
		}
		return err
	}
	verb := "CRL kept"
	if changed {
		verb = "CRL signed"
	}
	e.log.Info(verb, "ca", crl.Issuer.String(), "number", crl.Number.Text(16), "revoked", len(crl.RevokedCertificateEntries), "nextUpdate", crl.NextUpdate.UTC().Format(time.RFC3339), "dryRun", o.DryRun)
	data := ca.EncodeCRLsPEM(crl)
	if o.Out == "" {
		_, err := e.stdout.Write(data)
		return err
	}
	if err := atomicfs.WriteFile(o.Out, data, 0o644); err != nil {
		return fmt.Errorf("--out %s: %w", o.Out, err)
	}
	return nil
}
