package client

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
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
	// Every, if positive, is how often Bench calls Report with how far it
	// has come (from another goroutine), and once more at the end, before
	// Bench returns.
	Every  time.Duration
	Report func(BenchProgress)
}

// BenchProgress is how far a Bench run has come.
type BenchProgress struct {
	Elapsed, Duration time.Duration
	// Ops counts acknowledged puts, Errors failed ones.
	Ops, Errors int64
}

// String is "3s/10s: 12345 puts (4115/s), 0 errors".
func (p BenchProgress) String() string {
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Ops) / p.Elapsed.Seconds()
	}
	return fmt.Sprintf("%s/%s: %d puts (%.0f/s), %d errors", p.Elapsed.Round(time.Second), p.Duration, p.Ops, rate, p.Errors)
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

// BenchSummary is a BenchResult as `raftd bench --json` prints it.
type BenchSummary struct {
	Ops            int     `json:"ops"`
	Errors         int     `json:"errors"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	OpsPerSecond   float64 `json:"ops_per_second"`
	P50Millis      float64 `json:"p50_ms"`
	P99Millis      float64 `json:"p99_ms"`
	MaxMillis      float64 `json:"max_ms"`
	FirstError     string  `json:"first_error,omitempty"`
}

// Summary returns r's BenchSummary.
func (r BenchResult) Summary() BenchSummary {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	s := BenchSummary{Ops: r.Ops, Errors: r.Errors, ElapsedSeconds: r.Elapsed.Seconds(),
		P50Millis: ms(r.P50), P99Millis: ms(r.P99), MaxMillis: ms(r.Max)}
	if r.Elapsed > 0 {
		s.OpsPerSecond = float64(r.Ops) / r.Elapsed.Seconds()
	}
	if r.FirstErr != nil {
		s.FirstError = r.FirstErr.Error()
	}
	return s
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
	start := time.Now()
	end := start.Add(cfg.Duration)
	var (
		mu       sync.Mutex
		lats     []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
		ops, bad atomic.Int64
	)
	for c := range cfg.Clients {
		wg.Go(func() {
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
					bad.Add(1)
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, time.Since(t0))
				ops.Add(1)
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
			mu.Unlock()
		})
	}
	report := func() {
		cfg.Report(BenchProgress{Elapsed: min(time.Since(start), cfg.Duration), Duration: cfg.Duration, Ops: ops.Load(), Errors: bad.Load()})
	}
	if cfg.Every > 0 && cfg.Report != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(cfg.Every)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					report()
				case <-stop:
					return
				}
			}
		}()
		defer func() { close(stop); <-done; report() }()
	}
	wg.Wait()
	res := BenchResult{Ops: len(lats), Errors: errs, Elapsed: time.Since(start), FirstErr: firstErr}
	if len(lats) > 0 {
		slices.Sort(lats)
		res.P50 = lats[len(lats)*50/100]
		res.P99 = lats[min(len(lats)-1, len(lats)*99/100)]
		res.Max = lats[len(lats)-1]
	}
	return res
}
