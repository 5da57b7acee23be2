// Package k8s installs meshpki bundles as Istio's cacerts Secret in Kubernetes
// clusters and reads them back: clusters come from kubeconfig contexts, Secrets are
// built and parsed by pure functions, and every multi-cluster operation runs through
// one bounded fan-out (Each) that never lets one cluster's failure stop the others.
//
// The package never reads environment variables: the caller passes the kubeconfig
// files it wants (the CLI passes $KUBECONFIG's list).
package k8s

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshpki/meshpki/ca"
)

// Cluster is one Kubernetes cluster reached through a kubeconfig context.
type Cluster struct {
	// Name is the cluster's name in the mesh and its bundle folder's name: the
	// context's name unless ClusterOptions.Names maps it to another.
	Name string
	// Context is the kubeconfig context, empty for a cluster built with NewCluster.
	Context string
	// Server is the API server's URL.
	Server string
	// Client talks to the cluster.
	Client kubernetes.Interface
}

// ClusterOptions chooses clusters from kubeconfig files.
type ClusterOptions struct {
	// Kubeconfig is one kubeconfig file (kubectl's --kubeconfig). When set, Paths is
	// ignored.
	Kubeconfig string
	// Paths are kubeconfig files merged in order, the first file's value winning, as
	// kubectl merges $KUBECONFIG's list. Missing files are skipped. When Kubeconfig
	// and Paths are both empty, ~/.kube/config is read.
	Paths []string
	// Contexts are the contexts to use, in order.
	Contexts []string
	// AllContexts uses every context of the merged kubeconfig, sorted by name.
	AllContexts bool
	// Names maps a context to a cluster name (the bundle folder's name).
	Names map[string]string
	// Timeout bounds each API request; zero means DefaultTimeout.
	Timeout time.Duration
	// Warnings receives the API server's warnings; nil drops them.
	Warnings func(cluster, message string)
}

// DefaultTimeout bounds each API request when ClusterOptions.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// ErrNoContext means no context was chosen or a chosen one does not exist.
var ErrNoContext = errors.New("no such kubeconfig context")

// LoadClusters reads the kubeconfig files and returns one Cluster per chosen
// context, with a client ready to use (nothing is sent to any cluster yet).
func LoadClusters(opts ClusterOptions) ([]*Cluster, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: opts.Kubeconfig, Precedence: opts.Paths}
	if opts.Kubeconfig == "" && len(opts.Paths) == 0 {
		rules.Precedence = []string{clientcmd.RecommendedHomeFile}
	}
	// client-go reads whatever it is given: a FIFO would block it, /dev/zero fill
	// memory. Only regular files of a sane size go to it.
	for _, f := range append([]string{rules.ExplicitPath}, rules.Precedence...) {
		if f == "" {
			continue
		}
		if err := ca.CheckInputFile(f); err != nil {
			return nil, fmt.Errorf("load kubeconfig: %w", err)
		}
	}
	cfg, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	where := opts.Kubeconfig
	if where == "" {
		where = strings.Join(rules.Precedence, ", ")
	}
	available := make([]string, 0, len(cfg.Contexts))
	for name := range cfg.Contexts {
		available = append(available, name)
	}
	sort.Strings(available)
	contexts := opts.Contexts
	switch {
	case opts.AllContexts && len(opts.Contexts) > 0:
		return nil, errors.New("choose contexts by name or all contexts, not both")
	case opts.AllContexts:
		if len(available) == 0 {
			return nil, fmt.Errorf("%w: the kubeconfig (%s) has no contexts", ErrNoContext, where)
		}
		contexts = available
	case len(contexts) == 0:
		return nil, fmt.Errorf("%w: no context chosen (the kubeconfig %s has %s)", ErrNoContext, where, describeList(available))
	}
	for ctxName := range opts.Names {
		if !slices.Contains(contexts, ctxName) {
			return nil, fmt.Errorf("cluster name given for context %q, which is not among the chosen contexts", ctxName)
		}
	}
	seenCtx := map[string]bool{}
	seenName := map[string]string{}
	clusters := make([]*Cluster, 0, len(contexts))
	for _, ctxName := range contexts {
		if seenCtx[ctxName] {
			return nil, fmt.Errorf("context %q chosen twice", ctxName)
		}
		seenCtx[ctxName] = true
		if _, ok := cfg.Contexts[ctxName]; !ok {
			return nil, fmt.Errorf("%w %q in %s (it has %s)", ErrNoContext, ctxName, where, describeList(available))
		}
		name := ctxName
		if n, ok := opts.Names[ctxName]; ok {
			name = n
		}
		if err := ca.ValidateClusterName(name); err != nil {
			return nil, fmt.Errorf("context %q: %w: map it to another cluster name", ctxName, err)
		}
		if other, dup := seenName[name]; dup {
			return nil, fmt.Errorf("contexts %q and %q both map to cluster %q", other, ctxName, name)
		}
		seenName[name] = ctxName
		rc, err := restConfig(cfg, ctxName, rules)
		if err != nil {
			return nil, fmt.Errorf("context %q: %w", ctxName, err)
		}
		cl, err := NewCluster(name, rc, opts)
		if err != nil {
			return nil, fmt.Errorf("context %q: %w", ctxName, err)
		}
		cl.Context = ctxName
		clusters = append(clusters, cl)
	}
	return clusters, nil
}

func restConfig(cfg *clientcmdapi.Config, ctxName string, access clientcmd.ConfigAccess) (*rest.Config, error) {
	return clientcmd.NewNonInteractiveClientConfig(*cfg, ctxName, &clientcmd.ConfigOverrides{}, access).ClientConfig()
}

// NewCluster makes a Cluster from a REST config. opts' Timeout and Warnings apply;
// its kubeconfig fields are ignored.
func NewCluster(name string, rc *rest.Config, opts ClusterOptions) (*Cluster, error) {
	rc = rest.CopyConfig(rc)
	rc.Timeout = opts.Timeout
	if rc.Timeout == 0 {
		rc.Timeout = DefaultTimeout
	}
	// A handful of requests per cluster: never wait on client-side throttling.
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "meshpki"
	rc.WarningHandler = warningHandler{cluster: name, fn: opts.Warnings}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Cluster{Name: name, Server: rc.Host, Client: client}, nil
}

type warningHandler struct {
	cluster string
	fn      func(cluster, message string)
}

func (w warningHandler) HandleWarningHeader(code int, _ string, text string) {
	if code == 299 && w.fn != nil {
		w.fn(w.cluster, text)
	}
}

func describeList(names []string) string {
	switch len(names) {
	case 0:
		return "no contexts"
	case 1:
		return "context " + names[0]
	}
	if len(names) > 10 {
		return fmt.Sprintf("contexts %s, ... (%d in all)", strings.Join(names[:10], ", "), len(names))
	}
	return "contexts " + strings.Join(names, ", ")
}
