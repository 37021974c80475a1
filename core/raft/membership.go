package raft

// Membership (Raft §6, one change at a time, effective when applied):
// the configuration, its bootstrap and replay, the leader's checks on a
// proposed change, and applying a committed change.

import (
	"fmt"
	"slices"
)

// bootstrap writes the initial configuration into a brand-new log as
// committed ConfChange entries at term 1, indexes 1..n (voters, then
// learners, in ascending id order). Every founding member generates
// identical entries from the same ConfState, and a node that joins later
// learns the founding configuration by replicating them; without them a
// joiner that replays the log from index 1 would start from an empty
// configuration. The entries reach the driver as CommittedEntries (the
// changes are no-ops there: the configuration already holds them).
//
// NB: founding members must be given the same ConfState.
func (r *raft) bootstrap(cs ConfState) {
	voters := slices.Clone(cs.Voters)
	learners := slices.Clone(cs.Learners)
	slices.Sort(voters)
	slices.Sort(learners)
	ents := make([]Entry, 0, len(voters)+len(learners))
	add := func(t ConfChangeType, id uint64) {
		if id == None {
			return
		}
		cc := ConfChange{Type: t, NodeID: id}
		ents = append(ents, Entry{Term: 1, Index: uint64(len(ents) + 1), Type: EntryConfChange, Data: cc.Marshal()})
	}
	for _, id := range voters {
		add(ConfChangeAddNode, id)
	}
	for _, id := range learners {
		add(ConfChangeAddLearner, id)
	}
	r.Term = 1
	r.raftLog.append(ents...)
	r.raftLog.committed = uint64(len(ents))
}

