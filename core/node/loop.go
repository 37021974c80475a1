package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// run is the loop goroutine.
func (n *Node) run() {
	ticker := time.NewTicker(n.cfg.tickDuration())
	defer ticker.Stop()
	// core/raft panics with an error when storage fails under it (for
	// example a checksum mismatch while reading entries to apply or send).
	// The RawNode is unusable then: fail-stop with that error, naming what
	// failed, instead of crashing the process.
	defer func() {
		if r := recover(); r != nil {
			if n.shuttingDown {
				panic(r) // a failure while stopping: nothing left to save
			}
			err, ok := r.(error)
			if !ok {
				err = fmt.Errorf("%v", r)
			}
			n.shutdown(fmt.Errorf("node %d: raft: %w", n.id, err))
		}
	}()
	var err error
	for err == nil {
		select {
		case <-ticker.C:
			n.rn.Tick()
			n.ticks++
			n.retryReads()
			n.waits.expire(n.ticks)
			if n.ticks%uint64(n.cfg.electionTicks()) == 0 {
				n.maybeHandOff() // a transfer that did not happen is retried
			}
		case m := <-n.recvc:
			n.step(m)
		drainRecv:
			for range maxDrain {
				select {
				case m := <-n.recvc:
					n.step(m)
				default:
					break drainRecv
				}
			}
		case p := <-n.propc:
			batch := append(n.propBuf[:0], p)
		drainProps:
			for range maxDrain {
				select {
				case p := <-n.propc:
					batch = append(batch, p)
				default:
					break drainProps
				}
			}
			n.propose(batch)
			clear(batch)
			n.propBuf = batch[:0]
		case r := <-n.readc:
			n.pendingReads = append(n.pendingReads, r)
		drainReads:
			for range maxDrain {
				select {
				case r := <-n.readc:
					n.pendingReads = append(n.pendingReads, r)
				default:
					break drainReads
				}
			}
		case f := <-n.ctrlc:
			f()
		case s := <-n.snapc:
			err = n.onSnapshotTaken(s)
		case err = <-n.fatalc:
		case <-n.stopc:
			n.shutdown(nil)
			return
		}
		if err == nil {
			n.issueReads()
			err = n.handleReady()
		}
	}
	n.shutdown(err)
}

func (n *Node) step(m raft.Message) {
	if err := n.rn.Step(m); err != nil {
		// Stale or unknown-peer messages are expected; raft decides.
		n.m.stepErrors.Add(1)
	}
}

