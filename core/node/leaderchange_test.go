package node

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// echoCount is how many times "echo:p" was applied on f.
func echoCount(f *testFSM, p string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, _ := strconv.Atoi(f.kv["e/"+p])
	return n
}

type proposeOutcome struct {
	res []byte
	err error
	at  time.Time
}

func proposeAsync(n *Node, cmd string) <-chan proposeOutcome {
	ch := make(chan proposeOutcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		res, err := n.Propose(ctx, []byte(cmd))
		ch <- proposeOutcome{res, err, time.Now()}
	}()
	return ch
}

// waitIndexed waits until the proposal's entry is in n's log at or after
// index after.
func waitLastIndex(t *testing.T, n *Node, after uint64) uint64 {
	t.Helper()
	for range 1000 {
		if li := n.lastIdx.Load(); li > after {
			return li
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("entry not appended")
	return 0
}

// TestLeaderChangeReleasesCallersAfterGrace: a leader cut off from the
// others holds a caller whose entry is only in its own log. Once it steps
// down (check-quorum) the caller waits one more election timeout for a
// definite outcome, then gets ErrOutcomeUnknown — not at the end of its
// one-hour context.
func TestLeaderChangeReleasesCallersAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		n := c.nodes[lead]
		et := n.cfg.ElectionTimeout
		c.nw.isolate(lead, true)
		before := n.lastIdx.Load()
		start := time.Now()
		out := proposeAsync(n, "echo:lost")
		idx := waitLastIndex(t, n, before)
		var o proposeOutcome
		select {
		case o = <-out:
		case <-time.After(6 * et):
			t.Fatalf("caller still waiting %v after its leader was cut off (entry at %d)", 6*et, idx)
		}
		if !errors.Is(o.err, ErrOutcomeUnknown) || !strings.Contains(o.err.Error(), "leadership changed") {
			t.Fatalf("caller got %q, %v; want outcome unknown after a leadership change", o.res, o.err)
		}
		// Check-quorum steps the leader down within about 2 election
		// timeouts; then one election timeout of grace.
		if d := o.at.Sub(start); d < et {
			t.Fatalf("released after %v, before any grace period", d)
		}
		t.Logf("released after %v: %v", o.at.Sub(start), o.err)
		c.nw.isolate(lead, false)
		l2 := c.waitLeader()
		if _, err := c.nodes[l2].Propose(context.Background(), []byte("echo:after")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[l2].Applied())
		c.checkFSMs()
		if k := echoCount(c.fsms[l2], "lost"); k != 0 {
			t.Fatalf("lost entry applied %d times", k)
		}
	})
}

// TestReplacedEntryIsDroppedOnceCommitted: the cut-off leader's entry is
// replaced when it rejoins; once the replacing entry is committed the
// caller gets ErrProposalDropped at once (the grace period is an hour
// here, so only the definite outcome can release it).
func TestReplacedEntryIsDroppedOnceCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.LeaderChangeWait = time.Hour })
		lead := c.waitLeader()
		n := c.nodes[lead]
		et := n.cfg.ElectionTimeout
		c.nw.isolate(lead, true)
		before := n.lastIdx.Load()
		out := proposeAsync(n, "echo:lost")
		waitLastIndex(t, n, before)
		// The others elect a leader and commit entries of their own.
		var l2 uint64
		for range 1000 {
			for id, m := range c.nodes {
				if id != lead && m.Leader() == id {
					l2 = id
				}
			}
			if l2 != 0 {
				break
			}
			time.Sleep(testTick)
		}
		if l2 == 0 {
			t.Fatal("no new leader")
		}
		for range 3 {
			if _, err := c.nodes[l2].Propose(context.Background(), []byte("echo:new")); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case o := <-out:
			t.Fatalf("caller released while its leader is cut off: %q, %v", o.res, o.err)
		default:
		}
		healed := time.Now()
		c.nw.isolate(lead, false)
		var o proposeOutcome
		select {
		case o = <-out:
		case <-time.After(3 * et):
			t.Fatalf("caller still waiting %v after its entry was replaced", 3*et)
		}
		if !errors.Is(o.err, raft.ErrProposalDropped) {
			t.Fatalf("caller got %q, %v; want dropped", o.res, o.err)
		}
		t.Logf("released %v after the heal: %v", o.at.Sub(healed), o.err)
		c.waitApplied(c.nodes[l2].Applied())
		c.checkFSMs()
		if k := echoCount(c.fsms[l2], "lost"); k != 0 {
			t.Fatalf("dropped entry applied %d times", k)
		}
	})
}

