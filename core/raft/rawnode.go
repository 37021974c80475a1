package raft

import (
	"errors"
	"fmt"
)

// Config configures a RawNode. Zero values of the optional fields select
// the documented defaults.
type Config struct {
	// ID is this node's id; it must not be 0 (None).
	ID uint64
	// ElectionTick is T: a follower that hears from no leader for a random
	// number of ticks in [T, 2T) starts an election (Raft §5.2). It must be
	// greater than HeartbeatTick; 10 * HeartbeatTick is usual.
	ElectionTick int
	// HeartbeatTick is H: the leader sends heartbeats every H ticks.
	HeartbeatTick int
	// Storage is the durable log. The driver writes it (persisting each
	// Ready) before calling Advance. NB: a LogReader error other than
	// ErrCompacted, ErrUnavailable or ErrSnapshotTemporarilyUnavailable
	// during Step, Tick, Ready or Advance panics with a message naming the
	// call (the node cannot go on safely); NewRawNode returns such errors.
	Storage LogReader
	// Applied is the last applied index when restarting (0: the snapshot
	// index). Membership changes in (snapshot index, Applied] are replayed
	// from the log, so Storage's ConfState must be the one as of its
	// snapshot (or the bootstrap configuration).
	Applied uint64
	// Seed seeds the node's own PRNG (election timeouts). The node ID is
	// mixed in, so all nodes may share one seed.
	Seed int64
	// MaxSizePerMsg bounds the entry bytes in one MsgApp (at least one
	// entry is always sent). The default is 1 MiB.
	MaxSizePerMsg uint64
	// MaxCommittedSizePerReady bounds the CommittedEntries of one Ready
	// (at least one entry). The default is unlimited.
	MaxCommittedSizePerReady uint64
	// MaxUncommittedEntriesSize bounds the payload bytes of the leader's
	// uncommitted tail; proposals beyond it fail with ErrProposalDropped.
	// 0 means unlimited.
	MaxUncommittedEntriesSize uint64
	// MaxInflightMsgs bounds the unacknowledged MsgApps per follower in
	// replicate state. The default is 256.
	MaxInflightMsgs int
	// MaxInflightBytes bounds their total entry bytes. 0 means unlimited.
	MaxInflightBytes uint64
	// DisablePreVote turns off the pre-vote phase (thesis §9.6), which is
	// on by default.
	DisablePreVote bool
	// DisableCheckQuorum turns off check-quorum (thesis §6.2, §9.6), which
	// is on by default: a leader that has not heard from a quorum within an
	// election timeout steps down, and a follower that heard from a leader
	// within the election timeout ignores vote requests.
	DisableCheckQuorum bool
	// DisableProposalForwarding makes followers drop proposals
	// (ErrProposalDropped) instead of forwarding them to the leader.
	DisableProposalForwarding bool
	// ReadOnlyOption selects how ReadIndex is confirmed. The default is
	// ReadOnlySafe; ReadOnlyLeaseBased requires check-quorum.
	ReadOnlyOption ReadOnlyOption
	// LeaseDriftPercent is how much faster, in percent, any node's clock
	// (its tick rate) may run than any other's for ReadOnlyLeaseBased to be
	// safe: the leader's lease is shortened to allow for it (see
	// ReadOnlyLeaseBased). 0 selects the default, 10; at most 100.
	LeaseDriftPercent int
	// Logger receives the core's log lines. nil discards them.
	Logger Logger
}

func (c *Config) validate() error {
	switch {
	case c == nil:
		return errors.New("raft: nil Config")
	case c.ID == None:
		return errors.New("raft: Config.ID must not be 0")
	case c.HeartbeatTick <= 0:
		return fmt.Errorf("raft: Config.HeartbeatTick must be positive, got %d", c.HeartbeatTick)
	case c.ElectionTick <= c.HeartbeatTick:
		return fmt.Errorf("raft: Config.ElectionTick (%d) must be greater than HeartbeatTick (%d)", c.ElectionTick, c.HeartbeatTick)
	case c.Storage == nil:
		return errors.New("raft: Config.Storage must not be nil")
	case c.MaxInflightMsgs < 0:
		return fmt.Errorf("raft: Config.MaxInflightMsgs must not be negative, got %d", c.MaxInflightMsgs)
	case c.ReadOnlyOption > ReadOnlyLeaseBased:
		return fmt.Errorf("raft: unknown Config.ReadOnlyOption %d", c.ReadOnlyOption)
	case c.ReadOnlyOption == ReadOnlyLeaseBased && c.DisableCheckQuorum:
		return errors.New("raft: ReadOnlyLeaseBased requires check-quorum (DisableCheckQuorum must be false)")
	case c.LeaseDriftPercent < 0 || c.LeaseDriftPercent > 100:
		return fmt.Errorf("raft: Config.LeaseDriftPercent must be in [0, 100], got %d", c.LeaseDriftPercent)
	}
	return nil
}

