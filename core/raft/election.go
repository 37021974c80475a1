package raft

// Elections (Raft §5.2, §5.4.1): timeouts, campaigns, pre-vote (thesis
// §9.6), voting, tallying, and check-quorum (thesis §6.2).

// campaignType distinguishes the kinds of election a node can start.
type campaignType uint8

const (
	campaignPreElection campaignType = iota // thesis §9.6
	campaignElection                        // Raft §5.2
	campaignTransfer                        // thesis §3.10: caused by MsgTimeoutNow
)

type voteResult uint8

const (
	votePending voteResult = iota
	voteWon
	voteLost
)

// hup starts an election if this node may (Raft §5.2).
func (r *raft) hup(t campaignType) {
	if r.state == StateLeader {
		r.logger.Debugf("raft: %x ignoring MsgHup: already leader", r.id)
		return
	}
	if !r.promotable() {
		r.logger.Warningf("raft: %x is not a voter and cannot campaign", r.id)
		return
	}
	if r.hasUnappliedConfChanges() {
		r.logger.Warningf("raft: %x cannot campaign at term %d: committed conf changes are not applied yet", r.id, r.Term)
		return
	}
	if t != campaignTransfer && r.leaseForbidsCampaign() {
		r.logger.Infof("raft: %x not campaigning at term %d: it heard from leader %x %d ticks ago, whose read lease relies on it",
			r.id, r.Term, r.lead, r.leaseTicks)
		return
	}
	r.logger.Infof("raft: %x starting a new election at term %d", r.id, r.Term)
	r.campaign(t)
}

func (r *raft) campaign(t campaignType) {
	var term uint64
	var voteType MessageType
	if t == campaignPreElection {
		r.becomePreCandidate()
		voteType = MsgPreVote
		term = r.Term + 1 // the term we would campaign in; ours is unchanged
	} else {
		r.becomeCandidate()
		voteType = MsgVote
		term = r.Term
	}
	if _, _, res := r.poll(r.id, voteRespType(voteType), true); res == voteWon {
		// Single voter: we won outright.
		if t == campaignPreElection {
			r.campaign(campaignElection)
		} else {
			r.becomeLeader()
		}
		return
	}
	var ctx []byte
	if t == campaignTransfer {
		ctx = transferContext
	}
	lastIndex, lastTerm := r.raftLog.lastIndex(), r.raftLog.lastTerm()
	for _, pr := range r.prs {
		if pr.isLearner || pr.id == r.id {
			continue
		}
		r.logger.Debugf("raft: %x [logterm %d, index %d] sent %s to %x at term %d", r.id, lastTerm, lastIndex, voteType, pr.id, term)
		r.send(Message{Term: term, To: pr.id, Type: voteType, Index: lastIndex, LogTerm: lastTerm, Context: ctx})
	}
}

func voteRespType(t MessageType) MessageType {
	if t == MsgVote {
		return MsgVoteResp
	}
	return MsgPreVoteResp
}

func (r *raft) poll(id uint64, t MessageType, v bool) (granted, rejected int, res voteResult) {
	if v {
		r.logger.Debugf("raft: %x received %s from %x at term %d", r.id, t, id, r.Term)
	} else {
		r.logger.Debugf("raft: %x received %s rejection from %x at term %d", r.id, t, id, r.Term)
	}
	if r.votes == nil {
		r.votes = make(map[uint64]bool, len(r.prs))
	}
	if _, ok := r.votes[id]; !ok {
		r.votes[id] = v
	}
	return r.tally()
}

func (r *raft) tally() (granted, rejected int, res voteResult) {
	for _, pr := range r.prs {
		if pr.isLearner {
			continue
		}
		v, ok := r.votes[pr.id]
		if !ok {
			continue
		}
		if v {
			granted++
		} else {
			rejected++
		}
	}
	q := r.quorum()
	switch {
	case r.voters > 0 && granted >= q:
		res = voteWon
	case rejected > r.voters-q:
		res = voteLost
	}
	return granted, rejected, res
}

// tickElection is the follower/candidate clock: campaign once the
// randomized election timeout passes without hearing from a leader.
func (r *raft) tickElection() {
	r.electionElapsed++
	r.tickLease()
	if r.promotable() && r.electionElapsed >= r.randomizedElectionTimeout {
		r.electionElapsed = 0
		if r.preVote {
			r.hup(campaignPreElection)
		} else {
			r.hup(campaignElection)
		}
	}
}

