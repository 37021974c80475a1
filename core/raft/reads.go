package raft

import (
	"bytes"
	"encoding/binary"
)

// Linearizable reads (thesis §6.4): ReadIndex confirmed by a heartbeat
// round, and leases (thesis §6.4.1): the follower side that refuses votes
// after hearing from a leader, and the leader side that answers reads
// while a quorum's leases hold.

// ReadOnlyOption selects how the leader confirms a ReadIndex request.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with a round of heartbeats that a
	// quorum answers (thesis §6.4). The default.
	ReadOnlySafe ReadOnlyOption = iota
	// ReadOnlyLeaseBased answers from the leader's lease (thesis §6.4.1)
	// without a heartbeat round while a quorum acknowledged a heartbeat
	// sent less than (ElectionTick-1)*100/(100+Config.LeaseDriftPercent)
	// ticks ago (8 with ElectionTick 10 and the default 10%); otherwise
	// (and during a leadership transfer, or after one was attempted in the
	// term) it falls back to ReadOnlySafe. It is correct only if no node's
	// tick rate exceeds another's by more than LeaseDriftPercent. Requires
	// check-quorum.
	ReadOnlyLeaseBased
)

// readIndexStatus is one pending read: the request, the commit index when
// it arrived, and the first heartbeat round started after it arrived.
type readIndexStatus struct {
	req   Message
	index uint64
	round uint64
}

// readOnly queues ReadIndex requests until a quorum confirms them.
//
// Confirmation is tied to heartbeat rounds, never to request contexts
// (thesis §6.4 step 3): the leader numbers the heartbeat rounds it starts
// in its term, a follower echoes the round it answers, and a read is
// confirmed once a quorum answered a round numbered at least the read's.
// Request contexts are the caller's business and may repeat (a requester
// that restarted); a late answer to an earlier round confirms nothing
// newer.
type readOnly struct {
	option ReadOnlyOption
	// queue holds the pending reads in arrival order (so their rounds do
	// not decrease).
	queue []*readIndexStatus
	// round is the last heartbeat round started in this term.
	round uint64
}

func newReadOnly(option ReadOnlyOption) *readOnly {
	return &readOnly{option: option}
}

// addRequest queues read m at commit index; the next heartbeat round
// started confirms it.
func (ro *readOnly) addRequest(index uint64, m Message) {
	ro.queue = append(ro.queue, &readIndexStatus{req: m, index: index, round: ro.round + 1})
}

// nextRound starts a heartbeat round if reads are pending and returns the
// context the round's heartbeats carry (nil when none is pending: a
// heartbeat without a round confirms nothing).
func (ro *readOnly) nextRound() []byte {
	if len(ro.queue) == 0 {
		return nil
	}
	ro.round++
	return encodeReadRound(ro.round)
}

// confirmed removes and returns the pending reads whose round is at most
// round, in arrival order.
func (ro *readOnly) confirmed(round uint64) []*readIndexStatus {
	i := 0
	for i < len(ro.queue) && ro.queue[i].round <= round {
		i++
	}
	out := ro.queue[:i:i]
	ro.queue = ro.queue[i:]
	return out
}

func (ro *readOnly) reset() {
	ro.queue = nil
	ro.round = 0
}

// readRoundBytes is the size of a heartbeat round's context.
const readRoundBytes = 8

// encodeReadRound is the Context of a heartbeat (and of its response)
// that belongs to read round n: n as 8 bytes, big-endian.
func encodeReadRound(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, readRoundBytes), n)
}

// decodeReadRound returns the read round of a heartbeat response's
// Context, and false if it carries none.
func decodeReadRound(ctx []byte) (uint64, bool) {
	if len(ctx) != readRoundBytes {
		return 0, false
	}
	n := binary.BigEndian.Uint64(ctx)
	return n, n > 0
}

