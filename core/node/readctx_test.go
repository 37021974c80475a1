package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/raftd/raftd/core/raft"
)

// ctxLog records the ReadIndex request contexts each node incarnation sent.
type ctxLog struct {
	mu    sync.Mutex
	owner map[string]string // context -> "node N incarnation I"
	dups  []string
	n     int
}

// ctxRecorder is a Transport that records the read contexts its node
// originates in MsgReadIndex (a follower asks the leader). A leader's own
// reads put no context on the wire: raft confirms them by numbered
// heartbeat rounds.
type ctxRecorder struct {
	Transport
	id  uint64
	inc int
	log *ctxLog
}

func (r *ctxRecorder) Send(msgs []raft.Message) {
	for _, m := range msgs {
		if m.Type != raft.MsgReadIndex || len(m.Context) == 0 {
			continue
		}
		rc := m.Context
		who := fmt.Sprintf("node %d incarnation %d", r.id, r.inc)
		r.log.mu.Lock()
		if prev, ok := r.log.owner[string(rc)]; ok && prev != who {
			r.log.dups = append(r.log.dups, fmt.Sprintf("context %x sent by %s was sent again by %s", rc, prev, who))
		}
		r.log.owner[string(rc)] = who
		r.log.n++
		r.log.mu.Unlock()
	}
	r.Transport.Send(msgs)
}

// TestReadContextsUniqueAcrossRestarts: a node's ReadIndex request
// contexts never repeat across restarts of the node. The leader matches a
// confirmation to a read by its context, so a context reused by a new
// incarnation could be confirmed by a stale heartbeat answer meant for the
// previous one.
func TestReadContextsUniqueAcrossRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &ctxLog{owner: map[string]string{}}
		incs := map[uint64]int{}
		c := newCluster(t, 3, func(cfg *Config) {
			incs[cfg.ID]++
			cfg.Transport = &ctxRecorder{Transport: cfg.Transport, id: cfg.ID, inc: incs[cfg.ID], log: log}
		})
		ctx := context.Background()
		for round := range 3 {
			c.waitLeader()
			if _, err := c.nodes[1].Propose(ctx, []byte(fmt.Sprintf("put:k:%d", round))); err != nil {
				t.Fatal(err)
			}
			for id := uint64(1); id <= 3; id++ {
				for range 3 {
					if got, err := c.nodes[id].Read(ctx, []byte("get:k")); err != nil || string(got) != fmt.Sprint(round) {
						t.Fatalf("round %d: read on node %d: %q, %v", round, id, got, err)
					}
				}
			}
			// Restart every node, one at a time (a quorum stays up).
			for id := uint64(1); id <= 3; id++ {
				c.stop(id)
				c.start(id)
				c.waitLeader()
			}
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		t.Logf("%d read contexts sent", log.n)
		for i, d := range log.dups {
			if i == 10 {
				t.Errorf("... and %d more", len(log.dups)-i)
				break
			}
			t.Error(d)
		}
		// Each Read on a follower sends its context at least once (6 of the
		// 9 reads of each round).
		if log.n < 18 {
			t.Fatalf("only %d read contexts recorded for 18 reads on followers", log.n)
		}
	})
}
