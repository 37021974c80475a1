package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestDecideDigest(t *testing.T) {
	a, b, c := []byte("a"), []byte("b"), []byte("c")
	for _, tc := range []struct {
		name       string
		voters     []uint64
		got        map[uint64][]byte
		agreed     []byte
		noMajority bool
		decided    bool
	}{
		{"all agree", []uint64{1, 2, 3}, map[uint64][]byte{1: a, 2: a, 3: a}, a, false, true},
		{"one differs", []uint64{1, 2, 3}, map[uint64][]byte{1: a, 2: b, 3: a}, a, false, true},
		{"majority with one missing", []uint64{1, 2, 3}, map[uint64][]byte{1: b, 3: b}, b, false, true},
		{"two differ, one missing: undecided", []uint64{1, 2, 3}, map[uint64][]byte{1: a, 2: b}, nil, false, false},
		{"all differ", []uint64{1, 2, 3}, map[uint64][]byte{1: a, 2: b, 3: c}, nil, true, true},
		{"one of three answered", []uint64{1, 2, 3}, map[uint64][]byte{2: a}, nil, false, false},
		{"none answered", []uint64{1, 2, 3}, map[uint64][]byte{}, nil, false, false},
		{"four voters split two-two", []uint64{1, 2, 3, 4}, map[uint64][]byte{1: a, 2: a, 3: b, 4: b}, nil, true, true},
		{"four voters, three agree", []uint64{1, 2, 3, 4}, map[uint64][]byte{1: a, 2: a, 3: b, 4: a}, a, false, true},
		{"five voters, 2-2 and one missing", []uint64{1, 2, 3, 4, 5}, map[uint64][]byte{1: a, 2: a, 3: b, 4: b}, nil, false, false},
		{"five voters, 2-1-1 and one missing", []uint64{1, 2, 3, 4, 5}, map[uint64][]byte{1: a, 2: a, 3: b, 4: c}, nil, false, false},
		{"five voters, 1-1-1 and two missing", []uint64{1, 2, 3, 4, 5}, map[uint64][]byte{1: a, 2: b, 3: c}, nil, false, false},
		{"five voters, 1-1-1-1 and one missing", []uint64{1, 2, 3, 4, 5}, map[uint64][]byte{1: a, 2: b, 3: c, 4: []byte("d")}, nil, true, true},
		{"single voter", []uint64{7}, map[uint64][]byte{7: c}, c, false, true},
		{"a non-voter's answer does not count", []uint64{1, 2, 3}, map[uint64][]byte{1: a, 9: a, 2: b}, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agreed, noMajority, decided := decideDigest(tc.voters, tc.got)
			if !bytes.Equal(agreed, tc.agreed) || noMajority != tc.noMajority || decided != tc.decided {
				t.Fatalf("decideDigest = %q, no majority %v, decided %v; want %q, %v, %v", agreed, noMajority, decided, tc.agreed, tc.noMajority, tc.decided)
			}
		})
	}
}

