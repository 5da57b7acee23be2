package k8s

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkInstall3Clusters installs a new bundle into K=3 real clusters, once one
// cluster after the other and once concurrently (Each), per iteration. Every
// install is an update: read, backup, update, prune. It reports both wall times,
// the slowest single cluster of the sequential run, and their ratio: concurrent
// wall time should approach the slowest cluster, not the sum.
//
//	K8S_TESTENV_BIN=$(tools/build.sh k8s-testenv) go test -run '^$' -bench Install3Clusters -benchtime 20x ./k8s/
//
// On loopback the three apiservers, their etcd and the benchmark share the
// machine's cores, so there is little to overlap; real clusters sit behind a
// network. The rtt=20ms variant adds 20 ms before every request (a WAN round
// trip) on the same real apiservers.
func BenchmarkInstall3Clusters(b *testing.B) {
	for _, rtt := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run("rtt="+rtt.String(), func(b *testing.B) { benchInstall(b, rtt) })
	}
}

// delayed adds a fixed delay before every request.
type delayed struct {
	rt    http.RoundTripper
	delay time.Duration
}

func (d delayed) RoundTrip(req *http.Request) (*http.Response, error) {
	time.Sleep(d.delay)
	return d.rt.RoundTrip(req)
}

func benchInstall(b *testing.B, rtt time.Duration) {
	env := pool.Get(b)
	var clusters []*Cluster
	for _, c := range env.Clusters {
		rc := c.RESTConfig(c.AdminToken)
		if rtt > 0 {
			rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return delayed{rt: rt, delay: rtt} }
		}
		cl, err := NewCluster(c.Name, rc, ClusterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		clusters = append(clusters, cl)
	}
	ns := testNamespace(b)
	ctx := context.Background()
	// Backups are named by the second; installs here come many times a second, far
	// more often than anyone rotates, so give each its own second.
	var clock atomic.Int64
	start := time.Now()
	opts := InstallOptions{Namespace: ns, Now: func() time.Time { return start.Add(time.Duration(clock.Add(1)) * time.Second) }}
	bundles := func() []map[string][]byte {
		out := make([]map[string][]byte, len(clusters))
		for i, cl := range clusters {
			_, out[i] = mint(b, nil, cl.Name)
		}
		return out
	}
	for i, files := range bundles() { // first install: creates the namespace
		if _, err := Install(ctx, clusters[i], files, opts); err != nil {
			b.Fatal(err)
		}
	}
	index := map[*Cluster]int{}
	for i, cl := range clusters {
		index[cl] = i
	}
	var seq, conc, slowest time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		files := bundles()
		b.StartTimer()
		t0 := time.Now()
		var slow time.Duration
		for i, cl := range clusters {
			t1 := time.Now()
			if res, err := Install(ctx, cl, files[i], opts); err != nil || res.Action != ActionUpdated {
				b.Fatalf("%s: %+v %v", cl.Name, res, err)
			}
			slow = max(slow, time.Since(t1))
		}
		seq += time.Since(t0)
		slowest += slow

		b.StopTimer()
		files = bundles()
		b.StartTimer()
		t0 = time.Now()
		results := Each(ctx, clusters, len(clusters), func(ctx context.Context, cl *Cluster) (*InstallResult, error) {
			return Install(ctx, cl, files[index[cl]], opts)
		}, nil)
		conc += time.Since(t0)
		for _, r := range results {
			if r.Err != nil || r.Value.Action != ActionUpdated {
				b.Fatalf("%s: %+v %v", r.Cluster.Name, r.Value, r.Err)
			}
		}
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d) / n / float64(time.Millisecond) }
	b.ReportMetric(ms(seq), "seq-ms/op")
	b.ReportMetric(ms(conc), "conc-ms/op")
	b.ReportMetric(ms(slowest), "slowest-cluster-ms/op")
	b.ReportMetric(float64(seq)/float64(conc), "seq/conc")
	b.ReportMetric(float64(conc)/float64(slowest), "conc/slowest")
}