// TestOverwrittenEntryCanStillCommit is Raft's figure 8 seen from a
// proposer: in a 5-node cluster the entry of follower b's caller reaches
// only leader a and b; a is cut off; c wins an election without it and
// overwrites it in b's log with an uncommitted entry; c is cut off; a wins
// again (with d and e) and commits the entry after all. An overwrite alone
// must not tell the caller "not applied": the caller gets its result.
func TestOverwrittenEntryCanStillCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c5 := newCluster(t, 5, func(cfg *Config) { cfg.LeaderChangeWait = time.Hour })
		a := c5.waitLeader()
		var others []uint64
		for id := uint64(1); id <= 5; id++ {
			if id != a {
				others = append(others, id)
			}
		}
		b, c := others[0], others[1] // d and e: the other two
		var (
			voter     atomic.Uint64 // only this node's (pre-)votes get through
			appFrom   atomic.Uint64 // this node's appends reach only b
			phaseDrop = func(from, to uint64, m raft.Message) bool {
				switch m.Type {
				case raft.MsgPreVote, raft.MsgVote:
					return voter.Load() != 0 && from != voter.Load()
				case raft.MsgApp, raft.MsgSnap:
					return from == appFrom.Load() && to != b
				}
				return false
			}
		)
		c5.nw.setDrop(phaseDrop)
		nodeB := c5.nodes[b]

		// 1. The entry reaches a and b only.
		appFrom.Store(a)
		before := nodeB.lastIdx.Load()
		out := proposeAsync(nodeB, "echo:fig8")
		eidx := waitLastIndex(t, nodeB, before)
		termOf := func(id, i uint64) uint64 {
			tm, _ := c5.stores[id].Term(i)
			return tm
		}
		et := termOf(b, eidx)

		// 2. a is cut off; c wins without the entry and overwrites it in
		// b's log; its entry commits nowhere (d and e get no appends).
		c5.nw.isolate(a, true)
		voter.Store(c)
		appFrom.Store(c)
		for i := 0; termOf(b, eidx) == et; i++ {
			if i > 2000 {
				t.Fatalf("b's entry %d was not overwritten (leader of c: %d)", eidx, c5.nodes[c].Leader())
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case o := <-out:
			if errors.Is(o.err, raft.ErrProposalDropped) {
				t.Logf("caller told %v on an overwrite; the entry may still commit", o.err)
			}
			out = func() <-chan proposeOutcome { ch := make(chan proposeOutcome, 1); ch <- o; return ch }()
		default:
		}

		// 3. c is cut off; a comes back and wins with d and e.
		c5.nw.isolate(c, true)
		appFrom.Store(0)
		voter.Store(a)
		c5.nw.isolate(a, false)
		var o proposeOutcome
		select {
		case o = <-out:
		case <-time.After(time.Minute):
			t.Fatal("caller never released")
		}
		for i := 0; echoCount(c5.fsms[a], "fig8") == 0 && i < 2000; i++ {
			time.Sleep(time.Millisecond)
		}
		applied := echoCount(c5.fsms[a], "fig8")
		if o.err != nil || applied != 1 {
			t.Fatalf("caller got %q, %v; entry applied %d times", o.res, o.err, applied)
		}
		if want := "fig8@" + strconv.FormatUint(eidx, 10); string(o.res) != want {
			t.Fatalf("caller got %q, want %q", o.res, want)
		}
		c5.nw.setDrop(nil)
		c5.nw.isolate(c, false)
		c5.waitApplied(c5.nodes[a].Applied())
		c5.checkFSMs()
	})
}