// tickHeartbeat is the leader clock: heartbeats every heartbeatTimeout,
// check-quorum and transfer timeout every electionTimeout.
func (r *raft) tickHeartbeat() {
	r.heartbeatElapsed++
	r.leaderTicks++
	r.electionElapsed++
	if r.electionElapsed >= r.electionTimeout {
		r.electionElapsed = 0
		if r.checkQuorum {
			_ = r.Step(Message{From: r.id, Type: MsgCheckQuorum})
		}
		r.transferTimedOut()
	}
	if r.state != StateLeader {
		return
	}
	if r.heartbeatElapsed >= r.heartbeatTimeout {
		r.heartbeatElapsed = 0
		_ = r.Step(Message{From: r.id, Type: MsgBeat})
	}
}

// handleVoteRequest implements Raft §5.2 / §5.4.1 voting and thesis §9.6
// pre-voting.
func (r *raft) handleVoteRequest(m Message) {
	// We can vote if we already voted for this candidate (a repeat), if we
	// have not voted and know no leader in this term, or, for a pre-vote,
	// if it is for a future term.
	canVote := r.Vote == m.From ||
		(r.Vote == None && r.lead == None) ||
		(m.Type == MsgPreVote && m.Term > r.Term)
	if canVote && r.raftLog.isUpToDate(m.Index, m.LogTerm) {
		r.logger.Infof("raft: %x [logterm %d, index %d, vote %x] cast %s for %x [logterm %d, index %d] at term %d",
			r.id, r.raftLog.lastTerm(), r.raftLog.lastIndex(), r.Vote, m.Type, m.From, m.LogTerm, m.Index, r.Term)
		// The response carries the request's term: a pre-vote response for a
		// future term must reach the candidate as "current", not stale.
		r.send(Message{To: m.From, Term: m.Term, Type: voteRespType(m.Type)})
		if m.Type == MsgVote {
			// Persisted in this Ready's HardState before the response leaves.
			r.electionElapsed = 0
			r.Vote = m.From
			r.resetRandomizedElectionTimeout()
		}
		return
	}
	r.logger.Infof("raft: %x [logterm %d, index %d, vote %x] rejected %s from %x [logterm %d, index %d] at term %d",
		r.id, r.raftLog.lastTerm(), r.raftLog.lastIndex(), r.Vote, m.Type, m.From, m.LogTerm, m.Index, r.Term)
	r.send(r.voteRejection(m))
}

// voteRejection answers the (pre-)vote request m with a rejection that
// carries our term and a commit hint: the newest entry we know committed
// that the candidate may also hold — index min(our commit, its last index)
// in Commit and our term of it in LogTerm (0 when we cannot tell).
func (r *raft) voteRejection(m Message) Message {
	resp := Message{To: m.From, Term: r.Term, Type: voteRespType(m.Type), Reject: true}
	if idx := min(r.raftLog.committed, m.Index); idx > 0 {
		if t, err := r.raftLog.term(idx); err == nil {
			resp.Commit, resp.LogTerm = idx, t
		}
	}
	return resp
}

// maybeCommitFromHint takes the commit hint of a (pre-)vote rejection.
// Commitment is a fact about the cluster, not about a leader: the hinted
// entry (m.Commit, m.LogTerm) is committed, and if our entry at that index
// has the same term, Log Matching (Raft §5.3) makes our log up to it
// identical to that committed prefix, so we may commit it too.
//
// NB: without this a cluster can stall for good. When a leader applies its
// own removal and steps down, the remaining voters may not have learned
// that the removal committed; under their older configuration they need
// the removed node's vote, which it refuses (its log is ahead of theirs),
// and the removed node never campaigns. The hint lets them commit and apply
// the removal, after which they elect among themselves.
func (r *raft) maybeCommitFromHint(m Message) {
	if m.LogTerm == 0 || m.Commit <= r.raftLog.committed || m.Commit > r.raftLog.lastIndex() {
		return
	}
	if !r.raftLog.matchTerm(m.Commit, m.LogTerm) {
		return
	}
	r.logger.Infof("raft: %x commits %d on a hint from %x (term %d entry is committed there)", r.id, m.Commit, m.From, m.LogTerm)
	r.raftLog.commitTo(m.Commit)
}

func (r *raft) quorumActive() bool {
	n := 0
	for _, pr := range r.prs {
		if !pr.isLearner && (pr.id == r.id || pr.recentActive) {
			n++
		}
	}
	return r.voters > 0 && n >= r.quorum()
}

// checkQuorumActive is run by the leader every election timeout (thesis
// §6.2): it steps down unless a quorum was heard from since the last
// check, then starts a new observation window.
func (r *raft) checkQuorumActive() {
	if !r.quorumActive() {
		r.logger.Warningf("raft: %x stepped down at term %d: no quorum heard from within an election timeout", r.id, r.Term)
		r.becomeFollower(r.Term, None)
	}
	for _, pr := range r.prs {
		if pr.id != r.id {
			pr.recentActive = false
		}
	}
}
