package testenv

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"context"
)

// SkipExamples makes m.Run skip the package's examples whose names match pattern
// (added to -test.skip), for a TestMain whose examples need a server that is not
// there. With MESHPKI_REQUIRE_SERVERS=1 it refuses instead and returns false.
func SkipExamples(pattern, why string) bool {
	if os.Getenv(k8sRequire) == "1" {
		fmt.Fprintf(os.Stderr, "testenv: %s=1, but the examples cannot run: %s\n", k8sRequire, why)
		return false
	}
	if !flag.Parsed() {
		flag.Parse()
	}
	skip := pattern
	if cur := flag.Lookup("test.skip").Value.String(); cur != "" {
		skip = cur + "|" + skip
	}
	_ = flag.Set("test.skip", skip)
	fmt.Fprintf(os.Stderr, "testenv: skipping the examples: %s\n", why)
	return true
}

// ExamplesSelected reports whether the -test.run pattern can select an example
// (no pattern, or one that names examples), so that a TestMain starts servers for
// its examples only when they run.
func ExamplesSelected() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	run := flag.Lookup("test.run").Value.String()
	if run == "" {
		return true
	}
	re, err := regexp.Compile(run)
	return err == nil && (re.MatchString("Example") || strings.Contains(run, "Example"))
}

// Start starts the pool's clusters now (Get does on first use), for a TestMain
// whose examples use them.
func (p *K8sPool) Start() (*K8s, error) {
	bin := os.Getenv(EnvK8sBin)
	if bin == "" {
		return nil, fmt.Errorf("%s is not set (tools/build.sh k8s-testenv)", EnvK8sBin)
	}
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		t0 := time.Now()
		p.env, p.err = StartK8s(ctx, bin, p.names...)
		if p.err == nil {
			fmt.Fprintf(os.Stderr, "testenv: %d kube-apiservers ready in %s (%s)\n", len(p.names), time.Since(t0).Round(time.Millisecond), p.env.Dir)
		}
	})
	return p.env, p.err
}
