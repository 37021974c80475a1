package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/raftd/raftd/core/raft"
)

// Halted apply (apply goroutine).
//
// A state machine that fails on a command deterministically (the plugin
// returns an error or panics on it, or its Apply watchdog fires every
// time) fails on it on every replica. Fail-stopping would then stop every
// replica, and each restart would replay the same entry: the whole cluster
// would crash-loop. Instead, once a command has failed more than
// Config.MaxRestarts times in a row, each time after a restart, restore and
// replay (applyCmds), the node halts apply at its index X:
//
//   - the state machine is brought back to just before X (restart,
//     restore, replay) and everything before X is applied;
//   - the node stays in raft: it persists, replicates, votes and may lead;
//     its log is not compacted beyond X-1 (it takes no snapshot beyond its
//     applied index);
//   - committed entries handed over meanwhile are not kept in memory: they
//     are dropped (enqueue hands only their range over) and read back from
//     Storage on resuming;
//   - stale reads are served from the state at X-1, and so are
//     linearizable reads whose read index is below X; other reads,
//     proposals that were waiting for their entry to be applied and new
//     proposals get a *HaltedError (ErrHalted);
//   - Status.Halted, the log and the metrics say so.
//
// It resumes when an `fsm skip` entry for X (Node.Skip) is committed: the
// node notices it among the committed entries beyond X (it cannot apply
// up to it), skips the command at X (its caller, if still waiting, gets
// ErrSkipped) and applies on from X+1. Replicas not halted at X ignore the
// skip entry. A snapshot installed from the leader beyond X also resumes
// it.
//
// A replica whose state diverged from the majority's halts the same way at
// a checkpoint's verdict entry (Halt.Checkpoint, checkpoint.go); a skip
// entry does not resume it.
//
// The halt is not persisted: it is recomputed. A restarted node replays
// the log, fails on X again the same way and halts there again, rather
// than crash-loop; on halting it searches the committed entries beyond X
// for a skip entry, so one that was committed while it was down (or
// before it restarted) resumes it as well. A command a node skipped stays
// skipped across state machine restarts of the same process (skipped),
// and a snapshot is taken right after a skip so that a node restart
// does not replay it either; if the node restarts before that snapshot
// is complete, the command fails again and is skipped again on the same
// skip entry (unless the state machine no longer fails on it: NB, that
// replica then applies it).

// enterHalt halts apply at index x; everything before x is applied and the
// state machine holds exactly that.
func (a *applier) enterHalt(x uint64, attempts int, cause error) {
	a.setHalt(Halt{Index: x, Reason: fmt.Sprintf("state machine %q failed on the command at index %d %d times in a row (restarted, restored and replayed between attempts): %s",
		a.info.Name, x, attempts, firstLine(cause.Error()))},
		"apply halted: the node stays in the cluster; `raftd fsm skip INDEX` skips the command on every replica halted there")
}

// haltDiverged halts apply at h.Index, a verdict entry on the checkpoint
// at h.Checkpoint that this replica's state does not match
// (checkpoint.go). A leader hands leadership over.
func (a *applier) haltDiverged(h Halt) {
	a.n.m.divergences.Add(1)
	a.setHalt(h, "apply halted for divergence: the node stays in the cluster but applies nothing more and refuses snapshots from the leader; rebuild it (docs/operations.md)")
	select {
	case a.n.ctrlc <- a.n.maybeHandOff:
	default: // the loop retries every election timeout
	}
}

func (a *applier) setHalt(h Halt, msg string) {
	a.halt = &h
	a.scanned = h.Index
	a.n.halt.Store(&h)
	a.n.m.halts.Add(1)
	a.n.cfg.Logger.Error(msg, "index", h.Index, "reason", h.Reason)
	a.n.waits.failAll(fmt.Errorf("%w: %w", ErrOutcomeUnknown, &HaltedError{Halt: h, What: "the entry is committed; this node applies it only after the halt is resolved"}))
	a.n.appliedCh.signal() // reads waiting for an index beyond the halt
}

