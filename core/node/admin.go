package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Status is a point-in-time view of the node.
type Status struct {
	ID uint64
	// Role is "leader", "follower", "candidate" (also pre-candidate),
	// "learner", or "stopped".
	Role          string
	Term          uint64
	Lead          uint64
	Commit        uint64
	Applied       uint64
	LastIndex     uint64
	SnapshotIndex uint64
	// FSM is the state machine's info as of its last start; its Applied
	// field is not kept current (use Applied).
	FSM FSMInfo
	// FSMVersion is the active FSM version and FSMVersionIndex the index of
	// the entry that activated it (0: the initial version 1).
	FSMVersion      uint32
	FSMVersionIndex uint64
	// Members is the configuration in effect (raft's view), with addresses.
	Members []Member
	// Progress is the leader's view of each member (nil on non-leaders).
	Progress map[uint64]Progress
	// SendingSnapshot lists followers the leader is streaming a snapshot to.
	SendingSnapshot []uint64
	// Sessions is the number of client sessions the node keeps
	// (sessions.go) as of Applied.
	Sessions int
	// Ready reports whether the restart replay is over.
	Ready bool
	// Halted is set while apply is halted (halt.go).
	Halted *Halt
	// Checkpoint is the last checkpoint whose verdict this node applied
	// and matched (checkpoint.go); nil if none since it started.
	Checkpoint *Checkpoint
	Metrics    Metrics
}

// Member is one member of the configuration.
type Member struct {
	Peer
	Learner bool
}

// Progress is the leader's replication state for one member.
type Progress struct {
	Match, Next  uint64
	State        string // "probe", "replicate", "snapshot"
	RecentActive bool
	Learner      bool
}

// Status returns the node's status. On a stopped node it returns what was
// last known with Role "stopped".
func (n *Node) Status(ctx context.Context) (Status, error) {
	var st Status
	err := n.do(ctx, func() { st = n.loopStatus() })
	if errors.Is(err, ErrStopped) {
		st = Status{ID: n.id, Role: "stopped", Term: n.term.Load(), Commit: n.commit.Load(),
			Applied: n.applied.Load(), LastIndex: n.lastIdx.Load(), SnapshotIndex: n.snapIdx.Load()}
		n.fillApplierStatus(&st)
		return st, nil
	}
	return st, err
}

func (n *Node) fillApplierStatus(st *Status) {
	a := n.app
	a.statusMu.Lock()
	st.FSM = a.statusInfo
	st.FSMVersion, st.FSMVersionIndex = a.statusMeta.version, a.statusMeta.versionIndex
	a.statusMu.Unlock()
	st.Sessions = int(a.sessionCount.Load())
	select {
	case <-n.readyc:
		st.Ready = true
	default:
	}
	st.Halted = n.Halted()
	st.Checkpoint = n.ck.lastAgreed()
	st.Metrics = n.Metrics()
}

// loopStatus runs on the loop goroutine.
func (n *Node) loopStatus() Status {
	rs := n.rn.Status()
	st := Status{
		ID: n.id, Term: rs.Term, Lead: rs.Lead, Commit: rs.Commit,
		Applied: n.applied.Load(), LastIndex: rs.LastIndex, SnapshotIndex: n.snapIdx.Load(),
	}
	switch rs.RaftState {
	case raft.StateLeader:
		st.Role = "leader"
	case raft.StateCandidate, raft.StatePreCandidate:
		st.Role = "candidate"
	default:
		st.Role = "follower"
	}
	st.Members = n.members(rs.ConfState)
	for _, m := range st.Members {
		if m.ID == n.id && m.Learner {
			st.Role = "learner"
		}
	}
	if rs.Progress != nil {
		st.Progress = make(map[uint64]Progress, len(rs.Progress))
		for id, p := range rs.Progress {
			st.Progress[id] = Progress{Match: p.Match, Next: p.Next, State: progressState(p.State),
				RecentActive: p.RecentActive, Learner: p.IsLearner}
			if p.State == raft.ProgressSnapshot || n.sendingSnap[id] {
				st.SendingSnapshot = append(st.SendingSnapshot, id)
			}
		}
		slices.Sort(st.SendingSnapshot)
	}
	n.fillApplierStatus(&st)
	return st
}

