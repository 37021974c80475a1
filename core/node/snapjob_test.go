package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSnapshotDoesNotStallApplies holds the leader's snapshot body until the
// test has seen 200 more writes applied (issue 6: taking a snapshot does not
// stop writes). With the snapshot written on the apply goroutine the writes
// time out. It also checks that only one snapshot is in flight, that the
// log is not compacted behind an incomplete snapshot, and that the held
// snapshot is the state at its capture index.
func TestSnapshotDoesNotStallApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newTestClock() // stopped: the held snapshot paces nothing (pace_test.go)
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 50
			cfg.SnapshotTrailing = 10
			cfg.clock = clk.now
		})
		lead := c.waitLeader()
		n, f, st := c.nodes[lead], c.fsms[lead], c.stores[lead]
		gate := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(gate) }) }
		t.Cleanup(release) // runs before the cluster's shutdown
		f.mu.Lock()
		f.snapGate = gate
		f.mu.Unlock()
		captured := func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.snapStarts+f.snapshots > 0
		}
		ctx := context.Background()
		for i := 0; !captured(); i++ {
			if i > 200 {
				t.Fatal("no snapshot started")
			}
			if _, err := n.Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		capturedAt := n.Applied()
		firstBefore, _ := st.FirstIndex()
		const further = 200
		for i := range further {
			pctx, cancel := context.WithTimeout(ctx, 50*testTick)
			_, err := n.Propose(pctx, []byte("add:1"))
			cancel()
			if err != nil {
				t.Fatalf("write %d after a snapshot was started at index %d: %v (applies stalled behind the snapshot)", i, capturedAt, err)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 50*testTick)
		if _, err := n.Read(rctx, []byte("sum")); err != nil {
			t.Fatalf("linearizable read while the snapshot streams: %v", err)
		}
		cancel()
		s, _ := n.Status(ctx)
		first, _ := st.FirstIndex()
		if s.SnapshotIndex >= capturedAt-1 || first != firstBefore || s.Metrics.SnapshotsStarted != 1 {
			t.Fatalf("while held: snapshot index %d (capture near %d), first index %d -> %d, %d started; want the old snapshot, no compaction, one in flight",
				s.SnapshotIndex, capturedAt, firstBefore, first, s.Metrics.SnapshotsStarted)
		}
		release()
		// The held snapshot completes, is recorded and the log compacted
		// behind it; the next one follows.
		for i := 0; ; i++ {
			s, _ = n.Status(ctx)
			if s.Metrics.SnapshotsTaken >= 2 {
				break
			}
			if i > 1000 {
				t.Fatalf("snapshots did not resume: %+v", s.Metrics)
			}
			if _, err := n.Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		first, _ = st.FirstIndex()
		if first <= firstBefore || st.compacts.Load() == 0 {
			t.Fatalf("log not compacted: first index %d -> %d", firstBefore, first)
		}
		checkSnapshotBody(t, st)
		c.waitApplied(n.Applied())
		c.checkFSMs()
	})
}

