package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Test 1: 1,000 puts through random nodes; every node's stale list is the
// same and every node reports the same applied index.
func TestPutsThroughRandomNodesConverge(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	const puts, workers = 1000, 8
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(1, uint64(w)))
			for i := w; i < puts; i += workers {
				k, v := fmt.Sprintf("key-%04d", i), fmt.Sprintf("v%d-%d", i, r.IntN(1000))
				id := c.ids[r.IntN(len(c.ids))]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := c.apply(ctx, id, fmt.Sprintf(`{"op":"put","key":%q,"value":%q}`, k, v))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("put %s via node %d: %v", k, id, err)
					return
				}
				if res != `{"ok":true}` {
					errs <- fmt.Errorf("put %s via node %d: result %s", k, id, res)
					return
				}
				mu.Lock()
				want[k] = v
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	applied := c.waitConverged(c.ids, puts, 30*time.Second)
	t.Logf("all nodes applied index %d", applied)
	first := c.staleList(c.ids[0])
	got := kvItems(t, first)
	if len(got) != puts {
		t.Fatalf("node 1 lists %d keys, want %d", len(got), puts)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("node 1: %s = %q, want %q", k, got[k], v)
		}
	}
	for _, id := range c.ids[1:] {
		if l := c.staleList(id); l != first {
			t.Fatalf("node %d's stale list differs from node 1's", id)
		}
	}
}

// Test 3: a SIGSTOPped follower does not block writes; after SIGCONT it
// converges.
func TestStoppedFollowerDoesNotBlockWrites(t *testing.T) {
	c := newCluster(t, 3, bin("raftd-fsm-kv"))
	lead, _ := c.waitLeader(10*time.Second, 0)
	var follower uint64
	for _, id := range c.ids {
		if id != lead {
			follower = id
			break
		}
	}
	c.signal(follower, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			c.signal(follower, syscall.SIGCONT)
		}
	}()
	var live []uint64
	for _, id := range c.ids {
		if id != follower {
			live = append(live, id)
		}
	}
	const n = 300
	t0 := time.Now()
	for i := 0; i < n; i++ {
		id := live[i%len(live)]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.apply(ctx, id, fmt.Sprintf(`{"op":"put","key":"s%03d","value":"%d"}`, i, i))
		cancel()
		if err != nil {
			t.Fatalf("put %d via node %d while node %d is stopped: %v", i, id, follower, err)
		}
	}
	t.Logf("%d puts with node %d stopped took %s", n, follower, time.Since(t0))
	// The CLI skips the stopped node when it is listed first.
	t1 := time.Now()
	code, out, stderr := raftd(t, nil, "apply", "--addr", c.nodes[follower].apiAddr+","+c.nodes[live[0]].apiAddr, `{"op":"put","key":"cli","value":"1"}`)
	if code != 0 || strings.TrimSpace(out) != `{"ok":true}` || time.Since(t1) > 4*time.Second {
		t.Fatalf("apply with the stopped node listed first: exit %d in %s, %q %q", code, time.Since(t1), out, stderr)
	}
	code, out, stderr = raftd(t, nil, "status", "--json", "--addr", c.nodes[live[0]].apiAddr)
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`{"id":%d,"raft_addr":%q,`, follower, c.nodes[follower].raftAddr)) || !strings.Contains(out, `"error":`) {
		t.Fatalf("status with node %d stopped: exit %d, %q %q", follower, code, out, stderr)
	}
	c.signal(follower, syscall.SIGCONT)
	stopped = false
	c.waitConverged(c.ids, n+1, 30*time.Second)
	want := c.staleList(lead)
	if got := c.staleList(follower); got != want {
		t.Fatalf("resumed follower %d differs from leader %d", follower, lead)
	}
	if len(kvItems(t, want)) != n+1 {
		t.Fatalf("leader lists %d keys, want %d", len(kvItems(t, want)), n+1)
	}
}
