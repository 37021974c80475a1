package rafttest

// The simulated driver of one node: start and restart from storage, and
// the Ready cycle (persist, send, install, apply, Advance).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/raftd/raftd/core/raft"
)

func encodeSnapData(index, state uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, index)
	binary.BigEndian.PutUint64(b[8:], state)
	return b
}

func decodeSnapData(b []byte) (index, state uint64, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("snapshot descriptor has %d bytes, want 16", len(b))
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), nil
}

func (s *Sim) addNode(id uint64, st *raft.MemoryStorage) error {
	n := &simNode{id: id, store: st}
	s.nodes[id] = n
	s.ids = append(s.ids, id)
	slices.Sort(s.ids)
	return s.start(n, false)
}

// start (re)creates n's engine from what its storage holds. With
// durableFSM the state machine kept its state across the crash (like a
// plugin that persists its applied index); otherwise it is restored from
// the storage snapshot.
func (s *Sim) start(n *simNode, durableFSM bool) error {
	snap, err := n.store.Snapshot()
	if err != nil {
		return fmt.Errorf("node %d: read snapshot: %w", n.id, err)
	}
	if !durableFSM || n.fsmApplied < snap.Metadata.Index {
		n.fsmApplied, n.fsmState = 0, 0
		if !snap.IsEmpty() {
			n.fsmApplied, n.fsmState, err = decodeSnapData(snap.Data)
			if err != nil {
				return fmt.Errorf("node %d: %w", n.id, err)
			}
			if n.fsmApplied != snap.Metadata.Index {
				return fmt.Errorf("node %d: snapshot at %d describes state at %d", n.id, snap.Metadata.Index, n.fsmApplied)
			}
		}
	}
	if s.faultForgetVote && n.incarnation > 0 {
		hs, _, _ := n.store.InitialState()
		hs.Term, hs.Vote = 0, raft.None
		if err := n.store.SetHardState(hs); err != nil {
			return err
		}
	}
	hs, _, _ := n.store.InitialState()
	n.synced, n.unsynced = hs, nil
	n.handed = snap.Metadata.Index
	n.conf = cloneConf(snap.Metadata.ConfState)
	if !snap.IsEmpty() {
		// The snapshot may have been persisted by a Ready whose install
		// the crash interrupted: record its configuration here too.
		n.confs = append(n.confs, confAt{snap.Metadata.Index, cloneConf(n.conf)})
	}
	// A durable state machine may resume at its own applied index; the
	// engine must then rebuild the configuration as of that index. The
	// state machine may be ahead of the durable commit index (commit-only
	// hard states are not synced): then the engine resumes at the commit
	// index and hands the entries up to the state machine's index out
	// again, which the driver skips (ObserveReplay checks them).
	if durableFSM && n.fsmApplied > n.handed && s.rng.IntN(2) == 0 {
		n.handed = max(n.handed, min(n.fsmApplied, hs.Commit))
		n.conf = n.confAt(n.handed, n.conf)
	}
	n.incarnation++
	n.leader = false
	n.serving = nil
	cfg := s.raftCfg
	cfg.ID = n.id
	cfg.Storage = n.store
	cfg.Applied = n.handed
	cfg.Seed = int64(s.cfg.Seed*1000003 + n.id*131 + n.incarnation)
	rn, err := raft.NewRawNode(&cfg)
	if err != nil {
		return fmt.Errorf("node %d: restart: %w", n.id, err)
	}
	n.rn = rn
	n.commitChecked = rn.Status().Commit
	s.clockStart(n)
	st := rn.Status()
	s.tracef("start %d (incarnation %d, durable fsm %v): term %d commit %d applied %d fsm %d snap %d %s",
		n.id, n.incarnation, durableFSM, st.Term, st.Commit, cfg.Applied, n.fsmApplied, snap.Metadata.Index, FormatConfState(n.conf))
	if !st.ConfState.Equal(n.conf) {
		return fmt.Errorf("node %d: restarted with Applied=%d and configuration %s, want %s (as of index %d)",
			n.id, cfg.Applied, FormatConfState(st.ConfState), FormatConfState(n.conf), cfg.Applied)
	}
	return s.chk.ObserveRestart(n.id, st.Commit, n.fsmApplied, n.fsmState)
}

// confAt returns the configuration in effect after applying index i, or
// def if no change at or below i is recorded.
func (n *simNode) confAt(i uint64, def raft.ConfState) raft.ConfState {
	// Replays after a restart append the same changes again, so the list
	// is not sorted: take the change with the highest index <= i.
	cs, best := def, uint64(0)
	for _, c := range n.confs {
		if c.index <= i && c.index >= best {
			cs, best = c.cs, c.index
		}
	}
	return cloneConf(cs)
}

