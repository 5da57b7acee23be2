package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
	"github.com/meshpki/meshpki/mesh"
)

// statusOptions is "status": its flags as given (bind), then (Validate) the
// k8s.StatusOptions they mean.
type statusOptions struct {
	cmd          cmdArgs
	Clusters     clusterOptions
	MinRemaining string
	Strict       bool
	RenewBefore  string
	IstiodGrace  time.Duration
	// Output is --output as given; "table" is status' old name for text.
	Output string

	// Set by Validate.
	output string
	status k8s.StatusOptions
}

func statusCommand(e *env) *cli.Command {
	flags := append(clusterFlags(true),
		minRemainingFlag("warn when an intermediate has less life left"),
		&cli.BoolFlag{Name: "strict", Usage: "treat warnings as failures"},
		&cli.StringFlag{Name: "renew-before", Usage: "rotate's renewal rule, for each cluster's renewAt and due in -o json (default: a third of the lifetime), e.g. --renew-before 60d"},
		&cli.DurationFlag{Name: "istiod-grace", Value: k8s.DefaultIstiodGrace, Usage: "time istiod gets to take a cacerts change before it is reported refused"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "result format on stdout: text or json (table, its old name, means text)"},
	)
	return &cli.Command{
		Name:  "status",
		Usage: "show every cluster's installed intermediate CA, and whether the mesh shares one root",
		Description: `Reads Secret cacerts from every chosen cluster (in parallel) and verifies it as istiod
would. One row per cluster: verdict, issuer, subject, serial, not-after, time left,
root fingerprint. Then the problems found, and a mesh-wide line that flags clusters
whose root differs from the others', or whose cacerts is missing or broken.

Verdicts: ok; warning (istiod accepts it, a stricter check does not, e.g. it
expires within --min-remaining); broken (istiod would refuse it); missing (no
cacerts: istiod signs with its own self-signed root); error (the cluster could not
be read).

The ISTIOD column compares the roots istiod publishes (ConfigMap istio-ca-root-cert,
what every proxy trusts, or, when istiod runs with ENABLE_CLUSTER_TRUST_BUNDLE_API,
ClusterTrustBundle istio.io:istiod-ca:root-cert, shown as "(ctb)") with the roots in
cacerts: loaded; not-yet (cacerts changed
within --istiod-grace: kubelet has not updated the volume yet); refused since T
(istiod kept its old CA; the likely reason follows: the byte rule of Istio 1.20-1.29,
ISTIO_MULTIROOT_MESH off, a root switch); self-signed (istiod started before cacerts
existed and signs with its own CA until restarted); no-istiod (no trust bundle
published). istiod's log says for sure: "Updating new ROOT-CA not supported".
A cluster whose Istio would not apply its cacerts is a warning: CRLs on while istiod
publishes none (ClusterTrustBundle mode, PILOT_ENABLE_CA_CRL=false) or ambient's
ztunnel checks none (peerCaCrl.enabled off), several roots for a ztunnel older than
1.26 (it trusts one). -o json has each cluster's "istio" (trust bundle mode, CRL
ConfigMap name, ztunnel).

Exit status: 0 when every cluster is ok (or warning, unless --strict) and the mesh
shares one root, 1 otherwise, 2 on bad usage. Read access to cacerts is all it
needs (Role meshpki-status in deploy/rbac.yaml).

Examples:
   meshpki status --all-contexts
   meshpki status --context east --context west --output json
   meshpki status --all-contexts --min-remaining 60d --strict
   meshpki status --all-contexts -o json | jq -r '.clusters[] | select(.due) | .cluster'   # due: a CSR batch for an offline root`,
		Flags:  flags,
		Action: actionOf(e, bindStatus),
	}
}

func bindStatus(c *cli.Context) *statusOptions {
	return &statusOptions{
		cmd:          bindArgs(c),
		Clusters:     bindClusters(c),
		MinRemaining: c.String("min-remaining"),
		Strict:       c.Bool("strict"),
		RenewBefore:  c.String("renew-before"),
		IstiodGrace:  c.Duration("istiod-grace"),
		Output:       c.String("output"),
	}
}

// Validate checks the flags and builds the k8s.StatusOptions.
func (o *statusOptions) Validate() error {
	if err := o.cmd.noArgs(); err != nil {
		return err
	}
	if err := o.Clusters.Validate(); err != nil {
		return err
	}
	out := o.Output
	if out == "table" { // status' old name for text: old scripts keep working
		out = "text"
	}
	out, err := parseOutputFormat(out)
	if err != nil {
		return err
	}
	minRem, err := parseDuration("min-remaining", o.MinRemaining)
	if err != nil {
		return err
	}
	var rb ca.RenewBefore
	if o.RenewBefore != "" {
		if rb, err = ca.ParseRenewBefore(o.RenewBefore); err != nil {
			return inputError(fmt.Errorf("--renew-before: %w", err))
		}
	}
	o.output = out
	o.status = k8s.StatusOptions{Namespace: o.Clusters.Namespace, Verify: ca.VerifyOptions{MinRemaining: minRem}, IstiodGrace: o.IstiodGrace, RenewBefore: rb}
	return nil
}

