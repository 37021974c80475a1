package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// readReq is one linearizable read waiting for a ReadIndex round: a
// ReadIndex call (the loop answers it with the index) or a Read (query:
// the query reader answers it with the query's result, reader.go).
type readReq struct {
	ctx   context.Context // the caller's; the reader skips the query once it is done
	q     []byte
	query bool
	resc  chan readResult // buffered(1); exactly one answer is sent

	// Owned by the query reader goroutine (reader.go).
	index    uint64     // the confirmed read index; 0 until confirmed
	inSpec   bool       // queued for a speculative query
	specDone bool       // spec holds a speculative answer...
	specAt   uint64     // ...taken at an applied index of at least specAt
	spec     readResult // (res, err)
}

type readResult struct {
	index uint64
	res   []byte
	err   error
}

type readBatch struct {
	rctx string
	reqs []*readReq
	tick uint64
}

// issueReads starts one ReadIndex round for all queued reads (thesis §6.4),
// unless one is in flight: reads arriving meanwhile share the next round.
// The queries of the round's reads go to the state machine at once, while
// the round is on the wire, when this node has applied everything it knows
// to be committed (reader.go): their answers are used if the round
// confirms an index they had seen applied.
func (n *Node) issueReads() {
	if n.inflightRead != nil || len(n.pendingReads) == 0 {
		return
	}
	if n.soft.Lead == raft.None {
		for _, r := range n.pendingReads {
			r.resc <- readResult{err: NotApplied(fmt.Errorf("node %d: %w", n.id, raft.ErrNoLeader))}
		}
		n.pendingReads = nil
		return
	}
	n.readSeq++
	rctx := n.readContext(n.readSeq)
	b := &readBatch{rctx: string(rctx), reqs: n.pendingReads, tick: n.ticks}
	n.inflightRead = b
	n.pendingReads = nil
	n.m.readIndexRounds.Add(1)
	if n.applied.Load() >= n.hs.Commit && n.halt.Load() == nil {
		if qs := queryReqs(b.reqs); len(qs) > 0 {
			n.reader.issued(qs)
		}
	}
	n.rn.ReadIndex(rctx)
}

// queryReqs returns the reads of reqs that carry a query.
func queryReqs(reqs []*readReq) []*readReq {
	var qs []*readReq
	for _, r := range reqs {
		if r.query {
			if qs == nil {
				qs = make([]*readReq, 0, len(reqs))
			}
			qs = append(qs, r)
		}
	}
	return qs
}

// readContext is the ReadIndex request context of this process's seq-th
// round: node id | boot nonce | seq (8 bytes each, big-endian). The leader
// matches confirmations to requests by context, so contexts must not repeat
// across restarts of this node either: a heartbeat answer delayed from an
// earlier incarnation's round must never match a new one. The boot nonce
// is random per process (New), the counter per round.
func (n *Node) readContext(seq uint64) []byte {
	rctx := make([]byte, 24)
	binary.BigEndian.PutUint64(rctx[:8], n.id)
	binary.BigEndian.PutUint64(rctx[8:16], n.readNonce)
	binary.BigEndian.PutUint64(rctx[16:], seq)
	return rctx
}

// retryReads re-issues a round that got no answer within an election
// timeout (the request or its answer was dropped).
func (n *Node) retryReads() {
	if b := n.inflightRead; b != nil && n.ticks-b.tick > uint64(n.cfg.electionTicks()) {
		n.pendingReads = append(b.reqs, n.pendingReads...)
		n.inflightRead = nil
	}
}

// onReadState answers the reads of the round rs confirms: ReadIndex calls
// with the index, queries through the reader once the index is applied.
func (n *Node) onReadState(rs raft.ReadState) {
	b := n.inflightRead
	if b == nil || string(rs.RequestCtx) != b.rctx {
		return
	}
	n.inflightRead = nil
	var qs []*readReq
	for _, r := range b.reqs {
		if r.query {
			qs = append(qs, r)
			continue
		}
		r.resc <- readResult{index: rs.Index}
	}
	if len(qs) > 0 {
		n.reader.confirmed(qs, rs.Index)
	}
}

// Read runs q against the state machine linearizably: it obtains a read
// index from the leader (ReadIndex, thesis §6.4; no log entry), and answers
// from a state that has applied it (reader.go). Concurrent reads share one
// ReadIndex round and one state machine call. Followers serve reads too
// (the leader only confirms the index).
func (n *Node) Read(ctx context.Context, q []byte) ([]byte, error) {
	t0 := time.Now()
	res, err := n.awaitRead(ctx, &readReq{ctx: ctx, q: q, query: true, resc: make(chan readResult, 1)})
	if err != nil {
		return nil, err
	}
	n.m.reads.Add(1)
	n.m.lat.readLinearizable.observe(time.Since(t0))
	return res.res, nil
}

// ReadIndex returns an index at which a linearizable read may be served,
// after waiting until this node has applied it.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	res, err := n.awaitRead(ctx, &readReq{ctx: ctx, resc: make(chan readResult, 1)})
	if err != nil {
		return 0, err
	}
	n.m.reads.Add(1)
	return res.index, n.waitApplied(ctx, res.index)
}

// awaitRead queues r for the next ReadIndex round and waits for its answer.
func (n *Node) awaitRead(ctx context.Context, r *readReq) (readResult, error) {
	select {
	case <-n.quitc:
		return readResult{}, NotApplied(ErrStopped)
	default:
	}
	select {
	case n.readc <- r:
	case <-ctx.Done():
		return readResult{}, ctx.Err()
	case <-n.quitc:
		return readResult{}, NotApplied(ErrStopped)
	}
	var res readResult
	select {
	case res = <-r.resc:
	case <-ctx.Done():
		return readResult{}, ctx.Err()
	case <-n.donec:
		select {
		case res = <-r.resc:
		default:
			return readResult{}, NotApplied(ErrStopped)
		}
	}
	return res, res.err
}

// StaleRead runs q against the local state machine without contacting the
// leader. The answer may be stale. It refuses with ErrNotReady until the
// restart replay is over, unless apply is halted: a halted node serves the
// state it halted with.
func (n *Node) StaleRead(ctx context.Context, q []byte) ([]byte, error) {
	select {
	case <-n.readyc:
	default:
		if n.halt.Load() != nil {
			break
		}
		return nil, NotApplied(fmt.Errorf("%w: applied %d of %d", ErrNotReady, n.applied.Load(), n.readyIdx))
	}
	select {
	case <-n.quitc:
		return nil, NotApplied(ErrStopped)
	default:
	}
	t0 := time.Now()
	res, err := n.query(ctx, q)
	if err == nil {
		n.m.lat.readStale.observe(time.Since(t0))
	}
	return res, err
}

func (n *Node) query(ctx context.Context, q []byte) ([]byte, error) {
	n.app.queryMu.RLock()
	defer n.app.queryMu.RUnlock()
	return n.app.sm.Query(ctx, q)
}

// waitApplied blocks until the applied index reaches idx. If apply is
// halted before idx it returns a *HaltedError.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := n.appliedCh.wait()
		if n.applied.Load() >= idx {
			return nil
		}
		if err := n.haltedErr(haltedReadWhat(idx, n.applied.Load())); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return NotApplied(ErrStopped)
		}
	}
}

// haltedReadWhat describes a linearizable read refused by a halt.
func haltedReadWhat(idx, applied uint64) string {
	return fmt.Sprintf("a linearizable read needs index %d applied; served up to %d (stale reads are)", idx, applied)
}
