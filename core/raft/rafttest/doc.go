// Package rafttest tests core/raft as a whole cluster, deterministically.
//
// It has three parts:
//
//   - Checker verifies Raft's safety properties (figure 3 of the paper:
//     election safety, log matching, leader completeness, state machine
//     safety) plus commit/applied monotonicity and ReadIndex freshness over
//     a history of observations. It knows nothing about how the history
//     was produced.
//
//   - Sim runs 3- or 5-node clusters of RawNodes on MemoryStorage under a
//     scheduler driven by one seed: ticks, message delivery with drops,
//     duplicates, reordering, delays and replays of stale messages,
//     symmetric and one-way partitions, crash-restarts that keep only what
//     was durable, membership changes, leadership transfers, forced
//     campaigns, ReadIndex (and lease) reads served and checked against
//     the linearizable order, snapshots and compaction. The simulated
//     driver follows the Ready contract (persist, then send, then apply,
//     then Advance), except that a leader whose term and vote do not change
//     sends its new entries before writing them, as core/node does; a crash
//     may come between the two, and the followers' answers may arrive
//     before the write is done (every commit a leader makes must name an
//     entry durable on a quorum). Writes made without MustSync (commit-only
//     hard states) may be lost at a crash, up to the last synced write.
//     Each seed runs one fault profile (ProfileNames); lease-reads runs
//     lease-based reads on clocks whose rates differ within the drift the
//     lease tolerates, with transfers and aborts, forced campaigns and read
//     contexts reused across restarts. The Checker runs after every step
//     and at every role change; after the final heal the cluster must
//     elect a leader and converge within a bounded number of ticks.
//
//   - InteractionEnv runs scripted scenarios (core/raft/testdata/*.txt)
//     through github.com/cockroachdb/datadriven and prints every Ready and
//     message, so the golden files are reviewable accounts of the protocol.
//     It checks every scenario with a Checker too.
//
// Replaying a simulator failure: a failing seed prints its number and the
// last trace lines; rerun it alone, with a longer trace, with
//
//	go test ./core/raft/rafttest -run 'TestSim$' -sim.start=N -sim.seeds=1 -sim.trace=500
//
// Flags: -sim.seeds (default 500), -sim.start (default 1), -sim.steps
// (default 2000), -sim.profile (run only this profile; by default each
// seed draws one), -sim.trace (lines printed on failure), -sim.dump (print
// every seed's trace). Odd seeds run three nodes, even seeds five.
//
// Regenerating the scenario golden files after an intended behaviour
// change (review the diff):
//
//	go test ./core/raft/rafttest -run TestInteraction -rewrite
//
// and -scenario=path runs one scenario file or directory instead of
// core/raft/testdata.
package rafttest
