package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// Reloading the state machine (apply goroutine).
//
// ReplaceStateMachine hands the node a new state machine (a new plugin
// process) that takes over from the running one at an exact index, while
// the node stays in raft and keeps applying:
//
//  1. Between two batches the applier captures a point-in-time view of the
//     running state machine at its applied index S (StateMachine.Snapshot,
//     as for a local snapshot; none is in flight meanwhile) and starts a
//     transfer goroutine that writes the view's body into the new state
//     machine's Restore (header: index S, the active version, the format),
//     hashing it on the way. It then takes a view of the new state machine
//     and checks that its body hashes the same: the digest of a state is
//     the SHA-256 of its snapshot body, as for checkpoints (checkpoint.go).
//  2. Applying goes on with the running state machine. Every batch of
//     commands it applies after S is also queued, with its results, for the
//     new one (mirrored); the transfer goroutine applies the queue to it
//     once the restore is checked, and checks that it answers each command
//     exactly as the running one did.
//  3. When the goroutine has emptied the queue, the applier (between two
//     batches, so applying pauses only here) applies what was queued
//     since, asks the new state machine's Info again, and switches at its
//     applied index I: from I+1 on, commands, queries and snapshots go to
//     the new state machine. Queries are held only for the switch itself
//     (queryMu): they see the old state up to I, the new one after.
//
// Any failure (the new state machine's restore, a differing result or
// digest, a name or version it does not support, the caller giving up)
// leaves the running state machine in place and is returned to the
// caller, who closes the new one. So does anything that replaces the
// running state machine's state meanwhile (a snapshot installed from the
// leader, a crash and restart of the running state machine) and the node
// stopping. The mirrored commands are exactly those the running state
// machine applied, so halts, skips and commands a restarted persistent
// state machine already held need no special case.

// maxReloadQueueBytes bounds the commands queued for a new state machine
// that has not caught up yet; past it the reload fails rather than hold
// the node's memory.
const maxReloadQueueBytes = 256 << 20

// ErrReload is wrapped, with ErrNotApplied, by every error of
// ReplaceStateMachine: the running state machine was kept.
var ErrReload = errors.New("node: state machine not replaced")

// ReloadResult describes a completed ReplaceStateMachine.
type ReloadResult struct {
	// Index and Term identify the switch point: the last entry the old
	// state machine applied; the new one applies from Index+1.
	Index, Term uint64
	// SnapshotIndex is the index of the state handed over by restore;
	// Mirrored commands in (SnapshotIndex, Index] were then applied to it.
	SnapshotIndex uint64
	Mirrored      int
	// Bytes is the size of the state handed over.
	Bytes int64
	// Digest is both state machines' digest at SnapshotIndex: the SHA-256
	// of their snapshot bodies.
	Digest []byte
	// Info is the new state machine's.
	Info FSMInfo
	// Duration runs from the request to the switch; Stall is how long
	// applying paused for the switch (catch-up, digests, switch).
	Duration, Stall time.Duration
}

type reloadReply struct {
	res ReloadResult
	err error
}

type reloadReq struct {
	ctx   context.Context
	sm    StateMachine
	info  FSMInfo
	start time.Time
	resc  chan reloadReply // buffered(1)
}

func (r *reloadReq) reply(res ReloadResult, err error) {
	if err != nil {
		err = NotApplied(fmt.Errorf("%w: %w", ErrReload, err))
	}
	r.resc <- reloadReply{res, err}
}

// reload is a ReplaceStateMachine in progress (applier.reload).
type reload struct {
	req    *reloadReq
	ctx    context.Context // req.ctx, cancelled when the node gives up
	cancel context.CancelFunc
	hdr    SnapshotHeader
	view   StateSnapshot
	max    int // commands per Apply call

	mu       sync.Mutex
	queue    []mirrored
	queued   int64 // bytes in queue
	exited   bool  // the transfer goroutine is done with the queue
	overflow bool

	done     chan struct{} // closed by the transfer goroutine after setting:
	err      error
	bytes    int64
	digest   []byte
	mirrored int // commands applied to the new state machine
}

