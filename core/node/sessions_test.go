package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

func rid(client string, seq, acked uint64) RequestID {
	return RequestID{Client: client, Seq: seq, Acked: acked}
}

// decideID is decide for a RequestID.
func (t *sessionTable) decideID(id RequestID, index, term uint64) (verdict, *sessionResult) {
	return t.decide([]byte(id.Client), id.Seq, id.Acked, index, term)
}

// TestSessionTableDecide walks the rules of sessions.go on one table.
func TestSessionTableDecide(t *testing.T) {
	tb := newSessionTable()
	idx := uint64(0)
	decide := func(id RequestID) (verdict, *sessionResult) {
		idx++
		tb.expire(idx)
		return tb.decideID(id, idx, 1)
	}
	v, rec := decide(rid("a", 1, 0))
	if v != verdictApply || rec == nil {
		t.Fatalf("first command: %v", v)
	}
	rec.keep([]byte("r1"))
	if v, got := decide(rid("a", 1, 0)); v != verdictDuplicate || got != rec {
		t.Fatalf("retry: %v %v", v, got)
	}
	// Concurrent commands of one session: seq 3 before seq 2.
	if v, _ := decide(rid("a", 3, 1)); v != verdictApply {
		t.Fatalf("seq 3: %v", v)
	}
	if v, _ := decide(rid("a", 2, 1)); v != verdictApply {
		t.Fatalf("seq 2 after 3: %v", v)
	}
	if s := tb.byID["a"]; len(s.results) != 3 || s.results[0].seq != 1 || s.results[1].seq != 2 || s.results[2].seq != 3 {
		t.Fatalf("results not by seq: %+v", s.results)
	}
	// Acknowledging 3 drops 1 and 2; a late copy of 1 is refused.
	if v, _ := decide(rid("a", 4, 3)); v != verdictApply {
		t.Fatalf("seq 4: %v", v)
	}
	if s := tb.byID["a"]; len(s.results) != 2 || s.floor != 3 || tb.results != 2 {
		t.Fatalf("after ack 3: floor %d, %d results, table %d", s.floor, len(s.results), tb.results)
	}
	if v, _ := decide(rid("a", 1, 0)); v != verdictExpired {
		t.Fatalf("seq below the floor: %v", v)
	}
	// An unknown session that acknowledges answers expired; one that does
	// not is new.
	if v, _ := decide(rid("b", 7, 5)); v != verdictExpired || tb.len() != 1 {
		t.Fatalf("unknown session with acked 5: %v, %d sessions", v, tb.len())
	}
	if v, _ := decide(rid("b", 7, 1)); v != verdictApply || tb.len() != 2 {
		t.Fatalf("unknown session with acked 1: %v", v)
	}
	// LRU: a is older than b; touching a makes b the oldest.
	if tb.head.client != "a" || tb.tail.client != "b" {
		t.Fatalf("LRU order %q..%q", tb.head.client, tb.tail.client)
	}
	decide(rid("a", 4, 3))
	if tb.head.client != "b" || tb.tail.client != "a" {
		t.Fatalf("LRU order after touching a: %q..%q", tb.head.client, tb.tail.client)
	}
	// Results too large to keep.
	_, big := decide(rid("c", 1, 0))
	big.keep(make([]byte, MaxKeptResultBytes+1))
	var o observedEntry
	big.answer(&o, []byte("c"), 1)
	if !errors.Is(o.err, ErrResultNotKept) || !errors.Is(o.err, ErrOutcomeUnknown) || o.dup {
		t.Fatalf("duplicate of a large result: %+v", o)
	}
}

