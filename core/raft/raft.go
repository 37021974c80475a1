package raft

import "fmt"

// errNoLeaderDropped is returned for a proposal with no known leader; it
// matches both ErrProposalDropped and ErrNoLeader under errors.Is.
type noLeaderError struct{}

func (noLeaderError) Error() string { return "raft: proposal dropped: no leader" }

func (noLeaderError) Is(target error) bool {
	return target == ErrProposalDropped || target == ErrNoLeader
}

var errNoLeaderDropped error = noLeaderError{}

type stepFunc func(r *raft, m Message) error

// raft is the protocol state machine of one node. It is driven by RawNode
// and never blocks, allocates goroutines, reads clocks or does I/O.
type raft struct {
	id uint64

	// commitUnsent is set on the leader when some follower may not have
	// been told the current commit index; flushCommit, run when the next
	// Ready is built, sends it (Raft §5.3: followers learn the commit
	// index from later AppendEntries).
	commitUnsent bool

	// Term and Vote are persistent (HardState), Raft figure 2.
	Term uint64
	Vote uint64

	readStates []ReadState

	raftLog *raftLog

	maxMsgSize         uint64
	maxUncommittedSize uint64 // 0 = unlimited
	maxInflight        int
	maxInflightBytes   uint64

	// prs is every member's progress, sorted by id. Small clusters make a
	// linear scan cheaper than a map.
	prs    []*progress
	voters int // number of voters in prs

	state StateType
	lead  uint64
	// leadTransferee is the target of an ongoing leadership transfer.
	leadTransferee uint64
	// sentTimeoutNow is set once the leader sent MsgTimeoutNow in its
	// term: the target may win an election from then on, whatever the
	// leases say, so the leader answers no read from its lease until the
	// term ends (reset clears it).
	sentTimeoutNow bool
	// pendingConfIndex: the leader refuses a new conf change while an
	// earlier one at or below this index is not yet applied.
	pendingConfIndex uint64
	// uncommittedSize is the payload size of the leader's uncommitted tail.
	uncommittedSize uint64

	votes map[uint64]bool
	msgs  []Message
	// msgsCap sizes a fresh outbox like the last one handed out, so a
	// busy leader allocates it once per Ready instead of growing it.
	msgsCap int

	readOnly *readOnly
	// pendingReadIndexMessages wait until the leader has committed an entry
	// of its own term (thesis §6.4).
	pendingReadIndexMessages []Message

	// electionElapsed counts ticks since the last election timeout reset (or
	// on a leader, since the last check-quorum).
	electionElapsed  int
	heartbeatElapsed int
	// leaderTicks counts ticks since this node became leader; heartbeats
	// carry leaderTicks+1 so the responses date the followers' leases.
	leaderTicks uint64

	checkQuorum bool
	// leaseActive and leaseTicks are the follower side of the lease
	// (reads.go): leaseTicks counts the ticks since this node last heard
	// from a leader (or, with lease-based reads, started: it may have heard
	// from one before a restart). They are kept apart from lead and from the
	// election timer, which campaigns and term changes reset: the lease is
	// a promise made to a leader, and only time ends it.
	leaseActive bool
	leaseTicks  int
	// leaseDriftPercent is Config.LeaseDriftPercent (with its default).
	leaseDriftPercent         int
	preVote                   bool
	disableProposalForwarding bool

	heartbeatTimeout int
	electionTimeout  int
	// randomizedElectionTimeout is in [electionTimeout, 2*electionTimeout),
	// redrawn whenever the election timer is reset (Raft §5.2).
	randomizedElectionTimeout int

	tick func()
	step stepFunc

	logger Logger
	rand   *prng

	matchBuf []uint64 // scratch for commit computation
	propBuf  []Entry  // scratch for local proposals
}

