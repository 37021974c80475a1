package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = time.Second
	DefaultSnapshotEntries   = 10000
	DefaultSnapshotTrailing  = 5000
	DefaultMaxEntryBytes     = 1 << 20
	DefaultMaxSizePerMsg     = 1 << 20
	DefaultMaxInflightMsgs   = 256
	DefaultMaxApplyBatch     = 1024
	// DefaultMaxApplyBacklogBytes is the default Config.MaxApplyBacklogBytes.
	DefaultMaxApplyBacklogBytes = 64 << 20
	// DefaultMaxUncommittedEntriesSize is the default
	// Config.MaxUncommittedEntriesSize.
	DefaultMaxUncommittedEntriesSize = 32 << 20
	// DefaultMaxCommittedSizePerReady is the default
	// Config.MaxCommittedSizePerReady.
	DefaultMaxCommittedSizePerReady = 8 << 20
	// DefaultMaxInflightBytes is the default Config.MaxInflightBytes.
	DefaultMaxInflightBytes = 16 << 20
)

// Peer is a member's id and addresses.
type Peer struct {
	ID uint64 `json:"id"`
	// RaftAddr is where the peer transport reaches it.
	RaftAddr string `json:"raft_addr"`
	// APIAddr is its client API address (informational, for forwarding
	// and status).
	APIAddr string `json:"api_addr,omitempty"`
}

// Config configures a Node. Storage, Transport and StateMachine are
// required; every other zero field takes the documented default.
type Config struct {
	// ID is this node's id, > 0.
	ID uint64
	// Peers is the initial membership, used only on first boot (empty
	// Storage). It must be identical on every initial member and include
	// this node. With no Peers and an empty Storage the node waits to be
	// added by the leader (a joining node).
	Peers []Peer

	Storage      Storage
	Transport    Transport
	StateMachine StateMachine

	// HeartbeatInterval is how often a leader sends heartbeats (a
	// duration: 100 ms means ten heartbeats a second). The raft core ticks
	// ticksPerHeartbeat times per interval, so one raft tick lasts
	// HeartbeatInterval/ticksPerHeartbeat. The default is
	// DefaultHeartbeatInterval (100 ms).
	HeartbeatInterval time.Duration
	// ElectionTimeout is the minimum election timeout; raft randomizes it
	// in [T, 2T). It is rounded down to whole ticks and must be at least
	// two ticks. The default is DefaultElectionTimeout (1 s).
	ElectionTimeout time.Duration

	// SnapshotEntries is how many applied entries trigger a snapshot.
	// The default is DefaultSnapshotEntries; negative disables automatic
	// snapshots.
	SnapshotEntries int
	// SnapshotTrailing is how many entries before the snapshot index stay
	// in the log after compaction. The default is DefaultSnapshotTrailing;
	// negative keeps none.
	SnapshotTrailing int
	// MaxEntryBytes refuses larger commands with ErrTooLarge. The default
	// is DefaultMaxEntryBytes (1 MiB).
	MaxEntryBytes int
	// MaxApplyBatch bounds the commands handed to one StateMachine.Apply.
	// The default is DefaultMaxApplyBatch.
	MaxApplyBatch int
	// MaxApplyBacklogBytes bounds the committed entries waiting in memory
	// for the state machine (a slow plugin, a restart replay). Beyond it,
	// committed entries are left in Storage and read back when the state
	// machine gets to them, and new proposals on this node are refused
	// with ErrOverloaded (ErrNotApplied: backpressure) until the backlog is
	// back under the bound. The default is DefaultMaxApplyBacklogBytes
	// (64 MiB).
	MaxApplyBacklogBytes int64
	// LeaderChangeWait is how long a caller whose command was handed to
	// raft before a leadership change (a new term, or the leader lost)
	// keeps waiting for a definite outcome — its entry applied, or another
	// entry committed at its index (raft.ErrProposalDropped) — before it
	// gets ErrOutcomeUnknown. The default is ElectionTimeout; negative
	// waits until the caller's context ends. It is rounded up to whole
	// ticks.
	LeaderChangeWait time.Duration
	// MaxRestarts is how many failed state machine restarts in a row
	// fail-stop the node. The default is 3.
	MaxRestarts int

	// CheckpointEntries is how many applied entries make the leader commit
	// a digest checkpoint (checkpoint.go). The default is
	// DefaultCheckpointEntries; negative disables automatic checkpoints
	// (Verify still runs one). They run only with CheckpointPeers set.
	CheckpointEntries int
	// CheckpointTimeout bounds how long the leader waits for the members'
	// digests of one checkpoint. The default is DefaultCheckpointTimeout.
	CheckpointTimeout time.Duration
	// CheckpointPeers asks other members for their checkpoint digests
	// (core/server over the peer port). Nil: only this node's digest is
	// known, so a checkpoint decides only in a cluster of one voter, and
	// no automatic checkpoint is taken.
	CheckpointPeers CheckpointPeers

	// MaxSizePerMsg, MaxInflightMsgs, MaxInflightBytes,
	// MaxCommittedSizePerReady and MaxUncommittedEntriesSize pass through
	// to raft.Config. They bound memory in bytes:
	//   - MaxSizePerMsg: the entries of one MsgApp (default 1 MiB);
	//   - MaxInflightMsgs and MaxInflightBytes: the unacknowledged MsgApps
	//     per follower (defaults 256 and DefaultMaxInflightBytes, 16 MiB);
	//   - MaxCommittedSizePerReady: the committed entries handed out per
	//     Ready, so a restart replay reads the log in pieces instead of
	//     all at once (default DefaultMaxCommittedSizePerReady, 8 MiB);
	//   - MaxUncommittedEntriesSize: the leader's uncommitted tail;
	//     proposals beyond it are refused (raft.ErrProposalDropped, not
	//     applied) (default DefaultMaxUncommittedEntriesSize, 32 MiB).
	MaxSizePerMsg             uint64
	MaxInflightMsgs           int
	MaxInflightBytes          uint64
	MaxCommittedSizePerReady  uint64
	MaxUncommittedEntriesSize uint64
	// LeaseReads switches raft to ReadOnlyLeaseBased (relies on bounded
	// clock drift; opt-in).
	LeaseReads bool
	// Seed seeds raft's election randomness. The default mixes ID and the
	// clock.
	Seed int64
	// Logger receives the raft core's logs (through raftLogger). Nil
	// discards.
	Logger *slog.Logger

	// unsafeSendBeforeSave sends every Ready's messages before persisting
	// it, a deliberately wrong order. Only tests set it, to show that the
	// persist-before-send tests catch the mistake.
	unsafeSendBeforeSave bool
	// unsafeNoDigestCompare makes verdicts compare nothing (no replica
	// halts on one). Only tests set it, to show that the divergence tests
	// catch a node that does not compare.
	unsafeNoDigestCompare bool
	// clock replaces time.Now for the pacing of automatic snapshots and
	// checkpoints (pace.go). Only tests set it.
	clock func() time.Time
}

