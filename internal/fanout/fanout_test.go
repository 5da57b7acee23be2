package fanout

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestEachRunsEveryItemWithinTheLimit(t *testing.T) {
	var running, peak, count atomic.Int32
	seen := make([]atomic.Bool, 50)
	Each(context.Background(), len(seen), 4, func(_ context.Context, i int) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		seen[i].Store(true)
		count.Add(1)
		running.Add(-1)
	})
	if count.Load() != 50 {
		t.Fatalf("ran %d items, want 50", count.Load())
	}
	for i := range seen {
		if !seen[i].Load() {
			t.Errorf("item %d never ran", i)
		}
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak concurrency %d, want 2..4", p)
	}
}

func TestEachStopsStartingOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var count atomic.Int32
	Each(ctx, 100, 1, func(_ context.Context, i int) {
		if count.Add(1) == 3 {
			cancel()
		}
	})
	if n := count.Load(); n != 3 {
		t.Errorf("%d items ran after cancel at the third, want 3 (none starts once ctx is done)", n)
	}
	Each(context.Background(), 0, 8, func(context.Context, int) { t.Error("called for n=0") })
}
