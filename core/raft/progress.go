package raft

import "fmt"

// ProgressState is how the leader replicates to one follower.
type ProgressState uint8

// Progress states.
const (
	// ProgressProbe: the follower's position is unknown; the leader sends at
	// most one MsgApp per heartbeat interval until it learns the match.
	ProgressProbe ProgressState = iota
	// ProgressReplicate: the leader streams entries optimistically, bounded
	// by the in-flight window.
	ProgressReplicate
	// ProgressSnapshot: the follower needs a snapshot; appends are paused
	// until the snapshot is reported done or failed.
	ProgressSnapshot
)

// String returns the state's name.
func (s ProgressState) String() string {
	switch s {
	case ProgressProbe:
		return "probe"
	case ProgressReplicate:
		return "replicate"
	case ProgressSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// progress is the leader's view of one member (including itself).
//
// NB: like in most Raft implementations, the transitions of this state
// machine are driven from replication.go; this type only keeps the bookkeeping.
type progress struct {
	id uint64
	// match is the highest index known replicated; next is the next index to
	// send. Invariant: match < next.
	match, next uint64
	state       ProgressState
	// pendingSnapshot is the index of the snapshot being sent (snapshot
	// state only).
	pendingSnapshot uint64
	// recentActive is set by any message from the member; check-quorum
	// clears it every election timeout.
	recentActive bool
	// probeSent pauses a probing follower after one MsgApp until it answers
	// or a heartbeat response arrives.
	probeSent bool
	isLearner bool
	// heardTick is the highest heartbeat stamp (leader tick + 1) the member
	// acknowledged in this term; it dates the member's lease (0: none).
	heardTick uint64
	// readRound is the highest read round (reads.go) the member answered
	// in this term.
	readRound uint64
	// sentCommit is the highest commit index the leader has sent to the
	// member in this term (in a MsgApp, or the capped commit of a
	// heartbeat). The member's commit index cannot exceed it unless a later
	// message raised it.
	sentCommit uint64
	inflights  inflights
}

func (pr *progress) resetState(state ProgressState) {
	pr.probeSent = false
	pr.pendingSnapshot = 0
	pr.state = state
	pr.inflights.reset()
}

func (pr *progress) becomeProbe() {
	if pr.state == ProgressSnapshot {
		pending := pr.pendingSnapshot
		pr.resetState(ProgressProbe)
		pr.next = max(pr.match+1, pending+1)
		return
	}
	pr.resetState(ProgressProbe)
	pr.next = pr.match + 1
}

func (pr *progress) becomeReplicate() {
	pr.resetState(ProgressReplicate)
	pr.next = pr.match + 1
}

func (pr *progress) becomeSnapshot(snapIndex uint64) {
	pr.resetState(ProgressSnapshot)
	pr.pendingSnapshot = snapIndex
}

// maybeUpdate records an acknowledgement of index n. It never moves match
// backwards (a stale response is ignored) and keeps next > match.
func (pr *progress) maybeUpdate(n uint64) bool {
	updated := false
	if pr.match < n {
		pr.match = n
		updated = true
		pr.probeSent = false
	}
	if pr.next < n+1 {
		pr.next = n + 1
	}
	return updated
}

// maybeDecrTo handles a rejection of the MsgApp whose prevIndex was
// rejected; nextHint is where the conflict hint says to probe next. It
// returns false if the rejection is stale.
func (pr *progress) maybeDecrTo(rejected, nextHint uint64) bool {
	if pr.state == ProgressReplicate {
		if rejected <= pr.match {
			return false // stale: we already know a higher match
		}
		pr.becomeProbe()
		pr.next = max(pr.match+1, min(nextHint, rejected))
		return true
	}
	if pr.next-1 != rejected {
		return false // not the probe we are waiting for
	}
	pr.next = max(pr.match+1, min(nextHint, rejected))
	pr.probeSent = false
	return true
}

// sentEntries updates the state after a MsgApp carrying n entries up to
// lastIndex, of total size bytes.
func (pr *progress) sentEntries(n int, lastIndex, bytes uint64) {
	switch pr.state {
	case ProgressReplicate:
		if n > 0 {
			pr.next = lastIndex + 1
			pr.inflights.add(lastIndex, bytes)
		}
	case ProgressProbe:
		pr.probeSent = true
	}
}

// canBumpCommit reports whether an (empty) MsgApp carrying committed could
// still raise the member's commit index: a MsgApp lets the member commit up
// to min(committed, next-1), and nothing sent so far reached that far.
func (pr *progress) canBumpCommit(committed uint64) bool {
	return committed > pr.sentCommit && pr.sentCommit < pr.next-1
}

// sentCommitIndex records that a message told the member commit index c.
func (pr *progress) sentCommitIndex(c uint64) {
	pr.sentCommit = max(pr.sentCommit, c)
}

// isPaused reports whether the leader should hold back MsgApp.
func (pr *progress) isPaused() bool {
	switch pr.state {
	case ProgressProbe:
		return pr.probeSent
	case ProgressReplicate:
		return pr.inflights.full()
	default:
		return true
	}
}

// inflight is one unacknowledged MsgApp: its last index and size.
type inflight struct {
	index uint64
	bytes uint64
}

// inflights is a ring buffer of the MsgApps sent in replicate state that
// are not yet acknowledged, bounded in count and in bytes.
type inflights struct {
	buf      []inflight // allocated once, len == maxCount
	start    int
	count    int
	bytes    uint64
	maxBytes uint64 // 0 = unlimited
}

func newInflights(maxCount int, maxBytes uint64) inflights {
	return inflights{buf: make([]inflight, maxCount), maxBytes: maxBytes}
}

func (in *inflights) add(index, bytes uint64) {
	if in.count == len(in.buf) {
		// Only reachable if the caller ignored full(); drop the oldest so the
		// window stays bounded.
		in.freeFirst()
	}
	i := (in.start + in.count) % len(in.buf)
	in.buf[i] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// freeLE frees every in-flight message whose last index is <= to.
func (in *inflights) freeLE(to uint64) {
	for in.count > 0 && in.buf[in.start].index <= to {
		in.freeFirst()
	}
}

func (in *inflights) freeFirst() {
	if in.count == 0 {
		return
	}
	in.bytes -= in.buf[in.start].bytes
	in.start = (in.start + 1) % len(in.buf)
	in.count--
	if in.count == 0 {
		in.start = 0
	}
}

func (in *inflights) full() bool {
	return in.count == len(in.buf) || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) reset() {
	in.start, in.count, in.bytes = 0, 0, 0
}

// ProgressStatus is a snapshot of the leader's view of one member.
type ProgressStatus struct {
	// Match is the highest index known replicated on the member; Next is
	// the next index the leader will send it.
	Match, Next uint64
	State       ProgressState
	// PendingSnapshot is the index of the snapshot being sent (snapshot
	// state only).
	PendingSnapshot uint64
	// RecentActive: the member was heard from since the last check-quorum.
	RecentActive bool
	// Paused: the leader is currently holding back appends to the member.
	Paused    bool
	IsLearner bool
	// Inflight is the number of unacknowledged appends (replicate state).
	Inflight int
}
