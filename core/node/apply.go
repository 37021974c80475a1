package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// applyTask is what the loop hands the apply goroutine from one Ready: an
// installed snapshot (first) and committed entries (after it), with the
// ConfState raft returned for each membership entry.
//
// The entries are either held in ents or, when the apply backlog held in
// memory is over Config.MaxApplyBacklogBytes or apply is halted, only
// named by the range [lo, hi]: the apply goroutine reads them back from
// Storage when it gets there. They are committed and durable (the loop
// persists a Ready before it hands its committed entries over), and the
// log is never compacted beyond the applied index (onSnapshotTaken), so
// they are there unless a snapshot installed from the leader replaced
// them, which then comes next in the queue and covers them.
type applyTask struct {
	snap       *raft.Snapshot
	ents       []raft.Entry
	lo, hi     uint64 // entries to read from Storage when ents is nil and hi > 0
	bytes      int64  // bytes of ents, counted in applier.backlogBytes
	confStates map[uint64]raft.ConfState
	at         time.Time // when the loop handed it over
}

// last is the index of the task's last entry (0: none).
func (t *applyTask) last() uint64 {
	if n := len(t.ents); n > 0 {
		return t.ents[n-1].Index
	}
	return t.hi
}

// first is the index of the task's first entry (0: none).
func (t *applyTask) first() uint64 {
	if len(t.ents) > 0 {
		return t.ents[0].Index
	}
	return t.lo
}

// observeApplied records the commit-to-apply latency of the entries of
// tasks that are now applied (a halted apply leaves some unapplied).
func (a *applier) observeApplied(tasks []applyTask) {
	now := time.Now()
	for i := range tasks {
		t := &tasks[i]
		lo, hi := t.first(), min(t.last(), a.applied)
		if lo > 0 && hi >= lo && !t.at.IsZero() {
			a.n.m.lat.commitApply.observeN(now.Sub(t.at), hi-lo+1)
		}
	}
}

// entryBytes is what an entry costs in the apply backlog.
func entryBytes(e *raft.Entry) int64 { return int64(len(e.Data)) + 48 }

// replayChunkBytes bounds one read of committed entries from Storage
// (replay after a state machine restart, spilled backlog, resuming a halt).
const replayChunkBytes = 4 << 20

// applier is the apply goroutine: it feeds committed entries to the state
// machine in log order, in batches, routes results to waiting callers,
// starts snapshots between batches (snapjob.go), restarts a crashed state
// machine and halts apply on a command it keeps failing on (halt.go).
type applier struct {
	n *Node
	// sm is the state machine; the apply goroutine replaces it (reload.go)
	// holding queryMu, so queries read it holding queryMu shared.
	sm  StateMachine
	ctx context.Context // never cancelled: apply has no deadline (STYLE §5)

	mu         sync.Mutex
	tasks      []applyTask
	closed     bool // finish queued tasks, then exit
	aborted    bool // exit after the current batch
	fatalE     error
	signal     chan struct{}
	snapReqs   []chan snapReply
	reloadReqs []*reloadReq
	donec      chan struct{}
	// backlogBytes is the size of the entries handed over in memory and
	// not yet processed; spilled counts the tasks handed over as ranges
	// (entries left in Storage) and not yet processed. Together they are
	// the apply backlog the loop refuses proposals on (overloaded).
	backlogBytes atomic.Int64
	spilled      atomic.Int64
	backlogPeak  atomic.Int64 // highest backlogBytes seen

	// queryMu is held shared by queries and exclusively while the state
	// machine is being restored or restarted.
	queryMu sync.RWMutex

	// Owned by the apply goroutine.
	meta        clusterMeta
	applied     uint64 // last log index processed
	appliedTerm uint64
	fsmApplied  uint64 // FSM commands at or below this index are in the FSM
	lastSnap    raft.Snapshot
	info        FSMInfo
	metaDirty   bool   // meta changed since publishStatus
	restarts    uint64 // state machine restarts so far
	handedHi    uint64 // highest committed index handed over by the loop
	// covered is set when committed entries being read back from Storage
	// turned out to be replaced by a snapshot the loop installed: entries
	// are dropped until that snapshot's task arrives.
	covered bool

	// Halted apply (halt.go).
	halt      *Halt           // non-nil while halted (published in Node.halt)
	scanned   uint64          // while halted: committed entries up to here were searched for a skip entry
	skipNext  uint64          // resuming on a skip entry: the command at this index is skipped
	skipped   []uint64        // commands skipped above lastSnap's index; a replay skips them too
	resumedBy map[uint64]bool // skip entry index -> this node skipped its target on it

	// Client sessions (sessions.go).
	//
	// sessions is the client session table, part of the replicated state
	// like meta. It has taken the entries up to sessionsAt into account:
	// applied, except when a halt cut a batch short after its keyed
	// commands were decided; the decisions of those not applied yet wait
	// in decided for the entries to come again, so that every entry is
	// decided once, in log order, as on every other replica.
	sessions   *sessionTable
	sessionsAt uint64
	decided    map[uint64]sessionDecision
	// undelivered lists, in order, the keyed commands above lastSnap's
	// index that were not delivered to the state machine (duplicates,
	// expired sessions): a replay after a state machine restart skips
	// them.
	undelivered []uint64
	// sessionCount is sessions.len(), for Status.
	sessionCount atomic.Int64

	// Digest checkpoints (checkpoint.go).
	ckptLast     uint64 // index of the last checkpoint entry applied
	ckptAwaiting uint64 // a checkpoint applied here whose verdict is not (0: none)
	verdictFor   uint64 // checkpoint index of the last verdict applied

	// Local snapshots (snapjob.go).
	job           *snapJob         // the snapshot whose body is being written, or nil
	pendingReqs   []chan snapReply // ExportSnapshot callers not yet served
	snapFailedAt  uint64           // no automatic retry before applied passes it
	snapPace      pacer            // spaces automatic snapshots (pace.go)
	snapAfterSkip bool             // take a snapshot as soon as possible (a command was skipped)

	// State machine reloads (reload.go).
	reload         *reload      // in progress, or nil
	pendingReloads []*reloadReq // waiting their turn

	statusMu   sync.Mutex
	statusMeta clusterMeta // copy of meta for Status
	statusInfo FSMInfo
}

