package node

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestPacer(t *testing.T) {
	var p pacer
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if !p.ready(t0) {
		t.Fatal("a pacer that never ran is not ready")
	}
	p.ran(t0, t0.Add(2*time.Second)) // a 2 s run: the next waits 18 s after its end
	end := t0.Add(2 * time.Second)
	for _, c := range []struct {
		at   time.Time
		want bool
	}{
		{end, false},
		{end.Add(paceFactor*2*time.Second - time.Nanosecond), false},
		{end.Add(paceFactor * 2 * time.Second), true},
	} {
		if got := p.ready(c.at); got != c.want {
			t.Errorf("ready %v after the run ended = %v, want %v", c.at.Sub(end), got, c.want)
		}
	}
	p.ran(t0, t0.Add(paceMinRun-time.Nanosecond)) // a short run lifts the wait at once
	if !p.ready(t0) {
		t.Error("not ready after a run shorter than paceMinRun")
	}
}

// testClock is a wall clock that moves only when the test says so.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// A snapshot whose body took 10 s (held by the test while its clock
// moves) holds the next automatic snapshot back for 9 x 10 s after it
// ended, however many entries are applied meanwhile; an explicit one
// (ExportSnapshot) is not held back; once the time has passed, automatic
// snapshots resume.
func TestSlowSnapshotPacesTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newTestClock()
		const every = 20
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = every
			cfg.SnapshotTrailing = 5
			cfg.clock = clk.now
		})
		lead := c.waitLeader()
		n, f := c.nodes[lead], c.fsms[lead]
		release := c.startHeldSnapshot(lead, every)
		clk.advance(10 * time.Second)
		release()
		c.waitNode(lead, "the slow snapshot taken", func(n *Node) bool { return n.Metrics().SnapshotsTaken == 1 })

		c.proposeN(lead, 5*every)
		clk.advance(89 * time.Second) // 1 s short of 9 x 10 s after the end
		c.proposeN(lead, 2*every)
		synctest.Wait()
		if m := n.Metrics(); m.SnapshotsStarted != 1 {
			t.Fatalf("%d snapshots started within 9 x the slow one's 10 s, want only the slow one", m.SnapshotsStarted)
		}
		if _, rc, err := n.ExportSnapshot(context.Background(), true); err != nil {
			t.Fatalf("an explicit snapshot while automatic ones are paced: %v", err)
		} else {
			_ = rc.Close()
		}
		if m := n.Metrics(); m.SnapshotsTaken != 2 {
			t.Fatalf("%d snapshots taken after ExportSnapshot, want 2", m.SnapshotsTaken)
		}

		// The explicit one was instant on the test clock; the slow one
		// sets the pace again.
		f.mu.Lock()
		f.snapGate = make(chan struct{})
		gate2 := f.snapGate
		f.mu.Unlock()
		c.proposeN(lead, every)
		c.waitNode(lead, "a snapshot started", func(n *Node) bool { return n.Metrics().SnapshotsStarted == 3 })
		clk.advance(10 * time.Second)
		close(gate2)
		c.waitNode(lead, "the second slow snapshot taken", func(n *Node) bool { return n.Metrics().SnapshotsTaken == 3 })
		c.proposeN(lead, 3*every)
		synctest.Wait()
		if m := n.Metrics(); m.SnapshotsStarted != 3 {
			t.Fatalf("%d snapshots started right after a slow one, want 3", m.SnapshotsStarted)
		}
		clk.advance(90 * time.Second)
		c.proposeN(lead, every)
		c.waitNode(lead, "automatic snapshots resumed", func(n *Node) bool { return n.Metrics().SnapshotsTaken == 4 })
	})
}

// A checkpoint whose digest took 10 s on the leader holds the next
// automatic checkpoint back for 9 x 10 s, then they resume.
func TestSlowCheckpointPacesTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newTestClock()
		const every = 10
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.CheckpointEntries = every
			cfg.clock = clk.now
		})
		lead := c.waitLeader()
		n := c.nodes[lead]
		c.proposeN(lead, every)
		c.waitNode(lead, "a checkpoint agreed", func(n *Node) bool { return n.Metrics().CheckpointsAgreed == 1 })
		// As if the leader's digest had taken 10 s.
		end := clk.now().Add(10 * time.Second)
		n.ck.pace.ran(clk.now(), end)
		clk.advance(10 * time.Second)

		c.proposeN(lead, 5*every)
		clk.advance(89 * time.Second)
		c.proposeN(lead, 2*every)
		synctest.Wait()
		if m := n.Metrics(); m.Checkpoints != 1 {
			t.Fatalf("%d checkpoints within 9 x the slow one's 10 s, want 1", m.Checkpoints)
		}
		clk.advance(time.Second)
		c.proposeN(lead, every)
		c.waitNode(lead, "automatic checkpoints resumed", func(n *Node) bool { return n.Metrics().CheckpointsAgreed == 2 })
	})
}

// The leader's digest feeds the pace: its capture and hash, timed on the
// node's clock.
func TestCheckpointDigestSetsThePace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := newTestClock()
		c := newCluster(t, 1, func(cfg *Config) {
			cfg.clock = func() time.Time {
				// Every reading of the clock is paceMinRun later: a digest
				// (read before the capture and after the hash) takes at
				// least that long.
				clk.advance(paceMinRun)
				return clk.now()
			}
		})
		lead := c.waitLeader()
		n := c.nodes[lead]
		c.proposeN(lead, 3)
		if _, err := n.Verify(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n.ck.pace.ready(clk.now()) {
			t.Fatal("a digest that took at least paceMinRun left automatic checkpoints unpaced")
		}
		if !n.ck.pace.ready(clk.now().Add(time.Hour)) {
			t.Fatal("paced for over an hour")
		}
	})
}

// A snapshot due by the entries but held back by its pace is taken when
// the pace allows, with no further writes to wake the apply goroutine (on
// the bubble's clock, which moves only while everything sleeps).
func TestPacedSnapshotTakenWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = 20
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = every
			cfg.SnapshotTrailing = 5
		})
		lead := c.waitLeader()
		n := c.nodes[lead]
		release := c.startHeldSnapshot(lead, every)
		time.Sleep(10 * time.Second) // the body takes 10 s
		release()
		synctest.Wait()
		if m := n.Metrics(); m.SnapshotsTaken != 1 {
			t.Fatalf("%d snapshots taken after the held one was released, want 1", m.SnapshotsTaken)
		}
		c.proposeN(lead, every) // due, but paced until 90 s after the end
		time.Sleep(85 * time.Second)
		synctest.Wait()
		if m := n.Metrics(); m.SnapshotsStarted != 1 {
			t.Fatalf("%d snapshots started 85 s after a 10 s one, want 1", m.SnapshotsStarted)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if m := n.Metrics(); m.SnapshotsTaken != 2 {
			t.Fatalf("%d snapshots taken 95 s after a 10 s one with nothing more applied, want 2", m.SnapshotsTaken)
		}
	})
}

// startHeldSnapshot makes the snapshot bodies of node id's state machine
// wait until the returned release is called, and proposes on id until an
// automatic snapshot (every SnapshotEntries entries) has started.
func (c *cluster) startHeldSnapshot(id uint64, every int) (release func()) {
	c.t.Helper()
	n, f := c.nodes[id], c.fsms[id]
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	c.t.Cleanup(release)
	f.mu.Lock()
	f.snapGate = gate
	f.mu.Unlock()
	for i := 0; n.Metrics().SnapshotsStarted == 0; i++ {
		if i > 2*every {
			c.t.Fatal("no snapshot started")
		}
		c.proposeN(id, 1)
	}
	return release
}