func cloneConf(cs raft.ConfState) raft.ConfState {
	return raft.ConfState{Voters: slices.Clone(cs.Voters), Learners: slices.Clone(cs.Learners)}
}

// tick advances n's clock by one tick and, most of the time, lets its
// driver run a Ready cycle right away.
func (s *Sim) tick(n *simNode) error {
	n.rn.Tick()
	return s.maybeReady(n)
}

func (s *Sim) maybeReady(n *simNode) error {
	if n == s.midWrite {
		return nil // its current Ready is not done: no other before Advance
	}
	if n.rn != nil && n.rn.HasReady() && s.rng.IntN(3) != 0 {
		return s.handleReady(n, false)
	}
	return nil
}

// handleReady runs one driver cycle on n: persist snapshot, hard state and
// entries; then (unless crashBeforeSend) send messages, install the
// snapshot into the state machine, apply committed entries and Advance.
func (s *Sim) handleReady(n *simNode, crashMidway bool) error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		s.tracef("%d soft state: %s lead=%d", n.id, rd.SoftState.RaftState, rd.SoftState.Lead)
		// Election Safety is checked at every role change, not only at
		// the end of a step: a node may lead and lose it within one.
		if rd.SoftState.RaftState == raft.StateLeader {
			if err := s.chk.ObserveLeader(n.id, n.rn.Status().Term); err != nil {
				return err
			}
		}
	}
	// A leader whose term and vote do not change sends its new entries
	// before writing them, as core/node does (thesis §10.2.1): the leader
	// counts its own copy only once Advance says it is durable. A crash
	// may then come between the send and the write.
	prev, _, _ := n.store.InitialState()
	sendFirst := n.rn.Status().RaftState == raft.StateLeader && rd.Snapshot.IsEmpty() &&
		(rd.HardState.IsEmpty() || (rd.HardState.Term == prev.Term && rd.HardState.Vote == prev.Vote))
	if sendFirst {
		for _, m := range rd.Messages {
			s.send(m)
		}
		if crashMidway {
			s.stats.SendFirstCrashes++
			s.crash(n, "leader, after sending its new entries, before writing them")
			return nil
		}
		if len(rd.Entries) > 0 && s.midWrite == nil && s.frng.IntN(4) == 0 {
			if err := s.slowLeaderWrite(n, rd); err != nil {
				return err
			}
		}
	}
	if !rd.Snapshot.IsEmpty() {
		if err := n.store.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("node %d: persist snapshot %d/%d: %w", n.id, rd.Snapshot.Metadata.Term, rd.Snapshot.Metadata.Index, err)
		}
		s.tracef("%d persist snapshot %d/%d %s", n.id, rd.Snapshot.Metadata.Term, rd.Snapshot.Metadata.Index, FormatConfState(rd.Snapshot.Metadata.ConfState))
	}
	if len(rd.Entries) > 0 {
		if last, _ := n.store.LastIndex(); rd.Entries[0].Index <= last {
			s.stats.Truncations++
		}
		if err := n.store.Append(rd.Entries); err != nil {
			return fmt.Errorf("node %d: persist entries [%d,%d]: %w", n.id, rd.Entries[0].Index, rd.Entries[len(rd.Entries)-1].Index, err)
		}
		var prevTerm uint64
		if t, err := n.store.Term(rd.Entries[0].Index - 1); err == nil {
			prevTerm = t
		}
		s.tracef("%d persist entries [%s]", n.id, FormatEntries(rd.Entries))
		if err := s.chk.ObserveAppend(n.id, prevTerm, rd.Entries); err != nil {
			return err
		}
	}
	if !rd.HardState.IsEmpty() {
		if err := n.store.SetHardState(rd.HardState); err != nil {
			return fmt.Errorf("node %d: persist hard state: %w", n.id, err)
		}
		s.tracef("%d persist hard state term=%d vote=%d commit=%d (sync %v)", n.id, rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit, rd.MustSync)
		if err := s.chk.ObserveCommit(n.id, rd.HardState.Commit); err != nil {
			return err
		}
	}
	if rd.MustSync {
		if err := s.synced(n); err != nil {
			return err
		}
	} else if !rd.HardState.IsEmpty() {
		n.unsynced = append(n.unsynced, rd.HardState)
	}
	if err := s.checkRestartInvariant(n); err != nil {
		return err
	}
	if !sendFirst {
		if crashMidway {
			s.crash(n, "after persisting, before sending")
			return nil
		}
		for _, m := range rd.Messages {
			s.send(m)
		}
	}
	if !rd.Snapshot.IsEmpty() {
		idx, state, err := decodeSnapData(rd.Snapshot.Data)
		if err != nil {
			return fmt.Errorf("node %d: install snapshot: %w", n.id, err)
		}
		if idx != rd.Snapshot.Metadata.Index {
			return fmt.Errorf("node %d: snapshot %d carries a descriptor for index %d", n.id, rd.Snapshot.Metadata.Index, idx)
		}
		if idx < n.handed {
			return fmt.Errorf("node %d: engine installed snapshot %d below its applied index %d", n.id, idx, n.handed)
		}
		if err := s.chk.ObserveRestore(n.id, idx, state); err != nil {
			return err
		}
		n.fsmApplied, n.fsmState, n.handed = idx, state, idx
		n.conf = cloneConf(rd.Snapshot.Metadata.ConfState)
		n.confs = append(n.confs, confAt{idx, cloneConf(n.conf)})
		s.stats.SnapsApplied++
	}
	if err := s.observeReadStates(n, rd.ReadStates); err != nil {
		return err
	}
	for _, e := range rd.CommittedEntries {
		if e.Index != n.handed+1 {
			return fmt.Errorf("node %d: engine handed out committed index %d after %d", n.id, e.Index, n.handed)
		}
		n.handed = e.Index
		if e.Type == raft.EntryConfChange {
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("node %d: committed conf change %d/%d does not decode: %w", n.id, e.Term, e.Index, err)
			}
			cs := n.rn.ApplyConfChange(cc)
			if cs == nil {
				return fmt.Errorf("node %d: ApplyConfChange(%s %d) returned nil", n.id, cc.Type, cc.NodeID)
			}
			n.conf = cloneConf(*cs)
			n.confs = append(n.confs, confAt{e.Index, cloneConf(n.conf)})
			s.stats.ConfChangesApplied++
			s.tracef("%d apply conf change %s %d -> %s", n.id, cc.Type, cc.NodeID, FormatConfState(n.conf))
		}
		if e.Type == raft.EntryNormal && len(e.Data) > 0 && !s.proposed[string(e.Data)] {
			return fmt.Errorf("node %d: committed entry %d/%d carries data that was never proposed: %q", n.id, e.Term, e.Index, e.Data)
		}
		if e.Type == raft.EntryNormal && len(e.Data) == 0 {
			// The simulator never proposes empty data: an empty entry is a
			// new leader's first entry of its term (Raft §8), nothing else.
			if pt, err := n.store.Term(e.Index - 1); err == nil && pt >= e.Term {
				return fmt.Errorf("node %d: committed empty entry %d/%d follows an entry of term %d: a proposal lost its data", n.id, e.Term, e.Index, pt)
			}
		}
		if bytes.HasPrefix(e.Data, []byte("marker")) {
			n.markers++
		}
		if e.Index <= n.fsmApplied {
			if err := s.chk.ObserveReplay(n.id, e); err != nil {
				return err
			}
			continue
		}
		if err := s.chk.ObserveApply(n.id, e); err != nil {
			return err
		}
		n.fsmApplied, n.fsmState = e.Index, NextState(n.fsmState, e)
	}
	if len(rd.CommittedEntries) > 0 {
		s.tracef("%d applied [%s]", n.id, FormatEntries(rd.CommittedEntries))
	}
	if err := s.serveReads(n); err != nil {
		return err
	}
	n.rn.Advance(rd)
	if st := n.rn.Status(); !st.ConfState.Equal(n.conf) {
		return fmt.Errorf("node %d: engine configuration %s differs from the one applied through index %d: %s",
			n.id, FormatConfState(st.ConfState), n.handed, FormatConfState(n.conf))
	}
	if err := s.checkCommitDurable(n); err != nil {
		return err
	}
	return s.checkLeader(n)
}

