// Package node is the driver that owns one raft.RawNode: it runs the Ready
// loop, persists, sends, feeds committed entries to a StateMachine in
// batches, routes results back to the callers that proposed them, serves
// linearizable reads through ReadIndex, takes snapshots and compacts the
// log, and recovers a crashed state machine.
//
// It imports core/raft only. Storage, Transport and StateMachine are
// interfaces declared here and implemented elsewhere (core/storage,
// core/transport, plugin/host); core/daemon wires them together.
//
// # Goroutines
//
// The loop goroutine owns the RawNode and is the only Storage writer. Per
// round it takes everything queued (ticks, inbound messages, proposals,
// reads), then for each Ready:
//
//  1. installs Ready.Snapshot in Storage (ApplySnapshot);
//  2. saves HardState and Entries in one Storage.Save, fsync'ed when
//     MustSync — BEFORE any message leaves (Raft §5.1: votes and terms
//     must be durable before the reply). Exception: a leader whose term
//     and vote did not change sends first and writes meanwhile (thesis
//     §10.2.1); raft counts its own copy only after Advance;
//  3. sends Messages;
//  4. applies committed membership changes to raft (ApplyConfChange) and
//     the transport, and hands the snapshot and committed entries to the
//     apply goroutine;
//  5. calls Advance.
//
// The apply goroutine delivers entries to StateMachine.Apply in log order,
// exactly once, in batches (many entries per call), so the loop never
// waits on the state machine. Between batches it starts snapshots.
//
// # Batching
//
// Proposals queued while the loop was busy (for example in an fsync) become
// one raft.ProposeBatch, one Save and one fsync; committed entries become
// one Apply call (up to Config.MaxApplyBatch commands); concurrent
// linearizable reads share one ReadIndex round.
//
// Backpressure: while more than Config.MaxApplyBacklog committed entries
// wait for the state machine, the loop takes no new proposals.
//
// # Entries
//
// Every normal entry carries an envelope (kind, proposer id, request id;
// see encoding.go) so that the proposing node can hand the FSM's result to
// the waiting caller. No-op entries, membership changes and FSM version
// activations never reach StateMachine.Apply; they still advance the
// applied index.
//
// # Bootstrap and restart
//
// First boot with Config.Peers writes one ConfChangeAddNode entry per peer
// at indexes 1..n, term 1, committed; every initial member writes the same
// entries. The first one also records the cluster's FSM name: a node whose
// state machine reports another name refuses to start on that log, or
// fail-stops when it applies that entry (a node that joined), with
// ErrWrongFSM naming both. Later boots read hard state, snapshot and log from Storage;
// raft restarts at Applied = snapshot index and hands the committed entries
// after it out again: membership changes are re-applied to raft, FSM
// commands the state machine already holds (FSMInfo.Applied) are skipped.
// If the FSM is behind the snapshot it is restored from it first.
//
// # Snapshots
//
// Every Config.SnapshotEntries applied entries the apply goroutine starts a
// snapshot at its applied index: Storage.BeginSnapshot gets its header
// (SnapshotHeader: membership, addresses, FSM name, active version and
// body format; core/snapshot is the one framing) and the sink the state
// machine's body. The state machine only captures its state on
// the apply goroutine (StateMachine.Snapshot, between two Apply calls,
// which fixes the index); the body is written on a separate goroutine
// while applying goes on, and at most one snapshot is in flight. Only a complete body is committed; an error or a crash
// aborts it. A completed snapshot becomes the one a state machine restart
// restores from, then the loop records it (Storage.SaveSnapshot) and
// compacts the log, keeping Config.SnapshotTrailing entries. A leader's
// MsgSnap carries only the descriptor: the transport streams the snapshot
// (header, body, trailer) from SnapshotSource and the receiver's
// ReceiveSnapshot checks and stores it before stepping the message. The
// node never restores a snapshot of another FSM than the one it runs: it
// fails to start, or fail-stops at the install, with ErrWrongFSM naming
// both. See snapjob.go.
//
// # Results
//
// A caller of Propose gets the FSM's result for its entry, or an error
// that says whether the entry can have been applied (see the error
// variables). A caller is never handed another entry's result: request ids
// start at a random value per process. A caller is told "not applied"
// (raft.ErrProposalDropped) only when another entry is committed at the
// index where its entry was: an entry that was merely overwritten in this
// node's log may still be on other nodes and commit under a later leader
// (Raft §5.4.2, figure 8). After a leadership change (new term, or the
// leader lost) a caller whose command was already handed to raft keeps
// waiting for that definite outcome for Config.LeaderChangeWait (default
// one election timeout), then gets ErrOutcomeUnknown.
//
// # Digest checkpoints
//
// Every Config.CheckpointEntries entries (and on Verify) the leader commits
// a checkpoint entry; each replica hashes its state at exactly that index
// from a point-in-time view, off the apply goroutine; the leader collects
// the digests (Config.CheckpointPeers) and commits a verdict entry with
// the majority's digest. A replica whose digest differs halts apply at the
// verdict (Halt.Checkpoint) and stays in raft; with no majority every
// replica halts. See checkpoint.go.
//
// # Failures
//
// A Storage error, an undecodable entry, a state machine error that is not
// a crash, or MaxRestarts failed state machine restarts in a row stop the
// node: Done is closed and Err names what failed and where. A state machine
// error wrapping ErrStateMachineCrashed makes the node restart it
// (Restarter), restore the latest snapshot, replay the log up to the last
// applied entry and retry the batch: nothing applied twice or skipped.
//
// A node removed from the configuration keeps running (it no longer
// receives traffic and, not being a voter, does not campaign); the owner
// stops it.
package node