func newRaft(c *Config) (*raft, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	logger := c.Logger
	if logger == nil {
		logger = discardLogger{}
	}
	maxApplying := c.MaxCommittedSizePerReady
	if maxApplying == 0 {
		maxApplying = noLimit
	}
	rl, err := newLog(c.Storage, logger, maxApplying)
	if err != nil {
		return nil, err
	}
	hs, cs, err := c.Storage.InitialState()
	if err != nil {
		return nil, fmt.Errorf("raft: storage InitialState: %w", err)
	}
	r := &raft{
		id:                        c.ID,
		raftLog:                   rl,
		maxMsgSize:                c.MaxSizePerMsg,
		maxUncommittedSize:        c.MaxUncommittedEntriesSize,
		maxInflight:               c.MaxInflightMsgs,
		maxInflightBytes:          c.MaxInflightBytes,
		electionTimeout:           c.ElectionTick,
		heartbeatTimeout:          c.HeartbeatTick,
		logger:                    logger,
		checkQuorum:               !c.DisableCheckQuorum,
		preVote:                   !c.DisablePreVote,
		disableProposalForwarding: c.DisableProposalForwarding,
		readOnly:                  newReadOnly(c.ReadOnlyOption),
		leaseDriftPercent:         c.LeaseDriftPercent,
		rand:                      newPRNG(c.Seed, c.ID),
	}
	if r.maxMsgSize == 0 {
		r.maxMsgSize = 1 << 20
	}
	if r.maxInflight == 0 {
		r.maxInflight = 256
	}
	if r.leaseDriftPercent == 0 {
		r.leaseDriftPercent = 10
	}
	r.setConfState(cs)

	snapIndex := rl.firstIndex() - 1
	last := rl.lastIndex()
	if hs.IsEmpty() && snapIndex == 0 && last == 0 && len(cs.Voters)+len(cs.Learners) > 0 {
		r.bootstrap(cs)
		last = rl.lastIndex()
	}
	if !hs.IsEmpty() {
		// Restart: the persisted state must satisfy
		// last >= commit >= applied >= snapshot index.
		if hs.Commit > last {
			return nil, fmt.Errorf("raft: restart: HardState commit %d is beyond the last log index %d (log lost or truncated)", hs.Commit, last)
		}
		r.Term = hs.Term
		r.Vote = hs.Vote
		if hs.Commit > rl.committed {
			rl.committed = hs.Commit
		}
	}
	if c.Applied > 0 {
		if c.Applied < snapIndex {
			return nil, fmt.Errorf("raft: restart: Config.Applied %d is below the snapshot index %d (restore the snapshot first)", c.Applied, snapIndex)
		}
		if c.Applied > rl.committed {
			return nil, fmt.Errorf("raft: restart: Config.Applied %d is beyond the commit index %d", c.Applied, rl.committed)
		}
		// Membership changes in (snapshot, applied] were applied before the
		// restart: replay them so the configuration is as of Applied. The
		// ConfState comes from Storage's snapshot, which may be above the
		// first index (the log keeps entries behind a snapshot for slow
		// followers): the changes it covers are in it already, and are not
		// read again (that read could be the whole log).
		from := snapIndex
		if snap, err := c.Storage.Snapshot(); err != nil {
			return nil, fmt.Errorf("raft: storage Snapshot: %w", err)
		} else if si := snap.Metadata.Index; si > from && si <= c.Applied {
			from = si
		}
		if err := r.replayConfChanges(from+1, c.Applied+1); err != nil {
			return nil, err
		}
		rl.appliedTo(c.Applied)
	}
	r.becomeFollower(r.Term, None)
	r.startLease(c)
	r.logger.Infof("raft: %x starting: term=%d vote=%x commit=%d applied=%d last=%d snapshot=%d voters=%v learners=%v",
		r.id, r.Term, r.Vote, rl.committed, rl.applied, last, snapIndex, cs.Voters, cs.Learners)
	return r, nil
}

// send queues m. Messages leave in the next Ready, after the HardState and
// entries of that Ready are durable.
func (r *raft) send(m Message) {
	if m.From == None {
		m.From = r.id
	}
	if r.msgs == nil && r.msgsCap > 0 {
		r.msgs = make([]Message, 0, r.msgsCap)
	}
	switch m.Type {
	case MsgVote, MsgVoteResp, MsgPreVote, MsgPreVoteResp:
		// Vote messages carry their own term (pre-vote uses a future term).
	default:
		if m.Type != MsgProp && m.Type != MsgReadIndex && m.Type != MsgTransferLeader {
			m.Term = r.Term
		}
	}
	r.msgs = append(r.msgs, m)
}

func (r *raft) reset(term uint64) {
	if r.Term != term {
		r.Term = term
		r.Vote = None
	}
	r.lead = None
	r.sentTimeoutNow = false
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.abortLeaderTransfer()
	r.votes = nil
	last := r.raftLog.lastIndex()
	for _, pr := range r.prs {
		learner := pr.isLearner
		in := pr.inflights
		in.reset()
		*pr = progress{id: pr.id, next: last + 1, isLearner: learner, inflights: in}
		if pr.id == r.id {
			pr.match = min(r.raftLog.lastStableIndex(), last)
		}
	}
	r.pendingConfIndex = 0
	r.commitUnsent = false
	r.leaderTicks = 0
	r.uncommittedSize = 0
	r.readOnly.reset()
	r.pendingReadIndexMessages = nil
}