// checkCommitDurable checks, right where a leader's commit index may
// advance (a stepped message, or Advance after its own write), that the
// entry it now calls committed is durable on a quorum of the voters of
// its configuration (RAFT-PITFALLS "Appending": the leader counts itself
// only once its own write is durable, which matters because it sends its
// new entries before writing them). Crashed voters count by what their
// storage holds.
func (s *Sim) checkCommitDurable(n *simNode) error {
	if n.rn == nil {
		return nil
	}
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		// A commit index learned as a follower (or at a restart) was
		// decided by another leader, perhaps under another configuration.
		n.commitChecked = st.Commit
		return nil
	}
	if st.Commit <= n.commitChecked {
		return nil
	}
	c := st.Commit
	n.commitChecked = c
	want, err := n.store.Term(c)
	if err != nil {
		// Not in the leader's durable log: one of its own new entries.
		want = st.Term
	}
	holders := 0
	for _, v := range st.ConfState.Voters {
		f := s.nodes[v]
		if f == nil {
			continue
		}
		if snap, _ := f.store.Snapshot(); c <= snap.Metadata.Index {
			holders++ // covered by a snapshot, which only holds committed state
			continue
		}
		if t, err := f.store.Term(c); err == nil && t == want {
			holders++
		}
	}
	if q := len(st.ConfState.Voters)/2 + 1; holders < q {
		return fmt.Errorf("commit: leader %d (term %d) committed index %d, which only %d of the voters %v hold durably (quorum %d)",
			n.id, st.Term, c, holders, st.ConfState.Voters, q)
	}
	return nil
}