func (r *raft) replayConfChanges(lo, hi uint64) error {
	for lo < hi {
		ents, err := r.raftLog.slice(lo, hi, 1<<20)
		if err != nil {
			return fmt.Errorf("raft: restart: reading entries [%d, %d): %w", lo, hi, err)
		}
		for i := range ents {
			if ents[i].Type != EntryConfChange {
				continue
			}
			var cc ConfChange
			if err := cc.Unmarshal(ents[i].Data); err != nil {
				return fmt.Errorf("raft: restart: conf change at index %d: %w", ents[i].Index, err)
			}
			r.applyConfChange(cc)
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return nil
}

func (r *raft) progress(id uint64) *progress {
	for _, pr := range r.prs {
		if pr.id == id {
			return pr
		}
	}
	return nil
}

func (r *raft) newProgress(id uint64, learner bool) *progress {
	return &progress{
		id:           id,
		next:         r.raftLog.lastIndex() + 1,
		isLearner:    learner,
		recentActive: true,
		inflights:    newInflights(r.maxInflight, r.maxInflightBytes),
	}
}

// setConfState replaces the configuration with cs.
func (r *raft) setConfState(cs ConfState) {
	r.prs = r.prs[:0]
	r.voters = 0
	for _, id := range cs.Voters {
		if id != None && r.progress(id) == nil {
			r.prs = append(r.prs, r.newProgress(id, false))
			r.voters++
		}
	}
	for _, id := range cs.Learners {
		if id != None && r.progress(id) == nil {
			r.prs = append(r.prs, r.newProgress(id, true))
		}
	}
	r.sortProgress()
}

func (r *raft) confState() ConfState {
	var cs ConfState
	for _, pr := range r.prs {
		if pr.isLearner {
			cs.Learners = append(cs.Learners, pr.id)
		} else {
			cs.Voters = append(cs.Voters, pr.id)
		}
	}
	return cs
}

// promotable reports whether this node is a voter and so may campaign
// (Raft §6: a node outside the configuration, or a learner, never does).
func (r *raft) promotable() bool {
	pr := r.progress(r.id)
	return pr != nil && !pr.isLearner && r.raftLog.unstable.snapshot == nil
}

func (r *raft) isVoter(id uint64) bool {
	pr := r.progress(id)
	return pr != nil && !pr.isLearner
}

func (r *raft) quorum() int { return r.voters/2 + 1 }

// hasUnappliedConfChanges reports whether a committed but unapplied
// ConfChange would change the configuration: campaigning with a
// configuration that is about to change is unsafe. Changes that are
// no-ops (such as the bootstrap entries) do not count.
func (r *raft) hasUnappliedConfChanges() bool {
	lo, hi := r.raftLog.applied+1, r.raftLog.committed+1
	lo = max(lo, r.raftLog.firstIndex())
	var voters, learners []uint64
	loaded := false
	for lo < hi {
		ents, err := r.raftLog.slice(lo, hi, 1<<20)
		if err != nil || len(ents) == 0 {
			return false
		}
		for i := range ents {
			if ents[i].Type != EntryConfChange {
				continue
			}
			if !loaded {
				cs := r.confState()
				voters, learners, loaded = cs.Voters, cs.Learners, true
			}
			var cc ConfChange
			if cc.Unmarshal(ents[i].Data) != nil {
				continue // the driver will fail on it; it cannot change the config
			}
			isV, isL := slices.Contains(voters, cc.NodeID), slices.Contains(learners, cc.NodeID)
			switch cc.Type {
			case ConfChangeAddNode:
				if !isV {
					return true
				}
			case ConfChangeAddLearner:
				if !isL {
					return true
				}
			case ConfChangeRemoveNode:
				if isV || isL {
					return true
				}
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return false
}

// applyConfChange changes the configuration; it is called when the driver
// applies a committed EntryConfChange (or on restart, for changes below
// Config.Applied).
func (r *raft) applyConfChange(cc ConfChange) ConfState {
	if cc.NodeID == None {
		r.logger.Warningf("raft: %x ignoring conf change %v for node 0", r.id, cc.Type)
		return r.confState()
	}
	pr := r.progress(cc.NodeID)
	switch cc.Type {
	case ConfChangeAddNode:
		if pr == nil {
			r.prs = append(r.prs, r.newProgress(cc.NodeID, false))
			r.voters++
			r.sortProgress()
		} else if pr.isLearner {
			pr.isLearner = false
			r.voters++
		}
	case ConfChangeAddLearner:
		if pr == nil {
			r.prs = append(r.prs, r.newProgress(cc.NodeID, true))
			r.sortProgress()
		} else if !pr.isLearner {
			// Demote a voter to learner.
			pr.isLearner = true
			r.voters--
		}
	case ConfChangeRemoveNode:
		if pr != nil {
			if !pr.isLearner {
				r.voters--
			}
			r.prs = slices.DeleteFunc(r.prs, func(p *progress) bool { return p.id == cc.NodeID })
		}
	default:
		r.logger.Warningf("raft: %x ignoring unknown conf change type %d", r.id, cc.Type)
	}
	cs := r.confState()
	r.logger.Infof("raft: %x applied %v of %x: voters=%v learners=%v", r.id, cc.Type, cc.NodeID, cs.Voters, cs.Learners)
	if r.state != StateLeader {
		return cs
	}
	if r.leadTransferee != None && !r.isVoter(r.leadTransferee) {
		r.abortLeaderTransfer()
	}
	if !r.isVoter(r.id) {
		// Removed or demoted: a leader must be a voter.
		r.stepDownRemoved()
		return cs
	}
	// A smaller quorum may commit more now; a new member needs the log.
	if r.maybeCommit() {
		r.commitAdvanced()
	} else {
		for _, p := range r.prs {
			if p.id != r.id {
				r.maybeSendAppend(p, p.match == 0)
			}
		}
	}
	return cs
}

func (r *raft) sortProgress() {
	slices.SortFunc(r.prs, func(a, b *progress) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
}

// stepDownRemoved is run by a leader that applied its own removal (or
// demotion to learner): it
// tells the remaining members the commit index (so they apply the
// removal too), hands leadership to the most up-to-date voter, and steps
// down so it stops heartbeating (Raft §6).
func (r *raft) stepDownRemoved() {
	last := r.raftLog.lastIndex()
	var best *progress
	for _, pr := range r.prs {
		if pr.id == r.id {
			continue
		}
		r.sendAppendAll(pr, true)
		if !pr.isLearner && pr.match == last && (best == nil || pr.id < best.id) {
			best = pr
		}
	}
	if best != nil {
		r.sendTimeoutNow(best.id)
	}
	r.logger.Infof("raft: %x removed from the configuration; stepping down at term %d", r.id, r.Term)
	r.becomeFollower(r.Term, None)
}

// confChangeRefusal returns why the leader refuses to append the proposed
// conf change encoded in data, or "" if it accepts it: one change at a
// time (the previous one must be applied), and never the last voter
// removed or demoted.
func (r *raft) confChangeRefusal(data []byte) string {
	var cc ConfChange
	if err := cc.Unmarshal(data); err != nil {
		return err.Error()
	}
	switch {
	case r.pendingConfIndex > r.raftLog.applied:
		return fmt.Sprintf("conf change at index %d is not applied yet (applied %d)", r.pendingConfIndex, r.raftLog.applied)
	case cc.NodeID == None:
		return "node id 0"
	case (cc.Type == ConfChangeRemoveNode || cc.Type == ConfChangeAddLearner) && r.isVoter(cc.NodeID) && r.voters == 1:
		return "cannot remove or demote the last voter"
	}
	return ""
}
