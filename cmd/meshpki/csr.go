package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
)

// The offline-root flow: "intermediate csr" writes a key and CSR per cluster,
// a CA outside meshpki signs the CSRs, "intermediate import" completes each
// folder into a bundle, "intermediate status" says where each stands.

// csrOptions is "intermediate csr" bound from its flags.
type csrOptions struct {
	cmd          cmdArgs
	Clusters     []string
	ClustersFrom string
	Out          string
	KeyType      string
	Org          string
	CommonName   string
	SANs         []string // nil: the default
	Force        bool
	Output       string

	profiles []ca.Profile
}

func intermediateCSRCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "csr",
		Usage: "write a key and a CSR per cluster, for a CA outside meshpki (an offline root) to sign",
		Description: `For each cluster, writes OUT/<cluster>/ with ca-key.pem (0600; it never leaves
the folder) and ca-csr.pem: a certificate request carrying the whole profile
(O=<org>, CN=Intermediate CA, L=<cluster>, SAN DNS:istiod.istio-system.svc, and
requested extensions CA:true pathlen:0, keyCertSign+cRLSign+digitalSignature, no
extended key usage), so that openssl ca, openssl x509 -req -copy_extensions copy,
Vault's sign-intermediate, step or AD CS can sign it as it stands. Then import each
signed certificate with 'meshpki intermediate import'. Existing folders are refused
unless --force (each is kept as <cluster>.bak-<time>). See docs/hierarchies.md.

Examples:
   meshpki intermediate csr --cluster east --cluster west --out csrs
   meshpki intermediate csr --clusters-from clusters.txt --out csrs --key-type rsa-3072
   openssl x509 -req -in csrs/east/ca-csr.pem -CA root.pem -CAkey root-key.pem -days 365 -copy_extensions copy -out signed/east.pem`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "cluster", Aliases: []string{"c"}, Usage: "cluster name (repeat for several)"},
			&cli.StringFlag{Name: "clusters-from", Usage: "file with one cluster name per line (# comments allowed)"},
			&cli.StringFlag{Name: "out", Usage: "folder to write one CSR folder per cluster into"},
			&cli.StringFlag{Name: "key-type", Value: string(ca.ECDSAP256), Usage: "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"},
			orgFlag("", "subject O"),
			&cli.StringFlag{Name: "common-name", Value: ca.DefaultIntermediateCN, Usage: "subject CN (L= is the cluster name)"},
			&cli.StringSliceFlag{Name: "san", Usage: "DNS SAN, repeatable; replaces the default " + ca.DefaultIstiodSAN},
			&cli.BoolFlag{Name: "force", Usage: "replace existing CSR folders (each is kept as <cluster>.bak-<time>)"},
			outputFlag(),
		},
		Action: actionOf(e, func(c *cli.Context) *csrOptions {
			o := &csrOptions{
				cmd: bindArgs(c), Clusters: c.StringSlice("cluster"), ClustersFrom: c.String("clusters-from"), Out: c.String("out"),
				KeyType: c.String("key-type"), Org: c.String("org"), CommonName: c.String("common-name"),
				Force: c.Bool("force"), Output: c.String("output"),
			}
			if c.IsSet("san") {
				o.SANs = c.StringSlice("san")
			}
			return o
		}),
	}
}

// Validate checks the options and builds one profile per cluster.
func (o *csrOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.cmd.require("out", o.Out); err != nil {
		return err
	}
	clusters, err := clusterNames(o.Clusters, o.ClustersFrom)
	if err != nil {
		return err
	}
	kt, err := ca.ParseKeyType(o.KeyType)
	if err != nil {
		return inputError(fmt.Errorf("--key-type: %w", err))
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	if strings.TrimSpace(o.Org) == "" {
		return inputError(errors.New("--org must not be empty"))
	}
	for _, name := range clusters {
		p := ca.IntermediateProfile(name, o.Org)
		p.Subject.CommonName = o.CommonName
		if o.SANs != nil {
			p.DNSNames = o.SANs
		}
		p.KeyType = kt
		if err := p.Validate(); err != nil {
			return inputError(err)
		}
		o.profiles = append(o.profiles, p)
	}
	return nil
}

// clusterNames joins --cluster and --clusters-from and checks the list
// (ca.CheckClusterNames).
func clusterNames(names []string, from string) ([]string, error) {
	names = slices.Clone(names)
	if from != "" {
		more, err := ca.ReadClusterList(from)
		if err != nil {
			return nil, inputError(err)
		}
		names = append(names, more...)
	}
	if len(names) == 0 {
		return nil, inputError(errors.New("no cluster given: pass --cluster NAME (repeatable) or --clusters-from FILE"))
	}
	if err := ca.CheckClusterNames(names); err != nil {
		return nil, inputError(fmt.Errorf("--cluster: %w", err))
	}
	return names, nil
}

// Run writes every CSR folder, or none (ca.WriteCSRDirs).
func (o *csrOptions) Run(ctx context.Context, e *env) error {
	prog := newProgress(e, "CSR written", len(o.profiles))
	st, backups, err := ca.WriteCSRDirs(ctx, o.Out, o.profiles, ca.CSRWriteOptions{Force: o.Force, Log: e.log,
		Progress: func(cluster string) { prog.item(cluster, nil) }})
	prog.finish()
	switch {
	case errors.Is(err, ca.ErrExists):
		return inputError(fmt.Errorf("%w (pass --force to replace; the old one is kept as a backup)", err))
	case st == nil && err != nil:
		return failed(fmt.Errorf("--out: %w", err))
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, err == nil, csrList{CSRs: st}); err != nil {
			return err
		}
	} else {
		for _, s := range st {
			fmt.Fprintf(e.stdout, "waiting  %s  %s  %s", s.Cluster, filepath.Join(s.Dir, ca.CSRFile), s.Subject)
			if b := backups[s.Dir]; b != "" {
				fmt.Fprintf(e.stdout, "  (previous kept in %s)", b)
			}
			fmt.Fprintln(e.stdout)
		}
	}
	return failed(err)
}