func progressState(s raft.ProgressState) string {
	switch s {
	case raft.ProgressProbe:
		return "probe"
	case raft.ProgressReplicate:
		return "replicate"
	case raft.ProgressSnapshot:
		return "snapshot"
	}
	return fmt.Sprint(s)
}

func (n *Node) members(cs raft.ConfState) []Member {
	var ms []Member
	add := func(id uint64, learner bool) {
		p := n.book[id]
		p.ID = id
		ms = append(ms, Member{Peer: p, Learner: learner})
	}
	for _, id := range cs.Voters {
		add(id, false)
	}
	for _, id := range cs.Learners {
		add(id, true)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmpU64(a.ID, b.ID) })
	return ms
}

// Members returns the configuration in effect, with addresses.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := n.do(ctx, func() { ms = n.members(n.rn.Status().ConfState) })
	return ms, err
}

// AddMember adds a voter (Raft §6 single-server change; prefer AddLearner
// then Promote for a node that is far behind) and waits until the change
// is applied on this node.
func (n *Node) AddMember(ctx context.Context, p Peer) error {
	return n.confChange(ctx, raft.ConfChangeAddNode, p)
}

// AddLearner adds a non-voting member that receives the log.
func (n *Node) AddLearner(ctx context.Context, p Peer) error {
	return n.confChange(ctx, raft.ConfChangeAddLearner, p)
}

// Promote makes learner id a voter, keeping its addresses.
func (n *Node) Promote(ctx context.Context, id uint64) error {
	return n.confChange(ctx, raft.ConfChangeAddNode, Peer{ID: id})
}

// RemoveMember removes a voter or learner.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.confChange(ctx, raft.ConfChangeRemoveNode, Peer{ID: id})
}

func (n *Node) confChange(ctx context.Context, t raft.ConfChangeType, p Peer) error {
	if p.ID == 0 {
		return NotApplied(fmt.Errorf("%w: member id must be > 0", ErrBadRequest))
	}
	req := n.reqSeq.Add(1)
	c, err := jsonMarshal(ccContext{RaftAddr: p.RaftAddr, APIAddr: p.APIAddr, Proposer: n.id, Req: req})
	if err != nil {
		return err
	}
	_, err = n.wait(ctx, &proposal{req: req, cc: &confProposal{cc: raft.ConfChange{Type: t, NodeID: p.ID, Context: c}}})
	return err
}

// ActivateFSMVersion commits an entry that switches every replica to FSM
// version v from the next index on, and returns its index once applied
// here. It refuses (ErrUnsupportedVersion) if the local FSM cannot run v;
// checking the other members is the caller's job (DESIGN "Rolling FSM
// upgrades"). A replica whose FSM cannot run v fail-stops when it applies
// the entry rather than diverge.
func (n *Node) ActivateFSMVersion(ctx context.Context, v uint32) (uint64, error) {
	n.app.statusMu.Lock()
	info := n.app.statusInfo
	n.app.statusMu.Unlock()
	if v < info.MinVersion || v > info.MaxVersion {
		return 0, NotApplied(fmt.Errorf("%w: %q supports [%d,%d], asked for %d", ErrUnsupportedVersion, info.Name, info.MinVersion, info.MaxVersion, v))
	}
	req := n.reqSeq.Add(1)
	r, err := n.wait(ctx, &proposal{req: req, data: encodeVersion(n.id, req, v)})
	return r.Index, err
}

// TransferLeader asks the leader to hand leadership to id (thesis §3.10)
// and waits until id leads or ctx ends.
func (n *Node) TransferLeader(ctx context.Context, id uint64) error {
	if err := n.do(ctx, func() { n.rn.TransferLeader(id) }); err != nil {
		return err
	}
	for {
		ch := n.leadCh.wait()
		if n.lead.Load() == id {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
		}
	}
}

