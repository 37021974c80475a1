package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// poisonCluster starts three nodes, applies five add:1 commands and then a
// poison command through the leader, and waits until every node halted.
// It returns the cluster, the leader and the poison's index.
func poisonCluster(t *testing.T, tune func(*Config)) (*cluster, uint64, uint64) {
	t.Helper()
	c := newCluster(t, 3, tune)
	lead := c.waitLeader()
	ctx := context.Background()
	for range 5 {
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
	}
	before := c.nodes[lead].Applied()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.nodes[lead].Propose(pctx, []byte("poison:1"))
	cancel()
	var he *HaltedError
	if !errors.As(err, &he) || !errors.Is(err, ErrHalted) || !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotApplied) {
		t.Fatalf("the poison's caller got %v, want a halted error (outcome unknown)", err)
	}
	x := he.Halt.Index
	if x <= before {
		t.Fatalf("halted at %d, but %d was applied before the poison", x, before)
	}
	c.waitHalted(c.ids(), x)
	return c, lead, x
}

func (c *cluster) ids() []uint64 {
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// waitHalted waits until each node in ids reports a halt at x.
func (c *cluster) waitHalted(ids []uint64, x uint64) {
	c.t.Helper()
	for range 1000 {
		ok := true
		for _, id := range ids {
			if h := c.nodes[id].Halted(); h == nil || h.Index != x {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(testTick)
	}
	for _, id := range ids {
		c.t.Logf("node %d: halted %+v applied %d", id, c.nodes[id].Halted(), c.nodes[id].Applied())
	}
	c.t.Fatalf("nodes %v did not all halt at index %d", ids, x)
}

// waitResumed waits until no node in ids is halted and each applied idx.
func (c *cluster) waitResumed(ids []uint64, idx uint64) {
	c.t.Helper()
	for range 1000 {
		ok := true
		for _, id := range ids {
			if c.nodes[id].Halted() != nil || c.nodes[id].Applied() < idx {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(testTick)
	}
	for _, id := range ids {
		c.t.Logf("node %d: halted %+v applied %d", id, c.nodes[id].Halted(), c.nodes[id].Applied())
	}
	c.t.Fatalf("nodes %v did not resume and apply index %d", ids, idx)
}

func (c *cluster) poisonHits() map[uint64]int {
	m := map[uint64]int{}
	for id, f := range c.fsms {
		f.mu.Lock()
		m[id] = f.poisonHits
		f.mu.Unlock()
	}
	return m
}

// A command the state machine fails on deterministically (every replica,
// every attempt) must not take the cluster down: every node halts apply at
// its index and stays in raft. A halted node answers status, serves stale
// reads of the state before the poison, refuses proposals and linearizable
// reads beyond the halt with a halted error instead of hanging, and does
// not retry the poison in a loop.
func TestPoisonCommandHaltsApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, lead, x := poisonCluster(t, nil)
		ctx := context.Background()
		hits := c.poisonHits()
		for id, h := range hits {
			// Four attempts in a row at the poison's position, more if it
			// was not the first command of its batch.
			if h < 4 || h > 6 {
				t.Errorf("node %d tried the poison %d times", id, h)
			}
		}
		for id, n := range c.nodes {
			st, err := n.Status(ctx)
			if err != nil {
				t.Fatalf("node %d status: %v", id, err)
			}
			if st.Halted == nil || st.Halted.Index != x || st.Applied != x-1 || st.Halted.Reason == "" {
				t.Fatalf("node %d status: halted %+v applied %d; want halted at %d, applied %d", id, st.Halted, st.Applied, x, x-1)
			}
			if st.Metrics.Halts != 1 {
				t.Errorf("node %d: %d halts counted", id, st.Metrics.Halts)
			}
			if got, err := n.StaleRead(ctx, []byte("sum")); err != nil || string(got) != "5" {
				t.Fatalf("node %d stale read while halted: %q, %v; want 5", id, got, err)
			}
			_, err = n.Propose(ctx, []byte("add:1"))
			if !errors.Is(err, ErrHalted) || !errors.Is(err, ErrNotApplied) {
				t.Fatalf("node %d: proposal while halted: %v; want halted, not applied", id, err)
			}
			if err := n.AddLearner(ctx, Peer{ID: 9, RaftAddr: "raft-9"}); !errors.Is(err, ErrHalted) || !errors.Is(err, ErrNotApplied) {
				t.Fatalf("node %d: membership change while halted: %v; want halted, not applied", id, err)
			}
			if got := n.Metrics().Refused[RefusedHalted]; got != 2 {
				t.Errorf("node %d: Refused[halted] = %d, want 2", id, got)
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = n.Read(rctx, []byte("sum"))
			cancel()
			if !errors.Is(err, ErrHalted) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("node %d: linearizable read while halted: %v; want halted at once", id, err)
			}
		}
		// Still in raft: the others elect a new leader when the leader
		// stops, and the new leader commits (a skip entry for an index no
		// node halted at: nothing resumes).
		c.stop(lead)
		newLead := c.waitLeader()
		if newLead == lead {
			t.Fatalf("leader %d stopped but is still the leader", lead)
		}
		_, err := c.nodes[newLead].Skip(ctx, x+1000)
		if !errors.Is(err, ErrHalted) {
			t.Fatalf("skip of another index on a halted node: %v; want a halted error", err)
		}
		for id, n := range c.nodes {
			if st, _ := n.Status(ctx); st.Commit <= x || st.Halted == nil {
				t.Fatalf("node %d: commit %d halted %+v; want commit beyond %d and still halted", id, st.Commit, st.Halted, x)
			}
			if n.app.backlogBytes.Load() != 0 {
				t.Fatalf("node %d keeps %d bytes of committed entries in memory while halted", id, n.app.backlogBytes.Load())
			}
		}
		// No crash loop: the poison is not tried again.
		time.Sleep(100 * testTick)
		after := c.poisonHits()
		for id := range c.nodes {
			if after[id] != hits[id] {
				t.Fatalf("node %d tried the poison %d more times while halted", id, after[id]-hits[id])
			}
			select {
			case <-c.nodes[id].Done():
				t.Fatalf("node %d stopped: %v", id, c.nodes[id].Err())
			default:
			}
		}
	})
}

// `fsm skip X` resumes every replica halted at X: each skips exactly the
// command at X (its still waiting caller, if any, gets ErrSkipped), reads
// the entries committed meanwhile back from storage and applies on; later
// commands apply and the replicas agree. A replica that is not halted at
// X (its state machine did not fail on the command) ignores the skip entry.
func TestSkipResumesHaltedReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 20; cfg.SnapshotTrailing = 5 })
		lead := c.waitLeader()
		immune := lead%3 + 1
		c.fsms[immune].mu.Lock()
		c.fsms[immune].immune = true
		c.fsms[immune].mu.Unlock()
		var halted []uint64
		for id := range c.nodes {
			if id != immune {
				halted = append(halted, id)
			}
		}
		ctx := context.Background()
		for range 5 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.nodes[lead].Propose(ctx, []byte("poison:1"))
		var he *HaltedError
		if !errors.As(err, &he) {
			t.Fatalf("poison: %v", err)
		}
		x := he.Halt.Index
		c.waitHalted(halted, x)
		// The immune replica applies on: commands proposed through it
		// commit (the halted leader replicates them) and apply there; the
		// halted replicas keep none of them in memory.
		if c.nodes[immune].Halted() != nil {
			t.Fatalf("immune node %d halted", immune)
		}
		for range 50 {
			if _, err := c.nodes[immune].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatalf("proposal through the immune node: %v", err)
			}
		}
		for _, id := range halted {
			if m := c.nodes[id].Metrics(); m.ApplySpills == 0 || c.nodes[id].app.backlogBytes.Load() != 0 {
				t.Fatalf("halted node %d: %d spills, %d bytes in memory", id, m.ApplySpills, c.nodes[id].app.backlogBytes.Load())
			}
		}
		// A skip for another index commits but resumes nothing.
		if _, err := c.nodes[immune].Skip(ctx, x+1); err != nil {
			t.Fatalf("skip through the immune node: %v", err)
		}
		c.waitHalted(halted, x)
		res, err := c.nodes[lead].Skip(ctx, x)
		if err != nil || !res.Skipped || res.Index <= x {
			t.Fatalf("skip %d on halted leader %d: %+v, %v; want skipped at a later index", x, lead, res, err)
		}
		c.waitResumed(c.ids(), res.Index)
		for i := range 30 {
			r, err := c.nodes[lead].Propose(ctx, []byte("add:1"))
			if err != nil || string(r) != fmt.Sprintf("sum=%d", 56+i) {
				t.Fatalf("after the skip: %q, %v", r, err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		for _, id := range halted {
			if m := c.nodes[id].Metrics(); m.CommandsSkipped != 1 {
				t.Errorf("node %d skipped %d commands, want 1", id, m.CommandsSkipped)
			}
		}
		if m := c.nodes[immune].Metrics(); m.CommandsSkipped != 0 || m.Halts != 0 {
			t.Errorf("immune node %d: %d skipped, %d halts; want none", immune, m.CommandsSkipped, m.Halts)
		}
		// A snapshot is taken after a skip; the log was never compacted
		// beyond the applied index while halted (resuming read it back).
		for _, id := range halted {
			if st, _ := c.nodes[id].Status(ctx); st.SnapshotIndex < x {
				t.Errorf("node %d: snapshot index %d after skipping %d", id, st.SnapshotIndex, x)
			}
		}
	})
}

