// Command testclusters starts local Kubernetes clusters (etcd + kube-apiserver on
// loopback, as the tests use them) and keeps them running until it gets SIGINT or
// SIGTERM. It writes a kubeconfig with one context per cluster, then the ready file.
// For scripts/demo-mesh.sh and manual testing; not a product command.
//
//	testclusters -bin $(tools/build.sh k8s-testenv) -kubeconfig /tmp/demo/kubeconfig -ready /tmp/demo/ready east west north
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshpki/meshpki/internal/testenv"
)

func main() {
	bin := flag.String("bin", os.Getenv(testenv.EnvK8sBin), "folder holding kube-apiserver and etcd")
	kubeconfig := flag.String("kubeconfig", "", "copy the admin kubeconfig here")
	ready := flag.String("ready", "", "file to create once every cluster is ready")
	flag.Parse()
	names := flag.Args()
	if *bin == "" || len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: testclusters -bin DIR [-kubeconfig FILE] [-ready FILE] NAME...")
		os.Exit(2)
	}
	if err := run(*bin, *kubeconfig, *ready, names); err != nil {
		fmt.Fprintln(os.Stderr, "testclusters:", err)
		os.Exit(1)
	}
}

func run(bin, kubeconfig, ready string, names []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	env, err := testenv.StartK8s(startCtx, bin, names...)
	if err != nil {
		return err
	}
	defer env.Stop()
	if kubeconfig != "" {
		data, err := os.ReadFile(env.Kubeconfig)
		if err != nil {
			return err
		}
		if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
			return err
		}
	}
	for _, c := range env.Clusters {
		fmt.Fprintf(os.Stderr, "testclusters: %s at %s\n", c.Name, c.Host)
	}
	fmt.Fprintf(os.Stderr, "testclusters: %d clusters ready in %s\n", len(names), time.Since(t0).Round(time.Millisecond))
	if ready != "" {
		if err := os.WriteFile(ready, []byte(env.Kubeconfig+"\n"), 0o600); err != nil {
			return err
		}
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "testclusters: stopping")
	return nil
}
