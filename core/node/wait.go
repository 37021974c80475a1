package node

import (
	"fmt"
	"sync"
)

// proposal is one caller waiting for its entry to be applied.
type proposal struct {
	req  uint64
	data []byte // encoded entry data (EntryNormal); nil for a conf change
	cc   *confProposal

	// Guarded by waitRegistry.mu.
	term  uint64 // term when handed to raft; 0 before
	index uint64 // log index once seen in this node's log; 0 before

	done chan propResult // buffered(1); written once, by whoever removes p
}

type propResult struct {
	val   []byte
	index uint64
	term  uint64
	err   error
}

// waitRegistry routes applied entries back to the callers that proposed
// them on this node. Request ids are unique across restarts of the node
// (random start), so an entry written by an earlier incarnation never
// matches a caller of this one.
//
// A caller is resolved exactly once, by the first of: its entry applied
// (result); a different entry applied or written at the index its entry was
// seen at (ErrProposalDropped: a log entry is created once, by one leader,
// so once overwritten it can never commit); a term change while its entry
// was not yet seen (ErrOutcomeUnknown); a snapshot covering it
// (ErrOutcomeUnknown); node shutdown (ErrOutcomeUnknown); the caller's
// context (the caller removes itself).
type waitRegistry struct {
	mu      sync.Mutex
	byReq   map[uint64]*proposal
	byIndex map[uint64]*proposal
}

func newWaitRegistry() *waitRegistry {
	return &waitRegistry{byReq: map[uint64]*proposal{}, byIndex: map[uint64]*proposal{}}
}

func (w *waitRegistry) add(p *proposal) {
	w.mu.Lock()
	w.byReq[p.req] = p
	w.mu.Unlock()
}

// removeLocked drops p from both maps and delivers r.
func (w *waitRegistry) removeLocked(p *proposal, r propResult) {
	delete(w.byReq, p.req)
	if p.index != 0 && w.byIndex[p.index] == p {
		delete(w.byIndex, p.index)
	}
	p.done <- r
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
	delete(w.byReq, req)
	if p.index != 0 && w.byIndex[p.index] == p {
		delete(w.byIndex, p.index)
	}
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
}

// written records entries appended to this node's log (Ready.Entries).
func (w *waitRegistry) written(es []observedEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range es {
		if old := w.byIndex[e.index]; old != nil && old.req != e.req {
			w.removeLocked(old, propResult{err: fmt.Errorf("%w: entry at index %d was overwritten", errDropped, e.index)})
		}
		if e.req == 0 {
			continue
		}
		if p := w.byReq[e.req]; p != nil {
			if p.index != 0 && w.byIndex[p.index] == p {
				delete(w.byIndex, p.index)
			}
			p.index = e.index
			w.byIndex[e.index] = p
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
			w.removeLocked(old, propResult{err: fmt.Errorf("%w: a different entry was applied at index %d", errDropped, e.index)})
		}
		if e.req == 0 {
			continue
		}
		if p := w.byReq[e.req]; p != nil {
			w.removeLocked(p, propResult{val: e.val, index: e.index, term: e.term, err: e.err})
		}
	}
}

// failUnindexed resolves callers handed to raft before term whose entry was
// never seen in this node's log: a leader change may or may not have lost
// them.
func (w *waitRegistry) failUnindexed(term uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.byReq {
		if p.index == 0 && p.term != 0 && p.term < term {
			w.removeLocked(p, propResult{err: fmt.Errorf("%w: leader changed (term %d -> %d) before the entry reached this node", ErrOutcomeUnknown, p.term, term)})
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
