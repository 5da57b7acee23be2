package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
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

// clusterOptions are the cluster flags after parsing.
type clusterOptions struct {
	Load        k8s.ClusterOptions
	Namespace   string
	Concurrency int
}

func parseClusterFlags(c *cli.Context, e *env) (clusterOptions, error) {
	o := clusterOptions{
		Load: k8s.ClusterOptions{
			Kubeconfig:  c.String(flagKubeconfig),
			Contexts:    c.StringSlice(flagContext),
			AllContexts: c.Bool(flagAllContexts),
			Timeout:     c.Duration(flagTimeout),
			Warnings: func(cluster, msg string) {
				e.log.Warn("API server warning", "cluster", cluster, "warning", msg)
			},
		},
		Namespace:   c.String(flagNamespace),
		Concurrency: c.Int(flagConcurrency),
	}
	if o.Load.Kubeconfig == "" {
		// The library never reads the environment: $KUBECONFIG is read here.
		if v := os.Getenv("KUBECONFIG"); v != "" {
			o.Load.Paths = filepath.SplitList(v)
		}
	}
	if len(o.Load.Contexts) == 0 && !o.Load.AllContexts {
		if hasFlag(c, flagAllContexts) {
			return o, inputError(errors.New("no cluster chosen: pass --context CTX (repeatable) or --all-contexts"))
		}
		return o, inputError(errors.New("no cluster chosen: pass --context CTX"))
	}
	if len(o.Load.Contexts) > 0 && o.Load.AllContexts {
		return o, inputError(errors.New("--context and --all-contexts exclude each other"))
	}
	for _, m := range c.StringSlice(flagClusterName) {
		ctx, name, ok := strings.Cut(m, "=")
		if !ok || ctx == "" || name == "" {
			return o, inputError(fmt.Errorf("--cluster %q: want CTX=NAME", m))
		}
		if o.Load.Names == nil {
			o.Load.Names = map[string]string{}
		}
		if _, dup := o.Load.Names[ctx]; dup {
			return o, inputError(fmt.Errorf("--cluster: context %q mapped twice", ctx))
		}
		o.Load.Names[ctx] = name
	}
	if o.Load.Timeout <= 0 {
		return o, inputError(fmt.Errorf("--%s must be positive, got %s", flagTimeout, o.Load.Timeout))
	}
	if hasFlag(c, flagConcurrency) && o.Concurrency < 1 {
		return o, inputError(fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency))
	}
	return o, nil
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

// loadClusters reads the kubeconfig. Its errors (a missing file, an unknown
// context) are bad input: exit 2.
func (o clusterOptions) loadClusters() ([]*k8s.Cluster, error) {
	cls, err := k8s.LoadClusters(o.Load)
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
	return ca.FormatDuration(time.Until(t))
}