// TestSessionTableLimits: the idle limit, the session count and the
// per-session result count evict deterministically, by log position.
func TestSessionTableLimits(t *testing.T) {
	tb := newSessionTable()
	tb.decideID(rid("old", 1, 0), 10, 1)
	tb.decideID(rid("new", 1, 0), 11, 1)
	tb.expire(10 + SessionIdleEntries - 1)
	if tb.len() != 2 {
		t.Fatal("expired too early")
	}
	tb.expire(10 + SessionIdleEntries)
	if tb.len() != 1 || tb.byID["old"] != nil {
		t.Fatalf("idle session kept: %d sessions", tb.len())
	}
	// An acked-0 retry after expiry is applied again: the retry window.
	if v, _ := tb.decideID(rid("old", 1, 0), 12+SessionIdleEntries, 1); v != verdictApply {
		t.Fatalf("retry after expiry: %v", v)
	}

	tb = newSessionTable()
	for i := range MaxSessions + 1 {
		tb.decideID(rid(fmt.Sprint(i), 1, 0), uint64(i+1), 1)
	}
	if tb.len() != MaxSessions || tb.byID["0"] != nil || tb.byID["1"] == nil || tb.results != MaxSessions {
		t.Fatalf("%d sessions, %d results; session 0 kept: %v", tb.len(), tb.results, tb.byID["0"] != nil)
	}

	tb = newSessionTable()
	for seq := uint64(1); seq <= MaxSessionResults+1; seq++ {
		tb.decideID(rid("s", seq, 0), seq, 1)
	}
	s := tb.byID["s"]
	if len(s.results) != MaxSessionResults || s.floor != 2 || s.results[0].seq != 2 {
		t.Fatalf("%d results, floor %d", len(s.results), s.floor)
	}
	if v, _ := tb.decideID(rid("s", 1, 0), 5000, 1); v != verdictExpired {
		t.Fatalf("dropped seq: %v", v)
	}
}

