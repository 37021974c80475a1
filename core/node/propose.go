package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/raftd/raftd/core/raft"
)

type confProposal struct {
	cc raft.ConfChange
}

// propose hands a batch of proposals to raft: the commands in one
// ProposeBatch (one append, one Save, one fsync), conf changes one by one.
func (n *Node) propose(batch []*proposal) {
	n.m.proposals.Add(uint64(len(batch)))
	if n.soft.Lead == raft.None {
		n.refused(RefusedNoLeader, len(batch))
		for _, p := range batch {
			n.waits.fail(p.req, NotApplied(fmt.Errorf("node %d: %w", n.id, raft.ErrNoLeader)))
		}
		return
	}
	datas := n.dataBuf[:0]
	cmds := n.cmdBuf[:0]
	// Backpressure: commands are admitted while the apply backlog plus
	// what this round admits stays within MaxApplyBacklogBytes (raft's
	// MaxUncommittedEntriesSize bounds what is not yet committed).
	halted := n.haltedErr("refused, not applied")
	budget := n.cfg.MaxApplyBacklogBytes - n.app.backlogBytes.Load()
	if n.app.overloaded() {
		budget = 0
	}
	var admitted int64
	for _, p := range batch {
		switch {
		case p.admin:
		case halted != nil:
			n.refused(RefusedHalted, 1)
			n.waits.fail(p.req, NotApplied(halted))
			continue
		case p.cc == nil:
			sz := int64(len(p.data)) + 48
			if admitted+sz > budget {
				n.m.throttled.Add(1)
				n.refused(RefusedBackpressure, 1)
				n.waits.fail(p.req, NotApplied(fmt.Errorf("%w: the state machine is behind by about %d bytes of committed entries (apply backlog limit %d); retry later", ErrOverloaded, n.app.backlogBytes.Load(), n.cfg.MaxApplyBacklogBytes)))
				continue
			}
			admitted += sz
		}
		n.waits.proposed(p.req, n.hs.Term)
		if p.cc == nil {
			datas = append(datas, p.data)
			cmds = append(cmds, p)
			continue
		}
		if n.soft.RaftState == raft.StateLeader && n.lastConfIndex > n.applied.Load() {
			n.refused(RefusedConfChange, 1)
			n.waits.fail(p.req, NotApplied(fmt.Errorf("%w (entry %d not applied yet): %w", ErrConfChangeInProgress, n.lastConfIndex, errDropped)))
			continue
		}
		n.proposeFailed([]*proposal{p}, n.rn.ProposeConfChange(p.cc.cc))
	}
	// One ProposeBatch per MaxSizePerMsg of data: raft takes or drops a
	// batch as a whole (MaxUncommittedEntriesSize), so a round that
	// crosses the limit is refused for its tail only.
	for ds, ps := datas, cmds; len(ds) > 0; {
		k, size := 0, uint64(0)
		for k < len(ds) && (k == 0 || size+uint64(len(ds[k])) <= n.cfg.MaxSizePerMsg) {
			size += uint64(len(ds[k]))
			k++
		}
		n.proposeFailed(ps[:k], n.rn.ProposeBatch(ds[:k]))
		ds, ps = ds[k:], ps[k:]
	}
	clear(datas)
	clear(cmds)
	n.dataBuf, n.cmdBuf = datas[:0], cmds[:0]
}

func (n *Node) proposeFailed(ps []*proposal, err error) {
	if err == nil {
		return
	}
	n.m.proposalsDropped.Add(uint64(len(ps)))
	if errors.Is(err, raft.ErrNoLeader) {
		n.refused(RefusedNoLeader, len(ps))
	} else {
		n.refused(RefusedDropped, len(ps))
	}
	if !errors.Is(err, errDropped) && !errors.Is(err, raft.ErrNoLeader) {
		err = fmt.Errorf("%w: %w", errDropped, err)
	}
	err = NotApplied(err)
	for _, p := range ps {
		n.waits.fail(p.req, err)
	}
}

// Result is an applied command's FSM result and log position.
type Result struct {
	Value []byte
	Index uint64
	Term  uint64
	// Duplicate is set when the command's RequestID had been applied
	// before: Value, Index and Term are those of that first application,
	// and this proposal changed nothing.
	Duplicate bool
}

// Propose appends data to the log as an FSM command, waits until it is
// committed and applied on this node, and returns the FSM's result for it.
// Any member may propose; a follower forwards to the leader. An error
// matches ErrNotApplied or ErrOutcomeUnknown (errors.go).
func (n *Node) Propose(ctx context.Context, data []byte) ([]byte, error) {
	r, err := n.ProposeEntry(ctx, data)
	return r.Value, err
}

// ProposeEntry is Propose that also returns the entry's index and term.
func (n *Node) ProposeEntry(ctx context.Context, data []byte) (Result, error) {
	return n.ProposeWithID(ctx, RequestID{}, data)
}

// ProposeWithID is ProposeEntry for a command with a client's request id:
// the command is applied at most once per id, however often and through
// whichever nodes it is proposed, and a proposal of an id that was already
// applied returns the first application's result with Duplicate set
// (sessions.go). A zero id is ProposeEntry. A malformed id is refused
// (ErrBadRequest, not applied); an id whose session the cluster no longer
// keeps gets ErrSessionExpired (outcome unknown: not applied again).
func (n *Node) ProposeWithID(ctx context.Context, id RequestID, data []byte) (Result, error) {
	if len(data) > n.cfg.MaxEntryBytes {
		n.refused(RefusedTooLarge, 1)
		return Result{}, NotApplied(fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), n.cfg.MaxEntryBytes))
	}
	req := n.reqSeq.Add(1)
	if id.IsZero() {
		return n.wait(ctx, &proposal{req: req, data: encodeCommand(n.id, req, data)})
	}
	if err := id.validate(); err != nil {
		return Result{}, NotApplied(err)
	}
	return n.wait(ctx, &proposal{req: req, data: encodeSession(n.id, req, id, data)})
}

// wait registers p, hands it to the loop and waits for its outcome.
func (n *Node) wait(ctx context.Context, p *proposal) (Result, error) {
	p.done = make(chan propResult, 1)
	p.start = time.Now()
	select {
	case <-n.quitc:
		n.refused(RefusedStopped, 1)
		return Result{}, NotApplied(ErrStopped)
	default:
	}
	n.waits.add(p)
	select {
	case n.propc <- p:
	case <-ctx.Done():
		n.waits.cancel(p.req)
		return Result{}, NotApplied(fmt.Errorf("node: not proposed: %w", ctx.Err()))
	case <-n.quitc:
		n.waits.cancel(p.req)
		n.refused(RefusedStopped, 1)
		return Result{}, NotApplied(ErrStopped)
	}
	select {
	case r := <-p.done:
		return Result{Value: r.val, Index: r.index, Term: r.term, Duplicate: r.dup}, r.err
	case <-ctx.Done():
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term, Duplicate: r.dup}, r.err
	case <-n.donec:
		// Queued after the loop stopped (shutdown failed everyone else).
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term, Duplicate: r.dup}, r.err
	}
}
