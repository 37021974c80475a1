package raft

import (
	"errors"
	"fmt"
)

// None is the placeholder node ID used when there is no leader or no vote.
const None uint64 = 0

// EntryType tells the driver how to interpret an entry's Data.
type EntryType uint8

const (
	// EntryNormal carries opaque application data. A leader appends an
	// EntryNormal with empty Data when it takes office (Raft §5.4.2, §8).
	EntryNormal EntryType = iota
	// EntryConfChange carries an encoded ConfChange (see ConfChange.Marshal).
	EntryConfChange
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "EntryNormal"
	case EntryConfChange:
		return "EntryConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	// Data is owned by the log once proposed; callers must not modify it.
	Data []byte
}

// Size is the payload size used for byte limits (Data plus a fixed
// overhead for the header fields).
func (e *Entry) Size() uint64 { return uint64(len(e.Data)) + entryOverheadBytes }

// entryOverheadBytes approximates the encoded size of an entry's header.
const entryOverheadBytes = 24

// HardState is the state that must be durable before any message that
// depends on it is sent (Raft figure 2: currentTerm, votedFor; plus commit).
type HardState struct {
	Term   uint64
	Vote   uint64
	Commit uint64
}

// IsEmpty reports whether hs is the zero HardState.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// ConfState is a membership configuration: the voters and the learners.
// A node is never in both lists.
type ConfState struct {
	Voters   []uint64
	Learners []uint64
}

// Equal reports whether cs and o list the same members (order-insensitive).
func (cs ConfState) Equal(o ConfState) bool {
	return sameSet(cs.Voters, o.Voters) && sameSet(cs.Learners, o.Learners)
}

func sameSet(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[uint64]int, len(a))
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		if seen[x] == 0 {
			return false
		}
		seen[x]--
	}
	return true
}

// SnapshotMetadata identifies the log position a snapshot covers.
type SnapshotMetadata struct {
	// Index and Term are those of the last entry included in the snapshot.
	Index uint64
	Term  uint64
	// ConfState is the membership as of Index.
	ConfState ConfState
}

// Snapshot is a point-in-time image of the state machine. The core never
// looks at Data: the driver uses it to describe where the bytes are (the
// state itself is streamed by the transport, never carried in a Message).
type Snapshot struct {
	Metadata SnapshotMetadata
	Data     []byte
}

// IsEmpty reports whether s holds no snapshot.
func (s Snapshot) IsEmpty() bool { return s.Metadata.Index == 0 }

// ConfChangeType is the kind of a single membership change.
type ConfChangeType uint8

const (
	// ConfChangeAddNode adds a voter, or promotes a learner to voter.
	ConfChangeAddNode ConfChangeType = iota
	// ConfChangeRemoveNode removes a voter or a learner.
	ConfChangeRemoveNode
	// ConfChangeAddLearner adds a non-voting member that receives the log,
	// or demotes a voter to learner (a demoted leader steps down).
	ConfChangeAddLearner
)