// TestSnapshotStreamCrashRecovers crashes the state machine in the middle
// of a background snapshot body, while idle: the partial body is aborted
// (never recorded), the state machine is restarted, restored from the
// latest complete snapshot and replayed, and later snapshots succeed.
func TestSnapshotStreamCrashRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 30
			cfg.SnapshotTrailing = 5
		})
		lead := c.waitLeader()
		n, f, st := c.nodes[lead], c.fsms[lead], c.stores[lead]
		ctx := context.Background()
		// A first complete snapshot.
		for n.Metrics().SnapshotsTaken == 0 {
			if _, err := n.Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		good, _ := st.Snapshot()
		gate := make(chan struct{})
		f.mu.Lock()
		f.snapGate, f.crashMidSnapshot = gate, 1
		f.mu.Unlock()
		for n.Metrics().SnapshotsStarted < 2 {
			if _, err := n.Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		// Idle now: the crash happens with no Apply to notice it.
		close(gate)
		for i := 0; n.Metrics().StateMachineRestarts == 0; i++ {
			if i > 100 {
				t.Fatal("crash during the snapshot body was not recovered")
			}
			time.Sleep(testTick)
		}
		// The partial body was aborted; whatever is recorded is complete
		// (a snapshot may follow at once: the crash is retried one entry
		// later).
		if st.aborts.Load() != 1 {
			t.Fatalf("%d aborted bodies, want 1", st.aborts.Load())
		}
		checkSnapshotBody(t, st)
		f.mu.Lock()
		restores := f.restores
		f.mu.Unlock()
		if restores == 0 {
			t.Fatal("the restarted state machine was not restored from the snapshot")
		}
		want := fmt.Sprint(n.Applied() - 3 - 1) // 3 membership entries, 1 no-op
		if got, err := n.Read(ctx, []byte("sum")); err != nil || string(got) != want {
			t.Fatalf("sum after recovery %q, %v; want %s", got, err, want)
		}
		for range 40 {
			if _, err := n.Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		if cur, _ := st.Snapshot(); cur.Metadata.Index <= good.Metadata.Index {
			t.Fatalf("no snapshot after recovery (latest %d)", cur.Metadata.Index)
		}
		checkSnapshotBody(t, st)
		c.waitApplied(n.Applied())
		c.checkFSMs()
	})
}

// TestInFlightSnapshotCancelled: a follower whose snapshot body is held
// receives a newer snapshot from the leader; installing it cancels the
// held one (aborted, never recorded). Stopping a node with a held body
// returns too.
func TestInFlightSnapshotCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 30
			cfg.SnapshotTrailing = 5
		})
		lead := c.waitLeader()
		fid := lead%3 + 1
		f, st := c.fsms[fid], c.stores[fid]
		gate := make(chan struct{})
		t.Cleanup(func() { close(gate) })
		f.mu.Lock()
		f.snapGate = gate
		f.mu.Unlock()
		ctx := context.Background()
		for c.nodes[fid].Metrics().SnapshotsStarted == 0 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.nw.isolate(fid, true)
		for range 200 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.nw.isolate(fid, false)
		c.waitApplied(c.nodes[lead].Applied())
		m := c.nodes[fid].Metrics()
		if m.SnapshotsInstalled != 1 || m.SnapshotsTaken != 0 || st.aborts.Load() != 1 {
			t.Fatalf("follower: %d installed, %d taken, %d aborted; want 1, 0, 1", m.SnapshotsInstalled, m.SnapshotsTaken, st.aborts.Load())
		}
		c.checkFSMs()
		// Held again, then stopped.
		started := m.SnapshotsStarted
		for c.nodes[fid].Metrics().SnapshotsStarted == started {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.stop(fid)
		if st.aborts.Load() != 2 {
			t.Fatalf("%d aborted bodies after stop, want 2", st.aborts.Load())
		}
	})
}

// checkSnapshotBody checks that st's latest snapshot body is complete and
// holds the FSM state at (or, for trailing non-commands, before) its index.
func checkSnapshotBody(t *testing.T, st *memStorage) {
	t.Helper()
	snap, _ := st.Snapshot()
	hdr, rc, err := st.OpenSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var fs fsmState
	if err := json.NewDecoder(rc).Decode(&fs); err != nil {
		t.Fatalf("snapshot %d: body: %v", snap.Metadata.Index, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("snapshot %d: body: %v", snap.Metadata.Index, err)
	}
	if hdr.Index != snap.Metadata.Index || hdr.FSMFormat != testFormat || fs.Applied > hdr.Index || fs.Applied+5 < hdr.Index {
		t.Fatalf("snapshot at %d (header %d, format %q) holds FSM state at %d", snap.Metadata.Index, hdr.Index, hdr.FSMFormat, fs.Applied)
	}
}
