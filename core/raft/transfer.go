package raft

// Leadership transfer (thesis §3.10): bring the target up to date, send
// MsgTimeoutNow, abort after an election timeout.

// transferContext marks votes requested because of leadership transfer;
// they bypass the check-quorum lease (thesis §3.10, §9.6).
var transferContext = []byte("transfer")

func (r *raft) abortLeaderTransfer() { r.leadTransferee = None }

func (r *raft) leaderTransfer(pr *progress) {
	to := pr.id
	if pr.isLearner {
		r.logger.Infof("raft: %x ignoring transfer to learner %x", r.id, to)
		return
	}
	if r.leadTransferee != None {
		if r.leadTransferee == to {
			return
		}
		r.abortLeaderTransfer()
	}
	if to == r.id {
		return
	}
	r.logger.Infof("raft: %x starting leadership transfer to %x at term %d", r.id, to, r.Term)
	// The transfer must finish within an election timeout (thesis §3.10).
	r.electionElapsed = 0
	r.leadTransferee = to
	if pr.match == r.raftLog.lastIndex() {
		r.sendTimeoutNow(to)
	} else {
		r.sendAppendAll(pr, true)
	}
}

// transferTimedOut aborts a leadership transfer that did not complete
// within an election timeout (thesis §3.10); it is called every election
// timeout on the leader.
func (r *raft) transferTimedOut() {
	if r.state == StateLeader && r.leadTransferee != None {
		r.logger.Infof("raft: %x aborting transfer to %x: it did not take over within an election timeout", r.id, r.leadTransferee)
		r.abortLeaderTransfer()
	}
}

// maybeFinishTransfer sends MsgTimeoutNow to the transferee pr once its
// log is as long as ours.
func (r *raft) maybeFinishTransfer(pr *progress) {
	if pr.id == r.leadTransferee && pr.match == r.raftLog.lastIndex() {
		r.logger.Infof("raft: %x sending MsgTimeoutNow to %x: its log is up to date", r.id, pr.id)
		r.sendTimeoutNow(pr.id)
	}
}

// sendTimeoutNow tells to to campaign at once; its vote requests bypass
// the other members' leases (thesis §3.10).
func (r *raft) sendTimeoutNow(to uint64) {
	r.send(Message{To: to, Type: MsgTimeoutNow})
	// The target may win from now on, even if this transfer is aborted:
	// no more lease reads in this term (leaseValid).
	r.sentTimeoutNow = true
}

// handleTimeoutNow is the transferee side of a leadership transfer.
func (r *raft) handleTimeoutNow(m Message) {
	r.logger.Infof("raft: %x [term %d] received MsgTimeoutNow from %x: campaigning for leadership transfer", r.id, r.Term, m.From)
	// Leadership transfer skips pre-vote: the current leader asked for it.
	r.hup(campaignTransfer)
}