// Ready is the output of one step of the state machine. The driver must
// handle it in this order:
//
//  1. persist Snapshot (if not empty), HardState (if not empty) and
//     Entries, durably if MustSync;
//  2. AFTER that, send Messages;
//  3. apply CommittedEntries in order (EntryConfChange -> ApplyConfChange),
//     and serve ReadStates once applied >= ReadState.Index;
//  4. call Advance(rd) before the next Ready.
//
// The slices are owned by the caller after Ready returns, but the Entries
// they contain share Data with the log: do not modify them.
type Ready struct {
	// SoftState is nil when unchanged since the last Ready.
	*SoftState
	// HardState is empty when unchanged since the last Ready.
	HardState
	// ReadStates answer ReadIndex requests.
	ReadStates []ReadState
	// Entries must be appended to storage (replacing any conflicting
	// suffix) BEFORE Messages are sent.
	Entries []Entry
	// Snapshot must be persisted and installed (storage and state machine)
	// when not empty.
	Snapshot Snapshot
	// CommittedEntries are applied in order, each exactly once.
	CommittedEntries []Entry
	// Messages are sent AFTER the rest of this Ready is durable.
	Messages []Message
	// MustSync says whether HardState/Entries must be fsynced.
	MustSync bool
}

// Status is a point-in-time summary of a node.
type Status struct {
	ID uint64
	HardState
	SoftState
	// Applied is the last index the driver reported applied.
	Applied uint64
	// LastIndex is the index of the last entry in the log; SnapshotIndex is
	// the index of the latest snapshot (first index - 1).
	LastIndex     uint64
	SnapshotIndex uint64
	// ConfState is the configuration currently in effect.
	ConfState ConfState
	// Progress is the leader's view of every member (nil on non-leaders).
	Progress map[uint64]ProgressStatus
	// LeadTransferee is the target of an ongoing leadership transfer.
	LeadTransferee uint64
}

// RawNode is the thread-unsafe interface to the Raft state machine: a
// single goroutine (the driver) must make every call.
type RawNode struct {
	r        *raft
	prevSoft SoftState
	prevHard HardState
}

// NewRawNode creates a node from cfg, restoring its state from
// cfg.Storage. It returns an error if the configuration is invalid or the
// stored state is inconsistent (for example a commit index beyond the last
// log index).
func NewRawNode(cfg *Config) (*RawNode, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r, err := newRaft(cfg)
	if err != nil {
		return nil, err
	}
	rn := &RawNode{r: r}
	rn.prevSoft = r.softState()
	// Compare against what is durable, so state created at start (the
	// bootstrap entries' term and commit) is persisted by the first Ready.
	hs, _, err := cfg.Storage.InitialState()
	if err != nil {
		return nil, fmt.Errorf("raft: storage InitialState: %w", err)
	}
	rn.prevHard = hs
	return rn, nil
}

// Tick advances the logical clock by one tick.
func (rn *RawNode) Tick() { rn.r.tick() }

// Campaign makes the node start an election now (with pre-vote unless it
// is disabled). It returns nil even if the node may not campaign (it is a
// leader, a learner or not a member, or, with ReadOnlyLeaseBased and
// other voters, it heard from a leader within the election timeout: that
// leader's lease counts on this node's vote); those cases are logged.
// Campaigning does not end the node's promise to ignore other candidates
// for an election timeout after hearing from a leader.
func (rn *RawNode) Campaign() error {
	return rn.r.Step(Message{Type: MsgHup})
}

// Propose proposes data to be appended to the log. On a follower the
// proposal is forwarded to the leader. It returns an error matching
// ErrProposalDropped if the proposal certainly was not appended (and
// ErrNoLeader too when no leader is known). A nil error does not mean the
// entry will commit. The log owns data afterwards.
func (rn *RawNode) Propose(data []byte) error {
	r := rn.r
	r.propBuf = append(r.propBuf[:0], Entry{Data: data})
	err := r.Step(Message{Type: MsgProp, From: r.id, Entries: r.propBuf})
	r.propBuf[0] = Entry{}
	return err
}

