package raft

import "bytes"

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
	// sent less than ElectionTick-1 ticks ago; otherwise (and during a
	// leadership transfer) it falls back to ReadOnlySafe. It is correct only
	// if the nodes' tick rates drift by less than that margin. Requires
	// check-quorum.
	ReadOnlyLeaseBased
)

// readIndexStatus is one pending read: the commit index when it arrived
// and the members that confirmed a heartbeat round sent after it.
type readIndexStatus struct {
	req   Message
	index uint64
	acks  []uint64
}

// readOnly queues ReadIndex requests until a quorum confirms them.
type readOnly struct {
	option  ReadOnlyOption
	pending map[string]*readIndexStatus
	queue   []string
}

func newReadOnly(option ReadOnlyOption) *readOnly {
	return &readOnly{option: option}
}

// addRequest queues read m at commit index. A duplicate context is ignored
// (the first request with it keeps its place).
func (ro *readOnly) addRequest(index uint64, m Message) {
	ctx := string(m.Context)
	if _, ok := ro.pending[ctx]; ok {
		return
	}
	if ro.pending == nil {
		ro.pending = make(map[string]*readIndexStatus)
	}
	ro.pending[ctx] = &readIndexStatus{req: m, index: index}
	ro.queue = append(ro.queue, ctx)
}

// recvAck records that id answered the heartbeat carrying ctx and returns
// the status, or nil if ctx is not pending.
func (ro *readOnly) recvAck(id uint64, ctx []byte) *readIndexStatus {
	rs, ok := ro.pending[string(ctx)]
	if !ok {
		return nil
	}
	for _, a := range rs.acks {
		if a == id {
			return rs
		}
	}
	rs.acks = append(rs.acks, id)
	return rs
}

// advance removes and returns every request up to and including the one
// with context ctx: a heartbeat round confirming a later read also
// confirms the earlier ones.
func (ro *readOnly) advance(ctx []byte) []*readIndexStatus {
	key := string(ctx)
	i := -1
	for j, c := range ro.queue {
		if c == key {
			i = j
			break
		}
	}
	if i < 0 {
		return nil
	}
	out := make([]*readIndexStatus, 0, i+1)
	for _, c := range ro.queue[:i+1] {
		out = append(out, ro.pending[c])
		delete(ro.pending, c)
	}
	ro.queue = ro.queue[i+1:]
	return out
}

// lastPendingRequestCtx is attached to periodic heartbeats so a read whose
// heartbeat round was lost is retried.
func (ro *readOnly) lastPendingRequestCtx() []byte {
	if len(ro.queue) == 0 {
		return nil
	}
	return []byte(ro.queue[len(ro.queue)-1])
}

func (ro *readOnly) reset() {
	ro.pending = nil
	ro.queue = nil
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
		r.readOnly.recvAck(r.id, m.Context)
		r.bcastHeartbeatWithCtx(m.Context)
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

func (r *raft) handleReadAck(m Message) {
	rs := r.readOnly.recvAck(m.From, m.Context)
	if rs == nil {
		return // stale or unknown context: it confirms nothing
	}
	n := 0
	for _, id := range rs.acks {
		if r.isVoter(id) {
			n++
		}
	}
	if n < r.quorum() {
		return
	}
	for _, s := range r.readOnly.advance(m.Context) {
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
	r.startupLease = r.checkQuorum && c.ReadOnlyOption == ReadOnlyLeaseBased
}

// tickLease ends the startup lease once an election timeout has passed.
func (r *raft) tickLease() {
	if r.electionElapsed >= r.electionTimeout {
		r.startupLease = false
	}
}

// inVoteLease reports whether this node heard from a live leader (or, at
// startup with lease-based reads, may have) within the minimum election
// timeout; with check-quorum it then ignores (non-transfer) vote requests
// (thesis §9.6), which is what a leader's read lease relies on.
func (r *raft) inVoteLease() bool {
	return r.checkQuorum && (r.lead != None || r.startupLease) && r.electionElapsed < r.electionTimeout
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
// tick a ignores vote requests until its own election timer reaches T, so
// no other leader can exist before leader tick a+T (assuming bounded clock
// drift). The lease holds while a quorum of voters (the leader counting
// as now) acknowledged a heartbeat sent after now-T+1, keeping one tick of
// margin. It never holds during a leadership transfer, whose vote
// requests bypass the followers' leases.
func (r *raft) leaseValid() bool {
	if r.leadTransferee != None || !r.checkQuorum || r.voters == 0 {
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
	// Valid while now < (stamp-1) + T - 1 (one tick of drift margin).
	return r.leaderTicks+2 < stamp+uint64(r.electionTimeout)
}
