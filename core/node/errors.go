package node

import (
	"errors"
	"fmt"
)

// Outcome classes. Every error a request method of Node returns (Propose,
// ProposeEntry, Read, ReadIndex, StaleRead, AddMember, AddLearner, Promote,
// RemoveMember, ActivateFSMVersion, TransferLeader, ExportSnapshot,
// Members, Status) tells the caller what became of the request, with
// errors.Is:
//
//   - ErrNotApplied: refused before the request entered the log. It
//     certainly was not applied and may be retried, on this node or any
//     other. The reason is wrapped as well: ErrTooLarge, ErrStopped,
//     ErrNotReady, ErrConfChangeInProgress, ErrUnsupportedVersion,
//     ErrNoSnapshot, ErrHalted, ErrOverloaded, ErrSkipped (a committed
//     command this replica skipped), raft.ErrNoLeader,
//     raft.ErrProposalDropped, or a context error for a request that never
//     reached the loop.
//   - ErrOutcomeUnknown: handed to raft, fate unknown (the context ended,
//     leadership changed, the node stopped while it waited). It may still
//     be applied; only a request that is safe to repeat may be retried: a
//     command with a RequestID is (sessions.go). With the reason
//     ErrSessionExpired or ErrResultNotKept, a command with a RequestID
//     was not applied again, and retrying with that id gets the same
//     answer.
//   - neither: a context error of a call that changes nothing by itself
//     (a read or a leadership transfer that ran out of time), or a failure
//     of the state machine serving a read.
//
// No error matches both ErrNotApplied and ErrOutcomeUnknown. ErrFatal is
// matched in addition when the node has fail-stopped, and by Err and Stop
// then. ErrHalted is matched in addition (by a *HaltedError) when the
// request met a node whose apply is halted (Status.Halted): a refusal
// (with ErrNotApplied), a proposal that was waiting for its entry to be
// applied (with ErrOutcomeUnknown), or a linearizable read whose read index
// is beyond the halt (alone).
var (
	// ErrNotApplied classes a refusal: certainly not applied, safe to retry.
	ErrNotApplied = errors.New("node: not applied")
	// ErrOutcomeUnknown classes a request that was handed to raft but whose
	// fate is not known (leadership changed and no definite outcome followed
	// within Config.LeaderChangeWait, the entry was covered by an installed
	// snapshot, the context ended, the node stopped). It may still be
	// applied.
	ErrOutcomeUnknown = errors.New("node: outcome unknown")
	// ErrFatal is matched by the error that fail-stopped the node (Err,
	// Stop) and by request errors caused by that stop.
	ErrFatal = errors.New("node: failed")
)

// Reasons, wrapped together with their outcome class.
var (
	// ErrStopped: the node has stopped or is stopping.
	ErrStopped = errors.New("node: stopped")
	// ErrTooLarge: the command exceeds Config.MaxEntryBytes.
	ErrTooLarge = errors.New("node: command too large")
	// ErrConfChangeInProgress: a membership change is already pending.
	ErrConfChangeInProgress = errors.New("node: membership change already in progress")
	// ErrUnsupportedVersion: the local FSM cannot run the requested version.
	ErrUnsupportedVersion = errors.New("node: fsm version not supported")
	// ErrNotReady: the node has not yet caught its state machine up to the
	// commit index it found at start (stale reads refuse until then).
	ErrNotReady = errors.New("node: not ready")
	// ErrNoSnapshot: ExportSnapshot found no snapshot to hand out.
	ErrNoSnapshot = errors.New("node: no snapshot yet")
	// ErrBadRequest: the request is malformed (for example member id 0).
	ErrBadRequest = errors.New("node: bad request")
	// ErrHalted: this node's apply is halted (see HaltedError).
	ErrHalted = errors.New("node: apply halted")
	// ErrSkipped: the command was committed but this replica skipped it on
	// an `fsm skip` entry (Node.Skip) while its apply was halted there. It
	// is wrapped with ErrNotApplied: this replica never applied it.
	ErrSkipped = errors.New("node: command skipped")
	// ErrNoCheckpoint: this node has no digest for the checkpoint index
	// asked for (no checkpoint entry there, its state came from a
	// snapshot beyond it, or the digest was dropped).
	ErrNoCheckpoint = errors.New("node: no checkpoint digest")
	// ErrOverloaded: the state machine is too far behind (the apply
	// backlog exceeds Config.MaxApplyBacklogBytes); new proposals are
	// refused until it catches up (backpressure).
	ErrOverloaded = errors.New("node: overloaded")
	// ErrSessionExpired (with ErrOutcomeUnknown): the command's RequestID
	// belongs to a session the cluster no longer keeps, or has a seq below
	// what the session still answers for. It may have been applied under
	// that id before; it was not applied again. Retrying with the same id
	// gets the same answer (sessions.go).
	ErrSessionExpired = errors.New("node: client session expired")
	// ErrResultNotKept (with ErrOutcomeUnknown): the command's RequestID
	// was applied before, but its result was not kept (over
	// MaxKeptResultBytes, or lost to a state machine restart); it was not
	// applied again.
	ErrResultNotKept = errors.New("node: result of the first application not kept")
)

