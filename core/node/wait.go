package node

import (
	"fmt"
	"sync"
	"time"
)

// proposal is one caller waiting for its entry to be applied.
type proposal struct {
	req  uint64
	data []byte // encoded entry data (EntryNormal); nil for a conf change
	cc   *confProposal
	// admin: an fsm skip entry, accepted while apply is halted or the
	// apply backlog is full (it is how a halt is resolved).
	admin bool

	// Guarded by waitRegistry.mu.
	term  uint64 // term when handed to raft; 0 before
	index uint64 // log index once seen in this node's log; 0 before
	// replaced: another entry was written at index after this one (its
	// entry is not in this node's log now; it may come back).
	replaced bool
	// deadline is the tick at which the caller gets ErrOutcomeUnknown
	// (set when leadership changed after the entry was handed to raft;
	// 0 = none).
	deadline uint64
	why      string // the leadership change, for the error

	done chan propResult // buffered(1); written once, by whoever removes p

	// start is when the caller proposed (for the proposal-to-commit
	// latency); zeroed once the commit is observed.
	start time.Time
}

type propResult struct {
	val   []byte
	index uint64
	term  uint64
	dup   bool
	err   error
}

// waitRegistry routes applied entries back to the callers that proposed
// them on this node. Request ids are unique across restarts of the node
// (random start), so an entry written by an earlier incarnation never
// matches a caller of this one.
//
// A caller is resolved exactly once, by the first of:
//   - its entry applied: the result;
//   - a different entry committed at the index its entry was seen at:
//     ErrProposalDropped. Only a committed entry is final: an uncommitted
//     entry that was overwritten in this node's log may still be on other
//     nodes and commit under a later leader (Raft §5.4.2, figure 8), so an
//     overwrite alone decides nothing;
//   - a leadership change (new term, or the leader lost) after it was
//     handed to raft, followed by no definite outcome within the grace
//     period (Config.LeaderChangeWait): ErrOutcomeUnknown;
//   - a snapshot covering it: ErrOutcomeUnknown;
//   - node shutdown: ErrOutcomeUnknown;
//   - the caller's context (the caller removes itself).
type waitRegistry struct {
	// commitLat receives each proposal's proposal-to-commit latency.
	commitLat *histogram

	mu       sync.Mutex
	commit   uint64 // highest commit index seen by committed
	byReq    map[uint64]*proposal
	byIndex  map[uint64]*proposal // the proposal whose entry is at that index in this node's log
	replaced map[uint64]*proposal // by req: proposals with replaced set
	graced   map[uint64]*proposal // by req: proposals with a deadline
}

func newWaitRegistry(commitLat *histogram) *waitRegistry {
	return &waitRegistry{commitLat: commitLat, byReq: map[uint64]*proposal{}, byIndex: map[uint64]*proposal{},
		replaced: map[uint64]*proposal{}, graced: map[uint64]*proposal{}}
}

func (w *waitRegistry) add(p *proposal) {
	w.mu.Lock()
	w.byReq[p.req] = p
	w.mu.Unlock()
}

// removeLocked drops p from both maps and delivers r.
func (w *waitRegistry) removeLocked(p *proposal, r propResult) {
	w.forgetLocked(p)
	p.done <- r
}

func (w *waitRegistry) forgetLocked(p *proposal) {
	delete(w.byReq, p.req)
	delete(w.replaced, p.req)
	delete(w.graced, p.req)
	if p.index != 0 && w.byIndex[p.index] == p {
		delete(w.byIndex, p.index)
	}
}

// cancel removes the caller req without delivering anything (its context
// ended). It reports whether the caller was still registered.
func (w *waitRegistry) cancel(req uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.byReq[req]
	if !ok {
		return false
	}
	w.forgetLocked(p)
	return true
}

// fail resolves req with err if it is still waiting.
func (w *waitRegistry) fail(req uint64, err error) {
	w.mu.Lock()
	if p, ok := w.byReq[req]; ok {
		w.removeLocked(p, propResult{err: err})
	}
	w.mu.Unlock()
}

// proposed records that req was handed to raft in term.
func (w *waitRegistry) proposed(req, term uint64) {
	w.mu.Lock()
	if p, ok := w.byReq[req]; ok {
		p.term = term
	}
	w.mu.Unlock()
}

func (w *waitRegistry) empty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byReq) == 0
}

// observedEntry is an entry written to, or applied from, this node's log;
// req is the request id when this node proposed it, else 0.
type observedEntry struct {
	index, term, req uint64
	val              []byte
	err              error // for applied entries whose result is unknown
	// dup: a keyed command already applied at (resIndex, resTerm), whose
	// result val is (sessions.go).
	dup               bool
	resIndex, resTerm uint64
}

