package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/raftd/raftd/core/client"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// workload is the shape of the requests: kv puts and linearizable gets of
// keys drawn uniformly from Keys distinct ones (client.Bench sends them).
type workload struct {
	Keys      int
	KeySize   int
	ValueSize int
	// Timeout bounds one request.
	Timeout time.Duration
}

// bench is the client.BenchConfig of op at conc clients: warmup, then a
// measured window of duration.
func (w workload) bench(op string, conc int, warmup, duration time.Duration) client.BenchConfig {
	return client.BenchConfig{Op: op, Clients: conc, Warmup: warmup, Duration: duration, Keys: w.Keys,
		KeySize: w.KeySize, ValueSize: w.ValueSize, Seed: uint64(time.Now().UnixNano()), Timeout: w.Timeout}
}

// stateValueBytes is the size of one value of the extra state (-state-mb).
const stateValueBytes = 512 << 10

// loadState puts mb MiB of extra state, as 512 KiB values under keys
// "state-N" (the steps use keys "k..."), from one client per connection.
func loadState(ctx context.Context, conns []*grpc.ClientConn, mb int, timeout time.Duration) error {
	n := mb << 20 / stateValueBytes
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for _, cc := range conns {
		wg.Go(func() {
			api := apiv1.NewRaftdClient(cc)
			value := randomValue(stateValueBytes)
			for i := range next {
				cmd := fmt.Appendf(nil, `{"op":"put","key":"state-%d","value":"%s"}`, i, value)
				rctx, cancel := context.WithTimeout(ctx, timeout)
				resp, err := api.Apply(rctx, &apiv1.ApplyRequest{Command: cmd})
				cancel()
				if err == nil && string(resp.GetResult()) != `{"ok":true}` {
					err = fmt.Errorf("put state-%d: result %s", i, resp.GetResult())
				}
				if err != nil {
					errc <- fmt.Errorf("state: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}