// TestSessionSectionRoundTrip: a table survives its snapshot section
// byte for byte (LRU order, floors, results and their states), and a
// damaged or cut section is refused as corrupt.
func TestSessionSectionRoundTrip(t *testing.T) {
	tb := newSessionTable()
	idx := uint64(100)
	for i := range 50 {
		for seq := uint64(1); seq <= uint64(i%4+1); seq++ {
			idx++
			_, rec := tb.decideID(rid(fmt.Sprintf("client-%d", i%17), seq+uint64(i), uint64(i)), idx, 3)
			switch {
			case rec == nil:
			case i%5 == 0:
				rec.state = resultLost
			case i%7 == 0:
				rec.keep(make([]byte, MaxKeptResultBytes+1))
			default:
				rec.keep([]byte(fmt.Sprintf("result %d/%d", i, seq)))
			}
		}
	}
	b := tb.appendTo(nil)
	got, err := readSessionTable(bufio.NewReader(bytes.NewReader(append(bytes.Clone(b), "fsm body"...))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.appendTo(nil), b) || got.results != tb.results || got.len() != tb.len() {
		t.Fatalf("round trip differs: %d sessions %d results, want %d %d", got.len(), got.results, tb.len(), tb.results)
	}
	for cut := range len(b) {
		if _, err := readSessionTable(bufio.NewReader(bytes.NewReader(b[:cut]))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("section cut at %d of %d: %v", cut, len(b), err)
		}
	}
	// A session count over the limit, an empty client id.
	for _, bad := range [][]byte{{0xff, 0xff, 0xff, 0xff, 0x0f}, {1, 0}} {
		if _, err := readSessionTable(bufio.NewReader(bytes.NewReader(bad))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("section %x: %v", bad, err)
		}
	}
}

// TestEnvelopeSessionRoundTrip: a keyed command's envelope carries the
// request id; malformed ids do not decode.
func TestEnvelopeSessionRoundTrip(t *testing.T) {
	id := rid("client\x00\xff", 1<<40, 17)
	e, err := decodeEnvelope(encodeSession(3, 99, id, []byte("add:1")))
	if err != nil || e.kind != kindSession || e.proposer != 3 || e.req != 99 || e.requestID() != id || string(e.payload) != "add:1" {
		t.Fatalf("%+v %v", e, err)
	}
	for _, bad := range []RequestID{rid("c", 0, 0), rid("c", 2, 3), rid(string(make([]byte, MaxClientIDBytes+1)), 1, 0)} {
		if _, err := decodeEnvelope(encodeSession(3, 99, bad, nil)); err == nil {
			t.Fatalf("id %+v decoded", bad)
		}
	}
}

func proposeID(n *Node, id RequestID, cmd string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	return n.ProposeWithID(ctx, id, []byte(cmd))
}

// sessionSection returns node id's session table at its applied index, as
// its snapshot section, and that index.
func sessionSection(t *testing.T, c *cluster, id uint64) ([]byte, uint64) {
	t.Helper()
	snap, err := c.nodes[id].app.requestSnapshot(context.Background())
	if err != nil {
		t.Fatalf("node %d: snapshot: %v", id, err)
	}
	h, rc, err := c.stores[id].OpenSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tb, _, err := readSection(h, rc)
	if err != nil {
		t.Fatalf("node %d: %v", id, err)
	}
	return tb.appendTo(nil), h.Index
}

// checkSessions fails unless every running node keeps the same session
// table at the same applied index (and that table is not empty).
func (c *cluster) checkSessions(t *testing.T) {
	t.Helper()
	var hi uint64
	for _, n := range c.nodes {
		hi = max(hi, n.Applied())
	}
	c.waitApplied(hi)
	var ref []byte
	var refID, refIdx uint64
	for id := range c.nodes {
		b, idx := sessionSection(t, c, id)
		if len(b) <= 1 {
			t.Fatalf("node %d keeps no session", id)
		}
		if ref == nil {
			ref, refID, refIdx = b, id, idx
			continue
		}
		if idx != refIdx || !bytes.Equal(b, ref) {
			t.Fatalf("node %d's session table at %d (%d bytes) differs from node %d's at %d (%d bytes)", id, idx, len(b), refID, refIdx, len(ref))
		}
	}
}

func sumOf(c *cluster, id uint64) int64 {
	_, sum, _, _ := c.fsms[id].snapshotOf()
	return sum
}

// TestSessionsApplyOnce: a retried request id, through the leader or a
// follower, is answered with the first result and changes nothing; ids
// are validated; a session that acknowledged answers and is unknown is
// refused; every replica keeps the same table.
func TestSessionsApplyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		fol := lead%3 + 1
		first, err := proposeID(c.nodes[lead], rid("a", 1, 0), "add:5")
		if err != nil || first.Duplicate || string(first.Value) != "sum=5" {
			t.Fatalf("first: %+v, %v", first, err)
		}
		for _, n := range []*Node{c.nodes[lead], c.nodes[fol]} {
			again, err := proposeID(n, rid("a", 1, 0), "add:5")
			if err != nil || !again.Duplicate || string(again.Value) != "sum=5" || again.Index != first.Index || again.Term != first.Term {
				t.Fatalf("retry on node %d: %+v, %v; first %+v", n.ID(), again, err, first)
			}
		}
		// The next command of the session acknowledges the first.
		if r, err := proposeID(c.nodes[fol], rid("a", 2, 2), "add:1"); err != nil || r.Duplicate || string(r.Value) != "sum=6" {
			t.Fatalf("seq 2: %+v, %v", r, err)
		}
		// A late copy of seq 1 is below the floor now.
		if _, err := proposeID(c.nodes[lead], rid("a", 1, 0), "add:5"); !errors.Is(err, ErrSessionExpired) || !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("seq 1 after its ack: %v", err)
		}
		if _, err := proposeID(c.nodes[lead], rid("gone", 9, 4), "add:5"); !errors.Is(err, ErrSessionExpired) {
			t.Fatalf("unknown session with acked 4: %v", err)
		}
		for _, bad := range []RequestID{rid("x", 0, 0), rid("x", 1, 2), rid(string(make([]byte, 65)), 1, 0)} {
			if _, err := proposeID(c.nodes[lead], bad, "add:5"); !errors.Is(err, ErrBadRequest) || !errors.Is(err, ErrNotApplied) {
				t.Fatalf("id %+v: %v", bad, err)
			}
		}
		// Plain commands are not deduplicated.
		for range 2 {
			if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		for id := range c.nodes {
			if s := sumOf(c, id); s != 8 {
				t.Fatalf("node %d: sum %d, want 8", id, s)
			}
			if m := c.nodes[id].Metrics(); m.CommandsDeduplicated != 4 {
				t.Fatalf("node %d deduplicated %d commands, want 4", id, m.CommandsDeduplicated)
			}
		}
		c.checkFSMs()
		c.checkSessions(t)
	})
}

// TestSessionsInFlightDuplicate: the same request id proposed twice before
// either is committed (both entries in the log) is applied once; both
// callers get the first result.
func TestSessionsInFlightDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		n := c.nodes[lead]
		// Nothing commits while the followers' answers are lost.
		c.nw.setDrop(func(from, to uint64, m raft.Message) bool { return m.Type == raft.MsgAppResp })
		before := n.lastIdx.Load()
		type out struct {
			r   Result
			err error
		}
		outs := make(chan out, 2)
		for _, via := range []uint64{lead, lead%3 + 1} {
			go func() {
				r, err := proposeID(c.nodes[via], rid("twice", 1, 0), "add:1")
				outs <- out{r, err}
			}()
		}
		for n.lastIdx.Load() < before+2 {
			time.Sleep(time.Millisecond)
		}
		c.nw.setDrop(nil)
		a, b := <-outs, <-outs
		if a.err != nil || b.err != nil {
			t.Fatalf("errors: %v, %v", a.err, b.err)
		}
		if a.r.Duplicate == b.r.Duplicate || string(a.r.Value) != "sum=1" || string(b.r.Value) != "sum=1" || a.r.Index != b.r.Index {
			t.Fatalf("answers %+v and %+v; want one first application and one duplicate of it", a.r, b.r)
		}
		c.waitApplied(n.Applied())
		for id := range c.nodes {
			if s := sumOf(c, id); s != 1 {
				t.Fatalf("node %d: sum %d, want 1", id, s)
			}
		}
		c.checkSessions(t)
	})
}

