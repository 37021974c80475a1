package raft

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// campaignType distinguishes the kinds of election a node can start.
type campaignType uint8

const (
	campaignPreElection campaignType = iota // thesis §9.6
	campaignElection                        // Raft §5.2
	campaignTransfer                        // thesis §3.10: caused by MsgTimeoutNow
)

// transferContext marks votes requested because of leadership transfer;
// they bypass the check-quorum lease (thesis §3.10, §9.6).
var transferContext = []byte("transfer")

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
	// startupLease: with lease-based reads, a node that just started
	// refuses votes for one election timeout as if it had heard from a
	// leader — it may have, before a restart, and that leader may be
	// serving reads from its lease.
	startupLease              bool
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
		rand:                      newPRNG(c.Seed, c.ID),
	}
	if r.maxMsgSize == 0 {
		r.maxMsgSize = 1 << 20
	}
	if r.maxInflight == 0 {
		r.maxInflight = 256
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
		// restart: replay them so the configuration is as of Applied.
		if err := r.replayConfChanges(snapIndex+1, c.Applied+1); err != nil {
			return nil, err
		}
		rl.appliedTo(c.Applied)
	}
	r.becomeFollower(r.Term, None)
	r.startupLease = r.checkQuorum && c.ReadOnlyOption == ReadOnlyLeaseBased
	r.logger.Infof("raft: %x starting: term=%d vote=%x commit=%d applied=%d last=%d snapshot=%d voters=%v learners=%v",
		r.id, r.Term, r.Vote, rl.committed, rl.applied, last, snapIndex, cs.Voters, cs.Learners)
	return r, nil
}

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

// ---- membership bookkeeping ----

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

// committedIndex returns the highest index replicated on a quorum of
// voters (0 with no voters).
func (r *raft) committedIndex() uint64 {
	if r.voters == 0 {
		return 0
	}
	buf := r.matchBuf[:0]
	for _, pr := range r.prs {
		if !pr.isLearner {
			buf = append(buf, pr.match)
		}
	}
	r.matchBuf = buf
	// Insertion sort, descending: n is tiny and this allocates nothing.
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && buf[j] > buf[j-1]; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	return buf[r.quorum()-1]
}

type voteResult uint8

const (
	votePending voteResult = iota
	voteWon
	voteLost
)

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

// ---- sending ----

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

// maybeSendAppend sends one MsgApp (or MsgSnap) to pr if it is not paused
// and has something to receive (or sendIfEmpty). It returns whether a
// message was sent.
func (r *raft) maybeSendAppend(pr *progress, sendIfEmpty bool) bool {
	if pr.isPaused() {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, errt := r.raftLog.term(prevIndex)
	var ents []Entry
	var erre error
	if errt == nil {
		ents, erre = r.raftLog.entries(pr.next, r.maxMsgSize)
	}
	if errt != nil || erre != nil {
		return r.maybeSendSnapshot(pr)
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	var size uint64
	for i := range ents {
		size += ents[i].Size()
	}
	r.send(Message{
		To:      pr.id,
		Type:    MsgApp,
		Index:   prevIndex,
		LogTerm: prevTerm,
		Entries: ents,
		Commit:  r.raftLog.committed,
	})
	last := prevIndex
	if n := len(ents); n > 0 {
		last = ents[n-1].Index
	}
	pr.sentEntries(len(ents), last, size)
	pr.sentCommitIndex(r.raftLog.committed)
	return true
}

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

// sendAppendAll sends to pr until its window is full or it is caught up.
func (r *raft) sendAppendAll(pr *progress, sendIfEmpty bool) {
	if !r.maybeSendAppend(pr, sendIfEmpty) {
		return
	}
	for pr.state == ProgressReplicate && r.maybeSendAppend(pr, false) {
	}
}

// bcastAppend sends pending entries (or just the commit index) to every
// other member.
func (r *raft) bcastAppend() {
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendAppendAll(pr, true)
		}
	}
}

// commitAdvanced is called on the leader when its commit index advanced.
// Followers with entries to receive get them now, carrying the new commit
// index. Commit-only updates (empty MsgApps) wait for flushCommit, so
// that however many times the commit index advances between two Readys,
// a follower gets at most one of them, and none if it receives entries
// (which carry the commit index) in the meantime.
func (r *raft) commitAdvanced() {
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendAppendAll(pr, false)
		}
	}
	r.commitUnsent = true
}