// ProposeBatch proposes several entries in one step, which is much cheaper
// per entry than calling Propose for each. The batch is accepted or
// dropped as a whole.
func (rn *RawNode) ProposeBatch(datas [][]byte) error {
	if len(datas) == 0 {
		return nil
	}
	r := rn.r
	buf := r.propBuf[:0]
	for _, d := range datas {
		buf = append(buf, Entry{Data: d})
	}
	r.propBuf = buf
	err := r.Step(Message{Type: MsgProp, From: r.id, Entries: buf})
	clear(buf)
	return err
}

// ProposeConfChange proposes a membership change. The leader refuses it
// (ErrProposalDropped) while an earlier change is not yet applied.
func (rn *RawNode) ProposeConfChange(cc ConfChange) error {
	r := rn.r
	return r.Step(Message{Type: MsgProp, From: r.id, Entries: []Entry{{Type: EntryConfChange, Data: cc.Marshal()}}})
}

// Step feeds a message received from the network. It returns an error for
// local message types and for responses from unknown nodes; malformed
// messages are otherwise logged and dropped. Step never panics on bad
// input.
//
// Ownership: Step keeps references to m.Entries' Data, m.Context and
// *m.Snapshot (they end up in the log, in Ready.Messages and in
// ReadStates); the caller must not modify or reuse them afterwards.
func (rn *RawNode) Step(m Message) error {
	if m.Type >= numMessageTypes {
		rn.r.logger.Warningf("raft: %x dropping message of unknown type %d from %x", rn.r.id, m.Type, m.From)
		return fmt.Errorf("raft: unknown message type %d", m.Type)
	}
	if IsLocalMsg(m.Type) {
		return ErrStepLocalMsg
	}
	if m.From == None {
		rn.r.logger.Warningf("raft: %x dropping %s without a sender", rn.r.id, m.Type)
		return fmt.Errorf("raft: %s from node 0", m.Type)
	}
	if m.From == rn.r.id && m.Type != MsgTransferLeader {
		rn.r.logger.Warningf("raft: %x dropping %s from itself", rn.r.id, m.Type)
		return fmt.Errorf("raft: %s from this node", m.Type)
	}
	if m.To != None && m.To != rn.r.id {
		rn.r.logger.Warningf("raft: %x dropping %s addressed to %x", rn.r.id, m.Type, m.To)
		return fmt.Errorf("raft: %s addressed to %d, not %d", m.Type, m.To, rn.r.id)
	}
	if m.Term == 0 && m.Type != MsgProp && m.Type != MsgReadIndex && m.Type != MsgTransferLeader {
		// Only forwarded requests travel without a term.
		rn.r.logger.Warningf("raft: %x dropping %s from %x without a term", rn.r.id, m.Type, m.From)
		return fmt.Errorf("raft: %s from %d has term 0", m.Type, m.From)
	}
	if IsResponseMsg(m.Type) && rn.r.progress(m.From) == nil {
		return ErrStepPeerNotFound
	}
	return rn.r.Step(m)
}

// ApplyConfChange applies a committed membership change; the driver calls
// it when it applies the EntryConfChange, in log order. It returns the
// resulting configuration, which the driver stores with its next
// snapshot.
func (rn *RawNode) ApplyConfChange(cc ConfChange) *ConfState {
	cs := rn.r.applyConfChange(cc)
	return &cs
}

// ReadIndex requests a linearizable read point (thesis §6.4). The answer
// arrives in a later Ready as a ReadState with RequestCtx == rctx; serve
// the read once the applied index reaches its Index. rctx must be
// non-empty and unique among outstanding reads. Requests may be silently
// dropped (no leader, leadership change): the caller retries on timeout.
func (rn *RawNode) ReadIndex(rctx []byte) {
	_ = rn.r.Step(Message{Type: MsgReadIndex, Context: rctx})
}

// TransferLeader asks the leader to hand leadership to transferee
// (thesis §3.10). On a follower the request is forwarded to the leader.
func (rn *RawNode) TransferLeader(transferee uint64) {
	if transferee == None {
		return
	}
	_ = rn.r.Step(Message{Type: MsgTransferLeader, From: transferee})
}