// mirrored is a batch the running state machine applied, with its results.
type mirrored struct {
	cmds []Command
	res  []cmdResult
}

// ReplaceStateMachine makes sm the node's state machine in place of the
// running one, without leaving raft: sm is given the running state
// machine's state (restore from a point-in-time view, then the commands
// applied meanwhile), checked (same FSM name, runs the active version,
// same results and digest), and takes over at an exact index (see
// reload.go). It returns once sm has taken over, or with an error that
// wraps ErrReload and ErrNotApplied, the running state machine kept.
//
// The caller owns both state machines: after success it closes the old
// one (nothing uses it any more), after an error the new one. It waits
// for the node's decision even when ctx ends (which makes the node give
// up at its next step), so that sm is never closed while in use.
func (n *Node) ReplaceStateMachine(ctx context.Context, sm StateMachine) (ReloadResult, error) {
	start := time.Now()
	fail := func(err error) (ReloadResult, error) {
		return ReloadResult{}, NotApplied(fmt.Errorf("%w: %w", ErrReload, err))
	}
	info, err := sm.Info(ctx)
	if err != nil {
		return fail(fmt.Errorf("new state machine: info: %w", err))
	}
	if info.MinVersion == 0 || info.MaxVersion < info.MinVersion {
		return fail(fmt.Errorf("new state machine %q reports an invalid version range [%d,%d]", info.Name, info.MinVersion, info.MaxVersion))
	}
	req := &reloadReq{ctx: ctx, sm: sm, info: info, start: start, resc: make(chan reloadReply, 1)}
	a := n.app
	a.mu.Lock()
	if a.closed || a.aborted {
		a.mu.Unlock()
		return ReloadResult{}, NotApplied(ErrStopped)
	}
	a.reloadReqs = append(a.reloadReqs, req)
	a.mu.Unlock()
	a.wake()
	select {
	case r := <-req.resc:
		return r.res, r.err
	case <-a.donec:
		// The applier replies to every request it took before it exits.
		select {
		case r := <-req.resc:
			return r.res, r.err
		default:
			return ReloadResult{}, NotApplied(ErrStopped)
		}
	}
}

// pollReload starts the next reload when nothing else writes a body of
// the running state machine, and finishes the one whose transfer is done.
func (a *applier) pollReload() {
	if r := a.reload; r != nil {
		select {
		case <-r.done:
			a.finishReload()
		default:
		}
		return
	}
	if len(a.pendingReloads) == 0 || a.job != nil {
		return
	}
	req := a.pendingReloads[0]
	a.pendingReloads = a.pendingReloads[1:]
	a.startReload(req)
}

// startReload checks req against the running state machine and the
// cluster, captures the view and starts the transfer.
func (a *applier) startReload(req *reloadReq) {
	if err := req.ctx.Err(); err != nil {
		req.reply(ReloadResult{}, err)
		return
	}
	if err := a.reloadFits(req.info); err != nil {
		req.reply(ReloadResult{}, err)
		return
	}
	view, err := a.sm.Snapshot(a.ctx)
	if err != nil {
		// A crash is noticed (and recovered) by the next Apply.
		req.reply(ReloadResult{}, fmt.Errorf("capture the running state machine's state at index %d: %w", a.applied, err))
		return
	}
	ctx, cancel := context.WithCancel(req.ctx)
	r := &reload{
		req: req, ctx: ctx, cancel: cancel, view: view, max: a.n.cfg.MaxApplyBatch,
		hdr:  headerFromMeta(a.applied, a.appliedTerm, a.meta, a.info.Name, view.Format()),
		done: make(chan struct{}),
	}
	a.reload = r
	a.n.cfg.Logger.Info("fsm reload: handing the state over to the new state machine", "index", a.applied, "fsm", req.info.Name,
		"versions", fmt.Sprintf("%d..%d", req.info.MinVersion, req.info.MaxVersion))
	go r.transfer(a.wake)
}