func (t ConfChangeType) String() string {
	switch t {
	case ConfChangeAddNode:
		return "AddNode"
	case ConfChangeRemoveNode:
		return "RemoveNode"
	case ConfChangeAddLearner:
		return "AddLearner"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChange is one membership change, carried in an EntryConfChange.
// Changes take effect when the driver applies the committed entry and calls
// RawNode.ApplyConfChange; the leader refuses a new change while an earlier
// one is not yet applied (one change at a time).
type ConfChange struct {
	Type   ConfChangeType
	NodeID uint64
	// Context is opaque to the core; the driver stores addresses in it.
	Context []byte
}

// MessageType is the kind of a Message.
type MessageType uint8

// Message types. Local messages (never sent over the network) are marked.
const (
	MsgHup            MessageType = iota // local: start an election
	MsgBeat                              // local: leader sends heartbeats
	MsgProp                              // propose entries (local, or forwarded to the leader)
	MsgApp                               // leader -> follower: append entries
	MsgAppResp                           // follower -> leader
	MsgVote                              // candidate -> all: request vote
	MsgVoteResp                          //
	MsgPreVote                           // thesis §9.6
	MsgPreVoteResp                       //
	MsgSnap                              // leader -> follower: install snapshot (metadata only)
	MsgHeartbeat                         // leader -> follower
	MsgHeartbeatResp                     //
	MsgUnreachable                       // local: the transport could not reach From
	MsgSnapStatus                        // local: the driver reports a snapshot send result
	MsgCheckQuorum                       // local: leader checks it still has a quorum
	MsgTransferLeader                    // request leadership transfer to From
	MsgTimeoutNow                        // leader -> transferee: campaign now
	MsgReadIndex                         // request a read index (local, or forwarded)
	MsgReadIndexResp                     // leader -> follower that forwarded a read
	numMessageTypes
)

var messageTypeNames = [...]string{
	MsgHup: "MsgHup", MsgBeat: "MsgBeat", MsgProp: "MsgProp", MsgApp: "MsgApp",
	MsgAppResp: "MsgAppResp", MsgVote: "MsgVote", MsgVoteResp: "MsgVoteResp",
	MsgPreVote: "MsgPreVote", MsgPreVoteResp: "MsgPreVoteResp", MsgSnap: "MsgSnap",
	MsgHeartbeat: "MsgHeartbeat", MsgHeartbeatResp: "MsgHeartbeatResp",
	MsgUnreachable: "MsgUnreachable", MsgSnapStatus: "MsgSnapStatus",
	MsgCheckQuorum: "MsgCheckQuorum", MsgTransferLeader: "MsgTransferLeader",
	MsgTimeoutNow: "MsgTimeoutNow", MsgReadIndex: "MsgReadIndex",
	MsgReadIndexResp: "MsgReadIndexResp",
}

func (t MessageType) String() string {
	if t < numMessageTypes {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Message is the unit of communication between Raft nodes.
//
// Field use per type:
//   - MsgApp: Index/LogTerm are prevIndex/prevTerm; Entries follow them;
//     Commit is the leader's commit index.
//   - MsgAppResp: Index is the last index the follower now matches (accept),
//     or the rejected prevIndex (Reject). On reject, RejectHint is the first
//     index of the conflicting term and LogTerm that term (the fast back-off
//     hint); LogTerm is 0 when the follower's log is shorter than Index, and
//     RejectHint is then its last index.
//   - MsgVote/MsgPreVote: Index/LogTerm are the candidate's last index/term.
//     Context is "transfer" for a vote caused by leadership transfer.
//   - MsgVoteResp/MsgPreVoteResp with Reject: Commit/LogTerm may name an
//     entry the responder knows committed (index min(its commit, the
//     candidate's last index) and its term); a candidate holding the same
//     entry commits up to it (Log Matching, Raft §5.3).
//   - MsgHeartbeat/MsgHeartbeatResp: Context carries the leader's read
//     round while reads are pending (8 bytes, big-endian; empty otherwise),
//     echoed in the response: a read is confirmed by answers to a round
//     started after it arrived, whatever its request context. Index is the
//     leader's heartbeat stamp (ticks as leader + 1), echoed in the
//     response (it dates the follower's lease for lease-based reads).
//   - MsgSnap: Snapshot carries the metadata (and driver descriptor).
//   - MsgSnapStatus/MsgUnreachable: From is the peer; Reject means failure.
//   - MsgReadIndex: Context is the caller's request context (non-empty,
//     unique among outstanding reads). MsgReadIndexResp: Index is the read
//     index, Context echoes the request's.
//   - MsgTransferLeader: From is the transferee (not the sender).
//   - MsgProp, MsgReadIndex and MsgTransferLeader are forwarded without a
//     term (Term 0); every other network message carries the sender's term
//     (vote requests and pre-vote responses the campaign's term).
type Message struct {
	Type       MessageType
	To         uint64
	From       uint64
	Term       uint64
	LogTerm    uint64
	Index      uint64
	Entries    []Entry
	Commit     uint64
	Snapshot   *Snapshot
	Reject     bool
	RejectHint uint64
	Context    []byte
}

// IsLocalMsg reports whether t is only ever stepped locally.
func IsLocalMsg(t MessageType) bool {
	switch t {
	case MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus, MsgCheckQuorum:
		return true
	}
	return false
}

// IsResponseMsg reports whether t answers another message.
func IsResponseMsg(t MessageType) bool {
	switch t {
	case MsgAppResp, MsgVoteResp, MsgHeartbeatResp, MsgUnreachable, MsgPreVoteResp, MsgReadIndexResp:
		return true
	}
	return false
}

// Errors returned by the core and by LogReader implementations.
var (
	// ErrCompacted: the requested index is below the first index (compacted).
	ErrCompacted = errors.New("raft: requested index is unavailable due to compaction")
	// ErrUnavailable: the requested index is above the last index.
	ErrUnavailable = errors.New("raft: requested entry at index is unavailable")
	// ErrSnapOutOfDate: a snapshot older than the current one was offered.
	ErrSnapOutOfDate = errors.New("raft: requested index is older than the existing snapshot")
	// ErrSnapshotTemporarilyUnavailable: the storage cannot produce a snapshot now; retry later.
	ErrSnapshotTemporarilyUnavailable = errors.New("raft: snapshot is temporarily unavailable")
	// ErrProposalDropped: the proposal was not appended (no leader, forwarding
	// disabled, leadership transfer in progress, or not a member).
	ErrProposalDropped = errors.New("raft: proposal dropped")
	// ErrNoLeader: the node does not know a leader; retry later.
	ErrNoLeader = errors.New("raft: no leader")
	// ErrStepLocalMsg: a local message type was passed to Step from the network.
	ErrStepLocalMsg = errors.New("raft: cannot step raft local message")
	// ErrStepPeerNotFound: a response came from a node not in the progress tracker.
	ErrStepPeerNotFound = errors.New("raft: cannot step as peer not found")
)

// LogReader is the read-only view of durable storage that the core
// consumes. The driver owns all writes. Implementations must be safe for the
// core's single-goroutine use; the Pebble store is also safe for concurrent
// readers (sender goroutines).
type LogReader interface {
	// InitialState returns the saved HardState and ConfState.
	InitialState() (HardState, ConfState, error)
	// Entries returns entries in [lo, hi), limited to maxBytes total size
	// but always at least one entry if any is in range. ErrCompacted if
	// lo <= the snapshot index; ErrUnavailable if hi > LastIndex()+1.
	Entries(lo, hi, maxBytes uint64) ([]Entry, error)
	// Term returns the term of entry i, which must be in
	// [FirstIndex()-1, LastIndex()]; the term at FirstIndex()-1 is the
	// snapshot's term. ErrCompacted below that, ErrUnavailable above.
	Term(i uint64) (uint64, error)
	// FirstIndex returns the index of the first entry that may be
	// available (snapshot index + 1).
	FirstIndex() (uint64, error)
	// LastIndex returns the index of the last entry in the log.
	LastIndex() (uint64, error)
	// Snapshot returns the most recent snapshot (metadata and descriptor).
	Snapshot() (Snapshot, error)
}

// StateType is a node's role.
type StateType uint8

// Roles.
const (
	StateFollower StateType = iota
	StateCandidate
	StateLeader
	StatePreCandidate
)

func (s StateType) String() string {
	switch s {
	case StateFollower:
		return "follower"
	case StateCandidate:
		return "candidate"
	case StateLeader:
		return "leader"
	case StatePreCandidate:
		return "pre-candidate"
	}
	return fmt.Sprintf("StateType(%d)", uint8(s))
}

// SoftState is volatile state that need not be persisted.
type SoftState struct {
	Lead      uint64
	RaftState StateType
}

// ReadState answers a ReadIndex request: once the applied index reaches
// Index, a read issued with RequestCtx may be served (thesis §6.4).
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// SnapshotStatus is what the driver reports after sending a snapshot.
type SnapshotStatus uint8

// Snapshot send outcomes.
const (
	SnapshotFinish SnapshotStatus = iota
	SnapshotFailure
)

// Logger is what the core logs through. A nil Logger discards.
type Logger interface {
	Debugf(format string, args ...any)
	Infof(format string, args ...any)
	Warningf(format string, args ...any)
	Errorf(format string, args ...any)
}
