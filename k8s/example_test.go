package k8s_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/meshpki/meshpki/ca"
	"github.com/meshpki/meshpki/k8s"
)

// Install each cluster's bundle as Secret cacerts in istio-system of every
// context of $KUBECONFIG, all clusters at once.
func ExampleInstall() {
	ctx := context.Background()
	clusters, err := k8s.LoadClusters(k8s.ClusterOptions{Paths: filepath.SplitList(os.Getenv("KUBECONFIG")), AllContexts: true})
	if err != nil {
		log.Fatal(err)
	}
	// One bundle per cluster, as ca.MintDir writes them (here minted in memory).
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	if err != nil {
		log.Fatal(err)
	}
	bundles := map[string]map[string][]byte{}
	for _, cl := range clusters {
		b, err := ca.Mint(ctx, ca.NewLocalIssuer(root), ca.IntermediateProfile(cl.Name, "Example Corp"))
		if err != nil {
			log.Fatal(err)
		}
		if bundles[cl.Name], err = b.Files(ca.FormatIstio); err != nil {
			log.Fatal(err)
		}
	}

	lock := &k8s.LeaseOptions{Holder: "example-host_1"} // the Lease rotate takes too
	results := k8s.Each(ctx, clusters, 0, func(ctx context.Context, cl *k8s.Cluster) (*k8s.InstallResult, error) {
		return k8s.Install(ctx, cl, bundles[cl.Name], k8s.InstallOptions{Lock: lock})
	}, nil)
	for _, r := range results {
		if r.Err != nil {
			fmt.Println(r.Cluster.Name, "failed:", r.Err)
			continue
		}
		fmt.Println(r.Cluster.Name, r.Value.Namespace, r.Value.Action)
	}
	// Output:
	// east istio-system created
	// north istio-system created
	// west istio-system created
}

// Rotate, as a cron job does: every cluster whose intermediate is due (or that has
// none) gets a new one from the root; the others are left alone.
func ExampleRotate() {
	ctx := context.Background()
	clusters, err := k8s.LoadClusters(k8s.ClusterOptions{Paths: filepath.SplitList(os.Getenv("KUBECONFIG")), Contexts: []string{"east", "west"}})
	if err != nil {
		log.Fatal(err)
	}
	root, _, err := ca.CreateRoot(ca.DefaultRootProfile("Example Corp"), time.Now())
	if err != nil {
		log.Fatal(err)
	}
	host, _ := os.Hostname()
	opts := k8s.RotateOptions{
		Namespace: "example-rotate", // istio-system when empty
		Issuer:    ca.NewLocalIssuer(root),
		Profile:   ca.IntermediateProfile("", "Example Corp"),
		Lock:      k8s.LeaseOptions{Holder: host + "_example"},
	}
	for run := 1; run <= 2; run++ {
		for _, r := range k8s.Each(ctx, clusters, 0, func(ctx context.Context, cl *k8s.Cluster) (*k8s.RotateResult, error) {
			return k8s.Rotate(ctx, cl, opts)
		}, nil) {
			if r.Err != nil {
				fmt.Println(r.Cluster.Name, "failed:", r.Err)
				continue
			}
			fmt.Println("run", run, r.Cluster.Name, r.Value.Outcome)
		}
	}
	// Output:
	// run 1 east rotated
	// run 1 west rotated
	// run 2 east not-due
	// run 2 west not-due
}
