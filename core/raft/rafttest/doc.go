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
//     was persisted, membership changes, leadership transfers, ReadIndex,
//     snapshots and compaction. The simulated driver follows the Ready
//     contract exactly (persist, then send, then apply, then Advance). The
//     Checker runs after every step; after the final heal the cluster must
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
// (default 2000), -sim.trace (lines printed on failure), -sim.dump (print
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