// importOptions is "intermediate import" bound from its flags.
type importOptions struct {
	cmd          cmdArgs
	Out          string
	Clusters     []string
	Cert         string
	Signed       string
	Chain        string
	Root         string
	MinRemaining string
	TrustDomain  string
	Force        bool
	Output       string

	minRemaining time.Duration
	certs        map[string]string // cluster -> signed certificate file
}

func intermediateImportCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "import",
		Usage: "complete CSR folders with the certificates a CA outside meshpki signed",
		Description: `Checks each signed certificate and, only if it passes, completes OUT/<cluster>/
into a cacerts bundle (cert-chain.pem: certificate, --chain, root; root-cert.pem:
--root; ca-cert.pem last, in one atomic folder swap). It must be for the folder's
key, CA:true with pathlen 0, with keyCertSign, with no extended key usage (or both
serverAuth and clientAuth), valid for at least --min-remaining, not outlive any CA
above it, and chain through --chain to a root in --root; then istiod's checks run.
Otherwise one reason, naming the file, and the folder stays as it was. With
--signed DIR, every waiting cluster (or each --cluster) takes DIR/<cluster>.pem
(or .crt). A folder already imported is refused unless --force.

Examples:
   meshpki intermediate import --out csrs --cluster east --cert signed/east.pem --root root.pem
   meshpki intermediate import --out csrs --signed signed --chain issuing-ca.pem --root root.pem
   meshpki install --bundles csrs --all-contexts`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "folder of CSR folders (meshpki intermediate csr --out)"},
			&cli.StringSliceFlag{Name: "cluster", Aliases: []string{"c"}, Usage: "cluster to import (repeatable; default with --signed: every waiting one)"},
			&cli.StringFlag{Name: "cert", Usage: "the signed certificate of the one --cluster (PEM; text around the block is fine)"},
			&cli.StringFlag{Name: "signed", Usage: "folder of signed certificates named <cluster>.pem or <cluster>.crt"},
			&cli.StringFlag{Name: "chain", Usage: "certificates between the signed ones and the root, nearest first (PEM)"},
			&cli.StringFlag{Name: "root", Usage: "the root(s) to trust, root-cert.pem of every bundle (PEM)"},
			minRemainingFlag("least life a signed certificate must have left"),
			trustDomainFlag(""),
			&cli.BoolFlag{Name: "force", Usage: "replace an imported certificate (the previous folder is kept as <cluster>.bak-<time>)"},
			outputFlag(),
		},
		Action: actionOf(e, func(c *cli.Context) *importOptions {
			return &importOptions{
				cmd: bindArgs(c), Out: c.String("out"), Clusters: c.StringSlice("cluster"), Cert: c.String("cert"), Signed: c.String("signed"),
				Chain: c.String("chain"), Root: c.String("root"), MinRemaining: c.String("min-remaining"),
				TrustDomain: c.String("trust-domain"), Force: c.Bool("force"), Output: c.String("output"),
			}
		}),
	}
}

// Validate checks the options and finds each cluster's signed certificate file.
func (o *importOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	switch {
	case o.Out == "":
		return o.cmd.require("out", o.Out)
	case o.Root == "":
		return inputError(errors.New("--root is required: the root the signed certificates chain to"))
	case (o.Cert == "") == (o.Signed == ""):
		return inputError(errors.New("pass one of --cert FILE (with one --cluster) and --signed DIR"))
	case o.Cert != "" && len(o.Clusters) != 1:
		return inputError(errors.New("--cert needs exactly one --cluster"))
	}
	for _, n := range o.Clusters {
		if err := ca.ValidateClusterName(n); err != nil {
			return inputError(fmt.Errorf("--cluster: %w", err))
		}
	}
	// As verify and status: a positive duration (0 would silently mean the
	// default, 30d).
	d, err := parseDuration("min-remaining", o.MinRemaining)
	if err != nil {
		return err
	}
	o.minRemaining = d
	if err := checkTrustDomain(o.TrustDomain); err != nil {
		return err
	}
	if _, err := parseOutputFormat(o.Output); err != nil {
		return err
	}
	o.certs = map[string]string{}
	if o.Cert != "" {
		o.certs[o.Clusters[0]] = o.Cert
		return nil
	}
	names := o.Clusters
	if len(names) == 0 {
		waiting, err := ca.WaitingClusters(o.Out)
		if err != nil {
			return inputError(fmt.Errorf("--out: %w", err))
		}
		if names = waiting; len(names) == 0 {
			return inputError(fmt.Errorf("--out %s: no cluster is waiting for a signed certificate", o.Out))
		}
	}
	for _, n := range names {
		found, err := ca.FindSignedFile(o.Signed, n)
		if err != nil {
			return inputError(fmt.Errorf("--signed %s: %w", o.Signed, err))
		}
		o.certs[n] = found
	}
	return nil
}

