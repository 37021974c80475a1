package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// readRoundAck reports whether m answers a ReadIndex heartbeat round (a
// plain heartbeat's answer carries no round).
func readRoundAck(m raft.Message) bool {
	return m.Type == raft.MsgHeartbeatResp && len(m.Context) > 0
}

// TestReadsDuringRoundWaitForNextRound: reads that reach the leader while
// a ReadIndex round is on the wire are not confirmed by it; they share the
// next round, which confirms all of them at once, and their queries share
// one state machine call per round. A read started after a write returned
// sees it.
func TestReadsDuringRoundWaitForNextRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		ln := c.nodes[lead]
		ctx := context.Background()
		if _, err := ln.Propose(ctx, []byte("put:k:1")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(ln.CommitIndex())

		// Hold every answer to a read round; then drop them.
		var mu sync.Mutex
		gate := make(chan struct{})
		hold, drop := true, false
		held := 0
		c.nw.setDrop(func(from, to uint64, m raft.Message) bool {
			if !readRoundAck(m) {
				return false
			}
			mu.Lock()
			h, d := hold, drop
			if h {
				held++
			}
			mu.Unlock()
			if h {
				<-gate
				return false
			}
			return d
		})
		type answer struct {
			res string
			err error
		}
		read := func() chan answer {
			ch := make(chan answer, 1)
			go func() {
				res, err := ln.Read(ctx, []byte("get:k"))
				ch <- answer{string(res), err}
			}()
			return ch
		}
		pending := func(ch chan answer) bool {
			select {
			case a := <-ch:
				ch <- a
				return false
			default:
				return true
			}
		}
		// settle lets messages cross (1 ms per hop, fake time): far less
		// than the election timeout after which a round is retried.
		settle := func() {
			time.Sleep(5 * time.Millisecond)
			synctest.Wait()
		}
		rounds0 := ln.Metrics().ReadIndexRounds
		r1 := read()
		settle()
		mu.Lock()
		if held != 2 {
			t.Fatalf("%d read-round answers held, want 2 (one round to 2 followers)", held)
		}
		mu.Unlock()
		r2, r3 := read(), read()
		settle()
		if !pending(r1) || !pending(r2) || !pending(r3) {
			t.Fatal("a read was answered while its round was held")
		}
		if got := ln.Metrics().ReadIndexRounds - rounds0; got != 1 {
			t.Fatalf("%d rounds started, want 1 while one is in flight", got)
		}
		// Release round 1 and drop the answers to any later round: round 1
		// confirms r1 only.
		mu.Lock()
		hold, drop = false, true
		mu.Unlock()
		close(gate)
		settle()
		if a := <-r1; a.err != nil || a.res != "1" {
			t.Fatalf("r1: %q, %v", a.res, a.err)
		}
		if !pending(r2) || !pending(r3) {
			t.Fatal("reads that arrived during round 1 were answered by it")
		}
		if got := ln.Metrics().ReadIndexRounds - rounds0; got != 2 {
			t.Fatalf("%d rounds started, want 2 (the queued reads share one)", got)
		}
		// A write completes while r2 and r3 wait; a read started after it
		// returned sees it.
		if _, err := ln.Propose(ctx, []byte("put:k:2")); err != nil {
			t.Fatal(err)
		}
		r4 := read()
		calls0 := c.fsms[lead].queries()
		mu.Lock()
		drop = false
		mu.Unlock()
		for i, ch := range []chan answer{r2, r3} {
			// Concurrent with the write: either value.
			if a := <-ch; a.err != nil || a.res != "1" && a.res != "2" {
				t.Fatalf("read %d: %q, %v", i+2, a.res, a.err)
			}
		}
		if a := <-r4; a.err != nil || a.res != "2" {
			t.Fatalf("read started after the write returned: %q, %v; want 2", a.res, a.err)
		}
		rounds := ln.Metrics().ReadIndexRounds - rounds0
		calls := uint64(c.fsms[lead].queries() - calls0)
		t.Logf("rounds %d, state machine query calls %d for 3 reads", rounds, calls)
		if calls > rounds-2 {
			t.Errorf("%d query calls for %d rounds: the reads of a round do not share one", calls, rounds-2)
		}
	})
}

// TestReadsSeeWritesUnderLoad: concurrent writers and linearizable
// readers on every node; each read started after a write returned sees
// that write or a later one.
func TestReadsSeeWritesUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		c.waitLeader()
		ctx := context.Background()
		const writers, writes = 4, 30
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("w%d", w)
				for i := 1; i <= writes; i++ {
					n := c.nodes[uint64((w+i)%3+1)]
					if _, err := n.Propose(ctx, fmt.Appendf(nil, "put:%s:%d", key, i)); err != nil {
						t.Errorf("write %s=%d: %v", key, i, err)
						return
					}
					// Reads on every node after the write returned.
					for id := uint64(1); id <= 3; id++ {
						res, err := c.nodes[id].Read(ctx, []byte("get:"+key))
						if err != nil {
							t.Errorf("read %s on node %d: %v", key, id, err)
							return
						}
						if got := string(res); got != fmt.Sprint(i) {
							t.Errorf("read %s on node %d after write %d returned: %q", key, id, i, got)
						}
					}
				}
			}()
		}
		wg.Wait()
	})
}
