package client

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// The operations Bench can send to a cluster running the kv FSM.
const (
	// BenchPut is a kv put, acknowledged with {"ok":true}.
	BenchPut = "put"
	// BenchGet is a linearizable kv get of a key BenchPreload put.
	BenchGet = "get"
)

// BenchConfig configures Bench and BenchPreload.
type BenchConfig struct {
	// Op is BenchPut (the default, "") or BenchGet.
	Op string
	// Clients is the number of concurrent clients, each waiting for its
	// request to be answered before sending the next.
	Clients int
	// Warmup is how long clients send before the measurement starts:
	// requests that start in it load the cluster and are not counted.
	Warmup time.Duration
	// Duration is the measurement window after Warmup. A request counts
	// if it starts and is answered inside the window; clients send no new
	// request after it.
	Duration time.Duration
	// Keys, if positive, is the number of distinct keys (BenchKey 0 to
	// Keys-1), drawn uniformly; gets need it, and need the keys put first
	// (BenchPreload). 0 means a new random key for every put.
	Keys int
	// KeySize and ValueSize are the sizes of the keys and values, in bytes.
	KeySize, ValueSize int
	// Seed seeds the keys and values (client c uses the stream (Seed, c)).
	Seed uint64
	// Timeout bounds each request.
	Timeout time.Duration
	// Every, if positive, is how often Bench calls Report with how far it
	// has come (from another goroutine), and once more at the end, before
	// Bench returns.
	Every  time.Duration
	Report func(BenchProgress)
}

func (c BenchConfig) op() string {
	if c.Op == "" {
		return BenchPut
	}
	return c.Op
}

// BenchProgress is how far a Bench run has come.
type BenchProgress struct {
	Op string
	// Elapsed is the part of the measurement window that has passed.
	Elapsed, Duration time.Duration
	// Ops counts answered requests in the window, Errors failed ones.
	Ops, Errors int64
}

// String is "3s/10s: 12345 puts (4115/s), 0 errors".
func (p BenchProgress) String() string {
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Ops) / p.Elapsed.Seconds()
	}
	return fmt.Sprintf("%s/%s: %d %ss (%.0f/s), %d errors", p.Elapsed.Round(time.Second), p.Duration, p.Ops, p.Op, rate, p.Errors)
}

// BenchResult is what a Bench run measured over its window.
type BenchResult struct {
	Ops    int
	Errors int
	// Elapsed is the length of the measurement window.
	Elapsed  time.Duration
	P50, P99 time.Duration
	Max      time.Duration
	// Latencies are those of the counted requests, ascending.
	Latencies []time.Duration
	// FirstErr is the first failed request's error, if any failed.
	FirstErr error
}

// Percentile returns the nearest-rank p-quantile (0 < p <= 1) of the
// latencies: the smallest one that at least p of them are at or below; 0
// without any.
func (r BenchResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(r.Latencies))))
	return r.Latencies[min(max(rank, 1), len(r.Latencies))-1]
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

// BenchKey returns key i of size bytes: "k" and i, zero-padded (longer
// than size if i needs more digits).
func BenchKey(i, size int) string { return fmt.Sprintf("k%0*d", max(size-1, 1), i) }

var (
	putOK    = []byte(`{"ok":true}`)
	getFound = []byte(`{"found":true,`)
)

// benchClient sends one client's requests. Keys and values are
// alphanumeric, so they need no JSON escaping.
type benchClient struct {
	api   apiv1.RaftdClient
	value string
}

// put applies one put of key; a result other than the kv FSM's ok is an
// error.
func (c benchClient) put(ctx context.Context, key string) error {
	cmd := fmt.Appendf(nil, `{"op":"put","key":"%s","value":"%s"}`, key, c.value)
	resp, err := c.api.Apply(ctx, &apiv1.ApplyRequest{Command: cmd})
	if err != nil {
		return err
	}
	if !bytes.Equal(resp.GetResult(), putOK) {
		return fmt.Errorf("put %s: result %s", key, resp.GetResult())
	}
	return nil
}

// get runs one linearizable get of key, which must be found.
func (c benchClient) get(ctx context.Context, key string) error {
	q := fmt.Appendf(nil, `{"op":"get","key":"%s"}`, key)
	resp, err := c.api.Query(ctx, &apiv1.QueryRequest{Query: q, Consistency: apiv1.Consistency_CONSISTENCY_LINEARIZABLE})
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(resp.GetResult(), getFound) {
		return fmt.Errorf("get %s: result %s", key, resp.GetResult())
	}
	return nil
}

// Bench sends kv requests (cfg.Op) from cfg.Clients closed-loop clients
// sharing conns (client c uses conns[c%len(conns)]) for cfg.Warmup and
// cfg.Duration, or until ctx ends, and measures those in the window. The
// cluster must run the kv FSM; give it the leader's API address so that
// requests are not forwarded.
func Bench(ctx context.Context, conns []*grpc.ClientConn, cfg BenchConfig) BenchResult {
	op := cfg.op()
	from := time.Now().Add(cfg.Warmup)
	to := from.Add(cfg.Duration)
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
			bc := benchClient{api: apiv1.NewRaftdClient(conns[c%len(conns)]), value: randString(r, cfg.ValueSize)}
			send := bc.put
			if op == BenchGet {
				send = bc.get
			}
			var mine []time.Duration
			var myErrs int
			var myFirst error
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					break
				}
				var key string
				if cfg.Keys > 0 {
					key = BenchKey(r.IntN(cfg.Keys), cfg.KeySize)
				} else {
					key = randString(r, cfg.KeySize)
				}
				rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				err := send(rctx, key)
				cancel()
				t1 := time.Now()
				if t0.Before(from) || t1.After(to) || (err != nil && ctx.Err() != nil) {
					continue
				}
				if err != nil {
					myErrs++
					bad.Add(1)
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, t1.Sub(t0))
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
		cfg.Report(BenchProgress{Op: op, Elapsed: min(max(time.Since(from), 0), cfg.Duration), Duration: cfg.Duration, Ops: ops.Load(), Errors: bad.Load()})
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
	slices.Sort(lats)
	res := BenchResult{Ops: len(lats), Errors: errs, Elapsed: cfg.Duration, Latencies: lats, FirstErr: firstErr}
	res.P50, res.P99 = res.Percentile(0.50), res.Percentile(0.99)
	if len(lats) > 0 {
		res.Max = lats[len(lats)-1]
	}
	return res
}

// BenchPreload puts every key a get benchmark reads (BenchKey 0 to
// cfg.Keys-1) once, from cfg.Clients clients (at most 64) sharing conns.
func BenchPreload(ctx context.Context, conns []*grpc.ClientConn, cfg BenchConfig) error {
	clients := min(max(cfg.Clients, 1), 64)
	keys := make(chan int)
	errc := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(c)))
			bc := benchClient{api: apiv1.NewRaftdClient(conns[c%len(conns)]), value: randString(r, cfg.ValueSize)}
			for k := range keys {
				rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				err := bc.put(rctx, BenchKey(k, cfg.KeySize))
				cancel()
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var err error
send:
	for k := range cfg.Keys {
		select {
		case keys <- k:
		case err = <-errc:
			break send
		case <-ctx.Done():
			err = ctx.Err()
			break send
		}
	}
	close(keys)
	wg.Wait()
	close(errc)
	if err == nil {
		err = <-errc
	}
	if err != nil {
		return fmt.Errorf("bench: preload %d keys: %w", cfg.Keys, err)
	}
	return nil
}