func (r *raft) leaderReadIndex(m Message) error {
	if len(m.Context) == 0 {
		r.logger.Warningf("raft: %x dropping ReadIndex with an empty context", r.id)
		return nil
	}
	if r.voters == 1 && r.isVoter(r.id) {
		if r.committedEntryInCurrentTerm() {
			r.respondReadIndex(m, r.raftLog.committed)
		} else {
			r.pendingReadIndexMessages = append(r.pendingReadIndexMessages, m)
		}
		return nil
	}
	if !r.committedEntryInCurrentTerm() {
		// Our commit index may lag the real one until we commit an entry of
		// our own term: queue the read until then.
		r.pendingReadIndexMessages = append(r.pendingReadIndexMessages, m)
		return nil
	}
	r.sendReadIndex(m)
	return nil
}

func (r *raft) sendReadIndex(m Message) {
	switch r.readOnly.option {
	case ReadOnlyLeaseBased:
		if r.leaseValid() {
			r.respondReadIndex(m, r.raftLog.committed)
			return
		}
		// No valid lease: fall back to a confirmed heartbeat round.
		fallthrough
	default:
		r.readOnly.addRequest(r.raftLog.committed, m)
		r.bcastHeartbeat()
	}
}

func (r *raft) releasePendingReadIndexMessages() {
	if len(r.pendingReadIndexMessages) == 0 || !r.committedEntryInCurrentTerm() {
		return
	}
	msgs := r.pendingReadIndexMessages
	r.pendingReadIndexMessages = nil
	for _, m := range msgs {
		if r.voters == 1 {
			r.respondReadIndex(m, r.raftLog.committed)
		} else {
			r.sendReadIndex(m)
		}
	}
}

// handleReadAck records that pr answered heartbeat round round, and
// answers the reads that a quorum has now confirmed.
func (r *raft) handleReadAck(pr *progress, round uint64) {
	if round > r.readOnly.round {
		return // never started: a corrupt or foreign echo
	}
	if round <= pr.readRound {
		return
	}
	pr.readRound = round
	// The highest round a quorum of voters answered (the leader answers
	// every round it starts).
	buf := r.matchBuf[:0]
	for _, p := range r.prs {
		switch {
		case p.isLearner:
		case p.id == r.id:
			buf = append(buf, r.readOnly.round)
		default:
			buf = append(buf, p.readRound)
		}
	}
	r.matchBuf = buf
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && buf[j] > buf[j-1]; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	if len(buf) < r.quorum() {
		return
	}
	for _, s := range r.readOnly.confirmed(buf[r.quorum()-1]) {
		r.respondReadIndex(s.req, s.index)
	}
}

func (r *raft) respondReadIndex(req Message, index uint64) {
	if req.From == None || req.From == r.id {
		r.readStates = append(r.readStates, ReadState{Index: index, RequestCtx: req.Context})
		return
	}
	r.send(Message{To: req.From, Type: MsgReadIndexResp, Index: index, Context: req.Context})
}

// startLease sets up the vote-refusing lease of a node that just started:
// with lease-based reads, it refuses votes for one election timeout as if
// it had heard from a leader — it may have, before a restart, and that
// leader may be serving reads from its lease.
func (r *raft) startLease(c *Config) {
	r.leaseActive = r.checkQuorum && c.ReadOnlyOption == ReadOnlyLeaseBased
	r.leaseTicks = 0
}

// heardFromLeader is run when a follower accepts a message from the
// leader of its term: the election timer and the lease start over.
func (r *raft) heardFromLeader(lead uint64) {
	r.electionElapsed = 0
	r.lead = lead
	r.renewLease()
}

// renewLease starts the follower's lease over: it heard from a leader.
func (r *raft) renewLease() {
	r.leaseActive = true
	r.leaseTicks = 0
}

// tickLease counts a tick of the follower's lease.
func (r *raft) tickLease() {
	if r.leaseActive && r.leaseTicks < r.electionTimeout {
		r.leaseTicks++
	}
}

// inVoteLease reports whether this node is a leader or heard from a live
// leader (or, at startup with lease-based reads, may have) within the
// minimum election timeout; with check-quorum it then ignores
// (non-transfer) vote requests (thesis §9.6), which is what a leader's
// read lease relies on. Campaigning and changing term do not end it.
func (r *raft) inVoteLease() bool {
	if !r.checkQuorum {
		return false
	}
	return r.state == StateLeader || (r.leaseActive && r.leaseTicks < r.electionTimeout)
}

