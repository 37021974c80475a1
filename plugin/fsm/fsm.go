package fsm

import (
	"context"
	"errors"
	"io"
)

// Entry is one committed log entry that carries an FSM command.
type Entry struct {
	// Index is the Raft log index. Indexes are strictly increasing across
	// calls; gaps are normal (non-command entries are never delivered).
	Index uint64
	// Term is the Raft term of the entry.
	Term uint64
	// Data is the command. The FSM must not retain or modify it after
	// Apply returns.
	Data []byte
	// Version is the FSM version active at Index; 0 means the FSM's
	// MinVersion.
	Version uint32
}

// Info describes an FSM instance.
type Info struct {
	// Name identifies the FSM (e.g. "kv"). Implementations sharing a name
	// must agree on results, snapshots and digests.
	Name string
	// MinVersion..MaxVersion (inclusive, >= 1) are the versions it runs.
	MinVersion, MaxVersion uint32
	// AppliedIndex and AppliedTerm identify the last entry applied or
	// restored; 0 for a fresh in-memory FSM.
	AppliedIndex, AppliedTerm uint64
	// DowngradeSafeTo is the lowest version the cluster may be switched
	// back to after running a higher one: the FSM declares that its state,
	// as left by any version it runs, means the same under every version
	// from DowngradeSafeTo on. 0 declares no downgrade safe (raftd fsm
	// activate then refuses any version below the active one).
	DowngradeSafeTo uint32
	// Build identifies the code beyond the executable file, for a plugin
	// run by an interpreter (a digest of its source files); empty for a
	// compiled plugin. See proto/fsm/v1 InfoResponse.build.
	Build string
}

// SnapshotHeader describes a snapshot body.
type SnapshotHeader struct {
	// Index and Term of the last entry reflected in the snapshot.
	Index, Term uint64
	// Version active at Index (0 if no entry was applied).
	Version uint32
	// Format names the body encoding, e.g. "raftd.kv.v1".
	Format string
}

// FSM is a deterministic replicated state machine.
//
// Concurrency: the caller (plugin/sdk, or an in-process driver) never calls
// two FSM methods at the same time. Only Snapshot.WriteTo may run
// concurrently with later calls, which is why it must read a point-in-time
// view captured by Snapshot.
//
// Determinism: Apply's result and the state afterwards depend only on the
// previous state and the Entry — no clocks, randomness, map order or I/O
// results. A command the FSM rejects is a result (e.g. {"error":"..."}) with
// the state unchanged; a non-nil error means "stop trusting me": the host
// treats the FSM as broken.
type FSM interface {
	// Info reports name, supported versions and the applied position.
	Info(ctx context.Context) (Info, error)
	// Apply applies one entry and returns its result. The caller does not
	// modify the result; the FSM must not modify it afterwards either.
	Apply(ctx context.Context, e Entry) ([]byte, error)
	// Query answers a read-only request against the current state.
	Query(ctx context.Context, q []byte) ([]byte, error)
	// Snapshot captures the state at the last applied entry. It should be
	// cheap (copy-on-write); the returned Snapshot is written out later,
	// possibly while Apply continues.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Restore replaces the whole state with the body read from r, which
	// was produced by Snapshot (h.Format). Afterwards the applied position
	// is h.Index/h.Term. On error the previous state should be kept.
	Restore(ctx context.Context, h SnapshotHeader, r io.Reader) error
	// Digest returns a hash of the state at the last applied entry.
	Digest(ctx context.Context) ([]byte, error)
}

// Snapshot is a point-in-time view produced by FSM.Snapshot.
type Snapshot interface {
	// Header describes the body WriteTo produces.
	Header() SnapshotHeader
	// WriteTo writes the body to w. It may run concurrently with FSM
	// methods and must not hold the whole body in memory for large states.
	WriteTo(ctx context.Context, w io.Writer) error
	// Release frees the view. It is called exactly once, after WriteTo or
	// instead of it.
	Release()
}

// BatchApplier is optional: an FSM that implements it gets whole batches
// (consecutive entries, in order) instead of one Apply call per entry. It
// returns one result per entry. plugin/sdk type-asserts for it.
type BatchApplier interface {
	ApplyBatch(ctx context.Context, es []Entry) ([][]byte, error)
}

// ConcurrentQuerier is optional: an FSM whose Query may be called while its
// other methods run, because it orders the calls itself (plugin/host's
// client: the plugin process runs them one at a time). Such a Query sees
// the state after at least every entry whose Apply returned before Query
// was called, and possibly after entries applied since. The node's state
// machine adapter (core/statemachine) does not serialize its Query with the
// other calls, so a read does not wait for an Apply batch in flight.
type ConcurrentQuerier interface {
	ConcurrentQuery()
}

// QueryBatcher is optional: an FSM that answers several queries in one
// call (plugin/host's client: one QueryBatch round trip to the plugin
// process instead of one call each). It returns one result and one error
// per query, in order; each query sees at least the state Query would see
// if called instead.
type QueryBatcher interface {
	QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error)
}

// Restarter is optional: an FSM that runs outside the caller's process (the
// plugin/host client) and can be replaced by a fresh instance after it
// crashed. After Restart returns nil the FSM is empty or at whatever
// position Info reports; the caller restores a snapshot and replays.
type Restarter interface {
	Restart(ctx context.Context) error
}

// ErrCrashed is matched (errors.Is) by the errors of an FSM whose process
// crashed, hung or broke the protocol: which entries it applied is
// unknown. A Restarter recovers with Restart, then a restore and a replay;
// for any other FSM the error is final.
var ErrCrashed = errors.New("fsm: crashed")

// Restore errors. plugin/sdk maps them to the protocol's status codes
// (INVALID_ARGUMENT and DATA_LOSS); wrap them with %w.
var (
	// ErrSnapshotFormat means the snapshot header names a format the FSM
	// does not know.
	ErrSnapshotFormat = errors.New("fsm: unknown snapshot format")
	// ErrSnapshotCorrupt means the snapshot body does not decode.
	ErrSnapshotCorrupt = errors.New("fsm: corrupt snapshot")
	// ErrVersion means an entry carries a version outside the FSM's range.
	ErrVersion = errors.New("fsm: unsupported version")
)
