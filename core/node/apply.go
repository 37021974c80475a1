package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/raftd/raftd/core/raft"
)

// applyTask is what the loop hands the apply goroutine from one Ready: an
// installed snapshot (first) and committed entries (after it), with the
// ConfState raft returned for each membership entry.
type applyTask struct {
	snap       *raft.Snapshot
	ents       []raft.Entry
	confStates map[uint64]raft.ConfState
}

// applier is the apply goroutine: it feeds committed entries to the state
// machine in log order, in batches, routes results to waiting callers,
// starts snapshots between batches (snapjob.go) and restarts a crashed state machine.
type applier struct {
	n   *Node
	sm  StateMachine
	ctx context.Context // never cancelled: apply has no deadline (STYLE §5)

	mu       sync.Mutex
	tasks    []applyTask
	closed   bool // finish queued tasks, then exit
	aborted  bool // exit after the current batch
	fatalE   error
	signal   chan struct{}
	snapReqs []chan snapReply
	backlog  atomic.Int64 // entries handed over and not yet processed
	donec    chan struct{}

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

	// Local snapshots (snapjob.go).
	job          *snapJob         // the snapshot whose body is being written, or nil
	pendingReqs  []chan snapReply // ExportSnapshot callers not yet served
	snapFailedAt uint64           // no automatic retry before applied passes it

	statusMu   sync.Mutex
	statusMeta clusterMeta // copy of meta for Status
	statusInfo FSMInfo
}

type snapReply struct {
	snap raft.Snapshot
	err  error
}

func newApplier(n *Node, meta clusterMeta, snap raft.Snapshot, info FSMInfo, fsmApplied uint64) *applier {
	a := &applier{
		n: n, sm: n.sm, ctx: context.Background(),
		signal: make(chan struct{}, 1), donec: make(chan struct{}),
		meta: meta, applied: snap.Metadata.Index, appliedTerm: snap.Metadata.Term,
		fsmApplied: fsmApplied, lastSnap: snap, info: info,
	}
	a.publishStatus()
	return a
}

