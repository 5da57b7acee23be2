package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/internal/textfmt"
	"github.com/meshpki/meshpki/k8s"
)

// Flags shared by the commands that talk to clusters.
const (
	flagKubeconfig  = "kubeconfig"
	flagContext     = "context"
	flagAllContexts = "all-contexts"
	flagClusterName = "cluster"
	flagNamespace   = "namespace"
	flagConcurrency = "concurrency"
	flagTimeout     = "request-timeout"
)

// clusterFlags are the flags that choose clusters from kubeconfig contexts. With
// multi false (bootstrap) there is no --all-contexts nor --concurrency.
func clusterFlags(multi bool) []cli.Flag {
	flags := []cli.Flag{
		&cli.StringFlag{Name: flagKubeconfig, Usage: "kubeconfig file (default: the files $KUBECONFIG lists, else ~/.kube/config)"},
		&cli.StringSliceFlag{Name: flagContext, Usage: "kubeconfig context of a cluster (repeat for several)"},
		&cli.StringSliceFlag{Name: flagClusterName, Usage: "CTX=NAME: call context CTX's cluster NAME (its bundle folder's name); by default a cluster is named after its context"},
		&cli.StringFlag{Name: flagNamespace, Value: k8s.DefaultNamespace, Usage: "namespace of the cacerts Secret"},
		&cli.DurationFlag{Name: flagTimeout, Value: k8s.DefaultTimeout, Usage: "time limit of each API request"},
	}
	if multi {
		flags = append(flags,
			&cli.BoolFlag{Name: flagAllContexts, Usage: "use every context of the kubeconfig"},
			&cli.IntFlag{Name: flagConcurrency, Value: k8s.DefaultConcurrency, Usage: "clusters worked on at once"},
		)
	}
	return flags
}

// clusterOptions is the cluster flag group: the flags as given, then (Validate)
// the k8s.ClusterOptions they mean.
type clusterOptions struct {
	Kubeconfig  string
	Contexts    []string
	AllContexts bool
	// Names are the --cluster CTX=NAME mappings as given.
	Names       []string
	Namespace   string
	Timeout     time.Duration
	Concurrency int
	// multi: the command has --all-contexts and --concurrency (clusterFlags(true)).
	multi bool

	load k8s.ClusterOptions // set by Validate
}

func bindClusters(c *cli.Context) clusterOptions {
	return clusterOptions{
		Kubeconfig:  c.String(flagKubeconfig),
		Contexts:    c.StringSlice(flagContext),
		AllContexts: c.Bool(flagAllContexts),
		Names:       c.StringSlice(flagClusterName),
		Namespace:   c.String(flagNamespace),
		Timeout:     c.Duration(flagTimeout),
		Concurrency: c.Int(flagConcurrency),
		multi:       hasFlag(c, flagAllContexts),
	}
}

// Validate checks the choice of clusters and the limits, and reads $KUBECONFIG
// when no --kubeconfig is given (the library never reads the environment).
func (o *clusterOptions) Validate() error {
	o.load = k8s.ClusterOptions{Kubeconfig: o.Kubeconfig, Contexts: o.Contexts, AllContexts: o.AllContexts, Timeout: o.Timeout}
	if o.Kubeconfig == "" {
		if v := os.Getenv("KUBECONFIG"); v != "" {
			o.load.Paths = filepath.SplitList(v)
		}
	}
	if len(o.Contexts) == 0 && !o.AllContexts {
		if o.multi {
			return inputError(errors.New("no cluster chosen: pass --context CTX (repeatable) or --all-contexts"))
		}
		return inputError(errors.New("no cluster chosen: pass --context CTX"))
	}
	if len(o.Contexts) > 0 && o.AllContexts {
		return inputError(errors.New("--context and --all-contexts exclude each other"))
	}
	for _, m := range o.Names {
		ctx, name, ok := strings.Cut(m, "=")
		if !ok || ctx == "" || name == "" {
			return inputError(fmt.Errorf("--cluster %q: want CTX=NAME", m))
		}
		if o.load.Names == nil {
			o.load.Names = map[string]string{}
		}
		if _, dup := o.load.Names[ctx]; dup {
			return inputError(fmt.Errorf("--cluster: context %q mapped twice", ctx))
		}
		o.load.Names[ctx] = name
	}
	if o.Timeout <= 0 {
		return inputError(fmt.Errorf("--%s must be positive, got %s", flagTimeout, o.Timeout))
	}
	if o.multi && o.Concurrency < 1 {
		return inputError(fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency))
	}
	return nil
}

func hasFlag(c *cli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// loadClusters reads the kubeconfig, logging the API servers' warnings. Its errors
// (a missing file, an unknown context) are bad input: exit 2.
func (o clusterOptions) loadClusters(e *env) ([]*k8s.Cluster, error) {
	opts := o.load
	opts.Warnings = func(cluster, msg string) {
		e.log.Warn("API server warning", "cluster", cluster, "warning", msg)
	}
	cls, err := k8s.LoadClusters(opts)
	if err != nil {
		return nil, inputError(err)
	}
	return cls, nil
}

// countLine is a multi-cluster command's closing line, e.g. "3 clusters: 1 created,
// 1 unchanged, 1 failed".
func countLine(total int, counts []string) string {
	line := fmt.Sprintf("%d clusters", total)
	if total == 1 {
		line = "1 cluster"
	}
	if len(counts) > 0 {
		line += ": " + strings.Join(counts, ", ")
	}
	return line
}

// timeLeft formats the time from now until t, e.g. "364d23h", or "-2d3h" when past.
func timeLeft(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return textfmt.Duration(time.Until(t))
}