// handleReady runs the Ready/Advance contract (doc.go) until raft has
// nothing more to hand out.
func (n *Node) handleReady() error {
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		oldTerm, oldLead := n.hs.Term, n.soft.Lead
		leaderLost := false
		if rd.SoftState != nil {
			leaderLost = oldLead != raft.None && rd.SoftState.Lead != oldLead
			n.onSoftState(*rd.SoftState)
		}
		termChanged, voteChanged := false, false
		if !rd.HardState.IsEmpty() {
			termChanged = rd.HardState.Term != n.hs.Term
			voteChanged = termChanged || rd.HardState.Vote != n.hs.Vote
			n.hs = rd.HardState
		}
		// A leader whose term and vote did not change may send its new
		// entries while it writes them (thesis §10.2.1): raft counts the
		// leader's own copy only after Advance, i.e. once it is durable.
		// Everything else waits for the write.
		sendFirst := n.soft.RaftState == raft.StateLeader && !voteChanged && rd.Snapshot.IsEmpty() ||
			n.cfg.unsafeSendBeforeSave
		if sendFirst {
			n.send(rd.Messages)
		}
		// 1. Install a snapshot first: the entries that follow build on it.
		if !rd.Snapshot.IsEmpty() {
			si := rd.Snapshot.Metadata.Index
			if h := n.halt.Load(); h != nil && h.Checkpoint != 0 {
				// ReceiveSnapshot refuses snapshots while halted for
				// divergence; this one raced the halt. Installing it would
				// replace the evidence: stop before storing it, and the
				// restarted node halts again on the verdict.
				return fmt.Errorf("node: refusing to install the leader's snapshot at index %d over a state that diverged (apply halted at index %d: %s)", si, h.Index, h.Reason)
			}
			if err := n.st.ApplySnapshot(rd.Snapshot); err != nil {
				return fmt.Errorf("node: storage: install snapshot at index %d: %w", si, err)
			}
			n.snapIdx.Store(si)
			n.conf = rd.Snapshot.Metadata.ConfState
			n.waits.failCovered(si)
			n.lastIdx.Store(max(n.lastIdx.Load(), si))
		}
		// 2. Persist hard state and entries, fsync'ed when raft says so,
		// BEFORE any message that depends on them leaves (Raft §5.1, figure 2;
		// RAFT-PITFALLS "Votes and terms").
		if !rd.HardState.IsEmpty() || len(rd.Entries) > 0 {
			var t0 time.Time
			if rd.MustSync {
				t0 = time.Now()
			}
			if err := n.st.Save(n.hs, rd.Entries, rd.MustSync); err != nil {
				if len(rd.Entries) > 0 {
					return fmt.Errorf("node: storage: save entries [%d,%d]: %w", rd.Entries[0].Index, rd.Entries[len(rd.Entries)-1].Index, err)
				}
				return fmt.Errorf("node: storage: save hard state %+v: %w", n.hs, err)
			}
			n.m.saves.Add(1)
			if rd.MustSync {
				n.m.lat.storageSync.observe(time.Since(t0))
				n.m.syncs.Add(1)
			}
			n.m.entriesSaved.Add(uint64(len(rd.Entries)))
			if len(rd.Entries) > 0 {
				n.lastIdx.Store(rd.Entries[len(rd.Entries)-1].Index)
			}
			n.commit.Store(n.hs.Commit)
			n.term.Store(n.hs.Term)
		}
		if err := n.trackEntries(rd.Entries); err != nil {
			return err
		}
		// Callers whose entry was replaced by a now committed one are
		// answered at once; the others keep waiting for a definite outcome
		// for a grace period after a leadership change.
		n.waits.committed(n.hs.Commit)
		if (termChanged || leaderLost) && n.cfg.LeaderChangeWait > 0 {
			why := fmt.Sprintf("leadership changed (term %d leader %d -> term %d leader %d)", oldTerm, oldLead, n.hs.Term, n.soft.Lead)
			n.waits.leadershipChanged(why, n.ticks+n.cfg.leaderChangeTicks())
		}
		// 3. Send.
		if !sendFirst {
			n.send(rd.Messages)
		}
		for _, rs := range rd.ReadStates {
			n.onReadState(rs)
		}
		// 4. Hand committed entries to the apply goroutine; apply membership
		// changes to raft now (raft needs them in order, the FSM never sees
		// them).
		if !rd.Snapshot.IsEmpty() || len(rd.CommittedEntries) > 0 {
			t := applyTask{ents: rd.CommittedEntries, at: time.Now()}
			if !rd.Snapshot.IsEmpty() {
				s := rd.Snapshot
				t.snap = &s
			}
			for _, e := range rd.CommittedEntries {
				if e.Type != raft.EntryConfChange {
					continue
				}
				cs, err := n.applyConfChange(e)
				if err != nil {
					return err
				}
				if t.confStates == nil {
					t.confStates = map[uint64]raft.ConfState{}
				}
				t.confStates[e.Index] = cs
			}
			n.app.enqueue(t)
			if k := len(rd.CommittedEntries); k > 0 {
				n.handed = rd.CommittedEntries[k-1].Index
			}
		}
		n.rn.Advance(rd)
	}
	return nil
}

func (n *Node) send(msgs []raft.Message) {
	if len(msgs) == 0 {
		return
	}
	for _, m := range msgs {
		if m.Type == raft.MsgSnap {
			n.sendingSnap[m.To] = true
			n.m.snapshotsSent.Add(1)
		}
	}
	n.tr.Send(msgs)
	n.m.messagesSent.Add(uint64(len(msgs)))
}

// trackEntries records where this node's own proposals landed in its log.
func (n *Node) trackEntries(ents []raft.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	for _, e := range ents {
		if e.Type == raft.EntryConfChange {
			n.lastConfIndex = e.Index
		}
	}
	if n.waits.empty() {
		return nil
	}
	obs := make([]observedEntry, 0, len(ents))
	for _, e := range ents {
		req, err := n.ownRequest(e)
		if err != nil {
			return fmt.Errorf("node: entry %d (term %d) written to the log is malformed: %w", e.Index, e.Term, err)
		}
		obs = append(obs, observedEntry{index: e.Index, term: e.Term, req: req})
	}
	n.waits.written(obs)
	return nil
}

