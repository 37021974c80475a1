package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// workload is the shape of the requests: kv puts and linearizable gets of
// keys drawn uniformly from Keys distinct ones.
type workload struct {
	Keys      int
	KeySize   int
	ValueSize int
	// Timeout bounds one request.
	Timeout time.Duration
}

// key returns key i, KeySize bytes: "k" and i zero-padded.
func (w workload) key(i int) string { return fmt.Sprintf("k%0*d", w.KeySize-1, i) }

// putCommand returns the kv command that puts value under key.
func putCommand(key, value string) []byte {
	return fmt.Appendf(nil, `{"op":"put","key":%q,"value":%q}`, key, value)
}

// getQuery returns the kv query that reads key.
func getQuery(key string) []byte { return fmt.Appendf(nil, `{"op":"get","key":%q}`, key) }

var (
	putOK    = []byte(`{"ok":true}`)
	getFound = []byte(`{"found":true,`)
)

// requester sends one request of a workload over the client API.
type requester struct {
	api   apiv1.RaftdClient
	value string
}

// put applies one put of key; a result other than the kv FSM's ok is an
// error.
func (r requester) put(ctx context.Context, key string) error {
	resp, err := r.api.Apply(ctx, &apiv1.ApplyRequest{Command: putCommand(key, r.value)})
	if err != nil {
		return err
	}
	if !bytes.Equal(resp.GetResult(), putOK) {
		return fmt.Errorf("put %s: result %s", key, resp.GetResult())
	}
	return nil
}

// get runs one linearizable get of key, which must be found (the keys are
// preloaded before the gets).
func (r requester) get(ctx context.Context, key string) error {
	resp, err := r.api.Query(ctx, &apiv1.QueryRequest{Query: getQuery(key), Consistency: apiv1.Consistency_CONSISTENCY_LINEARIZABLE})
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(resp.GetResult(), getFound) {
		return fmt.Errorf("get %s: result %s", key, resp.GetResult())
	}
	return nil
}

// window is when a step measures: requests that start at or after From and
// finish at or before To count; the others only load the cluster.
type window struct{ From, To time.Time }

// drive runs conc closed-loop clients, each sending its next request of op
// when its previous one is answered, until win.To or ctx ends. Client i
// uses conns[i%len(conns)]. It returns the latencies of the successful
// requests in the window, the number of failed ones and the first error.
func drive(ctx context.Context, conns []*grpc.ClientConn, w workload, value, op string, conc int, win window) ([]time.Duration, int, error) {
	var (
		mu       sync.Mutex
		lats     []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	for i := range conc {
		wg.Go(func() {
			r := requester{api: apiv1.NewRaftdClient(conns[i%len(conns)]), value: value}
			send := r.put
			if op == "get" {
				send = r.get
			}
			rng := rand.New(rand.NewPCG(uint64(i), uint64(win.From.UnixNano())))
			var mine []time.Duration
			var myErrs int
			var myFirst error
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(win.To) {
					break
				}
				rctx, cancel := context.WithTimeout(ctx, w.Timeout)
				err := send(rctx, w.key(rng.IntN(w.Keys)))
				cancel()
				t1 := time.Now()
				if t0.Before(win.From) || t1.After(win.To) {
					continue
				}
				if err != nil {
					myErrs++
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, t1.Sub(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lats = append(lats, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
		})
	}
	wg.Wait()
	return lats, errs, firstErr
}

// preload puts every key once, from 64 clients, so that every get finds
// its key.
func preload(ctx context.Context, conns []*grpc.ClientConn, w workload, value string) error {
	const clients = 64
	keys := make(chan int)
	errc := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			r := requester{api: apiv1.NewRaftdClient(conns[i%len(conns)]), value: value}
			for k := range keys {
				rctx, cancel := context.WithTimeout(ctx, w.Timeout)
				err := r.put(rctx, w.key(k))
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
	for k := range w.Keys {
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
		return fmt.Errorf("preload: %w", err)
	}
	return nil
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
			r := requester{api: apiv1.NewRaftdClient(cc), value: randomValue(stateValueBytes)}
			for i := range next {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				err := r.put(rctx, fmt.Sprintf("state-%d", i))
				cancel()
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