// A halted node that restarts replays the log, fails on the same command
// and halts again at the same index (the halt is recomputed, not stored)
// instead of crash-looping; a skip entry committed while it was down
// resumes it when it finds it among the committed entries beyond the halt.
// After a skip and the snapshot that follows it, a restart does not meet
// the poison again.
func TestRestartWhileHalted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, lead, x := poisonCluster(t, nil)
		ctx := context.Background()
		f := lead%3 + 1
		// Restart a halted follower (a fresh in-memory state machine, as
		// a restarted plugin process has).
		c.stop(f)
		c.fsms[f] = newTestFSM()
		c.start(f)
		c.waitHalted([]uint64{f}, x)
		if got, err := c.nodes[f].StaleRead(ctx, []byte("sum")); err != nil || string(got) != "5" {
			t.Fatalf("restarted halted node %d: stale read %q, %v; want 5", f, got, err)
		}
		if h := c.poisonHits()[f]; h < 4 || h > 6 {
			t.Fatalf("restarted node %d tried the poison %d times", f, h)
		}
		// Down while the others skip.
		c.stop(f)
		res, err := c.nodes[lead].Skip(ctx, x)
		if err != nil || !res.Skipped {
			t.Fatalf("skip: %+v, %v", res, err)
		}
		others := []uint64{}
		for id := range c.nodes {
			others = append(others, id)
		}
		c.waitResumed(others, res.Index)
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:10")); err != nil {
			t.Fatal(err)
		}
		c.fsms[f] = newTestFSM()
		c.start(f)
		c.waitResumed(c.ids(), c.nodes[lead].Applied())
		c.checkFSMs()
		if got, _ := c.nodes[f].StaleRead(ctx, []byte("sum")); string(got) != "15" {
			t.Fatalf("node %d after resuming: sum %s, want 15", f, got)
		}
		// It halted again first, then found the skip entry.
		if h, m := c.poisonHits()[f], c.nodes[f].Metrics(); h < 4 || h > 6 || m.Halts != 1 || m.CommandsSkipped != 1 {
			t.Fatalf("node %d: %d poison attempts, %d halts, %d skipped; want 4-6, 1, 1", f, h, m.Halts, m.CommandsSkipped)
		}
		// Once a snapshot covers the skipped command, a restart does not
		// replay it.
		for range 200 {
			if st, _ := c.nodes[f].Status(ctx); st.SnapshotIndex >= x {
				break
			}
			time.Sleep(testTick)
		}
		if st, _ := c.nodes[f].Status(ctx); st.SnapshotIndex < x {
			t.Fatalf("node %d took no snapshot after the skip (snapshot index %d)", f, st.SnapshotIndex)
		}
		c.stop(f)
		c.fsms[f] = newTestFSM()
		c.start(f)
		c.waitResumed(c.ids(), c.nodes[lead].Applied())
		if h := c.poisonHits()[f]; h != 0 {
			t.Fatalf("node %d met the skipped poison %d times after a restart", f, h)
		}
		c.checkFSMs()
	})
}