// withDefaults validates cfg and returns a copy with defaults filled in.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ID == 0 {
		return cfg, errors.New("node: config: ID must be > 0")
	}
	if cfg.Storage == nil || cfg.Transport == nil || cfg.StateMachine == nil {
		return cfg, errors.New("node: config: Storage, Transport and StateMachine are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = DefaultElectionTimeout
	}
	if cfg.HeartbeatInterval < 0 || cfg.ElectionTimeout < 2*cfg.HeartbeatInterval {
		return cfg, fmt.Errorf("node: config: election timeout %v must be at least two heartbeat intervals (%v)", cfg.ElectionTimeout, cfg.HeartbeatInterval)
	}
	if cfg.LeaderChangeWait == 0 {
		cfg.LeaderChangeWait = cfg.ElectionTimeout
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = DefaultSnapshotEntries
	}
	if cfg.SnapshotTrailing == 0 {
		cfg.SnapshotTrailing = DefaultSnapshotTrailing
	}
	if cfg.SnapshotTrailing < 0 {
		cfg.SnapshotTrailing = 0
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if cfg.MaxApplyBatch <= 0 {
		cfg.MaxApplyBatch = DefaultMaxApplyBatch
	}
	if cfg.MaxApplyBacklogBytes <= 0 {
		cfg.MaxApplyBacklogBytes = DefaultMaxApplyBacklogBytes
	}
	if cfg.CheckpointEntries == 0 {
		cfg.CheckpointEntries = DefaultCheckpointEntries
	}
	if cfg.CheckpointTimeout <= 0 {
		cfg.CheckpointTimeout = DefaultCheckpointTimeout
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 3
	}
	if cfg.MaxSizePerMsg == 0 {
		cfg.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if cfg.MaxInflightMsgs == 0 {
		cfg.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if cfg.MaxCommittedSizePerReady == 0 {
		cfg.MaxCommittedSizePerReady = DefaultMaxCommittedSizePerReady
	}
	if cfg.MaxUncommittedEntriesSize == 0 {
		cfg.MaxUncommittedEntriesSize = DefaultMaxUncommittedEntriesSize
	}
	if cfg.Seed == 0 {
		cfg.Seed = int64(cfg.ID*0x9E3779B97F4A7C15) ^ time.Now().UnixNano()
	}
	seen := map[uint64]bool{}
	self := false
	for _, p := range cfg.Peers {
		if p.ID == 0 || seen[p.ID] {
			return cfg, fmt.Errorf("node: config: peer id %d is zero or repeated", p.ID)
		}
		seen[p.ID] = true
		self = self || p.ID == cfg.ID
	}
	if len(cfg.Peers) > 0 && !self {
		return cfg, fmt.Errorf("node: config: peers do not include this node (id %d)", cfg.ID)
	}
	return cfg, nil
}

// ticksPerHeartbeat is how many raft ticks make one heartbeat interval.
// The core draws its randomized election timeout in whole ticks, from
// [T, 2T): with one tick per heartbeat (10 values for the default 1 s / 100 ms)
// two followers pick the same timeout one time in ten and split the vote
// after a leader dies far more often than with finer ticks.
const ticksPerHeartbeat = 10

// tickDuration is the duration of one raft tick.
func (cfg Config) tickDuration() time.Duration {
	return max(cfg.HeartbeatInterval/ticksPerHeartbeat, time.Nanosecond)
}

// leaderChangeTicks is LeaderChangeWait in ticks (> 0 when it is).
func (cfg Config) leaderChangeTicks() uint64 {
	return uint64((cfg.LeaderChangeWait + cfg.tickDuration() - 1) / cfg.tickDuration())
}

// electionTicks is the election timeout in ticks.
func (cfg Config) electionTicks() int {
	return int(cfg.ElectionTimeout / cfg.tickDuration())
}
