package node

import (
	"sync/atomic"
	"time"
)

// Automatic snapshots and checkpoints read the whole state out of the
// state machine (a snapshot also writes it to disk; a checkpoint hashes
// it). With a small state that is cheap and they run every
// SnapshotEntries / CheckpointEntries entries. With a large one each takes
// seconds of CPU and disk, and back to back they would starve the writes
// they are meant to protect (a 256 MiB kv state: 1.6-1.7k puts/s at 64
// clients against 5.1k without them, docs/benchmarks.md). So each kind is paced: after a
// run that took d, the next automatic one waits until paceFactor×d has
// passed since it ended, which keeps either kind to at most
// 1/(paceFactor+1) of the time. A run shorter than paceMinRun sets no pace:
// it costs little, and the entry counts alone keep the cadence
// predictable. Snapshots asked for explicitly (ExportSnapshot) and
// checkpoints run by Verify are not paced.
const (
	paceFactor = 9
	paceMinRun = time.Second
)

// pacer spaces the automatic runs of one background job. Safe for
// concurrent use.
type pacer struct {
	notBefore atomic.Int64 // unix nanoseconds; 0: no wait
}

// ready reports whether an automatic run may start at now.
func (p *pacer) ready(now time.Time) bool { return p.wait(now) <= 0 }

// wait returns how long from now an automatic run must wait (<= 0: none).
func (p *pacer) wait(now time.Time) time.Duration {
	return time.Duration(p.notBefore.Load() - now.UnixNano())
}

// ran records a run from start to end.
func (p *pacer) ran(start, end time.Time) {
	d := end.Sub(start)
	if d < paceMinRun {
		p.notBefore.Store(0)
		return
	}
	p.notBefore.Store(end.Add(paceFactor * d).UnixNano())
}

// now is the node's wall clock (Config.clock, for tests).
func (n *Node) now() time.Time {
	if n.cfg.clock != nil {
		return n.cfg.clock()
	}
	return time.Now()
}