// resume ends a halt.
func (a *applier) resume(why string) {
	x := a.halt.Index
	a.halt = nil
	a.n.halt.Store(nil)
	a.n.cfg.Logger.Warn("apply resumed", "index", x, "why", why)
}

// whileHalted searches the committed entries handed over since the halt
// for a skip entry naming the halt index and resumes on it: it skips that
// command and applies the rest (read back from Storage), which may halt
// again at a later index.
func (a *applier) whileHalted() error {
	// A divergence halt (Checkpoint > 0) is not resolved by a skip.
	for a.halt != nil && !a.covered && a.halt.Checkpoint == 0 {
		at, err := a.findSkip()
		if err != nil || at == 0 {
			return err
		}
		x := a.halt.Index
		a.resume(fmt.Sprintf("skipping the command at index %d on the fsm skip entry at index %d", x, at))
		a.skipNext = x
		a.resumedBy[at] = true
		if err := a.applyRange(x, a.handedHi, nil); err != nil {
			return err
		}
	}
	return nil
}

// findSkip reads the committed entries (scanned, handedHi] from Storage and
// returns the index of the first skip entry for the halt index (0: none
// yet). Callers on this node whose entries commit meanwhile get a
// *HaltedError: nothing beyond the halt is applied here until it resumes.
func (a *applier) findSkip() (uint64, error) {
	x := a.halt.Index
	for lo := max(a.scanned, x) + 1; lo <= a.handedHi; {
		ents, err := a.readCommitted(lo, a.handedHi)
		if err != nil || ents == nil {
			return 0, err
		}
		for _, e := range ents {
			a.scanned = e.Index
			if e.Type != raft.EntryNormal || len(e.Data) == 0 {
				continue
			}
			env, err := decodeEnvelope(e.Data)
			if err != nil {
				return 0, fmt.Errorf("node: entry %d (term %d) is malformed: %w", e.Index, e.Term, err)
			}
			if env.kind == kindSkip && env.skip == x {
				return e.Index, nil
			}
			if env.proposer == a.n.id && env.req != 0 {
				a.n.waits.fail(env.req, fmt.Errorf("%w: %w", ErrOutcomeUnknown, &HaltedError{Halt: *a.halt,
					What: fmt.Sprintf("entry %d is committed; this node applies it only after the halt is resolved", e.Index)}))
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return 0, nil
}

// pruneSkipped forgets skipped commands that the latest snapshot covers.
func (a *applier) pruneSkipped() {
	si := a.lastSnap.Metadata.Index
	a.skipped = slices.DeleteFunc(a.skipped, func(i uint64) bool { return i <= si })
}

// SkipResult is the outcome of Node.Skip.
type SkipResult struct {
	// Index is the index of the skip entry.
	Index uint64
	// Skipped reports whether this node was halted at the requested index
	// and skipped that command on the entry.
	Skipped bool
}

// Skip commits an `fsm skip` entry for the command at index and returns
// once it is applied on this node: every replica whose apply is halted at
// index skips that command (deterministically: the same command on each)
// and resumes; the others ignore it. It is accepted on a halted node (it
// is how a halt is resolved). NB: skipping a command that some replicas
// applied and others skip makes them differ; skip only a command every
// replica halted on (raftd status shows each node's halt).
func (n *Node) Skip(ctx context.Context, index uint64) (SkipResult, error) {
	if index == 0 {
		return SkipResult{}, NotApplied(fmt.Errorf("%w: index must be > 0", ErrBadRequest))
	}
	req := n.reqSeq.Add(1)
	r, err := n.wait(ctx, &proposal{req: req, data: encodeSkip(n.id, req, index), admin: true})
	return SkipResult{Index: r.Index, Skipped: err == nil && string(r.Value) == string(skippedHere)}, err
}

// Halted returns the halt of this node's apply, or nil.
func (n *Node) Halted() *Halt {
	if h := n.halt.Load(); h != nil {
		c := *h
		return &c
	}
	return nil
}

// haltedErr returns a *HaltedError for the current halt, or nil.
func (n *Node) haltedErr(what string) error {
	if h := n.halt.Load(); h != nil {
		return &HaltedError{Halt: *h, What: what}
	}
	return nil
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
