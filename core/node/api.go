package node

import (
	"context"
	"io"

	"github.com/raftd/raftd/core/raft"
)

// Storage is the durable log, hard state and snapshot store the node drives.
// The node's loop goroutine is the only writer (Save, ApplySnapshot,
// SaveSnapshot, Compact). LogReader methods, BeginSnapshot and OpenSnapshot
// may be called from other goroutines (the apply goroutine replays the log
// after a state machine restart; the transport opens and receives snapshot
// bodies) concurrently with those writes.
//
// A Storage error is fatal: the node fail-stops (STYLE §5). An error that
// reports damaged stored data (a failed checksum, in the log or in a
// snapshot body, whether found by OpenSnapshot or by a Read of the body it
// returned) must match ErrCorrupt (errors.Is) and should name the file and
// index: the node then fail-stops with it wherever it reads, including
// while the transport streams a snapshot body to a follower.
type Storage interface {
	raft.LogReader

	// Save appends ents (replacing any conflicting suffix of the log) and
	// records hs, in one atomic write, durable before it returns when sync
	// is true. hs is always the full current hard state, never empty.
	Save(hs raft.HardState, ents []raft.Entry, sync bool) error
	// ApplySnapshot installs a snapshot received from the leader whose body
	// was already made durable through BeginSnapshot: the log up to
	// snap.Metadata.Index is discarded (a suffix after it may be kept if its
	// term matches), snap becomes the latest snapshot and InitialState then
	// reports snap.Metadata.ConfState. It is durable before it returns, and
	// afterwards InitialState's HardState.Commit must be >= the snapshot
	// index (raise it atomically if needed; a crash between ApplySnapshot and
	// the following Save must not leave commit below the snapshot).
	ApplySnapshot(snap raft.Snapshot) error
	// SaveSnapshot records snap, taken locally from the state machine with a
	// body committed through BeginSnapshot, as the latest snapshot without
	// changing the log (Compact trims it separately). snap.Metadata.Index
	// is <= LastIndex and greater than the current snapshot's index. From
	// then on Snapshot and InitialState report it. Durable before it returns.
	SaveSnapshot(snap raft.Snapshot) error
	// Compact discards the entries up to and including index, keeping the
	// term of index answerable (Term(index) works, FirstIndex = index+1).
	// index is <= the latest snapshot's index.
	Compact(index uint64) error
	// BeginSnapshot starts a new snapshot with header h; the sink receives
	// the state machine's body. The storage keeps the header with the body
	// (core/storage writes both, and a trailer that checks the body, in one
	// file of the core/snapshot format).
	BeginSnapshot(h SnapshotHeader) (SnapshotSink, error)
	// OpenSnapshot opens snap, named by the descriptor in snap.Data that
	// SnapshotSink.Commit returned (on this node), and returns its header
	// and a reader of its body. A damaged body fails the Read that reaches
	// its end (ErrCorrupt, see above). A body must stay readable while it is
	// open even if a newer snapshot replaces it.
	OpenSnapshot(snap raft.Snapshot) (SnapshotHeader, io.ReadCloser, error)
}

// SnapshotSink receives the body of one snapshot. Exactly one of Commit or
// Abort is called.
type SnapshotSink interface {
	io.Writer
	// Commit makes the body durable and returns its descriptor, which the
	// node stores in raft.Snapshot.Data and passes back to OpenSnapshot.
	// Committing does not make it the latest snapshot: SaveSnapshot or
	// ApplySnapshot does.
	Commit() (descriptor []byte, err error)
	// Abort discards the body.
	Abort() error
}

// Transport sends raft messages to peers. Send never blocks: a message for
// a slow or dead peer is dropped and the handler's ReportUnreachable is
// called; raft retransmits. The node calls Send, AddPeer and RemovePeer from
// its loop goroutine only. The node never calls Close; whoever created the
// transport closes it after Node.Stop.
type Transport interface {
	Send(msgs []raft.Message)
	AddPeer(id uint64, addr string)
	RemovePeer(id uint64)
	Close() error
}

// Handler is how the transport delivers inbound traffic. *Node implements
// it; every method is safe for concurrent use.
type Handler interface {
	// Process steps m into raft. It blocks only until the loop accepted m.
	Process(ctx context.Context, m raft.Message) error
	// ReportUnreachable tells raft that a message to id was dropped.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells raft the outcome of streaming a snapshot to id.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// ReceiveSnapshot consumes the whole streamed snapshot body for MsgSnap
	// m, stores it durably, then steps m.
	ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error
}

// SnapshotSource opens the body of an outgoing MsgSnap. For m.Snapshot the
// transport calls OpenSnapshot(m.Snapshot.Metadata, m.Snapshot.Data) and
// streams the reader in chunks on a separate RPC, then calls
// Handler.ReportSnapshot. *Node implements it.
type SnapshotSource interface {
	OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error)
}