func TestCheckpointEnvelopes(t *testing.T) {
	e, err := decodeEnvelope(encodeCheckpoint(3, 9))
	if err != nil || e.kind != kindCheckpoint || e.proposer != 3 || e.req != 9 {
		t.Fatalf("checkpoint: %+v %v", e, err)
	}
	d := sha256.Sum256([]byte("x"))
	e, err = decodeEnvelope(encodeVerdict(3, 9, 1<<40, d[:]))
	if err != nil || e.kind != kindVerdict || e.ckpt != 1<<40 || !bytes.Equal(e.digest, d[:]) {
		t.Fatalf("verdict: %+v %v", e, err)
	}
	e, err = decodeEnvelope(encodeVerdict(3, 9, 5, nil))
	if err != nil || e.ckpt != 5 || e.digest != nil {
		t.Fatalf("no-majority verdict: %+v %v", e, err)
	}
	for _, bad := range [][]byte{
		append(encodeCheckpoint(3, 9), 0),          // trailing bytes
		encodeVerdict(3, 9, 0, d[:]),               // checkpoint 0
		encodeVerdict(3, 9, 5, d[:])[:12],          // truncated digest
		append(encodeVerdict(3, 9, 5, d[:]), 1),    // trailing bytes
		encodeVerdict(3, 9, 5, make([]byte, 65)),   // digest too long
		{kindVerdict, 3, 9},                        // no checkpoint index
		{kindVerdict, 3, 9, 5},                     // no digest length
		{kindVerdict, 3, 9, 5, 0x80},               // bad varint
		{kindCheckpoint, 3},                        // no request id
		append([]byte{kindVerdict, 3, 9, 5}, 0xff), // length beyond the data
	} {
		if _, err := decodeEnvelope(bad); err == nil {
			t.Errorf("decodeEnvelope(%x) accepted a malformed entry", bad)
		}
	}
}

// skew makes node id's state machine nondeterministic: every add from now
// on adds by more than asked.
func (c *cluster) skew(id uint64, by int64) {
	f := c.fsms[id]
	f.mu.Lock()
	f.skew, f.skewFrom = by, 1
	f.mu.Unlock()
}

func (c *cluster) proposeN(id uint64, n int) {
	c.t.Helper()
	for range n {
		if _, err := c.nodes[id].Propose(context.Background(), []byte("add:1")); err != nil {
			c.t.Fatalf("propose on node %d: %v", id, err)
		}
	}
}

// stateDigest is what the checkpoint digest of f's state must be: the
// SHA-256 of its snapshot body.
func stateDigest(f *testFSM) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(fsmState{f.applied, f.sum, f.kv})
	d := sha256.Sum256(b.Bytes())
	return d[:]
}

// waitNode waits until cond holds for node id.
func (c *cluster) waitNode(id uint64, what string, cond func(*Node) bool) {
	c.t.Helper()
	for range 2000 {
		if cond(c.nodes[id]) {
			return
		}
		time.Sleep(testTick)
	}
	st, _ := c.nodes[id].Status(context.Background())
	c.t.Fatalf("node %d: %s: not reached (applied %d halted %+v checkpoint %+v)", id, what, st.Applied, st.Halted, st.Checkpoint)
}

// Every replica records the digest of its state at the checkpoint; they
// agree, the verdict records the digest and nobody halts.
func TestCheckpointAllAgree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		c.proposeN(lead, 20)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Index == 0 || rep.VerdictIndex <= rep.Index || rep.NoMajority || len(rep.Members) != 3 || len(rep.Differ()) != 0 {
			t.Fatalf("report %+v, differ %v; want a verdict that all three agree", rep, rep.Differ())
		}
		c.waitApplied(rep.VerdictIndex)
		// The digest is the state's: the SHA-256 of its snapshot body.
		if want := stateDigest(c.fsms[lead]); !bytes.Equal(rep.Agreed, want) {
			t.Fatalf("agreed digest %x, want the SHA-256 of the state's snapshot body %x", rep.Agreed, want)
		}
		for id, n := range c.nodes {
			st, _ := n.Status(context.Background())
			if st.Halted != nil || st.Checkpoint == nil || st.Checkpoint.Index != rep.Index || !bytes.Equal(st.Checkpoint.Digest, rep.Agreed) {
				t.Fatalf("node %d: halted %+v checkpoint %+v; want checkpoint %d agreed", id, st.Halted, st.Checkpoint, rep.Index)
			}
			if m := st.Metrics; m.Checkpoints != 1 || m.CheckpointsAgreed != 1 || m.CheckpointDigests != 1 || m.Divergences != 0 {
				t.Fatalf("node %d metrics: %+v", id, m)
			}
		}
		c.proposeN(lead, 5)
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
	})
}