// checkRestartInvariant checks what a restart from n's storage would see:
// last index >= commit >= snapshot index (RAFT-PITFALLS "Restart").
func (s *Sim) checkRestartInvariant(n *simNode) error {
	hs, _, err := n.store.InitialState()
	if err != nil {
		return fmt.Errorf("node %d: initial state: %w", n.id, err)
	}
	snap, _ := n.store.Snapshot()
	last, _ := n.store.LastIndex()
	if hs.Commit > last || (!snap.IsEmpty() && hs.Commit < snap.Metadata.Index) {
		return fmt.Errorf("node %d: durable state is inconsistent: commit %d, last index %d, snapshot index %d", n.id, hs.Commit, last, snap.Metadata.Index)
	}
	return nil
}

// checkLeader runs the leader-completeness check right after a leader's
// Ready is persisted, when its storage holds its whole log.
func (s *Sim) checkLeader(n *simNode) error {
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		n.leader = false
		return nil
	}
	if !n.leader {
		n.leader = true
		s.tracef("%d is leader in term %d", n.id, st.Term)
	}
	if n.rn.HasReady() {
		return nil // may still hold unpersisted entries
	}
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	return s.chk.CheckLeaderLog(n.id, st.Term, first, last, func(i uint64) uint64 {
		t, err := n.store.Term(i)
		if err != nil {
			return 0
		}
		return t
	})
}

// synced records a synced write on n: it and every write before it are
// durable (what a write-ahead log's fsync guarantees).
func (s *Sim) synced(n *simNode) error {
	hs, _, err := n.store.InitialState()
	if err != nil {
		return fmt.Errorf("node %d: initial state: %w", n.id, err)
	}
	n.synced, n.unsynced = hs, nil
	return s.chk.ObservePersist(n.id, hs.Commit)
}

// loseUnsynced plays a crash on n's storage: of the hard states written
// without sync since the last synced write, a random prefix survives.
// Entries, snapshots and term or vote changes are always synced.
func (s *Sim) loseUnsynced(n *simNode) {
	if len(n.unsynced) == 0 {
		return
	}
	k := s.frng.IntN(len(n.unsynced) + 1)
	hs := n.synced
	if k > 0 {
		hs = n.unsynced[k-1]
	}
	if k < len(n.unsynced) {
		s.stats.UnsyncedLost++
		s.tracef("crash %d loses %d unsynced hard state writes: commit %d -> %d",
			n.id, len(n.unsynced)-k, n.unsynced[len(n.unsynced)-1].Commit, hs.Commit)
	}
	_ = n.store.SetHardState(hs)
	n.synced, n.unsynced = hs, nil
}

// slowLeaderWrite plays a leader's write that is slower than the round
// trip to its followers: the appends it just sent (before writing) reach
// the followers, they persist and answer, and the answers reach the
// leader before its own write is done. The leader must not count itself
// towards committing these entries yet (checkCommitDurable runs at each
// answer). Only answers of the leader's term are delivered early: a
// message that makes it step down mid-write waits its turn.
func (s *Sim) slowLeaderWrite(n *simNode, rd raft.Ready) error {
	term := n.rn.Status().Term
	s.stats.SlowLeaderWrites++
	s.tracef("%d write is slow: followers answer first", n.id)
	s.midWrite = n
	defer func() { s.midWrite = nil }()
	early := func(match func(raft.Message) bool) []raft.Message {
		var out []raft.Message
		keep := s.net[:0]
		for _, m := range s.net {
			if match(m) {
				out = append(out, m)
			} else {
				keep = append(keep, m)
			}
		}
		s.net = keep
		return out
	}
	apps := early(func(m raft.Message) bool {
		return m.From == n.id && m.Type == raft.MsgApp && m.Term == term && len(m.Entries) > 0
	})
	for _, m := range apps {
		if err := s.deliver(m, true); err != nil {
			return err
		}
		if f := s.nodes[m.To]; f != nil && f.rn != nil && f.rn.HasReady() {
			if err := s.handleReady(f, false); err != nil {
				return err
			}
		}
	}
	for _, m := range early(func(m raft.Message) bool {
		return m.To == n.id && m.Type == raft.MsgAppResp && m.Term == term
	}) {
		if err := s.deliver(m, true); err != nil {
			return err
		}
	}
	return nil
}
