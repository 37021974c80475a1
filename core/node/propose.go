package node

import (
	"context"
	"errors"
	"fmt"

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
		for _, p := range batch {
			n.waits.fail(p.req, NotApplied(fmt.Errorf("node %d: %w", n.id, raft.ErrNoLeader)))
		}
		return
	}
	datas := n.dataBuf[:0]
	cmds := n.cmdBuf[:0]
	for _, p := range batch {
		n.waits.proposed(p.req, n.hs.Term)
		if p.cc == nil {
			datas = append(datas, p.data)
			cmds = append(cmds, p)
			continue
		}
		if n.soft.RaftState == raft.StateLeader && n.lastConfIndex > n.applied.Load() {
			n.waits.fail(p.req, NotApplied(fmt.Errorf("%w (entry %d not applied yet): %w", ErrConfChangeInProgress, n.lastConfIndex, errDropped)))
			continue
		}
		n.proposeFailed([]*proposal{p}, n.rn.ProposeConfChange(p.cc.cc))
	}
	if len(datas) > 0 {
		n.proposeFailed(cmds, n.rn.ProposeBatch(datas))
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
	if len(data) > n.cfg.MaxEntryBytes {
		return Result{}, NotApplied(fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), n.cfg.MaxEntryBytes))
	}
	req := n.reqSeq.Add(1)
	return n.wait(ctx, &proposal{req: req, data: encodeCommand(n.id, req, data)})
}

// wait registers p, hands it to the loop and waits for its outcome.
func (n *Node) wait(ctx context.Context, p *proposal) (Result, error) {
	p.done = make(chan propResult, 1)
	select {
	case <-n.quitc:
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
		return Result{}, NotApplied(ErrStopped)
	}
	select {
	case r := <-p.done:
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	case <-ctx.Done():
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	case <-n.donec:
		// Queued after the loop stopped (shutdown failed everyone else).
		if n.waits.cancel(p.req) {
			return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
		}
		r := <-p.done
		return Result{Value: r.val, Index: r.index, Term: r.term}, r.err
	}
}