// divergeOne runs the one-diverging-follower scenario and reports what the
// diverged follower x did with the verdict.
func divergeOne(t *testing.T, unsafe bool) (c *cluster, lead, x uint64, rep CheckpointReport) {
	c = newCluster(t, 3, func(cfg *Config) { cfg.unsafeNoDigestCompare = unsafe })
	lead = c.waitLeader()
	x = lead%3 + 1
	c.proposeN(lead, 5)
	c.skew(x, 1)
	c.proposeN(lead, 5)
	rep, err := c.nodes[lead].Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Differ(), []uint64{x}) || rep.VerdictIndex == 0 || rep.NoMajority {
		t.Fatalf("report %+v: differ %v, want [%d]", rep, rep.Differ(), x)
	}
	c.waitNode(x, "verdict handled", func(n *Node) bool { return n.Halted() != nil || n.Applied() >= rep.VerdictIndex })
	return c, lead, x, rep
}

// One replica's state machine is nondeterministic: the checkpoint names
// it, it halts at the verdict (the same halted status as a poison command,
// naming the checkpoint and the range), and the majority keeps serving
// writes. fsm skip does not resume it.
func TestCheckpointOneReplicaDiverges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, lead, x, rep := divergeOne(t, false)
		ctx := context.Background()
		h := c.nodes[x].Halted()
		if h == nil || h.Index != rep.VerdictIndex || h.Checkpoint != rep.Index || c.nodes[x].Applied() != h.Index-1 {
			t.Fatalf("node %d: halted %+v applied %d; want halted at the verdict %d for checkpoint %d", x, h, c.nodes[x].Applied(), rep.VerdictIndex, rep.Index)
		}
		if !strings.Contains(h.Reason, "diverged") || !strings.Contains(h.Reason, fmt.Sprintf("index %d", rep.Index)) || !strings.Contains(h.Reason, fmt.Sprintf("up to index %d", rep.Index)) {
			t.Fatalf("reason %q does not name the checkpoint and the range", h.Reason)
		}
		if m := c.nodes[x].Metrics(); m.Divergences != 1 || m.Halts != 1 {
			t.Fatalf("node %d metrics: %+v", x, m)
		}
		for id, n := range c.nodes {
			if id != x && n.Halted() != nil {
				t.Fatalf("node %d halted: %+v", id, n.Halted())
			}
		}
		// The majority serves writes; the diverged node refuses them.
		c.proposeN(lead, 5)
		if _, err := c.nodes[x].Propose(ctx, []byte("add:1")); !errors.Is(err, ErrHalted) || !errors.Is(err, ErrNotApplied) {
			t.Fatalf("proposal on the diverged node: %v; want halted, not applied", err)
		}
		// A second checkpoint: the agreed one moves on; x is named again.
		rep2, err := c.nodes[lead].Verify(ctx)
		if err != nil || !slices.Equal(rep2.Differ(), []uint64{x}) || rep2.VerdictIndex == 0 {
			t.Fatalf("second verify: %+v %v", rep2, err)
		}
		if h := c.nodes[x].Halted(); h == nil || h.Index != rep.VerdictIndex {
			t.Fatalf("node %d: halted %+v; want still at %d", x, h, rep.VerdictIndex)
		}
		// fsm skip of the verdict does not resume a diverged replica.
		if _, err := c.nodes[lead].Skip(ctx, rep.VerdictIndex); err != nil {
			t.Fatal(err)
		}
		c.proposeN(lead, 3)
		synctest.Wait()
		if h := c.nodes[x].Halted(); h == nil || h.Index != rep.VerdictIndex {
			t.Fatalf("node %d after fsm skip: halted %+v; want still at %d", x, h, rep.VerdictIndex)
		}
	})
}

// The divergence test fails when replicas do not compare: the diverged
// replica then applies the verdict and goes on.
func TestCheckpointDivergenceMissedWithoutComparison(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, x, rep := divergeOne(t, true)
		if h := c.nodes[x].Halted(); h != nil || c.nodes[x].Applied() < rep.VerdictIndex {
			t.Fatalf("with the comparison disabled node %d still halted (%+v)", x, h)
		}
	})
}

