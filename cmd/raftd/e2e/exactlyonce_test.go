package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/client"
	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

const (
	onceClients = 4
	onceAdds    = 40
	addCmd      = `{"op":"add","delta":1}`
)

// onceLoad is what onceClients clients adding onceAdds times each saw.
type onceLoad struct {
	unknown    atomic.Int64 // attempts whose outcome was unknown (retried)
	duplicates atomic.Int64 // answers marked duplicate
	mu         sync.Mutex
	values     []int64 // the counter value each add's answer reported
	killed     uint64  // the leader that was killed -9
}

// runCounterLoad runs the clients against c while the leader is killed -9
// once (after a third of the adds) and restarted a second later. Each add
// is retried until it succeeds; an attempt gets 500 µs, doubling up to 2 s
// on each retry, so that many first attempts time out after their command
// was proposed (their outcome is unknown) besides those the kill cuts off.
// With ids every add carries its client's request id (session, seq); the
// retries of an add reuse it. Without, nothing identifies a retry.
func runCounterLoad(t *testing.T, c *cluster, ids bool) *onceLoad {
	t.Helper()
	load := &onceLoad{}
	var done atomic.Int64
	stopKill := make(chan struct{})
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		for done.Load() < onceClients*onceAdds/3 {
			select {
			case <-stopKill:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		lead, _ := c.waitLeader(10*time.Second, 0)
		load.killed = lead
		c.kill(lead)
		time.Sleep(time.Second)
		c.start(lead)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, onceClients)
	for k := range onceClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session := []byte(fmt.Sprintf("e2e-client-%d", k))
			node := c.ids[k%len(c.ids)]
			for i := range onceAdds {
				req := &apiv1.ApplyRequest{Command: []byte(addCmd)}
				if ids {
					seq := uint64(i + 1)
					req.RequestId = &apiv1.RequestID{Client: session, Seq: seq, Acked: seq}
				}
				start := time.Now()
				timeout := 500 * time.Microsecond
				for {
					if time.Since(start) > time.Minute {
						errs <- fmt.Errorf("client %d add %d: no success within a minute", k, i)
						return
					}
					var tr metadata.MD
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					resp, err := c.client(node).Apply(ctx, req, grpc.Trailer(&tr))
					cancel()
					if err == nil {
						var v struct{ Value int64 }
						if jerr := json.Unmarshal(resp.GetResult(), &v); jerr != nil {
							errs <- fmt.Errorf("client %d add %d: result %q: %v", k, i, resp.GetResult(), jerr)
							return
						}
						if resp.GetDuplicate() {
							load.duplicates.Add(1)
						}
						load.mu.Lock()
						load.values = append(load.values, v.Value)
						load.mu.Unlock()
						break
					}
					if !server.IsNotApplied(tr) {
						load.unknown.Add(1)
					}
					node = c.ids[(int(node))%len(c.ids)] // the next node
					timeout = min(2*timeout, 2*time.Second)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopKill)
	<-killDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return load
}

// counterOn reads node id's counter from its own state once it has
// applied everything the cluster committed.
func counterOn(t *testing.T, c *cluster, id uint64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.query(ctx, id, `{"op":"get"}`, true)
	if err != nil {
		t.Fatalf("node %d: %v", id, err)
	}
	var v struct{ Value int64 }
	if err := json.Unmarshal([]byte(res), &v); err != nil {
		t.Fatalf("node %d: %q: %v", id, res, err)
	}
	return v.Value
}

// TestExactlyOnceCounterAcrossLeaderKill: 4 clients add 1 to a counter 40
// times each, every add retried with its request id until it succeeds,
// while the leader is killed -9 once and restarted, and while snapshots
// (every 50 entries) carry the session table to the restarted node. The
// counter ends at exactly 160 on every node, and the answers are the
// values 1..160, each once: a retry got the first application's result.
func TestExactlyOnceCounterAcrossLeaderKill(t *testing.T) {
	needPlugin(t, bin("raftd-fsm-counter"))
	c := newCluster(t, 3, bin("raftd-fsm-counter"), "--snapshot-entries", "50", "--snapshot-trailing", "10")
	load := runCounterLoad(t, c, true)
	const want = onceClients * onceAdds
	applied := c.waitConverged(c.ids, want, 30*time.Second)
	for _, id := range c.ids {
		if got := counterOn(t, c, id); got != want {
			t.Errorf("node %d: counter %d, want %d", id, got, want)
		}
	}
	sort.Slice(load.values, func(i, j int) bool { return load.values[i] < load.values[j] })
	for i, v := range load.values {
		if v != int64(i+1) {
			t.Fatalf("answers are not the values 1..%d, each once: position %d holds %d (%v)", want, i, v, load.values)
		}
	}
	t.Logf("killed leader %d; %d attempts with unknown outcome retried, %d answered as duplicates; applied index %d",
		load.killed, load.unknown.Load(), load.duplicates.Load(), applied)
	if load.unknown.Load() == 0 || load.duplicates.Load() == 0 {
		t.Fatalf("no retry after an unknown outcome was answered as a duplicate (%d unknown, %d duplicates): the test did not exercise deduplication", load.unknown.Load(), load.duplicates.Load())
	}
	// The restarted node rebuilt the session table (from its snapshot and
	// log): a late retry of an early add through it changes nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.New(client.Config{Endpoints: []string{c.nodes[load.killed].apiAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r, err := cl.ApplyWithID(ctx, client.RequestID{Client: []byte("e2e-client-0"), Seq: onceAdds, Acked: onceAdds}, []byte(addCmd))
	if err != nil || !r.Duplicate {
		t.Fatalf("late retry of client 0's last add through node %d: %+v, %v; want a duplicate", load.killed, r, err)
	}
	if got := counterOn(t, c, load.killed); got != want {
		t.Fatalf("node %d: counter %d after a late retry, want %d", load.killed, got, want)
	}
	// An add below the acknowledged floor is refused, not applied again.
	_, err = cl.ApplyWithID(ctx, client.RequestID{Client: []byte("e2e-client-0"), Seq: 1}, []byte(addCmd))
	if !errors.Is(err, client.ErrSessionExpired) {
		t.Fatalf("retry of an acknowledged add: %v; want session expired", err)
	}
}

// TestCounterRetriesWithoutIDsOverCount is the negative control of
// TestExactlyOnceCounterAcrossLeaderKill: the same clients, retries and
// kill, without request ids. Retries after unknown outcomes apply adds
// twice and the counter ends above 160, which the check of the test above
// would catch.
func TestCounterRetriesWithoutIDsOverCount(t *testing.T) {
	needPlugin(t, bin("raftd-fsm-counter"))
	c := newCluster(t, 3, bin("raftd-fsm-counter"), "--snapshot-entries", "50", "--snapshot-trailing", "10")
	load := runCounterLoad(t, c, false)
	const want = onceClients * onceAdds
	c.waitConverged(c.ids, want, 30*time.Second)
	got := counterOn(t, c, c.ids[0])
	t.Logf("without request ids: counter %d after %d adds, %d attempts with unknown outcome retried", got, want, load.unknown.Load())
	if load.duplicates.Load() != 0 {
		t.Fatalf("%d answers marked duplicate without request ids", load.duplicates.Load())
	}
	if got <= want {
		t.Fatalf("counter %d: the retries without request ids did not over-count, so this control shows nothing (%d unknown outcomes)", got, load.unknown.Load())
	}
}