type snapReply struct {
	snap raft.Snapshot
	err  error
}

func newApplier(n *Node, meta clusterMeta, sessions *sessionTable, snap raft.Snapshot, info FSMInfo, fsmApplied uint64) *applier {
	a := &applier{
		n: n, sm: n.sm, ctx: context.Background(),
		signal: make(chan struct{}, 1), donec: make(chan struct{}),
		meta: meta, sessions: sessions, applied: snap.Metadata.Index, appliedTerm: snap.Metadata.Term,
		fsmApplied: fsmApplied, lastSnap: snap, info: info, handedHi: snap.Metadata.Index,
		resumedBy: map[uint64]bool{}, sessionsAt: snap.Metadata.Index, decided: map[uint64]sessionDecision{},
	}
	a.sessionCount.Store(int64(sessions.len()))
	a.publishStatus()
	return a
}

// enqueue hands a task to the apply goroutine (loop goroutine). Its
// entries stay in memory while the backlog held in memory is within
// Config.MaxApplyBacklogBytes and apply is not halted; otherwise only
// their range is handed over (see applyTask).
func (a *applier) enqueue(t applyTask) {
	if len(t.ents) > 0 {
		var b int64
		for i := range t.ents {
			b += entryBytes(&t.ents[i])
		}
		if a.n.halt.Load() != nil || a.backlogBytes.Load()+b > a.n.cfg.MaxApplyBacklogBytes {
			t.lo, t.hi, t.ents = t.ents[0].Index, t.ents[len(t.ents)-1].Index, nil
			a.spilled.Add(1)
			a.n.m.spills.Add(1)
		} else {
			t.bytes = b
			if v := a.backlogBytes.Add(b); v > a.backlogPeak.Load() {
				a.backlogPeak.Store(v) // loop goroutine only
			}
		}
	}
	a.mu.Lock()
	a.tasks = append(a.tasks, t)
	a.mu.Unlock()
	a.wake()
}

func (a *applier) wake() {
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

func (a *applier) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.wake()
}

func (a *applier) abort() {
	a.mu.Lock()
	a.aborted = true
	a.mu.Unlock()
	a.wake()
}

func (a *applier) fatalErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fatalE
}

// requestSnapshot asks for a snapshot at the current applied index.
func (a *applier) requestSnapshot(ctx context.Context) (raft.Snapshot, error) {
	ch := make(chan snapReply, 1)
	a.mu.Lock()
	if a.closed || a.aborted {
		a.mu.Unlock()
		return raft.Snapshot{}, NotApplied(ErrStopped)
	}
	a.snapReqs = append(a.snapReqs, ch)
	a.mu.Unlock()
	a.wake()
	select {
	case r := <-ch:
		return r.snap, r.err
	case <-ctx.Done():
		return raft.Snapshot{}, ctx.Err()
	case <-a.donec:
		return raft.Snapshot{}, NotApplied(ErrStopped)
	}
}