// The leader itself diverges: it halts on its own verdict and hands
// leadership over; the majority elects another leader and serves writes.
func TestCheckpointLeaderDiverges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		c.skew(lead, 3)
		c.proposeN(lead, 5)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil || !slices.Equal(rep.Differ(), []uint64{lead}) || rep.VerdictIndex == 0 {
			t.Fatalf("verify on a diverged leader: %+v %v; want it named", rep, err)
		}
		c.waitHalted([]uint64{lead}, rep.VerdictIndex)
		c.waitNode(lead, "leadership handed over", func(n *Node) bool { return n.Leader() != lead && n.Leader() != 0 })
		newLead := c.waitLeader()
		if newLead == lead {
			t.Fatalf("the diverged node %d still leads", lead)
		}
		c.proposeN(newLead, 5)
		for id, n := range c.nodes {
			if id != lead && n.Halted() != nil {
				t.Fatalf("node %d halted: %+v", id, n.Halted())
			}
		}
	})
}

// No digest has a majority: every replica halts at the verdict, and a
// halted leader refuses another checkpoint (not applied).
func TestCheckpointNoMajorityHaltsAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		for id := range c.nodes {
			c.skew(id, int64(id))
		}
		c.proposeN(lead, 5)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil || !rep.NoMajority || rep.Agreed != nil || rep.VerdictIndex == 0 || len(rep.Differ()) != 3 {
			t.Fatalf("report %+v %v; want no majority", rep, err)
		}
		c.waitHalted(c.ids(), rep.VerdictIndex)
		for id, n := range c.nodes {
			if h := n.Halted(); h.Checkpoint != rep.Index || !strings.Contains(h.Reason, "no digest had a majority") {
				t.Fatalf("node %d: halt %+v", id, h)
			}
		}
		lead = c.waitLeader()
		if _, err := c.nodes[lead].Verify(context.Background()); !errors.Is(err, ErrHalted) || !errors.Is(err, ErrNotApplied) {
			t.Fatalf("verify on a halted cluster: %v; want halted, not applied", err)
		}
	})
}

// Too few answers decide nothing: one member unreachable and the two
// others differ. Nothing is committed after the checkpoint and nobody
// halts; once the member is back, the next checkpoint decides.
func TestCheckpointUndecided(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.CheckpointTimeout = 50 * testTick })
		lead := c.waitLeader()
		away, skewed := lead%3+1, (lead+1)%3+1
		c.skew(skewed, 1)
		c.proposeN(lead, 5)
		c.nw.isolate(away, true)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil || rep.VerdictIndex != 0 || rep.NoMajority || rep.Agreed != nil {
			t.Fatalf("report %+v %v; want undecided", rep, err)
		}
		for id, n := range c.nodes {
			if n.Halted() != nil {
				t.Fatalf("node %d halted on an undecided checkpoint", id)
			}
		}
		c.nw.isolate(away, false)
		rep, err = c.nodes[lead].Verify(context.Background())
		if err != nil || !slices.Equal(rep.Differ(), []uint64{skewed}) || rep.VerdictIndex == 0 {
			t.Fatalf("report %+v %v; want %d named", rep, err, skewed)
		}
		c.waitHalted([]uint64{skewed}, rep.VerdictIndex)
	})
}