// written records entries appended to this node's log (Ready.Entries).
// An entry of another proposer, or another entry of ours, written at the
// index where a waiting caller's entry was seen only marks that caller
// replaced (see waitRegistry); committed decides.
func (w *waitRegistry) written(es []observedEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range es {
		if old := w.byIndex[e.index]; old != nil && old.req != e.req {
			delete(w.byIndex, e.index)
			old.replaced = true
			w.replaced[old.req] = old
		}
		if e.req == 0 {
			continue
		}
		if p := w.byReq[e.req]; p != nil {
			if p.index != 0 && p.index != e.index && w.byIndex[p.index] == p {
				delete(w.byIndex, p.index)
			}
			p.index = e.index
			p.replaced = false
			delete(w.replaced, p.req)
			w.byIndex[e.index] = p
		}
	}
}

// committed resolves the callers whose entry was replaced in this node's
// log by an entry that is now committed (index <= commit): a committed
// entry never changes, so theirs can never be applied. It also records the
// proposal-to-commit latency of the callers whose entry it commits.
func (w *waitRegistry) committed(commit uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if commit > w.commit {
		lo := w.commit + 1
		w.commit = commit
		w.observeCommitted(lo, commit)
	}
	for _, p := range w.replaced {
		if p.index <= commit {
			w.removeLocked(p, propResult{err: NotApplied(fmt.Errorf("%w: another entry was committed at index %d", errDropped, p.index))})
		}
	}
}

// observeCommitted records the proposal-to-commit latency of the callers
// whose entry is in this node's log at an index in [lo, hi], newly
// committed. It looks up whichever is smaller: the range or the callers.
// The caller holds w.mu.
func (w *waitRegistry) observeCommitted(lo, hi uint64) {
	if len(w.byIndex) == 0 {
		return
	}
	now := time.Now()
	observe := func(p *proposal) {
		if !p.start.IsZero() {
			w.commitLat.observe(now.Sub(p.start))
			p.start = time.Time{}
		}
	}
	if hi-lo < uint64(len(w.byIndex)) {
		for i := lo; i <= hi; i++ {
			if p := w.byIndex[i]; p != nil {
				observe(p)
			}
		}
		return
	}
	for i, p := range w.byIndex {
		if i >= lo && i <= hi {
			observe(p)
		}
	}
}

// applied resolves the callers of applied entries, in order.
func (w *waitRegistry) applied(es []observedEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.byReq) == 0 {
		return
	}
	for _, e := range es {
		if old := w.byIndex[e.index]; old != nil && old.req != e.req {
			w.removeLocked(old, propResult{err: NotApplied(fmt.Errorf("%w: a different entry was applied at index %d", errDropped, e.index))})
		}
		if e.req == 0 {
			continue
		}
		if p := w.byReq[e.req]; p != nil {
			r := propResult{val: e.val, index: e.index, term: e.term, err: e.err}
			if e.dup {
				r.dup, r.index, r.term = true, e.resIndex, e.resTerm
			}
			w.removeLocked(p, r)
		}
	}
}

// leadershipChanged starts the grace period of every caller already
// handed to raft: its entry may still be committed by the new leader, or
// replaced, so it keeps waiting for that definite outcome until tick
// deadline, then gets ErrOutcomeUnknown (expire).
func (w *waitRegistry) leadershipChanged(why string, deadline uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.byReq {
		if p.term != 0 && p.deadline == 0 {
			p.deadline, p.why = deadline, why
			w.graced[p.req] = p
		}
	}
}

// expire resolves the callers whose grace period ended at or before tick.
func (w *waitRegistry) expire(tick uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.graced {
		if p.deadline <= tick {
			where := "before its entry reached this node"
			if p.index != 0 {
				where = fmt.Sprintf("with its entry at index %d not committed", p.index)
			}
			w.removeLocked(p, propResult{err: fmt.Errorf("%w: %s, %s", ErrOutcomeUnknown, p.why, where)})
		}
	}
}

// failCovered resolves callers whose entry is, or may be, inside a
// snapshot installed at index.
func (w *waitRegistry) failCovered(index uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.byReq {
		if p.term != 0 && p.index <= index {
			w.removeLocked(p, propResult{err: fmt.Errorf("%w: a snapshot at index %d was installed while waiting", ErrOutcomeUnknown, index)})
		}
	}
}

// failAll resolves every caller with err.
func (w *waitRegistry) failAll(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.byReq {
		w.removeLocked(p, propResult{err: err})
	}
}