// Run imports each cluster's certificate (ca.ImportSignedDirs); one refused
// certificate does not stop the others, and the exit code says whether any was
// refused.
func (o *importOptions) Run(ctx context.Context, e *env) error {
	req := ca.ImportRequest{Certs: o.certs, Chain: o.Chain, Roots: o.Root, Force: o.Force, ImportOptions: ca.ImportOptions{MinRemaining: o.minRemaining, TrustDomain: o.TrustDomain}}
	var err error
	if req.RootsPEM, err = ca.ReadInputFile(o.Root); err != nil {
		return inputError(err)
	}
	if o.Chain != "" {
		if req.ChainPEM, err = ca.ReadInputFile(o.Chain); err != nil {
			return inputError(err)
		}
	}
	prog := newProgress(e, "import", len(o.certs))
	results, err := ca.ImportSignedDirs(ctx, o.Out, req, e.log, func(cluster string, err error) { prog.item(cluster, err) })
	prog.finish()
	if err != nil {
		return failed(fmt.Errorf("--out: %w", err))
	}
	var firstErr error
	for i, r := range results {
		if r.Err != nil {
			results[i].Error = adviseText(r.Err)
			firstErr = cmp.Or(firstErr, r.Err)
		}
	}
	if o.Output == "json" {
		if err := writeJSON(e.stdout, firstErr == nil, importList{Imports: results}); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if r.Error != "" {
				fmt.Fprintf(e.stdout, "REFUSED   %s: %s\n", r.Cluster, r.Error)
				continue
			}
			fmt.Fprintf(e.stdout, "imported  %s  %s  issuer %s  not after %s\n", r.Cluster, r.Dir, r.Issuer, r.NotAfter.Format(time.RFC3339))
		}
	}
	return inputError(firstErr)
}

// csrStatusOptions is "intermediate status".
type csrStatusOptions struct {
	cmd    cmdArgs
	Out    string
	Output string
}

// Validate checks the options.
func (o *csrStatusOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.cmd.require("out", o.Out); err != nil {
		return err
	}
	_, err := parseOutputFormat(o.Output)
	return err
}

// Run reads every cluster folder of Out (ca.ReadCSRDirs) and prints where each
// stands.
func (o *csrStatusOptions) Run(_ context.Context, e *env) error {
	st, err := ca.ReadCSRDirs(o.Out)
	if err != nil {
		return inputError(fmt.Errorf("--out: %w", err))
	}
	if o.Output == "json" {
		broken := brokenCSRDirs(st)
		if err := writeJSON(e.stdout, broken == nil, csrList{CSRs: st}); err != nil {
			return err
		}
		return broken
	}
	for _, s := range st {
		switch s.State {
		case ca.CSRWaiting:
			fmt.Fprintf(e.stdout, "waiting   %s  CSR of %s  %s\n", s.Cluster, s.Asked.Format(time.DateOnly), s.Subject)
		case ca.CSRImported:
			fmt.Fprintf(e.stdout, "imported  %s  serial %s  issuer %s  not after %s\n", s.Cluster, s.Serial, s.Issuer, s.NotAfter.Format(time.RFC3339))
		default:
			fmt.Fprintf(e.stdout, "broken    %s  %s\n", s.Cluster, s.Problem)
		}
	}
	return brokenCSRDirs(st)
}

// brokenCSRDirs is exit 1 naming the broken folders, if any.
func brokenCSRDirs(st []ca.CSRDirStatus) error {
	var broken []string
	for _, s := range st {
		if s.State == ca.CSRBroken {
			broken = append(broken, s.Dir)
		}
	}
	if len(broken) == 0 {
		return nil
	}
	return failed(fmt.Errorf("broken (neither waiting nor imported): %s", strings.Join(broken, ", ")))
}

func intermediateStatusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show which CSR folders wait for a signed certificate and which were imported",
		Description: `One line per cluster folder of OUT: waiting (the CSR, when it was written, its
subject), imported (serial, issuer, not after), or broken (what is missing).
Exits 1 when a folder is broken.

Examples:
   meshpki intermediate status --out csrs
   meshpki intermediate status --out csrs -o json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "folder of CSR folders"},
			outputFlag(),
		},
		Action: actionOf(e, func(c *cli.Context) *csrStatusOptions {
			return &csrStatusOptions{cmd: bindArgs(c), Out: c.String("out"), Output: c.String("output")}
		}),
	}
}
