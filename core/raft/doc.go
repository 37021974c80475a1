// Package raft is a pure, deterministic implementation of the Raft
// consensus protocol (Ongaro & Ousterhout, "In Search of an Understandable
// Consensus Algorithm", and Ongaro's thesis "Consensus: Bridging Theory and
// Practice").
//
// The package does no I/O, starts no goroutines, reads no clock and draws
// randomness only from a PRNG seeded by Config.Seed. Time enters as
// RawNode.Tick, input as RawNode.Step (network messages) and
// RawNode.Propose; output leaves as a Ready. A single goroutine (the
// driver) owns a RawNode and runs this loop:
//
//	for {
//		select {
//		case <-ticker.C:
//			rn.Tick()
//		case m := <-recv:
//			_ = rn.Step(m)
//		case p := <-proposals:
//			err := rn.Propose(p) // ErrProposalDropped / ErrNoLeader
//			...
//		}
//		if !rn.HasReady() {
//			continue
//		}
//		rd := rn.Ready()
//		// 1. Persist, in this order and BEFORE sending anything:
//		//    rd.Snapshot (if !rd.Snapshot.IsEmpty(): store it and restore the
//		//    state machine from it), rd.HardState (if not empty) and
//		//    rd.Entries (one batch; fsync if rd.MustSync).
//		store.Save(rd.HardState, rd.Entries, rd.MustSync)
//		// 2. Send rd.Messages (AFTER step 1: a vote or an append
//		//    acknowledgement must never leave before it is durable).
//		transport.Send(rd.Messages)
//		// 3. Apply rd.CommittedEntries in order, each exactly once. For an
//		//    EntryConfChange entry: cc.Unmarshal(e.Data); rn.ApplyConfChange(cc).
//		//    Serve each rd.ReadStates[i] once applied >= its Index.
//		// 4. Tell the node the Ready was handled.
//		rn.Advance(rd)
//	}
//
// Membership changes use the single-server scheme with etcd's apply-time
// semantics: a ConfChange takes effect on a node when the driver applies
// the committed entry, and the leader refuses a new change while an
// earlier one is not applied (Raft §6, thesis §4.1).
//
// Pre-vote (thesis §9.6) and check-quorum are on by default. Reads use
// ReadIndex (thesis §6.4); lease-based reads are opt-in.
//
// Where each part of the protocol lives:
//
//	raft.go         the node's state, Config checks, role transitions, Step
//	                dispatch and the per-role step functions
//	election.go     election timeouts, campaigns and pre-vote, voting,
//	                check-quorum (Raft §5.2, §5.4.1; thesis §6.2, §9.6)
//	replication.go  AppendEntries, heartbeats, the consistency check and
//	                conflict hint, flow control, commit (Raft §5.3, §5.4)
//	snapshot.go     sending and installing snapshots (Raft §7)
//	reads.go        ReadIndex and leases (thesis §6.4, §6.4.1)
//	membership.go   configuration, bootstrap, conf changes (Raft §6)
//	transfer.go     leadership transfer (thesis §3.10)
//	log.go, log_unstable.go, progress.go, storage.go, rawnode.go
//
// Errors: NewRawNode returns storage errors. Once running, a LogReader error
// other than ErrCompacted or ErrUnavailable inside Tick, Step, Ready or
// Advance leaves the instance unusable, and the call panics with an error
// value that wraps the storage error (errors.Is/As work on it). A driver
// recovers it and fail-stops; it must not keep using the RawNode.
package raft
