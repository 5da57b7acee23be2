package k8s

import (
	"context"
	"fmt"
	"time"

	"github.com/meshpki/meshpki/internal/fanout"
)

// DefaultConcurrency is how many clusters multi-cluster operations work on at once.
// The work is waiting on API servers far more than computing: a mesh of a few dozen
// clusters is done in one wave (BenchmarkMeshOf20 in cmd/meshpki measures it).
const DefaultConcurrency = 32

// Result is one cluster's outcome of Each.
type Result[T any] struct {
	Cluster *Cluster
	Value   T
	Err     error
	Elapsed time.Duration
}

// Each runs fn on every cluster, at most concurrency at a time (<= 0 means
// DefaultConcurrency), and returns the results in the clusters' order. One
// cluster's error never stops the others; once ctx is done no new cluster starts,
// and those get ctx's cause as their error. done, if not nil, is called as each
// cluster finishes, from the goroutine that ran it: it must be safe for concurrent
// use.
func Each[T any](ctx context.Context, clusters []*Cluster, concurrency int, fn func(ctx context.Context, cl *Cluster) (T, error), done func(Result[T])) []Result[T] {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	results := make([]Result[T], len(clusters))
	started := make([]bool, len(clusters))
	fanout.Each(ctx, len(clusters), concurrency, func(ctx context.Context, i int) {
		started[i] = true
		t0 := time.Now()
		v, err := fn(ctx, clusters[i])
		results[i] = Result[T]{Cluster: clusters[i], Value: v, Err: err, Elapsed: time.Since(t0)}
		if done != nil {
			done(results[i])
		}
	})
	for i, ok := range started {
		if !ok {
			results[i] = Result[T]{Cluster: clusters[i], Err: fmt.Errorf("cluster %s: not started: %w", clusters[i].Name, context.Cause(ctx))}
			if done != nil {
				done(results[i])
			}
		}
	}
	return results
}
