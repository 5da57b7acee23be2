package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshpki/meshpki/internal/testenv"
)

// BenchmarkMeshOf20 runs the built meshpki binary against 1 and then 20 real
// kube-apiservers (one shared etcd), each behind a proxy that adds 50 ms of round
// trip (25 ms each way) to every exchange, as a WAN would. Per iteration and
// command, it times the command on one cluster and on all 20 side by side, and
// reports both, their ratio (the goal: 20 clusters within 1.3x of one) and the
// command's peak resident memory (ru_maxrss of the process).
//
//	K8S_TESTENV_BIN=$(tools/build.sh k8s-testenv) go test -run '^$' -bench MeshOf20 -benchtime 3x -timeout 30m ./cmd/meshpki/
//
// Commands: status; rotate --force (a new intermediate per cluster); root rotate
// (step 1, trust both roots). Each iteration works in a fresh namespace, set up by
// an untimed install.
func BenchmarkMeshOf20(b *testing.B) {
	bin := os.Getenv(testenv.EnvK8sBin)
	if bin == "" {
		b.Skipf("%s is not set (tools/build.sh k8s-testenv)", testenv.EnvK8sBin)
	}
	const n = 20
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%02d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t0 := time.Now()
	env, err := testenv.StartK8s(ctx, bin, names...)
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	b.Logf("%d kube-apiservers ready in %s", n, time.Since(t0).Round(time.Second))
	dir := b.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	stop, err := env.WriteDelayedKubeconfig(kc, 25*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()

	meshpkiBin := filepath.Join(dir, "meshpki")
	if out, err := exec.Command("go", "build", "-o", meshpkiBin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (time.Duration, int64) {
		b.Helper()
		cmd := exec.Command(meshpkiBin, args...)
		cmd.Dir = dir
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("meshpki %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return d, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
	}
	root, root2, bundles := filepath.Join(dir, "root"), filepath.Join(dir, "root2"), filepath.Join(dir, "bundles")
	run("root", "create", "--out", root)
	run("root", "create", "--out", root2)
	create := []string{"intermediate", "create", "--root-dir", root, "--out", bundles}
	for _, c := range names {
		create = append(create, "--cluster", c)
	}
	run(create...)

	contexts := func(k int) []string {
		if k == n {
			return []string{"--all-contexts"}
		}
		var a []string
		for _, c := range names[:k] {
			a = append(a, "--context", c)
		}
		return a
	}
	commands := []struct {
		name string
		args []string
	}{
		{"status", []string{"status"}},
		{"rotate", []string{"rotate", "--root-dir", root, "--force"}},
		{"root-rotate", []string{"root", "rotate", "--new-root-dir", root2, "--step", "1", "--min-step-interval", "0"}},
	}
	type acc struct{ one, all time.Duration }
	times := map[string]*acc{}
	rss := map[string]int64{}
	nsN := 0
	b.ResetTimer()
	for range b.N {
		for _, c := range commands {
			if times[c.name] == nil {
				times[c.name] = &acc{}
			}
			for _, k := range []int{1, n} {
				b.StopTimer()
				nsN++
				ns := fmt.Sprintf("bench-%d", nsN)
				run(append([]string{"install", "--kubeconfig", kc, "--bundles", bundles, "--namespace", ns}, contexts(k)...)...)
				b.StartTimer()
				d, maxrss := run(append(append(append([]string{}, c.args...), "--kubeconfig", kc, "--namespace", ns), contexts(k)...)...)
				if k == 1 {
					times[c.name].one += d
				} else {
					times[c.name].all += d
					rss[c.name] = max(rss[c.name], maxrss)
				}
			}
		}
	}
	b.StopTimer()
	per := float64(b.N) * float64(time.Millisecond)
	for _, c := range commands {
		t := times[c.name]
		b.ReportMetric(float64(t.one)/per, c.name+"-1-ms/op")
		b.ReportMetric(float64(t.all)/per, c.name+"-20-ms/op")
		b.ReportMetric(float64(t.all)/float64(t.one), c.name+"-20/1")
		b.ReportMetric(float64(rss[c.name])/1024, c.name+"-20-peak-MiB")
	}
}
