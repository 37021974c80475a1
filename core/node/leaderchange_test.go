package node

import (
	"context"
	"errors"
	"strconv"
	"strings"
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
