package node

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// wantClass checks that err is in exactly the outcome class want
// (ErrNotApplied or ErrOutcomeUnknown) and also matches each of reasons.
func wantClass(t *testing.T, what string, err, want error, reasons ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, want)
	}
	na, unk := errors.Is(err, ErrNotApplied), errors.Is(err, ErrOutcomeUnknown)
	if na && unk {
		t.Fatalf("%s: %v matches both ErrNotApplied and ErrOutcomeUnknown", what, err)
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v (not applied %v, unknown %v), want %v", what, err, na, unk, want)
	}
	for _, r := range reasons {
		if !errors.Is(err, r) {
			t.Fatalf("%s: %v does not match %v", what, err, r)
		}
	}
}

// TestOutcomeClasses checks that refusals made before the log are
// ErrNotApplied, that a command handed to raft whose fate is open is
// ErrOutcomeUnknown, and that a fail-stop is ErrFatal.
func TestOutcomeClasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.MaxEntryBytes = 16 })
		lead := c.waitLeader()
		n := c.nodes[lead]
		ctx := context.Background()

		_, err := n.Propose(ctx, make([]byte, 17))
		wantClass(t, "too large", err, ErrNotApplied, ErrTooLarge)
		_, err = n.ActivateFSMVersion(ctx, 99)
		wantClass(t, "unsupported version", err, ErrNotApplied, ErrUnsupportedVersion)
		err = n.AddMember(ctx, Peer{})
		wantClass(t, "member id 0", err, ErrNotApplied, ErrBadRequest)
		_, _, err = n.ExportSnapshot(ctx, false)
		wantClass(t, "no snapshot", err, ErrNotApplied, ErrNoSnapshot)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err = n.Propose(cctx, []byte("add:1"))
		if err != nil && !errors.Is(err, ErrOutcomeUnknown) {
			wantClass(t, "canceled before proposing", err, ErrNotApplied, context.Canceled)
		}

		// The leader loses its quorum: a command it appends cannot commit
		// and its caller's deadline passes: outcome unknown.
		for id := range c.nodes {
			if id != lead {
				c.nw.isolate(id, true)
			}
		}
		tctx, cancel := context.WithTimeout(ctx, 3*testTick)
		_, err = n.Propose(tctx, []byte("add:2"))
		cancel()
		wantClass(t, "no quorum", err, ErrOutcomeUnknown, context.DeadlineExceeded)

		// An isolated follower finds no leader after an election timeout
		// and more: refused before proposing.
		var f uint64
		for id := range c.nodes {
			if id != lead {
				f = id
				break
			}
		}
		for c.nodes[f].Leader() != raft.None {
			time.Sleep(testTick)
		}
		_, err = c.nodes[f].Propose(ctx, []byte("add:3"))
		wantClass(t, "no leader", err, ErrNotApplied, raft.ErrNoLeader)
		_, err = c.nodes[f].Read(ctx, []byte("get"))
		wantClass(t, "read, no leader", err, ErrNotApplied, raft.ErrNoLeader)

		// A storage failure fail-stops the leader: the pending command's
		// outcome is unknown, the node's error is fatal, and later calls
		// are refused.
		boom := errors.New("injected fsync failure")
		c.stores[lead].saveErr.Store(&boom)
		_, err = n.Propose(ctx, []byte("add:4"))
		wantClass(t, "pending at fail-stop", err, ErrOutcomeUnknown, ErrFatal, boom)
		<-n.Done()
		if err := n.Err(); !errors.Is(err, ErrFatal) || !errors.Is(err, boom) {
			t.Fatalf("Err after fail-stop: %v, want ErrFatal wrapping the cause", err)
		}
		_, err = n.Propose(ctx, []byte("add:5"))
		wantClass(t, "propose after fail-stop", err, ErrNotApplied, ErrStopped)
		_, err = n.Read(ctx, []byte("get"))
		wantClass(t, "read after fail-stop", err, ErrNotApplied, ErrStopped)
		_, err = n.Members(ctx)
		wantClass(t, "members after fail-stop", err, ErrNotApplied, ErrStopped)
		if _, err := n.StaleRead(ctx, []byte("get")); !errors.Is(err, ErrNotApplied) {
			t.Fatalf("stale read after fail-stop: %v", err)
		}
		delete(c.nodes, lead)
	})
}