// reloadFits reports why info cannot replace the running state machine.
func (a *applier) reloadFits(info FSMInfo) error {
	if info.Name != a.info.Name {
		return wrongFSM(info.Name, a.info.Name, "the one it runs")
	}
	if v := a.meta.version; v < info.MinVersion || v > info.MaxVersion {
		return fmt.Errorf("%w: new state machine %q supports versions [%d,%d] but version %d is active since index %d",
			ErrUnsupportedVersion, info.Name, info.MinVersion, info.MaxVersion, v, a.meta.versionIndex)
	}
	return nil
}

// mirror queues commands the running state machine applied (with their
// results) for the new one. Apply goroutine.
func (a *applier) mirror(cmds []Command, res []cmdResult) {
	r := a.reload
	if r == nil || len(cmds) == 0 {
		return
	}
	var b int64
	for _, c := range cmds {
		b += int64(len(c.Data)) + 48
	}
	r.mu.Lock()
	r.queue = append(r.queue, mirrored{cmds: append([]Command(nil), cmds...), res: append([]cmdResult(nil), res...)})
	r.queued += b
	over := r.queued > maxReloadQueueBytes
	r.overflow = r.overflow || over
	r.mu.Unlock()
	if over {
		r.cancel() // finishReload reports it
	}
}

// transfer restores the new state machine from the view, then applies
// the mirrored commands until the queue is empty. Transfer goroutine.
func (r *reload) transfer(wake func()) {
	defer func() {
		close(r.done)
		wake()
	}()
	pr, pw := io.Pipe()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(pw, h)}
	werr := make(chan error, 1)
	go func() {
		err := r.view.WriteTo(r.ctx, cw)
		pw.CloseWithError(err) // nil: EOF
		werr <- err
	}()
	err := restoreFSM(r.ctx, r.req.sm, r.hdr, pr)
	pr.CloseWithError(io.ErrClosedPipe) // a writer still blocked gives up
	if werrv := <-werr; werrv != nil && !errors.Is(werrv, io.ErrClosedPipe) {
		err = fmt.Errorf("write the running state machine's state at index %d: %w", r.hdr.Index, werrv)
	} else if err != nil {
		err = fmt.Errorf("restore the new state machine at index %d: %w", r.hdr.Index, err)
	}
	r.view.Release()
	r.bytes, r.digest = cw.n, h.Sum(nil)
	if err == nil {
		err = r.checkRestored()
	}
	for err == nil {
		r.mu.Lock()
		q := r.queue
		r.queue, r.queued = nil, 0
		r.exited = len(q) == 0
		r.mu.Unlock()
		if len(q) == 0 {
			return
		}
		err = r.applyMirrored(q)
	}
	r.mu.Lock()
	r.exited = true
	r.mu.Unlock()
	r.err = err
}