// TestSessionsAcrossLeaderChange: a command reaches the followers' logs
// but its leader is cut off before it learns of the commit, so its caller
// gets an unknown outcome. The retry with the same id at the new leader
// returns the first application's result, and the command applied once.
func TestSessionsAcrossLeaderChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		old := c.waitLeader()
		n := c.nodes[old]
		c.nw.setDrop(func(from, to uint64, m raft.Message) bool { return to == old && m.Type == raft.MsgAppResp })
		before := n.lastIdx.Load()
		first := make(chan error, 1)
		go func() {
			_, err := proposeID(n, rid("lc", 1, 0), "add:7")
			first <- err
		}()
		// Wait until both followers hold the entry, then cut the leader off.
		for _, id := range []uint64{old%3 + 1, (old+1)%3 + 1} {
			for c.nodes[id].lastIdx.Load() <= before {
				time.Sleep(time.Millisecond)
			}
		}
		c.nw.isolate(old, true)
		if err := <-first; !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("first attempt on the cut-off leader: %v, want outcome unknown", err)
		}
		var lead uint64
		for lead = c.waitLeader(); lead == old; lead = c.waitLeader() {
			time.Sleep(testTick)
		}
		r, err := proposeID(c.nodes[lead], rid("lc", 1, 0), "add:7")
		if err != nil || !r.Duplicate || string(r.Value) != "sum=7" || r.Index != before+1 {
			t.Fatalf("retry at the new leader %d: %+v, %v; want the first application at %d", lead, r, err, before+1)
		}
		c.nw.setDrop(nil)
		c.nw.isolate(old, false)
		c.waitLeader()
		c.waitApplied(c.nodes[lead].Applied())
		for id := range c.nodes {
			if s := sumOf(c, id); s != 7 {
				t.Fatalf("node %d: sum %d, want 7 (applied once)", id, s)
			}
		}
		c.checkFSMs()
		c.checkSessions(t)
	})
}

// TestSessionsSurviveSnapshotAndRestart: a follower that catches up by
// installing a snapshot, and then restarts from its own snapshot with a
// fresh state machine, keeps the session table: retries through it as the
// leader are answered with the first results and apply nothing.
func TestSessionsSurviveSnapshotAndRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 20; cfg.SnapshotTrailing = 5 })
		c.waitLeader()
		c.stop(3)
		lead := c.waitLeader()
		const clients = 50
		firsts := make([]Result, clients)
		for i := range clients {
			r, err := proposeID(c.nodes[lead], rid(fmt.Sprintf("c%d", i), 1, 0), "add:1")
			if err != nil {
				t.Fatal(err)
			}
			firsts[i] = r
			if _, err := c.nodes[lead].Propose(context.Background(), []byte("put:k:v")); err != nil {
				t.Fatal(err)
			}
		}
		for range 40 {
			if _, err := c.nodes[lead].Propose(context.Background(), []byte("put:k:v")); err != nil {
				t.Fatal(err)
			}
		}
		if first, _ := c.stores[lead].FirstIndex(); first <= firsts[clients-1].Index {
			t.Fatalf("log not compacted past the keyed commands (first index %d)", first)
		}
		c.start(3)
		c.waitApplied(c.nodes[lead].Applied())
		if m := c.nodes[3].Metrics(); m.SnapshotsInstalled != 1 {
			t.Fatalf("node 3 installed %d snapshots, want 1", m.SnapshotsInstalled)
		}
		retry := func(via uint64) {
			t.Helper()
			for i := range clients {
				r, err := proposeID(c.nodes[via], rid(fmt.Sprintf("c%d", i), 1, 0), "add:1")
				if err != nil || !r.Duplicate || !bytes.Equal(r.Value, firsts[i].Value) || r.Index != firsts[i].Index {
					t.Fatalf("retry of c%d through node %d: %+v, %v; first %+v", i, via, r, err, firsts[i])
				}
			}
		}
		toLeader := func(id uint64) {
			t.Helper()
			for c.waitLeader() != id {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = c.nodes[c.waitLeader()].TransferLeader(ctx, id)
				cancel()
			}
		}
		toLeader(3)
		retry(3)
		c.checkSessions(t)

		// Node 3 restarts from its own snapshot and log, with an empty
		// state machine.
		c.stop(3)
		c.fsms[3] = newTestFSM()
		c.start(3)
		<-c.nodes[3].Ready()
		if st, _ := c.nodes[3].Status(context.Background()); st.Sessions != clients {
			t.Fatalf("node 3 keeps %d sessions after restart, want %d", st.Sessions, clients)
		}
		toLeader(3)
		retry(3)
		c.waitApplied(c.nodes[3].Applied())
		for id := range c.nodes {
			if s := sumOf(c, id); s != clients {
				t.Fatalf("node %d: sum %d, want %d", id, s, clients)
			}
		}
		c.checkFSMs()
		c.checkSessions(t)
	})
}