// hasUnsentCommit reports whether flushCommit would send a message.
func (r *raft) hasUnsentCommit() bool {
	if !r.commitUnsent || r.state != StateLeader {
		return false
	}
	for _, pr := range r.prs {
		if pr.id != r.id && pr.canBumpCommit(r.raftLog.committed) && !pr.isPaused() {
			return true
		}
	}
	return false
}

// flushCommit sends an (empty) MsgApp carrying the commit index to every
// follower that has not been sent it and could raise its own commit
// index with it. A follower that is paused now learns it from the reply
// to its next ack, or from a heartbeat.
func (r *raft) flushCommit() {
	if !r.commitUnsent {
		return
	}
	r.commitUnsent = false
	if r.state != StateLeader {
		return
	}
	for _, pr := range r.prs {
		if pr.id != r.id && pr.canBumpCommit(r.raftLog.committed) {
			r.maybeSendAppend(pr, true)
		}
	}
}

func (r *raft) sendHeartbeat(pr *progress, ctx []byte) {
	// Never tell a follower to commit past what it is known to hold: its
	// log after match may still disagree with ours.
	commit := min(pr.match, r.raftLog.committed)
	r.send(Message{
		To:      pr.id,
		Type:    MsgHeartbeat,
		Commit:  commit,
		Index:   r.leaderTicks + 1,
		Context: ctx,
	})
	pr.sentCommitIndex(commit)
}

func (r *raft) bcastHeartbeat() {
	r.bcastHeartbeatWithCtx(r.readOnly.lastPendingRequestCtx())
}

func (r *raft) bcastHeartbeatWithCtx(ctx []byte) {
	for _, pr := range r.prs {
		if pr.id != r.id {
			r.sendHeartbeat(pr, ctx)
		}
	}
}

// ---- role transitions ----

func (r *raft) reset(term uint64) {
	if r.Term != term {
		r.Term = term
		r.Vote = None
	}
	r.lead = None
	r.startupLease = false
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
	r.logger.Infof("raft: %x starting a new election at term %d", r.id, r.Term)
	r.campaign(t)
}

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

// ---- ticks ----

// tickElection is the follower/candidate clock: campaign once the
// randomized election timeout passes without hearing from a leader.
func (r *raft) tickElection() {
	r.electionElapsed++
	if r.electionElapsed >= r.electionTimeout {
		r.startupLease = false
	}
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
		if r.state == StateLeader && r.leadTransferee != None {
			r.logger.Infof("raft: %x aborting transfer to %x: it did not take over within an election timeout", r.id, r.leadTransferee)
			r.abortLeaderTransfer()
		}
	}
	if r.state != StateLeader {
		return
	}
	if r.heartbeatElapsed >= r.heartbeatTimeout {
		r.heartbeatElapsed = 0
		_ = r.Step(Message{From: r.id, Type: MsgBeat})
	}
}

func (r *raft) abortLeaderTransfer() { r.leadTransferee = None }

// ---- appending and committing ----

// appendEntry assigns term and index to es and appends them to the
// leader's log. It returns false (appending nothing) if the uncommitted
// size limit would be exceeded.
func (r *raft) appendEntry(es ...Entry) bool {
	li := r.raftLog.lastIndex()
	var size uint64
	for i := range es {
		es[i].Term = r.Term
		es[i].Index = li + 1 + uint64(i)
		size += uint64(len(es[i].Data))
	}
	if r.maxUncommittedSize > 0 && r.uncommittedSize > 0 && size > 0 && r.uncommittedSize+size > r.maxUncommittedSize {
		r.logger.Debugf("raft: %x dropping proposal: uncommitted size limit %d reached", r.id, r.maxUncommittedSize)
		return false
	}
	r.uncommittedSize += size
	r.raftLog.append(es...)
	// The leader's own match advances only once the entries are durable
	// (RawNode.Advance), never here.
	return true
}

func (r *raft) reduceUncommittedSize(ents []Entry) {
	if r.state != StateLeader {
		return
	}
	var s uint64
	for i := range ents {
		s += uint64(len(ents[i].Data))
	}
	if s > r.uncommittedSize {
		r.uncommittedSize = 0
	} else {
		r.uncommittedSize -= s
	}
}