// Campaign makes this node start an election now.
func (n *Node) Campaign(ctx context.Context) error {
	var err error
	if derr := n.do(ctx, func() { err = n.rn.Campaign() }); derr != nil {
		return derr
	}
	return err
}

// ExportSnapshot opens this node's latest snapshot as a stream in the
// core/snapshot framing (header, state machine body, trailer), taking a new
// one at the applied index first if takeNew. The caller closes the reader.
// The reader has a method Size() int64: the stream's length in bytes, or
// -1 when the Storage's OpenSnapshot header does not give the body's Size.
func (n *Node) ExportSnapshot(ctx context.Context, takeNew bool) (raft.SnapshotMetadata, io.ReadCloser, error) {
	var snap raft.Snapshot
	if takeNew {
		s, err := n.app.requestSnapshot(ctx)
		if err != nil {
			return raft.SnapshotMetadata{}, nil, err
		}
		snap = s
	} else {
		var err error
		if derr := n.do(ctx, func() { snap, err = n.st.Snapshot() }); derr != nil {
			return raft.SnapshotMetadata{}, nil, derr
		}
		if err != nil {
			return raft.SnapshotMetadata{}, nil, err
		}
	}
	if snap.IsEmpty() {
		return raft.SnapshotMetadata{}, nil, NotApplied(fmt.Errorf("%w (node %d)", ErrNoSnapshot, n.id))
	}
	rc, err := n.openStream(snap, "read for export")
	return snap.Metadata, rc, err
}

// SeedFromSnapshot prepares an empty Storage for disaster recovery: it
// stores the snapshot read from r (a stream as written by ExportSnapshot;
// its trailer is checked) as a single-member cluster of self at the
// snapshot's index and term. A Node started on that storage restores its
// FSM from the snapshot (if it runs the FSM the header names) and serves
// alone; add members afterwards.
func SeedFromSnapshot(st Storage, self Peer, r io.Reader) (SnapshotHeader, error) {
	hs, _, err := st.InitialState()
	if err != nil {
		return SnapshotHeader{}, err
	}
	last, err := st.LastIndex()
	if err != nil {
		return SnapshotHeader{}, err
	}
	if !hs.IsEmpty() || last != 0 {
		return SnapshotHeader{}, errors.New("node: seed from snapshot: storage is not empty")
	}
	hdr, body, err := snapshot.NewReader(r)
	if err != nil {
		return hdr, fmt.Errorf("node: seed from snapshot: %w", err)
	}
	if hdr.Index == 0 {
		return hdr, errors.New("node: seed from snapshot: snapshot index is 0")
	}
	hdr.ConfState = raft.ConfState{Voters: []uint64{self.ID}}
	hdr.Peers = []snapshot.Peer{snapshot.Peer(self)}
	sink, err := st.BeginSnapshot(hdr)
	if err != nil {
		return hdr, err
	}
	if _, err = io.Copy(sink, body); err != nil {
		_ = sink.Abort()
		return hdr, fmt.Errorf("node: seed from snapshot: %w", err)
	}
	desc, err := sink.Commit()
	if err != nil {
		return hdr, err
	}
	meta := raft.SnapshotMetadata{Index: hdr.Index, Term: hdr.Term, ConfState: hdr.ConfState}
	if err := st.ApplySnapshot(raft.Snapshot{Metadata: meta, Data: desc}); err != nil {
		return hdr, err
	}
	if err := st.Save(raft.HardState{Term: hdr.Term, Commit: hdr.Index}, nil, true); err != nil {
		return hdr, err
	}
	return hdr, nil
}