// Automatic checkpoints every CheckpointEntries entries: replicas agree
// without anybody asking, and a diverged replica halts on its own.
func TestAutomaticCheckpoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.CheckpointEntries = 10 })
		lead := c.waitLeader()
		c.proposeN(lead, 40)
		for id := range c.nodes {
			c.waitNode(id, "two checkpoints agreed", func(n *Node) bool { return n.Metrics().CheckpointsAgreed >= 2 })
		}
		x := lead%3 + 1
		c.skew(x, 1)
		c.proposeN(lead, 30)
		c.waitNode(x, "halted for divergence", func(n *Node) bool { h := n.Halted(); return h != nil && h.Checkpoint != 0 })
		c.proposeN(lead, 30)
		for id, n := range c.nodes {
			if id != x && n.Halted() != nil {
				t.Fatalf("node %d halted: %+v", id, n.Halted())
			}
		}
	})
}

// hold makes every checkpoint digest request between nodes wait until the
// returned release is called.
func (c *cluster) hold() (release func()) {
	gate := make(chan struct{})
	c.nw.mu.Lock()
	c.nw.digestGate = gate
	c.nw.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.nw.mu.Lock()
			c.nw.digestGate = nil
			c.nw.mu.Unlock()
			close(gate)
		})
	}
	c.t.Cleanup(release) // a failed test does not leave Verify blocked
	return release
}

// verifyAsync runs Verify on node id in the background.
func (c *cluster) verifyAsync(id uint64) <-chan CheckpointReport {
	ch := make(chan CheckpointReport, 1)
	n := c.nodes[id]
	go func() {
		rep, err := n.Verify(context.Background())
		if err != nil {
			c.t.Errorf("verify: %v", err)
		}
		ch <- rep
	}()
	return ch
}

// A snapshot due at or after a checkpoint waits for its verdict (a restart
// from it could not replay the checkpoint), then is taken.
func TestCheckpointHoldsSnapshotsUntilVerdict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 10; cfg.SnapshotTrailing = 2 })
		lead := c.waitLeader()
		c.proposeN(lead, 3)
		release := c.hold()
		done := c.verifyAsync(lead)
		for id := range c.nodes {
			c.waitNode(id, "checkpoint applied", func(n *Node) bool { return n.Metrics().Checkpoints == 1 })
		}
		c.proposeN(lead, 25) // snapshots are due
		synctest.Wait()
		var ckpt uint64
		for id, n := range c.nodes {
			j := n.ck.jobsSnapshot()
			if len(j) != 1 {
				t.Fatalf("node %d has %d digests", id, len(j))
			}
			ckpt = j[0]
			if si := n.snapIdx.Load(); si >= ckpt {
				t.Fatalf("node %d took a snapshot at %d, at or beyond the checkpoint %d awaiting its verdict", id, si, ckpt)
			}
		}
		release()
		rep := <-done
		if rep.Index != ckpt || rep.VerdictIndex == 0 || len(rep.Differ()) != 0 {
			t.Fatalf("report %+v", rep)
		}
		c.proposeN(lead, 12)
		for id := range c.nodes {
			c.waitNode(id, "snapshot after the verdict", func(n *Node) bool { return n.snapIdx.Load() > rep.VerdictIndex })
		}
	})
}

// A replica restarts between a checkpoint and its verdict: it replays the
// checkpoint (no snapshot was taken beyond it), hashes its state again,
// and still halts on the verdict; restarted once more, it halts again at
// the same index.
func TestCheckpointRestartBeforeVerdict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 10; cfg.SnapshotTrailing = 2 })
		lead := c.waitLeader()
		x := lead%3 + 1
		c.skew(x, 1)
		c.proposeN(lead, 5)
		release := c.hold()
		done := c.verifyAsync(lead)
		for id := range c.nodes {
			c.waitNode(id, "checkpoint applied", func(n *Node) bool { return n.Metrics().Checkpoints == 1 })
		}
		c.proposeN(lead, 25) // snapshots are due (and held back)
		synctest.Wait()
		restart := func() {
			c.stop(x)
			c.fsms[x] = newTestFSM()
			c.skew(x, 1)
			c.start(x)
		}
		restart()
		c.waitApplied(c.nodes[lead].Applied())
		release()
		rep := <-done
		if !slices.Equal(rep.Differ(), []uint64{x}) || rep.VerdictIndex == 0 {
			t.Fatalf("report %+v: differ %v, want [%d]", rep, rep.Differ(), x)
		}
		c.waitHalted([]uint64{x}, rep.VerdictIndex)
		restart()
		c.waitHalted([]uint64{x}, rep.VerdictIndex)
		if h := c.nodes[x].Halted(); h.Checkpoint != rep.Index {
			t.Fatalf("after a restart: %+v", h)
		}
		c.proposeN(lead, 5)
	})
}