func (a *applier) run() {
	defer close(a.donec)
	// Whatever way it exits: no snapshot body is written (or hashed) after
	// the node stopped, and nobody keeps waiting for one.
	defer a.stopSnapshots()
	defer a.cancelDigests()
	for {
		a.mu.Lock()
		tasks, reqs, reloads := a.tasks, a.snapReqs, a.reloadReqs
		a.tasks, a.snapReqs, a.reloadReqs = nil, nil, nil
		closed, aborted := a.closed, a.aborted
		a.mu.Unlock()
		a.pendingReqs = append(a.pendingReqs, reqs...)
		a.pendingReloads = append(a.pendingReloads, reloads...)
		if aborted {
			return
		}
		if err := a.pollSnapshot(); err != nil {
			a.fail(err)
			return
		}
		a.pollReload()
		if len(tasks) == 0 && !a.snapshotDue() {
			if closed {
				return
			}
			a.idle()
			continue
		}
		var handed, ranges int64
		for i := range tasks {
			handed += tasks[i].bytes
			if tasks[i].ents == nil && tasks[i].hi > 0 {
				ranges++
			}
		}
		err := a.process(tasks)
		a.observeApplied(tasks)
		a.backlogBytes.Add(-handed)
		a.spilled.Add(-ranges)
		if err == nil {
			a.maybeCheckpoint()
		}
		if err == nil && a.snapshotDue() {
			err = a.startSnapshot()
		}
		if err != nil {
			a.fail(err)
			return
		}
	}
}

// fail records a fatal error and makes the loop fail-stop.
func (a *applier) fail(err error) {
	a.mu.Lock()
	a.fatalE = err
	a.mu.Unlock()
	a.n.fatal(err)
}

func replySnap(reqs []chan snapReply, s raft.Snapshot, err error) {
	for _, ch := range reqs {
		ch <- snapReply{snap: s, err: err}
	}
}

// overloaded reports whether the apply backlog is over its bound
// (Config.MaxApplyBacklogBytes): proposals are refused then.
func (a *applier) overloaded() bool {
	return a.backlogBytes.Load() >= a.n.cfg.MaxApplyBacklogBytes || a.spilled.Load() > 0
}