// Metrics are cumulative counters since the node started.
type Metrics struct {
	Proposals            uint64 // commands and changes handed to the loop
	ProposalsDropped     uint64 // refused by raft
	Saves                uint64 // Storage.Save calls
	Syncs                uint64 // of which fsync'ed
	EntriesSaved         uint64
	MessagesSent         uint64
	ReadIndexRounds      uint64
	Reads                uint64 // linearizable reads served a read index
	ApplyBatches         uint64 // StateMachine.Apply calls
	CommandsApplied      uint64
	SnapshotsTaken       uint64 // completed local snapshots
	SnapshotsStarted     uint64 // local snapshots whose body was written in the background
	SnapshotsInstalled   uint64 // state machine restores
	SnapshotsSent        uint64 // MsgSnap handed to the transport
	Compactions          uint64
	StateMachineRestarts uint64
	StateMachineReloads  uint64 // state machines replaced (ReplaceStateMachine)
	StepErrors           uint64
	ThrottledRounds      uint64 // proposals refused because the apply backlog was full (ErrOverloaded)
	ApplySpills          uint64 // committed batches left in Storage for the state machine to read back (apply backlog full, or halted)
	Halts                uint64 // times apply halted (halt.go)
	CommandsSkipped      uint64 // commands skipped on an fsm skip entry
	// LeaderChanges counts the times this node learnt of a new leader
	// (including itself).
	LeaderChanges uint64
	// Refused counts proposals refused before they entered the log, by
	// Refusal.
	Refused              [NumRefusals]uint64
	CommandsDeduplicated uint64 // keyed commands not delivered: duplicates, expired sessions (sessions.go)
	Checkpoints          uint64 // checkpoint entries applied (checkpoint.go)
	CheckpointsAgreed    uint64 // verdicts applied whose digest matched this node's
	Divergences          uint64 // halts for divergence (included in Halts)
	CheckpointDigests    uint64 // checkpoint digests hashed
	// CheckpointDigestTime is the time spent hashing them (off the apply
	// goroutine).
	CheckpointDigestTime time.Duration
}

type metrics struct {
	proposals, proposalsDropped, saves, syncs, entriesSaved, messagesSent  atomic.Uint64
	readIndexRounds, reads, applyBatches, commandsApplied, snapshotsTaken  atomic.Uint64
	snapshotsInstalled, snapshotsSent, compactions, smRestarts, stepErrors atomic.Uint64
	smReloads                                                              atomic.Uint64
	throttled, snapshotsStarted, halts, commandsSkipped, spills            atomic.Uint64

	leaderChanges                                                     atomic.Uint64
	refused                                                           [NumRefusals]atomic.Uint64
	lat                                                               latencies
	commandsDeduplicated                                              atomic.Uint64
	checkpoints, checkpointsAgreed, divergences, digests, digestNanos atomic.Uint64
}

// Metrics returns the node's counters.
func (n *Node) Metrics() Metrics {
	m := &n.m
	out := Metrics{
		Proposals: m.proposals.Load(), ProposalsDropped: m.proposalsDropped.Load(),
		Saves: m.saves.Load(), Syncs: m.syncs.Load(), EntriesSaved: m.entriesSaved.Load(),
		MessagesSent: m.messagesSent.Load(), ReadIndexRounds: m.readIndexRounds.Load(),
		Reads: m.reads.Load(), ApplyBatches: m.applyBatches.Load(), CommandsApplied: m.commandsApplied.Load(),
		SnapshotsTaken: m.snapshotsTaken.Load(), SnapshotsInstalled: m.snapshotsInstalled.Load(),
		SnapshotsSent: m.snapshotsSent.Load(), Compactions: m.compactions.Load(),
		StateMachineRestarts: m.smRestarts.Load(), StepErrors: m.stepErrors.Load(), StateMachineReloads: m.smReloads.Load(),
		ThrottledRounds: m.throttled.Load(), SnapshotsStarted: m.snapshotsStarted.Load(),
		Halts: m.halts.Load(), CommandsSkipped: m.commandsSkipped.Load(), ApplySpills: m.spills.Load(),
		LeaderChanges:        m.leaderChanges.Load(),
		CommandsDeduplicated: m.commandsDeduplicated.Load(),
		Checkpoints:          m.checkpoints.Load(), CheckpointsAgreed: m.checkpointsAgreed.Load(), Divergences: m.divergences.Load(),
		CheckpointDigests: m.digests.Load(), CheckpointDigestTime: time.Duration(m.digestNanos.Load()),
	}
	for i := range m.refused {
		out.Refused[i] = m.refused[i].Load()
	}
	return out
}