// leaseForbidsCampaign reports whether, with lease-based reads, this node
// must not vote for itself now: it heard from a leader within the election
// timeout, and that leader's lease counts on this node voting for no one
// (thesis §6.4.1). A single voter has no one relying on it. Timer-driven
// campaigns never hit this (the election timer restarts with the lease
// and runs for at least as long); Campaign() within the lease does.
func (r *raft) leaseForbidsCampaign() bool {
	return r.readOnly.option == ReadOnlyLeaseBased && r.voters > 1 && r.state != StateLeader && r.inVoteLease()
}

// leaseRefusesVote reports whether the (pre-)vote request m, for a term
// above ours, is ignored because of the lease: check-quorum (thesis §9.6)
// ignores a disruptive candidate while we heard from a live leader within
// the minimum election timeout, neither adopting its term nor voting. A
// vote caused by leadership transfer bypasses the lease.
func (r *raft) leaseRefusesVote(m Message) bool {
	if bytes.Equal(m.Context, transferContext) || !r.inVoteLease() {
		return false
	}
	r.logger.Infof("raft: %x [term %d] ignoring %s from %x at term %d: leader %x is live",
		r.id, r.Term, m.Type, m.From, m.Term, r.lead)
	return true
}

// heartbeatStamp is the stamp a leader puts in its heartbeats: its ticks
// as leader plus one. The echo dates the follower's lease.
func (r *raft) heartbeatStamp() uint64 { return r.leaderTicks + 1 }

// recordLeaseAck records that pr echoed heartbeat stamp; stamps from the
// future (a corrupt or foreign echo) are ignored.
func (r *raft) recordLeaseAck(pr *progress, stamp uint64) {
	if stamp <= r.heartbeatStamp() && stamp > pr.heardTick {
		pr.heardTick = stamp
	}
}

// leaseValid reports whether the leader may answer a read from its lease
// (thesis §6.4.1). A follower that received a heartbeat the leader sent at
// its tick a ignores vote requests until its own election timer reaches
// T. Its first tick may come right after the receipt, so that takes at
// least T-1 of its tick periods: with its clock up to 1+d times as fast
// as the leader's (d = LeaseDriftPercent/100), at least (T-1)/(1+d)
// leader periods, which the leader's clock reaches by its tick
// a + (T-1)/(1+d) at the latest. The lease holds while a quorum of voters
// (the leader counting as now) acknowledged a heartbeat sent at a tick a
// with now < a + leaderLeaseTicks(). It never holds during a leadership
// transfer, whose vote
// requests bypass the followers' leases, nor for the rest of a term in
// which the leader sent MsgTimeoutNow: the target may still win after the
// transfer was aborted.
func (r *raft) leaseValid() bool {
	if r.leadTransferee != None || r.sentTimeoutNow || !r.checkQuorum || r.voters == 0 {
		return false
	}
	buf := r.matchBuf[:0]
	for _, pr := range r.prs {
		if pr.isLearner {
			continue
		}
		if pr.id == r.id {
			buf = append(buf, r.leaderTicks+1)
		} else {
			buf = append(buf, pr.heardTick)
		}
	}
	r.matchBuf = buf
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && buf[j] > buf[j-1]; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	stamp := buf[r.quorum()-1] // heartbeat sent at leader tick stamp-1
	if stamp == 0 {
		return false
	}
	return r.leaderTicks < stamp-1+r.leaderLeaseTicks()
}

// leaderLeaseTicks is how many of its ticks after sending a heartbeat the
// leader may rely on the followers that acknowledged it (see leaseValid):
// floor((T-1) / (1 + LeaseDriftPercent/100)).
func (r *raft) leaderLeaseTicks() uint64 {
	return uint64(r.electionTimeout-1) * 100 / uint64(100+r.leaseDriftPercent)
}