// maybeCommit advances the commit index to the highest index replicated
// on a quorum, but only if that entry is of the current term (Raft
// §5.4.2, figure 8): earlier entries are then committed with it.
func (r *raft) maybeCommit() bool {
	mci := r.committedIndex()
	if mci <= r.raftLog.committed {
		return false
	}
	t, err := r.raftLog.term(mci)
	if err != nil || t != r.Term {
		return false
	}
	r.raftLog.commitTo(mci)
	r.releasePendingReadIndexMessages()
	return true
}

func (r *raft) committedEntryInCurrentTerm() bool {
	t, err := r.raftLog.term(r.raftLog.committed)
	return err == nil && t == r.Term
}

// leaderSelfDurable is called when entries up to the stable index are
// durable on the leader: it counts itself towards commit.
func (r *raft) leaderSelfDurable() {
	if r.state != StateLeader {
		return
	}
	pr := r.progress(r.id)
	if pr == nil {
		return
	}
	if pr.maybeUpdate(min(r.raftLog.lastStableIndex(), r.raftLog.lastIndex())) && r.maybeCommit() {
		r.commitAdvanced()
	}
}

// ---- Step ----

// Step advances the state machine with message m. Network input is
// validated: malformed messages are logged and dropped, never panic.
func (r *raft) Step(m Message) error {
	switch {
	case m.Term == 0:
		// Local message or a proposal/read that carries no term.
	case m.Term > r.Term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			force := bytes.Equal(m.Context, transferContext)
			inLease := r.checkQuorum && (r.lead != None || r.startupLease) && r.electionElapsed < r.electionTimeout
			if !force && inLease {
				// Check-quorum (thesis §9.6): we heard from a live leader within
				// the minimum election timeout; a disruptive candidate is
				// ignored, neither adopting its term nor voting.
				r.logger.Infof("raft: %x [term %d] ignoring %s from %x at term %d: leader %x is live",
					r.id, r.Term, m.Type, m.From, m.Term, r.lead)
				return nil
			}
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

func stepLeader(r *raft, m Message) error {
	switch m.Type {
	case MsgBeat:
		r.bcastHeartbeat()
		return nil
	case MsgCheckQuorum:
		if !r.quorumActive() {
			r.logger.Warningf("raft: %x stepped down at term %d: no quorum heard from within an election timeout", r.id, r.Term)
			r.becomeFollower(r.Term, None)
		}
		for _, pr := range r.prs {
			if pr.id != r.id {
				pr.recentActive = false
			}
		}
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
		pr.recentActive = true
		pr.probeSent = false
		if pr.state == ProgressReplicate && pr.inflights.full() {
			// The window may be full of lost messages; make room for one.
			pr.inflights.freeFirst()
		}
		if pr.match < r.raftLog.lastIndex() {
			// Send even an empty probe: a follower whose next is past our last
			// index must be told where the log really diverges.
			r.maybeSendAppend(pr, true)
		}
		if m.Index <= r.leaderTicks+1 && m.Index > pr.heardTick {
			pr.heardTick = m.Index
		}
		if len(m.Context) > 0 {
			r.handleReadAck(m)
		}
	case MsgSnapStatus:
		if pr.state != ProgressSnapshot {
			return nil
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
	case MsgUnreachable:
		if pr.state == ProgressReplicate {
			pr.becomeProbe()
		}
	case MsgTransferLeader:
		r.leaderTransfer(pr)
	}
	return nil
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

func (r *raft) leaderPropose(m Message) error {
	if len(m.Entries) == 0 {
		r.logger.Debugf("raft: %x dropping empty proposal", r.id)
		return ErrProposalDropped
	}
	if r.progress(r.id) == nil {
		// Removed from the configuration.
		return ErrProposalDropped
	}
	if r.leadTransferee != None {
		r.logger.Debugf("raft: %x dropping proposal: transferring leadership to %x", r.id, r.leadTransferee)
		return ErrProposalDropped
	}
	if m.From != r.id {
		// A forwarded proposal: do not write into the sender's slice (the
		// transport may still hold it, e.g. for a duplicate delivery).
		m.Entries = append([]Entry(nil), m.Entries...)
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != EntryConfChange && e.Type != EntryNormal {
			r.logger.Warningf("raft: %x dropping proposal with unknown entry type %d", r.id, e.Type)
			return ErrProposalDropped
		}
		if e.Type != EntryConfChange {
			continue
		}
		var cc ConfChange
		reason := ""
		if err := cc.Unmarshal(e.Data); err != nil {
			reason = err.Error()
		} else if r.pendingConfIndex > r.raftLog.applied {
			reason = fmt.Sprintf("conf change at index %d is not applied yet (applied %d)", r.pendingConfIndex, r.raftLog.applied)
		} else if cc.NodeID == None {
			reason = "node id 0"
		} else if (cc.Type == ConfChangeRemoveNode || cc.Type == ConfChangeAddLearner) && r.isVoter(cc.NodeID) && r.voters == 1 {
			reason = "cannot remove or demote the last voter"
		}
		if reason != "" {
			r.logger.Infof("raft: %x refusing conf change: %s", r.id, reason)
			if len(m.Entries) == 1 {
				return ErrProposalDropped
			}
			*e = Entry{Type: EntryNormal}
			continue
		}
		r.pendingConfIndex = r.raftLog.lastIndex() + uint64(i) + 1
	}
	if !r.appendEntry(m.Entries...) {
		return ErrProposalDropped
	}
	r.bcastAppend()
	return nil
}

func (r *raft) handleAppendResponse(pr *progress, m Message) {
	pr.recentActive = true
	if m.Index > r.raftLog.lastIndex() {
		// We never sent an append at or past this index.
		r.logger.Warningf("raft: %x ignoring MsgAppResp from %x for index %d beyond our last index %d", r.id, m.From, m.Index, r.raftLog.lastIndex())
		return
	}
	if m.Reject {
		r.logger.Debugf("raft: %x received MsgAppResp(rejected, hint: (index %d, term %d)) from %x for index %d",
			r.id, m.RejectHint, m.LogTerm, m.From, m.Index)
		next := r.nextFromHint(pr, m)
		if pr.maybeDecrTo(m.Index, next) {
			r.logger.Debugf("raft: %x decreased progress of %x to next=%d", r.id, m.From, pr.next)
			r.maybeSendAppend(pr, false)
		}
		return
	}
	if pr.maybeUpdate(m.Index) || (pr.match == m.Index && pr.state == ProgressProbe && m.Index+1 == pr.next) {
		switch {
		case pr.state == ProgressProbe:
			pr.becomeReplicate()
		case pr.state == ProgressSnapshot && pr.match+1 >= r.raftLog.firstIndex():
			// The follower caught up by the snapshot (or by appends that
			// overtook it): resume normal replication.
			pr.becomeProbe()
			pr.becomeReplicate()
		case pr.state == ProgressReplicate:
			pr.inflights.freeLE(m.Index)
		}
		if r.maybeCommit() {
			// Followers learn the new commit index promptly.
			r.commitAdvanced()
		}
		// Fill the window with whatever the follower still lacks.
		r.sendAppendAll(pr, false)
		if pr.canBumpCommit(r.raftLog.committed) {
			// Nothing new to send, but the follower has not been told the
			// commit index up to what it now holds (e.g. it was a paused
			// probe when the commit advanced): tell it in the next Ready
			// rather than at the next heartbeat.
			r.commitUnsent = true
		}
		if m.From == r.leadTransferee && pr.match == r.raftLog.lastIndex() {
			r.logger.Infof("raft: %x sending MsgTimeoutNow to %x: its log is up to date", r.id, m.From)
			r.send(Message{To: m.From, Type: MsgTimeoutNow})
		}
	} else if pr.state == ProgressReplicate {
		pr.inflights.freeLE(m.Index)
	}
}

// nextFromHint turns a rejection's conflict hint into the next index to
// probe (Raft §5.3, thesis §5.3 optimisation): if we have entries of the
// follower's conflicting term, probe after our last one of it; otherwise
// skip the follower's whole term.
func (r *raft) nextFromHint(pr *progress, m Message) uint64 {
	if m.LogTerm == 0 {
		// The follower's log is shorter: its last index is the hint.
		return m.RejectHint + 1
	}
	if m.Index == 0 {
		return 1
	}
	j, t := r.raftLog.findConflictByTerm(m.Index-1, m.LogTerm, pr.match)
	if t == m.LogTerm {
		return j + 1
	}
	return max(m.RejectHint, 1)
}

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
		r.send(Message{To: to, Type: MsgTimeoutNow})
	} else {
		r.sendAppendAll(pr, true)
	}
}

// ---- reads (thesis §6.4) ----

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

// ---- candidate and follower ----

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
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppendEntries(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleHeartbeat(m)
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTransferLeader:
		if r.lead == None {
			r.logger.Infof("raft: %x no leader at term %d; dropping leader transfer", r.id, r.Term)
			return nil
		}
		m.To = r.lead
		r.send(m)
	case MsgTimeoutNow:
		r.logger.Infof("raft: %x [term %d] received MsgTimeoutNow from %x: campaigning for leadership transfer", r.id, r.Term, m.From)
		// Leadership transfer skips pre-vote: the current leader asked for it.
		r.hup(campaignTransfer)
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

// validAppend checks that the entries of MsgApp m are consecutive after
// m.Index with non-decreasing terms, none newer than the message.
func validAppend(m *Message) error {
	if m.Index > noLimit-uint64(len(m.Entries))-1 {
		return fmt.Errorf("index %d overflows", m.Index)
	}
	prevTerm := m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != m.Index+1+uint64(i) {
			return fmt.Errorf("entry %d has index %d, want %d", i, e.Index, m.Index+1+uint64(i))
		}
		if e.Term < prevTerm || e.Term > m.Term || e.Term == 0 {
			return fmt.Errorf("entry %d has term %d (previous %d, message term %d)", e.Index, e.Term, prevTerm, m.Term)
		}
		prevTerm = e.Term
	}
	return nil
}

// handleAppendEntries is the follower side of AppendEntries (Raft §5.3).
func (r *raft) handleAppendEntries(m Message) {
	if err := validAppend(&m); err != nil {
		r.logger.Errorf("raft: %x dropping malformed MsgApp from %x: %v", r.id, m.From, err)
		return
	}
	if m.Index < r.raftLog.committed {
		// Everything up to our commit index is known to match the leader.
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.committed})
		return
	}
	lastNew, ok, err := r.raftLog.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries)
	if err != nil {
		r.logger.Errorf("raft: %x dropping MsgApp from %x: %v", r.id, m.From, err)
		return
	}
	if ok {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: lastNew})
		return
	}
	// Mismatch at prevIndex: reply with the conflict hint.
	last := r.raftLog.lastIndex()
	resp := Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true}
	if m.Index > last {
		resp.RejectHint = last
		resp.LogTerm = 0
	} else {
		t, err := r.raftLog.term(m.Index)
		if err != nil {
			// Compacted below our snapshot: cannot happen since m.Index >=
			// committed >= snapshot index; answer with what we know.
			r.send(Message{To: m.From, Type: MsgAppResp, Index: r.raftLog.committed})
			return
		}
		// First index of term t, no lower than committed+1: everything up to
		// commit matches the leader, so the conflict is after it.
		first := m.Index
		floor := r.raftLog.committed + 1
		for first > floor {
			pt, err := r.raftLog.term(first - 1)
			if err != nil || pt != t {
				break
			}
			first--
		}
		resp.LogTerm = t
		resp.RejectHint = first
	}
	r.logger.Debugf("raft: %x [logterm %d, index %d] rejected MsgApp [logterm %d, index %d] from %x (hint %d/%d)",
		r.id, resp.LogTerm, m.Index, m.LogTerm, m.Index, m.From, resp.RejectHint, resp.LogTerm)
	r.send(resp)
}

func (r *raft) handleHeartbeat(m Message) {
	if m.Commit > r.raftLog.lastIndex() {
		r.logger.Warningf("raft: %x heartbeat from %x asks to commit %d beyond our last index %d; ignoring the commit",
			r.id, m.From, m.Commit, r.raftLog.lastIndex())
	} else {
		r.raftLog.commitTo(m.Commit)
	}
	// Echo the leader's heartbeat stamp: it dates our vote-refusing lease.
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Index: m.Index, Context: m.Context})
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

// ---- membership (Raft §6, applied one change at a time) ----

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
		r.send(Message{To: best.id, Type: MsgTimeoutNow})
	}
	r.logger.Infof("raft: %x removed from the configuration; stepping down at term %d", r.id, r.Term)
	r.becomeFollower(r.Term, None)
}

// ---- soft/hard state ----

func (r *raft) softState() SoftState { return SoftState{Lead: r.lead, RaftState: r.state} }

func (r *raft) hardState() HardState {
	return HardState{Term: r.Term, Vote: r.Vote, Commit: r.raftLog.committed}
}
