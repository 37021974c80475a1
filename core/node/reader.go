package node

import (
	"context"
	"sync"
)

// The query reader answers linearizable reads (Read) on one goroutine, the
// queries of many reads in one state machine call (QueryBatcher: one round
// trip to a plugin process), and wakes each caller once, with its answer.
//
// A read's answer must come from a state that has applied the read's index
// (the leader's commit index when the read reached it, confirmed by a
// heartbeat round a quorum answered; thesis §6.4) and that the state
// machine held at some moment after the read was issued. Any such state
// is a linearizable answer: it holds every write that completed before
// the read began (their indexes are at most the read index) and only
// committed entries, and it is observed within the read's interval.
// Nothing requires the query to run after the round is confirmed, only
// its answer to be released after. So the reader runs a round's queries
// as soon as the loop issues the round, in parallel with the heartbeats,
// if this node has already applied everything it knows to be committed:
// the applied index read before the call (specAt) is then a lower bound
// of the state the queries saw. When the round confirms index i, a read
// whose speculative answer has specAt >= i is answered with it; any other
// read waits until i is applied and is queried again. An answer is never
// released for a round that did not confirm: a read whose round is given
// up (leader change, timeout) is issued again in a new round, and a
// speculative answer then counts only if its specAt reaches the new
// round's index.
type queryReader struct {
	n      *Node
	ctx    context.Context // cancelled when the node stops
	cancel context.CancelFunc
	wake   chan struct{} // buffered(1)
	stopc  chan struct{}
	donec  chan struct{}

	mu     sync.Mutex
	events []readEvent

	// Owned by the goroutine.
	spec    []*readReq // issued, to be queried speculatively
	waiting []*readReq // confirmed, to be queried once their index is applied
	qbuf    [][]byte
}

// readEvent is a round issued (its query reads, confirm false) or
// confirmed at index.
type readEvent struct {
	reqs    []*readReq
	confirm bool
	index   uint64
}

func newQueryReader(n *Node) *queryReader {
	ctx, cancel := context.WithCancel(context.Background())
	return &queryReader{n: n, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1),
		stopc: make(chan struct{}), donec: make(chan struct{})}
}

// issued hands over the query reads of a round the loop just issued, to
// be queried at once (loop goroutine).
func (r *queryReader) issued(reqs []*readReq) { r.post(readEvent{reqs: reqs}) }

// confirmed hands over the query reads of a round confirmed at index
// (loop goroutine). From here on the reader answers them.
func (r *queryReader) confirmed(reqs []*readReq, index uint64) {
	r.post(readEvent{reqs: reqs, confirm: true, index: index})
}

func (r *queryReader) post(ev readEvent) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// stop ends the goroutine and waits for it. Reads it had not answered
// see the node stopped (awaitRead).
func (r *queryReader) stop() {
	r.cancel()
	close(r.stopc)
	<-r.donec
}

func (r *queryReader) run() {
	defer close(r.donec)
	var evs []readEvent
	for {
		r.mu.Lock()
		evs, r.events = r.events, evs[:0]
		r.mu.Unlock()
		r.take(evs)
		clear(evs)
		var appliedc <-chan struct{}
		if len(r.waiting) > 0 || len(r.spec) > 0 {
			// Taken before work reads the applied index: no signal is lost.
			appliedc = r.n.appliedCh.wait()
		}
		if r.work() {
			continue
		}
		select {
		case <-r.wake:
		case <-appliedc:
		case <-r.stopc:
			return
		}
	}
}

// take records the events in order.
func (r *queryReader) take(evs []readEvent) {
	for _, ev := range evs {
		if !ev.confirm {
			for _, q := range ev.reqs {
				if !q.specDone && !q.inSpec {
					q.inSpec = true
					r.spec = append(r.spec, q)
				}
			}
			continue
		}
		for _, q := range ev.reqs {
			q.index = ev.index
			switch {
			case q.specDone && q.specAt >= q.index:
				q.resc <- q.spec
			case q.inSpec:
				// Queried below, then answered or queued.
			default:
				r.waiting = append(r.waiting, q)
			}
		}
	}
}

// work runs the queries that can run now in one state machine call: the
// speculative ones, and the confirmed ones whose index is applied. It
// answers confirmed reads, including those a halt refuses, and reports
// whether it did anything.
func (r *queryReader) work() bool {
	applied := r.n.applied.Load()
	var run []*readReq
	for _, q := range r.spec {
		q.inSpec = false
		switch {
		case q.ctx.Err() != nil:
			// The caller is gone.
		case q.index != 0 && q.index > applied:
			r.waiting = append(r.waiting, q)
		default:
			run = append(run, q)
		}
	}
	clear(r.spec)
	r.spec = r.spec[:0]
	did := len(run) > 0
	if len(r.waiting) > 0 {
		keep := r.waiting[:0]
		halted := r.n.halt.Load() != nil
		for _, q := range r.waiting {
			switch {
			case q.ctx.Err() != nil:
			case q.index <= applied:
				run = append(run, q)
			case halted:
				q.resc <- readResult{err: r.n.haltedErr(haltedReadWhat(q.index, applied))}
				did = true
			default:
				keep = append(keep, q)
			}
		}
		clear(r.waiting[len(keep):])
		r.waiting = keep
	}
	if len(run) == 0 {
		return did
	}
	at := r.query(run)
	for _, q := range run {
		switch {
		case q.index == 0:
			// Not confirmed yet: kept for the confirmation.
			q.specDone, q.specAt = true, at
		case q.index <= at:
			q.resc <- q.spec
		default:
			// A speculative query confirmed meanwhile at an index it did
			// not see applied.
			q.specDone = false
			r.waiting = append(r.waiting, q)
		}
	}
	return true
}

// query runs the queries of reqs against the state machine in one call
// when it is a QueryBatcher, and stores each answer in its read's spec. It
// returns the applied index the queries saw at least.
func (r *queryReader) query(reqs []*readReq) uint64 {
	a := r.n.app
	a.queryMu.RLock()
	defer a.queryMu.RUnlock()
	// NB: read under queryMu, after any restore or restart that replaces
	// the state, and before the call: the state the queries see has
	// applied at least this much.
	at := r.n.applied.Load()
	if qb, ok := a.sm.(QueryBatcher); ok && len(reqs) > 1 {
		qs := r.qbuf[:0]
		for _, q := range reqs {
			qs = append(qs, q.q)
		}
		res, errs := qb.QueryBatch(r.ctx, qs)
		clear(qs)
		r.qbuf = qs[:0]
		for i, q := range reqs {
			q.spec = readResult{res: res[i], err: errs[i]}
		}
		return at
	}
	for _, q := range reqs {
		res, err := a.sm.Query(r.ctx, q.q)
		q.spec = readResult{res: res, err: err}
	}
	return at
}