func (r *raft) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.electionTimeout + r.rand.intn(r.electionTimeout)
}

func (r *raft) becomeFollower(term, lead uint64) {
	r.step = stepFollower
	r.reset(term)
	r.tick = r.tickElection
	r.lead = lead
	if lead != None {
		r.renewLease()
	}
	r.state = StateFollower
	r.logger.Debugf("raft: %x became follower at term %d (leader %x)", r.id, r.Term, lead)
}

func (r *raft) becomeCandidate() {
	if r.state == StateLeader {
		panic("raft: invalid transition leader -> candidate")
	}
	r.step = stepCandidate
	r.reset(r.Term + 1)
	r.tick = r.tickElection
	r.Vote = r.id
	r.state = StateCandidate
	r.logger.Infof("raft: %x became candidate at term %d", r.id, r.Term)
}

func (r *raft) becomePreCandidate() {
	if r.state == StateLeader {
		panic("raft: invalid transition leader -> pre-candidate")
	}
	// Thesis §9.6: a pre-candidate changes neither its term nor its vote.
	r.step = stepCandidate
	r.votes = nil
	r.tick = r.tickElection
	r.lead = None
	r.state = StatePreCandidate
	r.resetRandomizedElectionTimeout()
	r.logger.Infof("raft: %x became pre-candidate at term %d", r.id, r.Term)
}

func (r *raft) becomeLeader() {
	if r.state == StateFollower {
		panic("raft: invalid transition follower -> leader")
	}
	r.step = stepLeader
	r.reset(r.Term)
	r.tick = r.tickHeartbeat
	r.lead = r.id
	r.state = StateLeader
	// A leader's own promise to an earlier leader is moot: that leader
	// either sent it MsgTimeoutNow (and stops lease reads) or was already
	// past its lease when this node could campaign.
	r.leaseActive = false
	if pr := r.progress(r.id); pr != nil {
		pr.becomeReplicate()
		pr.recentActive = true
	}
	// Any uncommitted entry may be a conf change: be conservative.
	r.pendingConfIndex = r.raftLog.lastIndex()
	// Raft §5.4.2, §8: append an empty entry of the new term so earlier
	// entries commit promptly and reads can be served.
	r.appendEntry(Entry{})
	r.logger.Infof("raft: %x became leader at term %d", r.id, r.Term)
}

// Step advances the state machine with message m. Network input is
// validated: malformed messages are logged and dropped, never panic.
func (r *raft) Step(m Message) error {
	switch {
	case m.Term == 0:
		// Local message or a proposal/read that carries no term.
	case m.Term > r.Term:
		if (m.Type == MsgVote || m.Type == MsgPreVote) && r.leaseRefusesVote(m) {
			return nil
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote carries a future term; it never changes ours.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted pre-vote carries the term we would campaign in; we
			// adopt it only by winning the pre-vote and campaigning.
		default:
			r.logger.Infof("raft: %x [term %d] received %s with higher term %d from %x", r.id, r.Term, m.Type, m.Term, m.From)
			if m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap {
				r.becomeFollower(m.Term, m.From)
			} else {
				r.becomeFollower(m.Term, None)
			}
		}
	case m.Term < r.Term:
		if (r.checkQuorum || r.preVote) && (m.Type == MsgHeartbeat || m.Type == MsgApp) {
			// A stale leader (e.g. returning from a partition) learns our term
			// from this response and steps down; otherwise a node with a higher
			// term could be stuck forever with pre-vote on.
			r.send(Message{To: m.From, Type: MsgAppResp})
		} else if m.Type == MsgPreVote || m.Type == MsgVote {
			// Raft figure 2: the reply carries our term so a candidate that
			// fell behind catches up. Without it a stale candidate that no
			// one else talks to (e.g. outside the others' configuration) can
			// trail the other candidates' terms forever.
			r.send(r.voteRejection(m))
		} else {
			r.logger.Debugf("raft: %x [term %d] ignoring %s from %x with lower term %d", r.id, r.Term, m.Type, m.From, m.Term)
		}
		return nil
	}

	switch m.Type {
	case MsgHup:
		if r.preVote {
			r.hup(campaignPreElection)
		} else {
			r.hup(campaignElection)
		}
	case MsgVote, MsgPreVote:
		r.handleVoteRequest(m)
	default:
		if (m.Type == MsgVoteResp || m.Type == MsgPreVoteResp) && m.Reject && r.state != StateLeader {
			r.maybeCommitFromHint(m)
		}
		return r.step(r, m)
	}
	return nil
}