// Run reads every cluster's cacerts and istiod and checks them as one mesh
// (mesh.Status), and writes the report; any cluster not ok exits 1.
func (o *statusOptions) Run(ctx context.Context, e *env) error {
	clusters, err := o.Clusters.loadClusters(e)
	if err != nil {
		return err
	}
	prog := newProgress(e, "read", len(clusters))
	rep := mesh.Status(ctx, clusters, mesh.StatusOptions{Status: o.status, Strict: o.Strict, Concurrency: o.Clusters.Concurrency,
		Progress: func(r k8s.Result[*k8s.ClusterStatus]) {
			var attrs []any
			if r.Value != nil && r.Err == nil {
				attrs = append(attrs, "verdict", r.Value.Verdict)
			}
			prog.item(r.Cluster.Name, r.Err, attrs...)
		}})
	prog.finish()
	if o.output == "json" {
		if err := writeJSON(e.stdout, rep.OK, rep); err != nil {
			return err
		}
	} else {
		printStatus(e.stdout, rep)
	}
	if rep.Verdict() != mesh.OK {
		return silentFailure
	}
	return nil
}

func printStatus(w io.Writer, rep *mesh.StatusReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tVERDICT\tISSUER\tSUBJECT\tSERIAL\tNOT AFTER\tLEFT\tROOT\tISTIOD\tTRUST")
	for _, st := range rep.Clusters {
		r := st.Report
		if r == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\t%s\n", st.Cluster, st.Verdict, istiodCell(st.Istiod), orDash(st.Trust))
			continue
		}
		root := "-"
		if len(r.RootFingerprints) > 0 {
			root = textfmt.Fingerprint(r.RootFingerprints[0])
			if n := len(r.RootFingerprints); n > 1 {
				root += fmt.Sprintf(" (+%d)", n-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.Cluster, st.Verdict, orDash(r.Issuer), orDash(r.Subject), orDash(r.Serial),
			formatTime(r.NotAfter), timeLeft(r.NotAfter), root, istiodCell(st.Istiod), orDash(st.Trust))
	}
	tw.Flush()
	for _, st := range rep.Clusters {
		switch {
		case st.Error != "":
			fmt.Fprintf(w, "%s: error: %s\n", st.Cluster, st.Error)
		case st.Verdict == k8s.VerdictMissing:
			fmt.Fprintf(w, "%s: no Secret %s in namespace %s\n", st.Cluster, k8s.SecretName, st.Namespace)
		case st.Report != nil:
			for _, p := range st.Report.Problems {
				fmt.Fprintf(w, "%s: %s: %s\n", st.Cluster, p.Severity, p)
			}
		}
		if rr := st.RootRotation; rr != nil {
			fmt.Fprintf(w, "%s: root rotation onto %s: step %s since %s\n", st.Cluster, textfmt.Fingerprint(rr.NewRoot), rr.Step, formatTime(rr.At))
		}
		if c := st.CRLs; c != nil {
			fmt.Fprintf(w, "%s: CRLs: %d, next update %s, %d revoked\n", st.Cluster, len(c.CRLs), formatTime(c.NextUpdate), len(c.Revoked))
		}
		if i := st.Istiod; i != nil && i.State != k8s.IstiodLoaded && i.State != k8s.IstiodAbsent && i.Reason != "" {
			reason := i.Reason
			if i.State == k8s.IstiodSelfSigned {
				reason += "; or pass --restart-istiod to install or rotate"
			}
			fmt.Fprintf(w, "%s: istiod %s: %s\n", st.Cluster, istiodCell(i), reason)
		}
	}
	if len(rep.Mesh) == 0 {
		root := ""
		if len(rep.Clusters) > 0 && rep.Clusters[0].Report != nil && len(rep.Clusters[0].Report.RootFingerprints) > 0 {
			root = " (" + shortRoots(rep.Clusters[0].Report.RootFingerprints) + ")"
		}
		fmt.Fprintf(w, "mesh: OK: all %d clusters trust the same roots%s\n", len(rep.Clusters), root)
		return
	}
	for _, p := range rep.Mesh {
		word := "FAIL"
		if p.Severity == ca.SeverityWarning {
			word = "WARN"
		}
		fmt.Fprintf(w, "mesh: %s: %s\n", word, problemText(p))
	}
}

// istiodCell is the ISTIOD column: loaded, not-yet, "refused since <time>",
// self-signed, no-istiod or unknown; "(ctb)" after it when the roots were read from
// istiod's ClusterTrustBundle rather than its ConfigMap.
func istiodCell(i *k8s.IstiodStatus) string {
	cell := ""
	switch {
	case i == nil:
		return "-"
	case i.State == k8s.IstiodRefused:
		cell = "refused since " + formatTime(i.Since)
	default:
		cell = string(i.State)
	}
	if i.Source == k8s.SourceClusterTrustBundle {
		cell += " (ctb)"
	}
	return cell
}

func shortRoots(fps []string) string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = textfmt.Fingerprint(f)
	}
	return strings.Join(out, ", ")
}
