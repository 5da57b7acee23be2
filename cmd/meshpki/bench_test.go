package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	m := mesh20.get(b)
	const n = 20
	names, kc := m.names, m.kubeconfig
	run := func(args ...string) (time.Duration, int64) { return m.run(b, args...) }
	root, root2, bundles := m.root, m.root2, m.bundles

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
	type acc struct{ one, all, cpuOne, cpuAll time.Duration }
	times := map[string]*acc{}
	rss := map[string]int64{}
	b.ResetTimer()
	for range b.N {
		for _, c := range commands {
			if times[c.name] == nil {
				times[c.name] = &acc{}
			}
			for _, k := range []int{1, n} {
				b.StopTimer()
				m.nsN++
				ns := fmt.Sprintf("bench-%d", m.nsN)
				run(append([]string{"install", "--kubeconfig", kc, "--bundles", bundles, "--namespace", ns}, contexts(k)...)...)
				b.StartTimer()
				d, maxrss := run(append(append(append([]string{}, c.args...), "--kubeconfig", kc, "--namespace", ns), contexts(k)...)...)
				if k == 1 {
					times[c.name].one += d
					times[c.name].cpuOne += m.cpu
				} else {
					times[c.name].all += d
					times[c.name].cpuAll += m.cpu
					rss[c.name] = max(rss[c.name], maxrss)
				}
			}
		}
	}
	b.StopTimer()
	b.Logf("N=%d: peak RSS (KiB) %v", b.N, rss)
	per := float64(b.N) * float64(time.Millisecond)
	for _, c := range commands {
		t := times[c.name]
		b.ReportMetric(float64(t.one)/per, c.name+"-1-ms/op")
		b.ReportMetric(float64(t.all)/per, c.name+"-20-ms/op")
		b.ReportMetric(float64(t.all)/float64(t.one), c.name+"-20/1")
		b.ReportMetric(float64(t.cpuOne)/per, c.name+"-1-cpu-ms/op")
		b.ReportMetric(float64(t.cpuAll)/per, c.name+"-20-cpu-ms/op")
		b.ReportMetric(float64(rss[c.name])/1024, c.name+"-20-peak-MiB")
	}
}

// mesh20 is the benchmark's mesh, set up once for every b.N it is run with.
var mesh20 meshBench

type meshBench struct {
	once                 sync.Once
	err                  error
	names                []string
	dir, kubeconfig, bin string
	root, root2, bundles string
	env                  *testenv.K8s
	stopProxies          func()
	nsN                  int           // namespaces used, one per measured run
	cpu                  time.Duration // CPU time of the last run
}

func (m *meshBench) get(b *testing.B) *meshBench {
	bin := os.Getenv(testenv.EnvK8sBin)
	if bin == "" {
		b.Skipf("%s is not set (tools/build.sh k8s-testenv)", testenv.EnvK8sBin)
	}
	m.once.Do(func() { m.err = m.setUp(b, bin) })
	if m.err != nil {
		b.Fatal(m.err)
	}
	return m
}

func (m *meshBench) setUp(b *testing.B, bin string) error {
	for i := range 20 {
		m.names = append(m.names, fmt.Sprintf("c%02d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t0 := time.Now()
	env, err := testenv.StartK8s(ctx, bin, m.names...)
	if err != nil {
		return err
	}
	m.env = env
	b.Logf("%d kube-apiservers ready in %s", len(m.names), time.Since(t0).Round(time.Second))
	if m.dir, err = os.MkdirTemp("", "meshpki-bench-"); err != nil {
		return err
	}
	m.kubeconfig = filepath.Join(m.dir, "kubeconfig")
	if m.stopProxies, err = env.WriteDelayedKubeconfig(m.kubeconfig, 25*time.Millisecond); err != nil {
		return err
	}
	m.bin = filepath.Join(m.dir, "meshpki")
	if out, err := exec.Command("go", "build", "-o", m.bin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	m.root, m.root2, m.bundles = filepath.Join(m.dir, "root"), filepath.Join(m.dir, "root2"), filepath.Join(m.dir, "bundles")
	m.run(b, "root", "create", "--out", m.root)
	m.run(b, "root", "create", "--out", m.root2)
	create := []string{"intermediate", "create", "--root-dir", m.root, "--out", m.bundles}
	for _, c := range m.names {
		create = append(create, "--cluster", c)
	}
	m.run(b, create...)
	return nil
}

// run runs the binary and returns its wall time and peak resident memory in KiB:
// VmHWM of /proc/PID/status, sampled every 5 ms until it exits. (ru_maxrss would
// report the benchmark's own size: a child's counter starts from its parent's.)
func (m *meshBench) run(b *testing.B, args ...string) (time.Duration, int64) {
	b.Helper()
	cmd := exec.Command(m.bin, args...)
	cmd.Dir = m.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var peak atomic.Int64
	go func() {
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if kib := vmHWM(status); kib > peak.Load() {
				peak.Store(kib)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	d := time.Since(t0)
	close(done)
	if err != nil {
		b.Fatalf("meshpki %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return d, peak.Load()
}

// vmHWM reads the peak resident set size (KiB) from a /proc/PID/status file, 0 if
// it cannot.
func vmHWM(status string) int64 {
	data, err := os.ReadFile(status)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kib
		}
	}
	return 0
}

// stop stops the mesh if it was started (from TestMain).
func (m *meshBench) stop() {
	if m.stopProxies != nil {
		m.stopProxies()
	}
	if m.env != nil {
		_ = m.env.Stop()
	}
	if m.dir != "" {
		_ = os.RemoveAll(m.dir)
	}
}