// Halt describes a halted apply. The node applied everything before Index
// and stays in raft (it replicates and votes); it applies nothing more
// until the halt is resolved. Two causes:
//
//   - a command failure (Checkpoint == 0): the state machine failed on the
//     command at Index again after Config.MaxRestarts restarts, each
//     restoring the latest snapshot and replaying the log. An `fsm skip`
//     entry for Index (Node.Skip) or a snapshot from the leader that covers
//     Index resolves it.
//   - divergence (Checkpoint > 0): the entry at Index is the verdict on the
//     digest checkpoint at index Checkpoint, and this replica's digest there
//     differs from the one a majority of voters reported, or no digest had
//     a majority (checkpoint.go). Nothing resolves it but rebuilding the
//     replica (docs/operations.md): the node refuses snapshots from the
//     leader, which would replace the evidence, and hands leadership over
//     whenever it has it.
type Halt struct {
	Index  uint64
	Reason string
	// Checkpoint is the index of the checkpoint whose verdict halted a
	// divergent replica; 0 for a command failure.
	Checkpoint uint64
}

// HaltedError reports that a request met a halted node. It matches
// ErrHalted (errors.Is); errors.As gives the halt.
type HaltedError struct {
	Halt Halt
	// What the halt means for the request (may be empty).
	What string
}

func (e *HaltedError) Error() string {
	s := fmt.Sprintf("node: apply halted at index %d: %s", e.Halt.Index, e.Halt.Reason)
	if e.What != "" {
		s += "; " + e.What
	}
	return s
}

// Is makes errors.Is(err, ErrHalted) true.
func (e *HaltedError) Is(target error) bool { return target == ErrHalted }

// Errors of the components the node drives.
var (
	// ErrStateMachineCrashed is wrapped by a StateMachine error that means
	// the state machine process died or hung and can be restarted.
	ErrStateMachineCrashed = errors.New("node: state machine crashed")
	// ErrCorrupt is matched by Storage errors that report damaged stored
	// data (see Storage). When the node meets one it fail-stops with it
	// (Done, Err) instead of serving or sending that data (DESIGN
	// "Durability and bad input").
	ErrCorrupt = errors.New("node: stored data is corrupt")
	// ErrWrongFSM: the cluster's FSM, as its first log entry or a snapshot
	// header records it, is another one than this node's state machine
	// (the error names both); the node refuses to start, to install the
	// snapshot, to apply the entry, or to switch to that state machine.
	ErrWrongFSM = errors.New("node: wrong state machine")
)

// notAppliedError marks an error as certainly not applied (ErrNotApplied);
// its message is the wrapped error's.
type notAppliedError struct{ err error }

func (e notAppliedError) Error() string        { return e.err.Error() }
func (e notAppliedError) Unwrap() error        { return e.err }
func (e notAppliedError) Is(target error) bool { return target == ErrNotApplied }

// NotApplied marks err, a refusal made before the request reached the
// log, as ErrNotApplied, keeping its message and what it wraps. Layers
// above the node that refuse a request themselves use it too, so that one
// outcome set crosses every layer. err must not match ErrOutcomeUnknown.
func NotApplied(err error) error {
	if err == nil || errors.Is(err, ErrNotApplied) {
		return err
	}
	return notAppliedError{err}
}

// fatalError marks the error that fail-stopped the node as ErrFatal; its
// message is the wrapped error's.
type fatalError struct{ err error }

func (e fatalError) Error() string        { return e.err.Error() }
func (e fatalError) Unwrap() error        { return e.err }
func (e fatalError) Is(target error) bool { return target == ErrFatal }