// ReportUnreachable tells the leader that the last message to id was not
// delivered; replication to id falls back to probing.
func (rn *RawNode) ReportUnreachable(id uint64) {
	_ = rn.r.Step(Message{Type: MsgUnreachable, From: id})
}

// ReportSnapshot tells the leader the outcome of sending a snapshot to id.
// Until it is called, appends to id stay paused.
func (rn *RawNode) ReportSnapshot(id uint64, status SnapshotStatus) {
	_ = rn.r.Step(Message{Type: MsgSnapStatus, From: id, Reject: status == SnapshotFailure})
}

// HasReady reports whether Ready would return anything.
func (rn *RawNode) HasReady() bool {
	r := rn.r
	if r.softState() != rn.prevSoft {
		return true
	}
	if hs := r.hardState(); !hs.IsEmpty() && hs != rn.prevHard {
		return true
	}
	if r.raftLog.unstable.nextSnapshot() != nil {
		return true
	}
	return len(r.msgs) > 0 || r.hasUnsentCommit() || len(r.readStates) > 0 ||
		len(r.raftLog.unstable.nextEntries()) > 0 || r.raftLog.hasNextCommittedEnts()
}

// Ready returns everything that happened since the last Ready. Call
// Advance with it once it has been handled.
func (rn *RawNode) Ready() Ready {
	r := rn.r
	r.flushCommit()
	rl := r.raftLog
	rd := Ready{
		Entries:          rl.unstable.nextEntries(),
		CommittedEntries: rl.nextCommittedEnts(),
		Messages:         r.msgs,
		ReadStates:       r.readStates,
	}
	if ss := r.softState(); ss != rn.prevSoft {
		rd.SoftState = &ss
		rn.prevSoft = ss
	}
	if hs := r.hardState(); hs != rn.prevHard {
		rd.HardState = hs
		rd.MustSync = hs.Term != rn.prevHard.Term || hs.Vote != rn.prevHard.Vote
		rn.prevHard = hs
	}
	if s := rl.unstable.nextSnapshot(); s != nil {
		rd.Snapshot = *s
		rd.MustSync = true
	}
	if len(rd.Entries) > 0 {
		rd.MustSync = true
	}
	if n := len(rd.CommittedEntries); n > 0 {
		rl.applying = rd.CommittedEntries[n-1].Index
		r.reduceUncommittedSize(rd.CommittedEntries)
	}
	rl.unstable.acceptInProgress()
	r.msgsCap = min(len(r.msgs), 1024)
	r.msgs = nil
	r.readStates = nil
	return rd
}

// Advance tells the node that rd (the last Ready) has been persisted,
// sent and applied.
func (rn *RawNode) Advance(rd Ready) {
	r := rn.r
	rl := r.raftLog
	if !rd.Snapshot.IsEmpty() {
		rl.unstable.stableSnapTo(rd.Snapshot.Metadata.Index)
		rl.appliedTo(rd.Snapshot.Metadata.Index)
	}
	if n := len(rd.Entries); n > 0 {
		e := rd.Entries[n-1]
		rl.unstable.stableTo(e.Index, e.Term)
	}
	if n := len(rd.CommittedEntries); n > 0 {
		rl.appliedTo(rd.CommittedEntries[n-1].Index)
	}
	if len(rd.Entries) > 0 || !rd.Snapshot.IsEmpty() {
		r.leaderSelfDurable()
	}
}

// Status returns the node's current status.
func (rn *RawNode) Status() Status {
	r := rn.r
	s := Status{
		ID:             r.id,
		HardState:      r.hardState(),
		SoftState:      r.softState(),
		Applied:        r.raftLog.applied,
		LastIndex:      r.raftLog.lastIndex(),
		SnapshotIndex:  r.raftLog.firstIndex() - 1,
		ConfState:      r.confState(),
		LeadTransferee: r.leadTransferee,
	}
	if r.state == StateLeader {
		s.Progress = make(map[uint64]ProgressStatus, len(r.prs))
		for _, pr := range r.prs {
			s.Progress[pr.id] = ProgressStatus{
				Match: pr.match, Next: pr.next, State: pr.state,
				PendingSnapshot: pr.pendingSnapshot, RecentActive: pr.recentActive,
				Paused: pr.isPaused(), IsLearner: pr.isLearner, Inflight: pr.inflights.count,
			}
		}
	}
	return s
}
