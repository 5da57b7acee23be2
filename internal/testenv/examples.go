package testenv

import (
	"context"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
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

// ExamplesSelected reports whether -test.run selects one of the package's examples
// (the Example functions of the *_test.go files in the working directory, which
// is the package's folder under go test), so that a TestMain starts servers for
// its examples only when they run. -test.run matches an example by name as it
// matches a test: "Install" selects ExampleInstall.
func ExamplesSelected() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	run := flag.Lookup("test.run").Value.String()
	if run == "" {
		return true
	}
	re, err := regexp.Compile(strings.Split(run, "/")[0])
	if err != nil {
		return false // go test refuses the pattern itself
	}
	names, err := exampleNames(".")
	if err != nil {
		return true // start the servers rather than fail an example for want of them
	}
	return slices.ContainsFunc(names, re.MatchString)
}

// exampleNames lists the Example functions declared in dir's *_test.go files.
func exampleNames(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	var names []string
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Example") {
				names = append(names, fd.Name.Name)
			}
		}
	}
	return names, nil
}

// Start starts the pool's clusters now (Get does on first use), for a TestMain
// whose examples use them.
func (p *K8sPool) Start() (*K8s, error) {
	bin := os.Getenv(EnvK8sBin)
	if bin == "" {
		return nil, fmt.Errorf("%s is not set (tools/build.sh k8s-testenv)", EnvK8sBin)
	}
	p.once.Do(func() { p.env, p.err = startK8sLogged(bin, p.names) })
	return p.env, p.err
}

// startK8sLogged is StartK8s within 3 minutes, saying on stderr how long it took.
func startK8sLogged(bin string, names []string) (*K8s, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	env, err := StartK8s(ctx, bin, names...)
	if err == nil {
		fmt.Fprintf(os.Stderr, "testenv: %d kube-apiservers ready in %s (%s)\n", len(names), time.Since(t0).Round(time.Millisecond), env.Dir)
	}
	return env, err
}