// A follower that was away catches up through a leader snapshot beyond a
// checkpoint: it has no digest to compare, goes on, and agrees at the next
// checkpoint.
func TestCheckpointFollowerCatchesUpBySnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 10; cfg.SnapshotTrailing = 1 })
		lead := c.waitLeader()
		away := lead%3 + 1
		c.proposeN(lead, 5)
		c.nw.isolate(away, true)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil || rep.VerdictIndex == 0 || !slices.Equal(rep.Differ(), []uint64{away}) {
			t.Fatalf("report %+v %v; want decided without %d", rep, err, away)
		}
		c.proposeN(lead, 40)
		c.nw.isolate(away, false)
		c.proposeN(lead, 3)
		c.waitApplied(c.nodes[lead].Applied())
		if c.nodes[away].Metrics().SnapshotsInstalled == 0 {
			t.Fatalf("node %d did not catch up through a snapshot", away)
		}
		rep, err = c.nodes[lead].Verify(context.Background())
		if err != nil || rep.VerdictIndex == 0 || len(rep.Differ()) != 0 {
			t.Fatalf("report %+v %v; want all agree", rep, err)
		}
		for id, n := range c.nodes {
			if n.Halted() != nil {
				t.Fatalf("node %d halted: %+v", id, n.Halted())
			}
		}
	})
}

// A replica halted for divergence refuses the leader's snapshots, which
// would replace its state (the evidence): it stays halted, with its state.
func TestDivergedReplicaRefusesLeaderSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 10; cfg.SnapshotTrailing = -1 })
		lead := c.waitLeader()
		x := lead%3 + 1
		c.skew(x, 1)
		c.proposeN(lead, 5)
		rep, err := c.nodes[lead].Verify(context.Background())
		if err != nil || !slices.Equal(rep.Differ(), []uint64{x}) {
			t.Fatalf("report %+v %v", rep, err)
		}
		c.waitHalted([]uint64{x}, rep.VerdictIndex)
		applied, sum := c.nodes[x].Applied(), c.fsms[x].sumNow()
		c.nw.isolate(x, true)
		c.proposeN(lead, 40) // the leader compacts beyond x's log
		sent := c.nodes[lead].Metrics().SnapshotsSent
		c.nw.isolate(x, false)
		c.proposeN(lead, 3)
		c.waitNode(lead, "snapshot sent to the diverged node", func(n *Node) bool { return n.Metrics().SnapshotsSent > sent })
		synctest.Wait()
		n := c.nodes[x]
		select {
		case <-n.Done():
			t.Fatalf("node %d stopped: %v", x, n.Err())
		default:
		}
		if h := n.Halted(); h == nil || h.Index != rep.VerdictIndex || n.Applied() != applied || c.fsms[x].sumNow() != sum || n.Metrics().SnapshotsInstalled != 0 {
			t.Fatalf("node %d: halted %+v applied %d (was %d), sum %d (was %d), installed %d; want its diverged state kept",
				x, h, n.Applied(), applied, c.fsms[x].sumNow(), sum, n.Metrics().SnapshotsInstalled)
		}
	})
}

func (f *testFSM) sumNow() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sum
}

// jobsSnapshot lists the checkpoint indexes with a digest recorded.
func (c *checkpoints) jobsSnapshot() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, j := range c.jobs {
		out = append(out, j.index)
	}
	return out
}
