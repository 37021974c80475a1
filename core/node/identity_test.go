package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestLogRecordsTheClusterFSM: the bootstrap entry records the cluster's
// FSM, so a node restarted with another FSM refuses to start, naming both,
// even before any snapshot exists (the log is all there is); restarted
// with its own FSM it starts and serves its state.
func TestLogRecordsTheClusterFSM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = -1 })
		lead := c.waitLeader()
		ctx := context.Background()
		for range 5 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:2")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		id := lead%3 + 1
		c.stop(id)
		if s, _ := c.stores[id].Snapshot(); !s.IsEmpty() {
			t.Fatalf("node %d has a snapshot at %d; the test needs a log without one", id, s.Metadata.Index)
		}
		c.fsms[id] = newTestFSM()
		c.fsms[id].name = "counter"
		_, err := New(c.config(id))
		if !errors.Is(err, ErrWrongFSM) || !strings.Contains(err.Error(), `fsm "counter" cannot run this cluster's fsm "test"`) {
			t.Fatalf("restart with another FSM: %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error is not one line: %q", err)
		}
		c.fsms[id] = newTestFSM()
		n := c.start(id)
		<-n.Ready()
		if got, err := n.StaleRead(ctx, []byte("sum")); err != nil || string(got) != "10" {
			t.Fatalf("restarted node: sum %q, %v", got, err)
		}
	})
}

// TestJoiningNodeWithAnotherFSMFailStops: a node that joins with another
// FSM than the cluster's stops when it applies the bootstrap entry that
// names the cluster's FSM, instead of applying the cluster's commands to
// the wrong state machine; the cluster carries on.
func TestJoiningNodeWithAnotherFSMFailStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		ctx := context.Background()
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		c.stores[4] = newMemStorage()
		c.fsms[4] = newTestFSM()
		c.fsms[4].name = "counter"
		cfg := c.config(4)
		cfg.Peers = nil
		n4, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[4] = n4
		c.nw.set(4, n4)
		if err := c.nodes[lead].AddLearner(ctx, Peer{ID: 4, RaftAddr: "raft-4"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n4.Done():
		case <-time.After(time.Minute): // fake time
			t.Fatalf("node 4 still running with the wrong FSM; applied %d", n4.Applied())
		}
		if err := n4.Err(); !errors.Is(err, ErrWrongFSM) || !strings.Contains(err.Error(), `fsm "counter" cannot run this cluster's fsm "test" (recorded in log entry 1)`) {
			t.Fatalf("node 4 stopped with %v", err)
		}
		if _, _, cmds, _ := c.fsms[4].snapshotOf(); cmds != 0 {
			t.Fatalf("node 4 applied %d commands to the wrong FSM", cmds)
		}
		c.nw.set(4, nil)
		delete(c.nodes, 4)
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
	})
}