// checkRestored compares the digest of the new state machine's state
// (the SHA-256 of its snapshot body) with that of the body it was restored
// from.
func (r *reload) checkRestored() error {
	view, err := r.req.sm.Snapshot(r.ctx)
	if err != nil {
		return fmt.Errorf("new state machine: snapshot after the restore at index %d: %w", r.hdr.Index, err)
	}
	defer view.Release()
	h := sha256.New()
	if err := view.WriteTo(r.ctx, h); err != nil {
		return fmt.Errorf("new state machine: snapshot after the restore at index %d: %w", r.hdr.Index, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, r.digest) {
		return fmt.Errorf("digests differ at index %d: the running state machine's state %x, the new one's after its restore %x", r.hdr.Index, r.digest, got)
	}
	return nil
}

// applyMirrored applies q to the new state machine and compares its
// results with the running one's.
func (r *reload) applyMirrored(q []mirrored) error {
	var cmds []Command
	var want []cmdResult
	for _, m := range q {
		cmds = append(cmds, m.cmds...)
		want = append(want, m.res...)
	}
	for len(cmds) > 0 {
		k := min(len(cmds), r.max)
		res, err := r.req.sm.Apply(r.ctx, cmds[:k])
		if err != nil {
			return fmt.Errorf("new state machine: apply [%d,%d]: %w", cmds[0].Index, cmds[k-1].Index, err)
		}
		if len(res) != k {
			return fmt.Errorf("new state machine returned %d results for %d commands [%d,%d]", len(res), k, cmds[0].Index, cmds[k-1].Index)
		}
		for i := range res {
			if w := want[i]; w.err == nil && !bytes.Equal(res[i], w.val) {
				return fmt.Errorf("the new state machine answered %s to the command at index %d, the running one %s", clip(res[i]), cmds[i].Index, clip(w.val))
			}
		}
		r.mirrored += k
		cmds, want = cmds[k:], want[k:]
	}
	return nil
}

// finishReload completes the reload whose transfer goroutine is done:
// catch up, compare digests, switch. Apply goroutine.
func (a *applier) finishReload() {
	r := a.reload
	a.reload = nil
	stallStart := time.Now()
	err := r.err
	if err == nil && r.overflow {
		err = fmt.Errorf("the new state machine fell more than %d MiB of commands behind", maxReloadQueueBytes>>20)
	}
	if err == nil {
		err = r.req.ctx.Err()
	}
	if err == nil && len(r.queue) > 0 {
		err = r.applyMirrored(r.queue)
		r.queue = nil
	}
	// Info again: a version may have been activated meanwhile, and what
	// Status reports from now on must be what was checked.
	var info FSMInfo
	if err == nil {
		if info, err = r.req.sm.Info(r.ctx); err != nil {
			err = fmt.Errorf("new state machine: info: %w", err)
		} else {
			err = a.reloadFits(info)
		}
	}
	if err == nil {
		err = r.req.ctx.Err()
	}
	if err != nil {
		r.cancel()
		a.n.cfg.Logger.Warn("fsm reload failed; the running state machine stays", "index", a.applied, "err", err)
		r.req.reply(ReloadResult{}, err)
		return
	}
	// Checkpoint digests still hashing read views of the old state machine,
	// which the caller closes once this returns: let them finish.
	a.awaitDigests()
	a.queryMu.Lock()
	a.sm = r.req.sm
	a.info = info
	a.queryMu.Unlock()
	a.publishStatus()
	a.n.m.smReloads.Add(1)
	res := ReloadResult{Index: a.applied, Term: a.appliedTerm, SnapshotIndex: r.hdr.Index, Mirrored: r.mirrored,
		Bytes: r.bytes, Digest: r.digest, Info: info, Duration: time.Since(r.req.start), Stall: time.Since(stallStart)}
	r.cancel()
	a.n.cfg.Logger.Info("fsm reload: switched to the new state machine", "index", res.Index, "snapshot_index", res.SnapshotIndex,
		"mirrored", res.Mirrored, "bytes", res.Bytes, "duration", res.Duration, "stall", res.Stall)
	r.req.reply(res, nil)
}

// cancelReload gives up on the reload in progress (those waiting their
// turn start later), telling its caller why. Apply goroutine.
func (a *applier) cancelReload(why string) {
	if r := a.reload; r != nil {
		a.reload = nil
		r.cancel()
		<-r.done
		r.req.reply(ReloadResult{}, fmt.Errorf("gave up at index %d: %s", a.applied, why))
	}
}

// stopReloads answers every reload request: the node is stopping. Apply
// goroutine, as it exits.
func (a *applier) stopReloads() {
	a.cancelReload("the node is stopping")
	a.mu.Lock()
	reqs := append(a.pendingReloads, a.reloadReqs...)
	a.pendingReloads, a.reloadReqs = nil, nil
	a.mu.Unlock()
	for _, req := range reqs {
		req.reply(ReloadResult{}, NotApplied(ErrStopped))
	}
}

// awaitDigests waits for the checkpoint digests being hashed (checkpoint.go).
func (a *applier) awaitDigests() {
	a.n.ck.mu.Lock()
	jobs := slices.Clone(a.n.ck.jobs)
	a.n.ck.mu.Unlock()
	for _, j := range jobs {
		<-j.done
	}
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// clip shortens a result for an error message.
func clip(b []byte) string {
	const max = 120
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