// process applies tasks in order: entries are merged across tasks into
// batches; a snapshot or a range read from Storage splits them. While
// apply is halted, entries are dropped (they are read back from Storage on
// resuming) and searched for a skip entry (halt.go).
func (a *applier) process(tasks []applyTask) error {
	// Raft installs a snapshot only beyond its commit index, so it covers
	// every entry handed over before it: start at the last snapshot.
	start := 0
	for i := range tasks {
		if tasks[i].snap != nil {
			start = i
		}
		a.handedHi = max(a.handedHi, tasks[i].last())
	}
	var ents []raft.Entry
	confStates := map[uint64]raft.ConfState{}
	flush := func() error {
		var err error
		if a.halt == nil && !a.covered {
			err = a.applyEntries(ents, confStates)
		}
		ents = nil
		clear(confStates)
		return err
	}
	for i := range tasks[start:] {
		t := &tasks[start+i]
		if t.snap != nil {
			if err := flush(); err != nil {
				return err
			}
			a.covered = false
			if err := a.install(*t.snap); err != nil {
				return err
			}
		}
		if t.ents == nil && t.hi > 0 {
			if err := flush(); err != nil {
				return err
			}
			if err := a.applyRange(t.lo, t.hi, t.confStates); err != nil {
				return err
			}
			continue
		}
		ents = append(ents, t.ents...)
		for k, v := range t.confStates {
			confStates[k] = v
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return a.whileHalted()
}

// applyRange applies the committed entries [lo, hi], reading them from
// Storage in chunks. It stops early when apply halts or the entries turn
// out to be covered by a snapshot the loop installed meanwhile.
func (a *applier) applyRange(lo, hi uint64, confStates map[uint64]raft.ConfState) error {
	for a.halt == nil && !a.covered {
		lo = max(lo, a.applied+1)
		if lo > hi {
			return nil
		}
		ents, err := a.readCommitted(lo, hi)
		if err != nil || ents == nil {
			return err
		}
		if err := a.applyEntries(ents, confStates); err != nil {
			return err
		}
	}
	return nil
}

// readCommitted reads up to replayChunkBytes of the committed entries
// [lo, hi] from Storage. It returns nil, nil (and sets covered) when they
// were replaced by a snapshot the loop installed (next in the queue).
func (a *applier) readCommitted(lo, hi uint64) ([]raft.Entry, error) {
	ents, err := a.n.st.Entries(lo, hi+1, replayChunkBytes)
	if errors.Is(err, raft.ErrCompacted) {
		if s, serr := a.n.st.Snapshot(); serr == nil && s.Metadata.Index >= lo {
			a.covered = true
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("node: apply: read committed entries [%d,%d] from storage: %w", lo, hi, err)
	}
	if len(ents) == 0 || ents[0].Index != lo {
		return nil, fmt.Errorf("node: apply: storage returned no entry at committed index %d", lo)
	}
	return ents, nil
}

// install restores the state machine from a snapshot raft installed.
func (a *applier) install(snap raft.Snapshot) error {
	si := snap.Metadata.Index
	if si <= a.applied {
		return nil // raft never installs an older snapshot; be safe
	}
	a.cancelSnapshot() // no body streams while the state is replaced
	a.cancelDigests()
	// The state becomes the leader's: digests of this node's own earlier
	// states compare nothing any more.
	a.n.ck.drop(0)
	a.ckptAwaiting = 0
	a.cancelReload(fmt.Sprintf("a snapshot at index %d from the leader replaces the state", si))
	var (
		hdr      SnapshotHeader
		sessions *sessionTable
	)
	a.queryMu.Lock()
	err := a.withRestarts(si, func() error {
		var err error
		hdr, sessions, err = a.restoreFrom(snap)
		return err
	})
	a.queryMu.Unlock()
	if err != nil {
		return err
	}
	a.meta = metaFromHeader(hdr)
	a.sessions, a.undelivered, a.sessionsAt = sessions, nil, si
	clear(a.decided)
	a.sessionCount.Store(int64(sessions.len()))
	a.meta.conf = snap.Metadata.ConfState
	if err := a.checkVersion(a.meta.version, a.meta.versionIndex); err != nil {
		return err
	}
	a.applied, a.appliedTerm, a.fsmApplied = si, snap.Metadata.Term, si
	a.lastSnap = snap
	a.pruneSkipped()
	if a.skipNext <= si {
		a.skipNext = 0
	}
	a.metaDirty = true
	a.publish()
	if a.halt != nil {
		// si > commit index >= the halt index: the leader's state covers
		// the command this node failed on.
		a.resume(fmt.Sprintf("installed a snapshot at index %d from the leader, which covers it", si))
	}
	return nil
}

// restoreFrom restores the FSM from snap and returns its header and
// session table. The caller holds queryMu exclusively.
func (a *applier) restoreFrom(snap raft.Snapshot) (SnapshotHeader, *sessionTable, error) {
	return a.n.readSnapshot(a.ctx, a.sm, a.info.Name, snap, true)
}

func (a *applier) checkVersion(v uint32, at uint64) error {
	if v < a.info.MinVersion || v > a.info.MaxVersion {
		return fmt.Errorf("node: state machine %q supports versions [%d,%d] but version %d is active since index %d; refusing to apply", a.info.Name, a.info.MinVersion, a.info.MaxVersion, v, at)
	}
	return nil
}

// applyEntries applies consecutive committed entries. If the state machine
// keeps failing on a command, it applies everything before it, halts
// (a.halt is set) and returns nil.
func (a *applier) applyEntries(ents []raft.Entry, confStates map[uint64]raft.ConfState) error {
	maxBatch := a.n.cfg.MaxApplyBatch
	var (
		cmds   []Command
		obs    []observedEntry   // every entry of the batch, for result routing
		cmdAt  []int             // obs position of cmds[i]
		cmdRec []*sessionResult  // where to keep cmds[i]'s result (keyed commands), or nil
		dups   []dupAnswer       // keyed duplicates of the batch, answered after it
		decs   []sessionDecision // keyed commands of the batch decided now
	)
	flush := func() error {
		if len(obs) == 0 {
			return nil
		}
		var halt *haltAt
		if len(cmds) > 0 {
			res, h, err := a.applyCmds(cmds)
			if err != nil {
				return err
			}
			halt = h
			for i, r := range res {
				o := &obs[cmdAt[i]]
				if r.err != nil {
					o.err = r.err
				} else {
					o.val = r.val
				}
				if rec := cmdRec[i]; rec != nil {
					if r.err != nil {
						rec.state = resultLost
					} else {
						rec.keep(r.val)
					}
				}
			}
			if len(res) > 0 {
				a.n.m.applyBatches.Add(1)
				a.n.m.commandsApplied.Add(uint64(len(res)))
				a.fsmApplied = max(a.fsmApplied, cmds[len(res)-1].Index)
				a.mirror(cmds[:len(res)], res)
			}
		}
		// NB: after the results above: a duplicate may repeat a command of
		// this very batch.
		for _, d := range dups {
			d.rec.answer(&obs[d.at], d.client, d.seq)
		}
		done := obs
		if halt != nil {
			// Everything before the failing command is processed; it and
			// the rest are not. Their session decisions stand: they come
			// again after the halt (sessionsAt).
			done = obs[:cmdAt[len(halt.results)]]
			for _, d := range decs {
				if d.index >= halt.index {
					a.decided[d.index] = d
				}
			}
		}
		if len(done) > 0 {
			// Publish first: a caller that got its result sees Applied() >=
			// its index.
			last := done[len(done)-1]
			a.applied, a.appliedTerm = last.index, last.term
			a.sessionCount.Store(int64(a.sessions.len()))
			a.publish()
			a.n.waits.applied(done)
		}
		if halt != nil {
			a.enterHalt(halt.index, halt.attempts, halt.cause)
		}
		cmds, obs, cmdAt, cmdRec, dups, decs = cmds[:0], obs[:0], cmdAt[:0], cmdRec[:0], dups[:0], decs[:0]
		return nil
	}
	for _, e := range ents {
		if a.halt != nil {
			return nil
		}
		if e.Index <= a.applied {
			continue // covered by an installed snapshot
		}
		if e.Index != a.applied+1+uint64(len(obs)) {
			return fmt.Errorf("node: apply: expected entry %d, got %d (gap in committed entries)", a.applied+1+uint64(len(obs)), e.Index)
		}
		o := observedEntry{index: e.Index, term: e.Term}
		fresh := e.Index > a.sessionsAt // not seen by the session table yet
		if fresh {
			a.sessions.expire(e.Index)
			a.sessionsAt = e.Index
		}
		switch e.Type {
		case raft.EntryNormal:
			if len(e.Data) == 0 {
				break // a new leader's no-op
			}
			env, err := decodeEnvelope(e.Data)
			if err != nil {
				return fmt.Errorf("node: apply: entry %d (term %d) is malformed: %w", e.Index, e.Term, err)
			}
			if env.proposer == a.n.id {
				o.req = env.req
			}
			if env.kind != kindCommand && env.kind != kindSession {
				// NB: commands before an entry that changes the node's
				// state are applied first, so that a halt on one of them
				// never leaves the change recorded ahead of the applied
				// index.
				if err := flush(); err != nil || a.halt != nil {
					return err
				}
			}
			switch env.kind {
			case kindCommand, kindSession:
				var rec *sessionResult
				if env.kind == kindSession {
					d := a.decide(&env, e, fresh)
					rec = d.rec
					if fresh {
						decs = append(decs, d)
					}
					if d.v != verdictApply {
						if fresh {
							a.undelivered = append(a.undelivered, e.Index)
							a.n.m.commandsDeduplicated.Add(1)
						}
						if d.v == verdictDuplicate {
							dups = append(dups, dupAnswer{at: len(obs), rec: rec, client: env.client, seq: env.seq})
						} else {
							o.err = sessionExpired(env.requestID(), e.Index)
						}
						break
					}
				}
				switch {
				case e.Index == a.skipNext:
					a.skipNext = 0
					a.skipped = append(a.skipped, e.Index)
					a.snapAfterSkip = true
					a.n.m.commandsSkipped.Add(1)
					if rec != nil {
						rec.state = resultLost // not applied here
					}
					o.err = NotApplied(fmt.Errorf("%w: entry %d was skipped by fsm skip after the state machine kept failing on it", ErrSkipped, e.Index))
				case e.Index > a.fsmApplied:
					cmdAt = append(cmdAt, len(obs))
					cmds = append(cmds, Command{Index: e.Index, Term: e.Term, Data: env.payload, Version: a.meta.version})
					cmdRec = append(cmdRec, rec)
				default:
					if rec != nil {
						rec.state = resultLost
					}
					if o.req != 0 {
						o.err = fmt.Errorf("%w: entry %d was applied before a state machine restart; its result is lost", ErrOutcomeUnknown, e.Index)
					}
				}
			case kindVersion:
				if err := a.checkVersion(env.version, e.Index); err != nil {
					return err
				}
				a.n.cfg.Logger.Info("fsm: version activated; entries from index on are applied as version",
					"fsm", a.info.Name, "version", env.version, "previous", a.meta.version, "index", e.Index)
				a.meta.version, a.meta.versionIndex = env.version, e.Index
				a.metaDirty = true
			case kindSkip:
				// Apply is not halted here (it would not have reached this
				// entry): the skip changes nothing, unless this node
				// resumed on it.
				if a.resumedBy[e.Index] {
					delete(a.resumedBy, e.Index)
					o.val = skippedHere
				}
			case kindCheckpoint:
				if err := a.checkpointAt(e.Index); err != nil {
					return err
				}
			case kindVerdict:
				if h := a.verdict(e.Index, env.ckpt, env.digest); h != nil {
					a.haltDiverged(*h)
					return nil
				}
			}
		case raft.EntryConfChange:
			if err := flush(); err != nil || a.halt != nil {
				return err
			}
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("node: apply: conf change entry %d is malformed: %w", e.Index, err)
			}
			c, err := decodeCCContext(cc.Context)
			if err != nil {
				return fmt.Errorf("node: apply: conf change entry %d has a malformed context: %w", e.Index, err)
			}
			if c.FSM != "" && c.FSM != a.info.Name {
				return wrongFSM(a.info.Name, c.FSM, fmt.Sprintf("recorded in log entry %d", e.Index))
			}
			if c.Proposer == a.n.id {
				o.req = c.Req
			}
			if cs, ok := confStates[e.Index]; ok {
				a.meta.conf = cs
			} else {
				a.meta.conf = nextConfState(a.meta.conf, cc)
			}
			a.meta.applyConfChange(cc, c)
			a.metaDirty = true
		default:
			return fmt.Errorf("node: apply: entry %d has unknown type %v", e.Index, e.Type)
		}
		obs = append(obs, o)
		if len(cmds) >= maxBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// skippedHere is the result of a skip entry on the node that proposed it
// when that node skipped the command on it.
var skippedHere = []byte("skipped")

// sessionDecision is what the session table decided for the keyed
// command at index.
type sessionDecision struct {
	index uint64
	v     verdict
	rec   *sessionResult
}

// decide returns the session decision for the keyed command of env at
// entry e: made now if the table has not seen e (fresh), else the one made
// before a halt cut e's batch short.
func (a *applier) decide(env *envelope, e raft.Entry, fresh bool) sessionDecision {
	if fresh {
		v, rec := a.sessions.decide(env.client, env.seq, env.acked, e.Index, e.Term)
		return sessionDecision{index: e.Index, v: v, rec: rec}
	}
	d, ok := a.decided[e.Index]
	if !ok {
		// Invariant: every keyed command above applied and at or below
		// sessionsAt has its decision waiting.
		panic(fmt.Sprintf("node: apply: keyed command at index %d has no session decision (sessions at %d, applied %d)", e.Index, a.sessionsAt, a.applied))
	}
	delete(a.decided, e.Index)
	return d
}

// dupAnswer is a keyed duplicate (client, seq) at obs position at,
// answered with rec.
type dupAnswer struct {
	at     int
	rec    *sessionResult
	client []byte
	seq    uint64
}

type cmdResult struct {
	val []byte
	err error
}

// haltAt reports the command the state machine kept failing on.
type haltAt struct {
	index    uint64
	attempts int
	cause    error
	results  []cmdResult // of the commands before it
}

// applyCmds applies cmds, restarting a crashed state machine (restore the
// latest snapshot, replay the log up to the batch) and retrying. Commands
// the state machine reports as already applied after a restart (a
// persistent FSM that crashed mid-batch) are not applied again; their
// results are lost (ErrOutcomeUnknown for their callers).
//
// After a second failure in a row at the same position it retries one
// command at a time, so that a failure names its command. If one command
// fails more than Config.MaxRestarts times in a row (each attempt after a
// restart, restore and replay), it returns the results of the commands
// before it and a non-nil *haltAt; the state machine is then back just
// before that command. A failed restart is environmental: after
// MaxRestarts of them in a row the error is fatal.
func (a *applier) applyCmds(cmds []Command) ([]cmdResult, *haltAt, error) {
	last := cmds[len(cmds)-1].Index
	out := make([]cmdResult, 0, len(cmds))
	todo := cmds
	single := false
	var failIdx uint64
	attempts := 0 // failed attempts in a row starting at failIdx
	for len(todo) > 0 {
		batch := todo
		if single {
			batch = todo[:1]
		}
		res, err := a.sm.Apply(a.ctx, batch)
		if err == nil {
			if len(res) != len(batch) {
				return nil, nil, fmt.Errorf("node: state machine %q returned %d results for %d commands [%d,%d]", a.info.Name, len(res), len(batch), batch[0].Index, batch[len(batch)-1].Index)
			}
			for _, r := range res {
				out = append(out, cmdResult{val: r})
			}
			todo = todo[len(batch):]
			continue
		}
		if !errors.Is(err, ErrStateMachineCrashed) {
			return nil, nil, fmt.Errorf("node: state machine %q failed applying [%d,%d]: %w", a.info.Name, todo[0].Index, last, err)
		}
		if todo[0].Index != failIdx {
			failIdx, attempts = todo[0].Index, 0
		}
		attempts++
		if single && attempts > a.n.cfg.MaxRestarts {
			// Bring the state machine back to just before the command:
			// its state is unknown after the failure.
			if err := a.withRecover(failIdx - 1); err != nil {
				return nil, nil, err
			}
			return out, &haltAt{index: failIdx, attempts: attempts, cause: err, results: out}, nil
		}
		single = single || attempts >= 2
		// Recover to just before what is left, then retry.
		at, err := a.recoverRetry(todo[0].Index-1, last)
		if err != nil {
			return nil, nil, err
		}
		// at >= todo[0].Index-1: the FSM already holds commands up to at.
		for len(todo) > 0 && todo[0].Index <= at {
			out = append(out, cmdResult{err: fmt.Errorf("%w: entry %d was applied by a state machine that then crashed; its result is lost", ErrOutcomeUnknown, todo[0].Index)})
			todo = todo[1:]
		}
	}
	return out, nil, nil
}

// recoverRetry restarts the state machine and brings it to target
// (recover), with the restart budget: after Config.MaxRestarts failed
// attempts in a row the error is fatal.
func (a *applier) recoverRetry(target, limit uint64) (uint64, error) {
	var err error
	for failures := 1; failures <= a.n.cfg.MaxRestarts; failures++ {
		var at uint64
		if at, err = a.recover(target, limit); err == nil {
			a.fsmApplied = max(a.fsmApplied, at)
			return at, nil
		}
		if !errors.Is(err, ErrStateMachineCrashed) && !errors.Is(err, errRestartFailed) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("node: state machine %q: %d restarts in a row failed at index %d: %w", a.info.Name, a.n.cfg.MaxRestarts, target+1, err)
}

var errRestartFailed = errors.New("node: state machine restart failed")

// withRestarts runs f (a restore), restarting a crashed state machine
// between attempts.
func (a *applier) withRestarts(at uint64, f func() error) error {
	err := f()
	for failures := 1; err != nil && errors.Is(err, ErrStateMachineCrashed); failures++ {
		if failures > a.n.cfg.MaxRestarts {
			return fmt.Errorf("node: state machine %q: %d restarts in a row failed at index %d: %w", a.info.Name, failures-1, at, err)
		}
		if err = a.restart(); err == nil {
			err = f()
		}
	}
	return err
}

// restart restarts the state machine process if it can and refreshes Info.
func (a *applier) restart() error {
	a.n.m.smRestarts.Add(1)
	a.restarts++
	if r, ok := a.sm.(Restarter); ok {
		if err := r.Restart(a.ctx); err != nil {
			return fmt.Errorf("%w: %w", errRestartFailed, err)
		}
	}
	info, err := a.sm.Info(a.ctx)
	if err != nil {
		return fmt.Errorf("%w: info: %w", errRestartFailed, err)
	}
	if info.MinVersion == 0 || info.MaxVersion < info.MinVersion {
		return fmt.Errorf("node: restarted state machine %q reports an invalid version range [%d,%d]", info.Name, info.MinVersion, info.MaxVersion)
	}
	if info.Name != a.info.Name {
		return wrongFSM(info.Name, a.info.Name, "the one it ran before restarting")
	}
	a.info = info
	a.publishStatus()
	return nil
}

// recover restarts the state machine and brings it to target: restore the
// latest snapshot if the FSM is behind it, then replay the FSM commands of
// the log up to target. It returns the index the FSM then holds (>= target;
// up to limit if a persistent FSM had already applied beyond target).
//
// Queries wait meanwhile: the state goes back in time while it is rebuilt,
// and a read must never see that.
func (a *applier) recover(target, limit uint64) (uint64, error) {
	a.cancelSnapshot() // before the restart; it may also advance lastSnap
	a.cancelDigests()
	a.cancelReload("the running state machine failed and is being restarted")
	a.queryMu.Lock()
	defer a.queryMu.Unlock()
	if err := a.restart(); err != nil {
		return 0, err
	}
	snap := a.lastSnap
	si := snap.Metadata.Index
	held := a.info.Applied
	if held > target {
		if held > limit {
			return 0, fmt.Errorf("node: restarted state machine %q reports applied index %d beyond what was delivered (%d)", a.info.Name, held, limit)
		}
		return held, nil
	}
	version := uint32(1)
	if !snap.IsEmpty() {
		hdr, _, err := a.restoreOrHeader(snap, held < si)
		if err != nil {
			return 0, err
		}
		version = metaFromHeader(hdr).version
		held = max(held, si)
	}
	// Replay (si, target]: version entries matter from si on, commands
	// only above held.
	const chunk = 4 << 20
	for lo := si + 1; lo <= target; {
		ents, err := a.n.st.Entries(lo, target+1, chunk)
		if errors.Is(err, raft.ErrCompacted) {
			// NB: the loop installed a snapshot from the leader meanwhile
			// (it is next in the apply queue). It covers every committed
			// entry, so restore it instead of replaying.
			if s2, serr := a.n.st.Snapshot(); serr == nil && s2.Metadata.Index > target {
				if _, _, err := a.restoreFrom(s2); err != nil {
					return 0, err
				}
				return s2.Metadata.Index, nil
			}
		}
		if err != nil {
			return 0, fmt.Errorf("node: replay log [%d,%d] into restarted state machine: %w", lo, target, err)
		}
		if len(ents) == 0 {
			return 0, fmt.Errorf("node: replay log: no entries at %d", lo)
		}
		var cmds []Command
		for _, e := range ents {
			if e.Type != raft.EntryNormal || len(e.Data) == 0 {
				continue
			}
			env, err := decodeEnvelope(e.Data)
			if err != nil {
				return 0, fmt.Errorf("node: replay: entry %d is malformed: %w", e.Index, err)
			}
			switch env.kind {
			case kindVersion:
				version = env.version
			case kindCommand, kindSession:
				if e.Index > held && !slices.Contains(a.skipped, e.Index) && !a.wasUndelivered(e.Index) {
					cmds = append(cmds, Command{Index: e.Index, Term: e.Term, Data: env.payload, Version: version})
				}
			}
		}
		for len(cmds) > 0 {
			k := min(len(cmds), a.n.cfg.MaxApplyBatch)
			res, err := a.sm.Apply(a.ctx, cmds[:k])
			if err != nil {
				return 0, fmt.Errorf("node: replay [%d,%d] into restarted state machine: %w", cmds[0].Index, cmds[k-1].Index, err)
			}
			if len(res) != k {
				return 0, fmt.Errorf("node: replay: state machine returned %d results for %d commands", len(res), k)
			}
			cmds = cmds[k:]
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return target, nil
}

// restoreOrHeader restores the FSM from snap (restore) or only reads its
// header and session table.
func (a *applier) restoreOrHeader(snap raft.Snapshot, restore bool) (SnapshotHeader, *sessionTable, error) {
	return a.n.readSnapshot(a.ctx, a.sm, a.info.Name, snap, restore)
}

// withRecover restarts the state machine and replays up to target, with
// the restart budget.
func (a *applier) withRecover(target uint64) error {
	_, err := a.recoverRetry(target, target)
	return err
}

// wasUndelivered reports whether the keyed command at index was not
// delivered to the state machine (index > lastSnap's index).
func (a *applier) wasUndelivered(index uint64) bool {
	_, found := slices.BinarySearch(a.undelivered, index)
	return found
}

// pruneUndelivered forgets the undelivered commands a new latest snapshot
// covers.
func (a *applier) pruneUndelivered() {
	si := a.lastSnap.Metadata.Index
	k, _ := slices.BinarySearch(a.undelivered, si+1)
	a.undelivered = slices.Delete(a.undelivered, 0, k)
}

// publish makes the applied index visible to readers and Status.
func (a *applier) publish() {
	a.n.applied.Store(a.applied)
	a.n.appliedCh.signal()
	if a.applied >= a.n.readyIdx {
		select {
		case <-a.n.readyc:
		default:
			close(a.n.readyc)
		}
	}
	if a.metaDirty {
		a.metaDirty = false
		a.publishStatus()
	}
}

func (a *applier) publishStatus() {
	a.statusMu.Lock()
	a.statusMeta = a.meta.clone()
	a.statusInfo = a.info
	a.statusMu.Unlock()
}
