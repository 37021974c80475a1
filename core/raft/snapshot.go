package raft

// Snapshots (Raft §7): sending one to a follower that needs compacted
// entries, the driver's report of the send, and installing one.

import (
	"errors"
	"fmt"
)

func (r *raft) maybeSendSnapshot(pr *progress) bool {
	if !pr.recentActive {
		r.logger.Debugf("raft: %x: not sending a snapshot to inactive %x", r.id, pr.id)
		return false
	}
	snap, err := r.raftLog.snapshot()
	if err != nil {
		if errors.Is(err, ErrSnapshotTemporarilyUnavailable) {
			r.logger.Debugf("raft: %x: snapshot for %x temporarily unavailable", r.id, pr.id)
			return false
		}
		panic(fmt.Sprintf("raft: storage Snapshot failed: %v", err))
	}
	if snap.IsEmpty() || snap.Metadata.Index+1 < r.raftLog.firstIndex() {
		// The follower could not continue from this snapshot: the entries
		// after it are gone too. A driver must not compact past its latest
		// snapshot.
		r.logger.Errorf("raft: %x: %x needs compacted entries but the latest snapshot (index %d) is older than the log's start %d",
			r.id, pr.id, snap.Metadata.Index, r.raftLog.firstIndex())
		return false
	}
	r.logger.Infof("raft: %x: sending snapshot at %d/%d to %x (match=%d next=%d)",
		r.id, snap.Metadata.Index, snap.Metadata.Term, pr.id, pr.match, pr.next)
	pr.becomeSnapshot(snap.Metadata.Index)
	r.send(Message{To: pr.id, Type: MsgSnap, Snapshot: &snap})
	return true
}

// handleSnapshot installs a snapshot from the leader (Raft §7).
func (r *raft) handleSnapshot(m Message) {
	if m.Snapshot == nil || m.Snapshot.IsEmpty() {
		r.logger.Warningf("raft: %x dropping MsgSnap from %x without a snapshot", r.id, m.From)
		return
	}
	s := *m.Snapshot
	if r.restore(s) {
		r.logger.Infof("raft: %x restored snapshot [index %d, term %d] from %x", r.id, s.Metadata.Index, s.Metadata.Term, m.From)
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.lastIndex()})
	} else {
		r.logger.Infof("raft: %x ignored snapshot [index %d, term %d] from %x (commit %d)", r.id, s.Metadata.Index, s.Metadata.Term, m.From, r.raftLog.committed)
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.committed})
	}
}

// restore installs s unless it is not newer than our commit index, or our
// log already contains its last entry (then only the commit index moves
// and the matching suffix is kept). It returns whether s was installed.
func (r *raft) restore(s Snapshot) bool {
	idx, term := s.Metadata.Index, s.Metadata.Term
	if idx <= r.raftLog.committed {
		return false
	}
	if r.state != StateFollower {
		r.logger.Warningf("raft: %x attempted to restore a snapshot as %v; ignoring", r.id, r.state)
		return false
	}
	// NB: the snapshot's configuration may not include this node yet (it
	// was added after the snapshot's index); the entries that follow the
	// snapshot will add it.
	if r.raftLog.matchTerm(idx, term) {
		r.raftLog.commitTo(idx)
		return false
	}
	r.raftLog.restore(s)
	r.setConfState(s.Metadata.ConfState)
	last := r.raftLog.lastIndex()
	for _, pr := range r.prs {
		pr.next = last + 1
	}
	return true
}

// handleSnapStatus takes the driver's report on a snapshot sent to pr.
func (r *raft) handleSnapStatus(pr *progress, m Message) {
	if pr.state != ProgressSnapshot {
		return
	}
	if m.Reject {
		r.logger.Infof("raft: %x: snapshot to %x failed; probing again", r.id, m.From)
		pr.pendingSnapshot = 0
	} else {
		r.logger.Infof("raft: %x: snapshot to %x done; probing from %d", r.id, m.From, pr.pendingSnapshot+1)
	}
	pr.becomeProbe()
	// Wait for a heartbeat response (or the MsgAppResp of the snapshot)
	// before the next probe.
	pr.probeSent = true
}