func (a *applier) enqueue(t applyTask) {
	a.backlog.Add(int64(len(t.ents)))
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
	// Whatever way it exits: no snapshot body is written after the node
	// stopped, and nobody keeps waiting for one.
	defer a.stopSnapshots()
	for {
		a.mu.Lock()
		tasks, reqs := a.tasks, a.snapReqs
		a.tasks, a.snapReqs = nil, nil
		closed, aborted := a.closed, a.aborted
		a.mu.Unlock()
		a.pendingReqs = append(a.pendingReqs, reqs...)
		if aborted {
			return
		}
		if err := a.pollSnapshot(); err != nil {
			a.fail(err)
			return
		}
		if len(tasks) == 0 && !a.snapshotDue() {
			if closed {
				return
			}
			<-a.signal
			continue
		}
		var handed int64
		for _, t := range tasks {
			handed += int64(len(t.ents))
		}
		err := a.process(tasks)
		a.backlog.Add(-handed)
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

// process applies tasks in order: entries are merged across tasks into
// batches; a snapshot splits them.
func (a *applier) process(tasks []applyTask) error {
	var ents []raft.Entry
	confStates := map[uint64]raft.ConfState{}
	flush := func() error {
		err := a.applyEntries(ents, confStates)
		ents = nil
		clear(confStates)
		return err
	}
	for _, t := range tasks {
		if t.snap != nil {
			if err := flush(); err != nil {
				return err
			}
			if err := a.install(*t.snap); err != nil {
				return err
			}
		}
		ents = append(ents, t.ents...)
		for k, v := range t.confStates {
			confStates[k] = v
		}
	}
	return flush()
}

// install restores the state machine from a snapshot raft installed.
func (a *applier) install(snap raft.Snapshot) error {
	si := snap.Metadata.Index
	if si <= a.applied {
		return nil // raft never installs an older snapshot; be safe
	}
	a.cancelSnapshot() // no body streams while the state is replaced
	var hdr SnapshotHeader
	a.queryMu.Lock()
	err := a.withRestarts(si, func() error {
		var err error
		hdr, err = a.restoreFrom(snap)
		return err
	})
	a.queryMu.Unlock()
	if err != nil {
		return err
	}
	a.meta = metaFromHeader(hdr)
	a.meta.conf = snap.Metadata.ConfState
	if err := a.checkVersion(a.meta.version, a.meta.versionIndex); err != nil {
		return err
	}
	a.applied, a.appliedTerm, a.fsmApplied = si, snap.Metadata.Term, si
	a.lastSnap = snap
	a.metaDirty = true
	a.publish()
	return nil
}

// restoreFrom restores the FSM from snap and returns its header. The
// caller holds queryMu exclusively.
func (a *applier) restoreFrom(snap raft.Snapshot) (SnapshotHeader, error) {
	return a.n.readSnapshot(a.ctx, a.sm, a.info.Name, snap, true)
}

func (a *applier) checkVersion(v uint32, at uint64) error {
	if v < a.info.MinVersion || v > a.info.MaxVersion {
		return fmt.Errorf("node: state machine %q supports versions [%d,%d] but version %d is active since index %d; refusing to apply", a.info.Name, a.info.MinVersion, a.info.MaxVersion, v, at)
	}
	return nil
}

// applyEntries applies consecutive committed entries.
func (a *applier) applyEntries(ents []raft.Entry, confStates map[uint64]raft.ConfState) error {
	maxBatch := a.n.cfg.MaxApplyBatch
	var (
		cmds  []Command
		obs   []observedEntry // every entry of the batch, for result routing
		cmdAt []int           // obs position of cmds[i]
	)
	flush := func() error {
		if len(obs) == 0 {
			return nil
		}
		if len(cmds) > 0 {
			res, err := a.applyCmds(cmds)
			if err != nil {
				return err
			}
			for i, r := range res {
				o := &obs[cmdAt[i]]
				if r.err != nil {
					o.err = r.err
				} else {
					o.val = r.val
				}
			}
			a.n.m.applyBatches.Add(1)
			a.n.m.commandsApplied.Add(uint64(len(cmds)))
			a.fsmApplied = max(a.fsmApplied, cmds[len(cmds)-1].Index)
		}
		// Publish first: a caller that got its result sees Applied() >= its
		// index.
		last := obs[len(obs)-1]
		a.applied, a.appliedTerm = last.index, last.term
		a.publish()
		a.n.waits.applied(obs)
		cmds, obs, cmdAt = cmds[:0], obs[:0], cmdAt[:0]
		return nil
	}
	for _, e := range ents {
		if e.Index <= a.applied {
			continue // covered by an installed snapshot
		}
		if e.Index != a.applied+1+uint64(len(obs)) {
			return fmt.Errorf("node: apply: expected entry %d, got %d (gap in committed entries)", a.applied+1+uint64(len(obs)), e.Index)
		}
		o := observedEntry{index: e.Index, term: e.Term}
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
			switch env.kind {
			case kindCommand:
				if e.Index > a.fsmApplied {
					cmdAt = append(cmdAt, len(obs))
					cmds = append(cmds, Command{Index: e.Index, Term: e.Term, Data: env.payload, Version: a.meta.version})
				} else if o.req != 0 {
					o.err = fmt.Errorf("%w: entry %d was applied before a state machine restart; its result is lost", ErrOutcomeUnknown, e.Index)
				}
			case kindVersion:
				if err := a.checkVersion(env.version, e.Index); err != nil {
					return err
				}
				a.meta.version, a.meta.versionIndex = env.version, e.Index
				a.metaDirty = true
			}
		case raft.EntryConfChange:
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("node: apply: conf change entry %d is malformed: %w", e.Index, err)
			}
			c, err := decodeCCContext(cc.Context)
			if err != nil {
				return fmt.Errorf("node: apply: conf change entry %d has a malformed context: %w", e.Index, err)
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

type cmdResult struct {
	val []byte
	err error
}

// applyCmds applies cmds, restarting a crashed state machine (restore the
// latest snapshot, replay the log up to the batch) and retrying the batch.
// Commands the state machine reports as already applied after a restart
// (a persistent FSM that crashed mid-batch) are not applied again; their
// results are lost (ErrOutcomeUnknown for their callers).
func (a *applier) applyCmds(cmds []Command) ([]cmdResult, error) {
	first, last := cmds[0].Index, cmds[len(cmds)-1].Index
	out := make([]cmdResult, len(cmds))
	todo := cmds
	failures := 0
	for {
		res, err := a.sm.Apply(a.ctx, todo)
		if err == nil && len(res) != len(todo) {
			return nil, fmt.Errorf("node: state machine %q returned %d results for %d commands [%d,%d]", a.info.Name, len(res), len(todo), todo[0].Index, last)
		}
		if err == nil {
			off := len(cmds) - len(todo)
			for i, r := range res {
				out[off+i] = cmdResult{val: r}
			}
			return out, nil
		}
		if !errors.Is(err, ErrStateMachineCrashed) {
			return nil, fmt.Errorf("node: state machine %q failed applying [%d,%d]: %w", a.info.Name, todo[0].Index, last, err)
		}
		// Recover to just before the batch, then retry what is left.
		for {
			failures++
			if failures > a.n.cfg.MaxRestarts {
				return nil, fmt.Errorf("node: state machine %q: %d restarts in a row failed at index %d: %w", a.info.Name, failures-1, todo[0].Index, err)
			}
			var at uint64
			at, err = a.recover(first-1, last)
			if err == nil {
				a.fsmApplied = max(a.fsmApplied, at)
				// at >= first-1: the FSM already holds commands up to at.
				for len(todo) > 0 && todo[0].Index <= at {
					out[len(cmds)-len(todo)] = cmdResult{err: fmt.Errorf("%w: entry %d was applied by a state machine that then crashed; its result is lost", ErrOutcomeUnknown, todo[0].Index)}
					todo = todo[1:]
				}
				if len(todo) == 0 {
					return out, nil
				}
				break
			}
			if !errors.Is(err, ErrStateMachineCrashed) && !errors.Is(err, errRestartFailed) {
				return nil, err
			}
		}
	}
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
		hdr, err := a.restoreOrHeader(snap, held < si)
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
				if _, err := a.restoreFrom(s2); err != nil {
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
			case kindCommand:
				if e.Index > held {
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
// header.
func (a *applier) restoreOrHeader(snap raft.Snapshot, restore bool) (SnapshotHeader, error) {
	return a.n.readSnapshot(a.ctx, a.sm, a.info.Name, snap, restore)
}

// withRecover restarts the state machine and replays up to target, with
// the restart budget.
func (a *applier) withRecover(target uint64) error {
	var err error
	for failures := 1; failures <= a.n.cfg.MaxRestarts; failures++ {
		var at uint64
		if at, err = a.recover(target, target); err == nil {
			a.fsmApplied = max(a.fsmApplied, at)
			return nil
		}
		if !errors.Is(err, ErrStateMachineCrashed) && !errors.Is(err, errRestartFailed) {
			return err
		}
	}
	return fmt.Errorf("node: state machine %q: %d restarts in a row failed at index %d: %w", a.info.Name, a.n.cfg.MaxRestarts, target+1, err)
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