// FSMInfo describes a state machine implementation.
type FSMInfo struct {
	// Name is the FSM's name, e.g. "kv".
	Name string
	// MinVersion and MaxVersion bound the FSM versions it can run.
	MinVersion, MaxVersion uint32
	// Applied is the last log index whose command the FSM holds in its
	// state: 0 for an in-memory FSM that just started.
	Applied uint64
	// DowngradeSafeTo is the lowest version the FSM declares the cluster
	// may be switched back to from a higher one (0: none; see
	// plugin/fsm.Info).
	DowngradeSafeTo uint32
	// Build is what the plugin reports of the code it runs beyond its
	// executable ("" for a compiled one; plugin/fsm.Info).
	Build string
}

// Command is one committed FSM command. Its fields are those of
// plugin/fsm.Entry (core/statemachine converts one to the other).
type Command struct {
	Index uint64
	Term  uint64
	// Data is the client's command. The callee must not modify it.
	Data []byte
	// Version is the FSM version active at Index.
	Version uint32
}

// StateMachine is what the apply goroutine feeds. core/statemachine
// implements it for any plugin/fsm.FSM: one compiled into this process or
// the plugin host's client for a plugin process.
//
// Apply, Snapshot and Restore are called from one goroutine, never
// concurrently with each other. Query and Info may be called concurrently
// with Apply and Snapshot (never with Restore); Query must observe at least
// the state left by the last Apply that returned. The body of a
// StateSnapshot is written concurrently with Apply, Query, Info, Digest
// and Snapshot (a local snapshot's view and a checkpoint's view may be
// open at once), never with Restore or Restarter.Restart.
//
// Apply must be deterministic. A command the FSM rejects is a result (for
// example {"error":"…"}), not an error; a non-nil error means "stop
// trusting me": an error that wraps ErrStateMachineCrashed triggers a
// restart (see Restarter), any other error fail-stops the node.
type StateMachine interface {
	// Info reports name, supported versions and applied index.
	Info(ctx context.Context) (FSMInfo, error)
	// Apply applies consecutive committed commands and returns exactly one
	// result per command, in order.
	Apply(ctx context.Context, cmds []Command) ([][]byte, error)
	// Query runs a read-only request against the current state.
	Query(ctx context.Context, q []byte) ([]byte, error)
	// Snapshot captures the state as of the last Apply that returned and
	// returns once that capture is fixed: Apply calls made after it returns
	// do not change what the StateSnapshot writes. It should be cheap
	// (copy-on-write, or a plugin's capture under its lock): applying, and
	// the callers waiting on it, pause meanwhile.
	Snapshot(ctx context.Context) (StateSnapshot, error)
	// Restore replaces the state with a body written by a StateSnapshot of
	// format h.FSMFormat; afterwards the state machine's applied index is
	// h.Index.
	Restore(ctx context.Context, h SnapshotHeader, body io.Reader) error
	// Digest hashes the state at its last applied index.
	Digest(ctx context.Context) ([]byte, error)
	// Close releases the state machine. The node never calls it; the
	// owner closes it after Node.Stop.
	Close() error
}

// QueryBatcher is optionally implemented by a StateMachine that answers
// several queries in one call (a plugin process: one round trip for all).
// The node's linearizable reads query through it, one call for the reads
// that are ready together. QueryBatch returns one result and one error per
// query, in order; each query observes at least the state left by the last
// Apply that returned before QueryBatch was called, like Query.
type QueryBatcher interface {
	QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error)
}

// StateSnapshot is a point-in-time view of a state machine's state,
// returned by StateMachine.Snapshot. The node writes its body into a
// snapshot on another goroutine while it keeps applying (snapjob.go).
type StateSnapshot interface {
	// Format names the body's encoding (e.g. "raftd.kv.v1"). The node
	// records it in the snapshot header and passes it back to Restore.
	Format() string
	// WriteTo writes the body to w. It runs concurrently with Apply, Query,
	// Info and Digest, and returns nil only if all of the body was
	// written. Before Restore or Restart, and when it stops, the node
	// cancels ctx and waits for WriteTo to return, so it must return
	// promptly once ctx is done. An error that wraps ErrStateMachineCrashed
	// makes the node restart the state machine; the snapshot is then
	// abandoned.
	WriteTo(ctx context.Context, w io.Writer) error
	// Release frees the view. The node calls it exactly once, after
	// WriteTo returned or instead of calling it.
	Release()
}

// Restarter is optionally implemented by a StateMachine that can be
// restarted after it crashed (a plugin process). After Restart returns nil
// the node calls Info, restores the latest snapshot if the FSM is behind
// it, replays the log and resumes. The plugin host maps a crash or a hang
// of its process to an error wrapping ErrStateMachineCrashed.
type Restarter interface {
	Restart(ctx context.Context) error
}

// Compile-time interface checks.
var (
	_ Handler        = (*Node)(nil)
	_ SnapshotSource = (*Node)(nil)
)