func stepLeader(r *raft, m Message) error {
	switch m.Type {
	case MsgBeat:
		r.bcastHeartbeat()
		return nil
	case MsgCheckQuorum:
		r.checkQuorumActive()
		return nil
	case MsgProp:
		return r.leaderPropose(m)
	case MsgReadIndex:
		return r.leaderReadIndex(m)
	}

	pr := r.progress(m.From)
	if pr == nil {
		r.logger.Debugf("raft: %x no progress for %x, dropping %s", r.id, m.From, m.Type)
		return nil
	}
	switch m.Type {
	case MsgAppResp:
		r.handleAppendResponse(pr, m)
	case MsgHeartbeatResp:
		r.handleHeartbeatResponse(pr, m)
	case MsgSnapStatus:
		r.handleSnapStatus(pr, m)
	case MsgUnreachable:
		if pr.state == ProgressReplicate {
			pr.becomeProbe()
		}
	case MsgTransferLeader:
		r.leaderTransfer(pr)
	}
	return nil
}

func stepCandidate(r *raft, m Message) error {
	myVoteResp := MsgVoteResp
	if r.state == StatePreCandidate {
		myVoteResp = MsgPreVoteResp
	}
	switch m.Type {
	case MsgProp:
		r.logger.Debugf("raft: %x no leader at term %d; dropping proposal", r.id, r.Term)
		return errNoLeaderDropped
	case MsgApp:
		r.becomeFollower(m.Term, m.From)
		r.handleAppendEntries(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.becomeFollower(m.Term, m.From)
		r.handleSnapshot(m)
	case myVoteResp:
		granted, rejected, res := r.poll(m.From, m.Type, !m.Reject)
		r.logger.Infof("raft: %x has received %d %s votes and %d rejections", r.id, granted, m.Type, rejected)
		switch res {
		case voteWon:
			if r.state == StatePreCandidate {
				r.campaign(campaignElection)
			} else {
				r.becomeLeader()
				r.bcastAppend()
			}
		case voteLost:
			r.becomeFollower(r.Term, None)
		}
	case MsgTimeoutNow:
		r.logger.Debugf("raft: %x [term %d state %v] ignoring MsgTimeoutNow from %x", r.id, r.Term, r.state, m.From)
	case MsgReadIndex:
		r.logger.Debugf("raft: %x no leader at term %d; dropping read index", r.id, r.Term)
	}
	return nil
}

func stepFollower(r *raft, m Message) error {
	switch m.Type {
	case MsgProp:
		if r.lead == None {
			r.logger.Debugf("raft: %x no leader at term %d; dropping proposal", r.id, r.Term)
			return errNoLeaderDropped
		}
		if r.disableProposalForwarding {
			return ErrProposalDropped
		}
		m.To = r.lead
		// The entries must not alias the caller's scratch buffer.
		m.Entries = append([]Entry(nil), m.Entries...)
		r.send(m)
	case MsgApp:
		r.heardFromLeader(m.From)
		r.handleAppendEntries(m)
	case MsgHeartbeat:
		r.heardFromLeader(m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.heardFromLeader(m.From)
		r.handleSnapshot(m)
	case MsgTransferLeader:
		if r.lead == None {
			r.logger.Infof("raft: %x no leader at term %d; dropping leader transfer", r.id, r.Term)
			return nil
		}
		m.To = r.lead
		r.send(m)
	case MsgTimeoutNow:
		r.handleTimeoutNow(m)
	case MsgReadIndex:
		if r.lead == None {
			r.logger.Infof("raft: %x no leader at term %d; dropping read index", r.id, r.Term)
			return nil
		}
		m.To = r.lead
		r.send(m)
	case MsgReadIndexResp:
		r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context})
	}
	return nil
}

func (r *raft) softState() SoftState { return SoftState{Lead: r.lead, RaftState: r.state} }

func (r *raft) hardState() HardState {
	return HardState{Term: r.Term, Vote: r.Vote, Commit: r.raftLog.committed}
}