// ownRequest returns the request id of e if this node proposed it.
func (n *Node) ownRequest(e raft.Entry) (uint64, error) {
	switch e.Type {
	case raft.EntryNormal:
		if len(e.Data) == 0 {
			return 0, nil
		}
		env, err := decodeEnvelope(e.Data)
		if err != nil {
			return 0, err
		}
		if env.proposer == n.id {
			return env.req, nil
		}
	case raft.EntryConfChange:
		var cc raft.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return 0, err
		}
		c, err := decodeCCContext(cc.Context)
		if err != nil {
			return 0, err
		}
		if c.Proposer == n.id {
			return c.Req, nil
		}
	}
	return 0, nil
}

// applyConfChange applies a committed membership change to raft and the
// transport (loop goroutine).
func (n *Node) applyConfChange(e raft.Entry) (raft.ConfState, error) {
	var cc raft.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return raft.ConfState{}, fmt.Errorf("node: conf change entry %d is malformed: %w", e.Index, err)
	}
	c, err := decodeCCContext(cc.Context)
	if err != nil {
		return raft.ConfState{}, fmt.Errorf("node: conf change entry %d has a malformed context: %w", e.Index, err)
	}
	cs := n.rn.ApplyConfChange(cc)
	if cs != nil {
		n.conf = raft.ConfState{Voters: slices.Clone(cs.Voters), Learners: slices.Clone(cs.Learners)}
	}
	switch cc.Type {
	case raft.ConfChangeAddNode, raft.ConfChangeAddLearner:
		p := n.book[cc.NodeID]
		p.ID = cc.NodeID
		if c.RaftAddr != "" {
			p.RaftAddr = c.RaftAddr
		}
		if c.APIAddr != "" {
			p.APIAddr = c.APIAddr
		}
		n.book[cc.NodeID] = p
		if cc.NodeID != n.id && p.RaftAddr != "" {
			n.tr.AddPeer(cc.NodeID, p.RaftAddr)
		}
	case raft.ConfChangeRemoveNode:
		delete(n.book, cc.NodeID)
		delete(n.sendingSnap, cc.NodeID)
		if cc.NodeID != n.id {
			n.tr.RemovePeer(cc.NodeID)
		}
	}
	return n.conf, nil
}

func (n *Node) onSoftState(ss raft.SoftState) {
	old := n.soft
	n.soft = ss
	if ss.RaftState == raft.StateLeader && old.RaftState != raft.StateLeader && n.halt.Load() != nil {
		select {
		case n.ctrlc <- n.maybeHandOff: // next round, outside this Ready
		default: // retried every election timeout
		}
	}
	if old.Lead != ss.Lead {
		if ss.Lead != raft.None {
			n.m.leaderChanges.Add(1)
		}
		n.lead.Store(ss.Lead)
		n.leadCh.signal()
		// A read index request in flight may have been lost with the old
		// leader; ask again (reads are idempotent).
		if n.inflightRead != nil {
			n.pendingReads = append(n.inflightRead.reqs, n.pendingReads...)
			n.inflightRead = nil
		}
	}
	if ss.RaftState != raft.StateLeader {
		clear(n.sendingSnap)
	}
}

// onSnapshotTaken records a local snapshot and compacts the log behind it,
// keeping SnapshotTrailing entries for followers that are a little behind.
func (n *Node) onSnapshotTaken(s raft.Snapshot) error {
	si := s.Metadata.Index
	if si <= n.snapIdx.Load() {
		return nil // a newer snapshot was installed meanwhile
	}
	if err := n.st.SaveSnapshot(s); err != nil {
		return fmt.Errorf("node: storage: record snapshot at index %d: %w", si, err)
	}
	n.snapIdx.Store(si)
	trailing := uint64(n.cfg.SnapshotTrailing)
	if si <= trailing {
		return nil
	}
	// NB: si is at most the applied index (the applier snapshots at its
	// applied index), so the log is never compacted beyond it: entries not
	// yet applied (a halted or slow state machine reads them back from
	// Storage) stay.
	compact := min(si-trailing, n.applied.Load())
	first, err := n.st.FirstIndex()
	if err != nil {
		return fmt.Errorf("node: storage: first index: %w", err)
	}
	if compact < first {
		return nil
	}
	if err := n.st.Compact(compact); err != nil {
		return fmt.Errorf("node: storage: compact through index %d: %w", compact, err)
	}
	n.m.compactions.Add(1)
	return nil
}

// do runs f on the loop goroutine and waits for it.
func (n *Node) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case n.ctrlc <- func() { f(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quitc:
		return NotApplied(ErrStopped)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return NotApplied(ErrStopped)
	}
}
