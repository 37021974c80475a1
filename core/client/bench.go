package client

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// BenchConfig configures Bench.
type BenchConfig struct {
	// Clients is the number of concurrent clients, each waiting for its
	// put to be acknowledged before sending the next.
	Clients int
	// Duration is how long clients send.
	Duration time.Duration
	// KeySize and ValueSize are the sizes of the random keys and values.
	KeySize, ValueSize int
	// Seed seeds the keys and values (client c uses the stream (Seed, c)).
	Seed uint64
	// Timeout bounds each put.
	Timeout time.Duration
}

// BenchResult is what a Bench run measured over its acknowledged puts.
type BenchResult struct {
	Ops      int
	Errors   int
	Elapsed  time.Duration
	P50, P99 time.Duration
	Max      time.Duration
	// FirstErr is the first failed put's error, if any failed.
	FirstErr error
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[r.IntN(len(alnum))]
	}
	return string(b)
}

// Bench sends kv {"op":"put"} commands with random keys and values from
// cfg.Clients clients sharing conns (client c uses conns[c%len(conns)])
// for cfg.Duration, or until ctx ends, and measures the acknowledged ones.
// The cluster must run the kv FSM; put it on the leader's API address so
// that puts are not forwarded.
func Bench(ctx context.Context, conns []*grpc.ClientConn, cfg BenchConfig) BenchResult {
	// Clients stop sending at end; requests in flight then finish under
	// their own timeout, so that none is cut off and counted as an error.
	end := time.Now().Add(cfg.Duration)
	var (
		mu       sync.Mutex
		lats     []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(c)))
			cl := apiv1.NewRaftdClient(conns[c%len(conns)])
			var mine []time.Duration
			var myErrs int
			var myFirst error
			for ctx.Err() == nil && time.Now().Before(end) {
				cmd, _ := json.Marshal(map[string]string{"op": "put", "key": randString(r, cfg.KeySize), "value": randString(r, cfg.ValueSize)})
				t0 := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, cfg.Timeout)
				_, err := cl.Apply(rctx, &apiv1.ApplyRequest{Command: cmd})
				rcancel()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					myErrs++
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	res := BenchResult{Ops: len(lats), Errors: errs, Elapsed: time.Since(start), FirstErr: firstErr}
	if len(lats) > 0 {
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		res.P50 = lats[len(lats)*50/100]
		res.P99 = lats[min(len(lats)-1, len(lats)*99/100)]
		res.Max = lats[len(lats)-1]
	}
	return res
}