// TestSessionsStateMachineRestartSkipsDuplicates: a state machine that
// crashes is rebuilt by replaying the log, which holds a duplicate; the
// replay must skip it as the first pass did.
func TestSessionsStateMachineRestartSkipsDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = -1 })
		lead := c.waitLeader()
		for range 2 {
			if _, err := proposeID(c.nodes[lead], rid("r", 1, 0), "add:1"); err != nil {
				t.Fatal(err)
			}
		}
		victim := lead%3 + 1
		f := c.fsms[victim]
		f.mu.Lock()
		f.crashAt[c.nodes[lead].lastIdx.Load()+2] = true
		f.mu.Unlock()
		for range 3 {
			if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:10")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		if f.restarts == 0 {
			t.Fatal("the state machine did not crash")
		}
		for id := range c.nodes {
			if s := sumOf(c, id); s != 31 {
				t.Fatalf("node %d: sum %d, want 31", id, s)
			}
		}
		c.checkFSMs()
	})
}

// TestSessionsAcrossHalt: keyed commands (one of them twice) in the batch
// of a poison command are decided with it; the halt cuts the batch short
// on two replicas while a third, immune one applies it. After fsm skip the
// halted replicas apply the rest with the decisions already made, so
// every replica applies each id once and keeps the same table; retries
// get the first results.
func TestSessionsAcrossHalt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
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
		n := c.nodes[lead]
		// Everything below commits at once, in one batch.
		c.nw.setDrop(func(from, to uint64, m raft.Message) bool { return m.Type == raft.MsgAppResp })
		x := n.lastIdx.Load() + 1
		done := make(chan error, 6)
		propose := func(f func() error) {
			before := n.lastIdx.Load()
			go func() { done <- f() }()
			for n.lastIdx.Load() <= before {
				time.Sleep(time.Millisecond)
			}
		}
		propose(func() error { _, err := n.Propose(ctx, []byte("poison:1")); return err })
		for _, k := range []string{"k0", "k1", "k0", "k2", "k3"} {
			propose(func() error { _, err := proposeID(n, rid(k, 1, 0), "add:1"); return err })
		}
		c.nw.setDrop(nil)
		c.waitHalted(halted, x)
		res, err := n.Skip(ctx, x)
		if err != nil || !res.Skipped {
			t.Fatalf("skip %d: %+v, %v", x, res, err)
		}
		c.waitResumed(c.ids(), res.Index)
		for range 6 {
			<-done // whatever the first attempts got, they are over
		}
		for i, k := range []string{"k0", "k1", "k2", "k3"} {
			r, err := proposeID(n, rid(k, 1, 0), "add:1")
			if err != nil || !r.Duplicate || string(r.Value) != fmt.Sprintf("sum=%d", 6+i) {
				t.Fatalf("retry of %s: %+v, %v; want a duplicate of sum=%d", k, r, err, 6+i)
			}
		}
		c.waitApplied(n.Applied())
		for id := range c.nodes {
			if s := sumOf(c, id); s != 9 {
				t.Fatalf("node %d: sum %d, want 9", id, s)
			}
		}
		c.checkFSMs()
		c.checkSessions(t)
	})
}
