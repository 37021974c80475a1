package node

import (
	"sync/atomic"
	"time"
)

// HistogramBounds are the upper bounds of the buckets of the node's latency
// histograms (Latencies), from 50 µs to 5 minutes.
var HistogramBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// Histogram is a snapshot of one latency histogram. Counts[i] counts the
// observations in (HistogramBounds[i-1], HistogramBounds[i]] (not
// cumulative); the last element counts those above the last bound.
type Histogram struct {
	Counts [len(HistogramBounds) + 1]uint64
	// Sum is the total of the observed durations.
	Sum time.Duration
}

// Count is the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// histogram is a lock-free latency histogram: an observation costs a few
// comparisons and two atomic adds, and never allocates.
type histogram struct {
	counts [len(HistogramBounds) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

func (h *histogram) observe(d time.Duration) { h.observeN(d, 1) }

// observeN records k observations of d each.
func (h *histogram) observeN(d time.Duration, k uint64) {
	if k == 0 {
		return
	}
	i := 0
	for i < len(HistogramBounds) && d > HistogramBounds[i] {
		i++
	}
	h.counts[i].Add(k)
	h.sum.Add(int64(d) * int64(k))
}

func (h *histogram) snapshot() Histogram {
	var s Histogram
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// Latencies are the node's latency histograms since it started.
type Latencies struct {
	// ProposalCommit: from a Propose (or membership change) call on this
	// node until its entry is committed, as this node learns it.
	ProposalCommit Histogram
	// CommitApply: from the loop handing committed entries to the apply
	// goroutine until the state machine has applied them (one observation
	// per entry).
	CommitApply Histogram
	// StorageSync: Storage.Save calls that fsync (write and sync).
	StorageSync Histogram
	// SnapshotCreate: local snapshots, from asking the state machine for
	// its state until the body is committed to Storage.
	SnapshotCreate Histogram
	// SnapshotRestore: restoring the state machine from a snapshot (one
	// received from the leader, or the local one at start or after a
	// state machine restart).
	SnapshotRestore Histogram
	// ReadLinearizable: successful Read calls (ReadIndex round, wait for
	// apply, query). ReadStale: successful StaleRead calls.
	ReadLinearizable, ReadStale Histogram
}

type latencies struct {
	proposalCommit, commitApply, storageSync, snapshotCreate, snapshotRestore histogram
	readLinearizable, readStale                                               histogram
}

// Latencies returns the node's latency histograms.
func (n *Node) Latencies() Latencies {
	l := &n.m.lat
	return Latencies{
		ProposalCommit: l.proposalCommit.snapshot(), CommitApply: l.commitApply.snapshot(),
		StorageSync: l.storageSync.snapshot(), SnapshotCreate: l.snapshotCreate.snapshot(),
		SnapshotRestore:  l.snapshotRestore.snapshot(),
		ReadLinearizable: l.readLinearizable.snapshot(), ReadStale: l.readStale.snapshot(),
	}
}

// Refusal is why the node refused a proposal (a command or membership
// change) before it entered the log: the caller got ErrNotApplied.
type Refusal uint8

// The refusals counted in Metrics.Refused.
const (
	// RefusedNoLeader: no leader known (election, or no quorum).
	RefusedNoLeader Refusal = iota
	// RefusedTooLarge: the command is over Config.MaxEntryBytes.
	RefusedTooLarge
	// RefusedBackpressure: the state machine is too far behind.
	RefusedBackpressure
	// RefusedDropped: raft dropped it (a leadership transfer in progress,
	// the uncommitted-entries limit, a follower that cannot forward, ...).
	RefusedDropped
	// RefusedConfChange: a membership change is still being applied.
	RefusedConfChange
	// RefusedHalted: this node's apply is halted.
	RefusedHalted
	// RefusedStopped: the node is stopping or stopped.
	RefusedStopped

	// NumRefusals is the number of Refusal values.
	NumRefusals
)

var refusalNames = [NumRefusals]string{"no_leader", "too_large", "backpressure", "dropped", "conf_change_in_progress", "halted", "stopped"}

// String is the reason's name as used in metric labels: no_leader,
// too_large, backpressure, dropped, conf_change_in_progress, halted,
// stopped.
func (r Refusal) String() string {
	if r < NumRefusals {
		return refusalNames[r]
	}
	return "unknown"
}

func (n *Node) refused(r Refusal, k int) { n.m.refused[r].Add(uint64(k)) }
