// Package fanout runs one function per item with bounded concurrency.
package fanout

import (
	"context"
	"runtime"
	"sync"
)

// Each calls fn(ctx, i) for i in [0, n) on at most limit goroutines (limit <= 0 means
// GOMAXPROCS). Items are started in index order; once ctx is done no new item
// starts. One item's failure is the item's business: Each never stops the others.
func Each(ctx context.Context, n, limit int, fn func(ctx context.Context, i int)) {
	if limit <= 0 {
		limit = runtime.GOMAXPROCS(0)
	}
	limit = min(limit, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if ctx.Err() != nil {
					continue // handed out before ctx was done: not started
				}
				fn(ctx, i)
			}
		}()
	}
send:
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
			break send
		case next <- i:
		}
	}
	close(next)
	wg.Wait()
}
