package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/mesh"
)

// crlSignCommand is `meshpki crl sign`: the root source's own CRL, for the CAs
// below it that take it with --upstream-crl.
func crlSignCommand(e *env) *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write the CRL (PEM) to this `FILE` (atomically, mode 0644: a CRL is public) instead of stdout; never a key file, nor into the CA's own folder"},
		&cli.BoolFlag{Name: "force", Usage: "replace an existing --out file"},
		&cli.BoolFlag{Name: "dry-run", Usage: "sign in memory and print, record nothing"},
		outputFlag(),
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
than the time between two such visits: a CRL kept from before that lives shorter
than --crl-ttl is signed again, and so is one not valid yet (signed on a host whose
clock ran ahead). An existing --out is replaced only with --force, and never when it
holds a key or lies in the CA's own folder. With -o json, the CRL's number, next
update and revoked serials (and the file) are printed instead of the PEM, which then
needs --out.

Examples:
   meshpki crl sign --root-dir offline-root --crl-ttl 30d --out offline-root.crl
   meshpki crl sync --ca-dir issuing-ca --upstream-crl offline-root.crl --all-contexts`,
		Flags: append(flags, rootSourceFlags()...),
		Action: actionOf(e, func(c *cli.Context) *crlSignOptions {
			return &crlSignOptions{cmd: bindArgs(c), Source: bindRootSource(c, bindVaultConn(c)), Times: bindCRLSettings(c),
				Out: c.String("out"), Force: c.Bool("force"), DryRun: c.Bool("dry-run"), Output: c.String("output")}
		}),
	}
}

type crlSignOptions struct {
	cmd    cmdArgs
	Source rootSource
	Times  crlSettings
	Out    string
	Force  bool
	DryRun bool
	Output string
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
	var err error
	if o.Output, err = parseOutputFormat(o.Output); err != nil {
		return err
	}
	if o.Output == "json" && o.Out == "" {
		return inputError(errors.New("-o json prints what was signed, not the CRL: give --out FILE for the CRL"))
	}
	return o.Times.Validate()
}

// crlSignResult is crl sign's JSON.
type crlSignResult struct {
	mesh.CRLInfo
	Out    string `json:"out,omitempty"`
	DryRun bool   `json:"dryRun,omitempty"`
}

// Run signs the source's CRL when due and hands it out: stdout, or --out
// (ca.WriteOutputFile: never over a key, nor into the source's folder).
func (o *crlSignOptions) Run(ctx context.Context, e *env) error {
	outOpts := ca.OutputFileOptions{Force: o.Force, Perm: 0o644, Protect: []string{o.Source.Dir, o.Source.CADir}}
	if o.Out != "" {
		// Before signing: a refused --out must not leave a CRL signed and kept.
		if err := outError(ca.CheckOutputFile(o.Out, outOpts)); err != nil {
			return err
		}
	}
	iss, err := o.Source.issuer(ctx, e)
	if err != nil {
		return err
	}
	auth, err := crlAuthority(ctx, e, o.Source, iss)
	if err != nil {
		return err
	}
	crl, changed, err := auth.CRL(ctx, nil, ca.CRLOptions{TTL: o.Times.ttl, Refresh: o.Times.refresh, DryRun: o.DryRun, CoverTTL: true})
	if err != nil {
		return err
	}
	e.log.Info(map[bool]string{true: "CRL signed", false: "CRL kept"}[changed], "ca", crl.Issuer.String(), "number", crl.Number.Text(16),
		"revoked", len(crl.RevokedCertificateEntries), "nextUpdate", crl.NextUpdate.UTC().Format(time.RFC3339), "dryRun", o.DryRun)
	data := ca.EncodeCRLsPEM(crl)
	if o.Out == "" {
		_, err := e.stdout.Write(data)
		return err
	}
	if err := outError(ca.WriteOutputFile(o.Out, data, outOpts)); err != nil {
		return err
	}
	if o.Output == "json" {
		return writeJSON(e.stdout, true, crlSignResult{CRLInfo: mesh.DescribeCRL(crl, changed), Out: o.Out, DryRun: o.DryRun})
	}
	return nil
}
