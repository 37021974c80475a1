package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// Local snapshots (apply goroutine).
//
// Every Config.SnapshotEntries applied entries, or when ExportSnapshot asks,
// the apply goroutine starts a snapshot at its applied index: between two
// Apply calls it asks the state machine to capture its state
// (StateMachine.Snapshot), opens a Storage sink with the snapshot's header
// (membership, addresses, active FSM version as of that index, the body's
// format) and hands the body to a separate goroutine that writes it into
// the sink while applying goes on (at most one such snapshot is in
// flight).
//
// Only a complete body is committed (SnapshotSink.Commit); any error aborts
// the sink, so a partial body is never used. A completed snapshot becomes
// the applier's latest snapshot (the one a state machine restart restores)
// BEFORE the loop records it and compacts the log behind it, so replay after
// a restart always finds the log it needs.
//
// NB: the body goroutine never touches applier state; it reports through
// snapJob.done and a wake-up, and the apply goroutine finishes the job.

// snapJob is a snapshot whose body is being written in the background.
type snapJob struct {
	meta   raft.SnapshotMetadata
	cancel context.CancelFunc
	reqs   []chan snapReply // ExportSnapshot callers waiting for it
	epoch  uint64           // applier.restarts when it started
	start  time.Time        // when the state machine was asked for its state
	// cancelled is set (apply goroutine) when the node gave up on the job.
	cancelled bool

	done chan struct{} // closed by the body goroutine after setting:
	desc []byte        // the committed body's descriptor, if err == nil
	err  error
	// storageErr reports that err came from SnapshotSink.Commit.
	storageErr bool
}

// snapshotDue reports whether a snapshot should be started now.
func (a *applier) snapshotDue() bool {
	if a.job != nil || a.reload != nil {
		return false // at most one body of the state machine in flight
	}
	if len(a.pendingReqs) > 0 {
		return true
	}
	if a.snapAfterSkip && a.halt == nil {
		return true
	}
	return a.snapshotEntriesDue() && a.snapPace.ready(a.n.now())
}

// snapshotEntriesDue reports whether enough entries were applied since
// the latest snapshot for an automatic one (which its pace may still hold
// back).
func (a *applier) snapshotEntriesDue() bool {
	every := a.n.cfg.SnapshotEntries
	return every > 0 && a.applied > a.snapFailedAt &&
		a.applied-a.lastSnap.Metadata.Index >= uint64(every) &&
		!a.checkpointHoldsSnapshot() // a restart must replay the checkpoint (checkpoint.go)
}

// idle waits for work. An automatic snapshot held back only by its pace
// is started when the pace allows it, with nothing more to apply.
func (a *applier) idle() {
	if a.job == nil && a.reload == nil && a.snapshotEntriesDue() {
		if d := a.snapPace.wait(a.n.now()); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-a.signal:
			case <-t.C:
			}
			return
		}
	}
	<-a.signal
}

// startSnapshot starts a snapshot at the applied index for the pending
// ExportSnapshot callers (if any). A non-nil error is fatal.
func (a *applier) startSnapshot() error {
	reqs := a.pendingReqs
	a.pendingReqs = nil
	a.snapAfterSkip = false
	if a.applied == a.lastSnap.Metadata.Index && !a.lastSnap.IsEmpty() {
		replySnap(reqs, a.lastSnap, nil)
		return nil
	}
	if a.applied == 0 {
		replySnap(reqs, raft.Snapshot{}, NotApplied(fmt.Errorf("%w: nothing applied yet", ErrNoSnapshot)))
		return nil
	}
	meta := raft.SnapshotMetadata{Index: a.applied, Term: a.appliedTerm, ConfState: a.meta.clone().conf}
	start := a.n.now()
	view, err := a.sm.Snapshot(a.ctx)
	if err != nil {
		return a.snapshotFailed(meta, reqs, err)
	}
	hdr := headerFromMeta(meta.Index, meta.Term, a.meta, a.info.Name, view.Format())
	// NB: the session table is encoded here, between two batches, which
	// fixes it at the snapshot's index; the FSM's part is written later.
	var section []byte
	if a.sessions.len() > 0 {
		hdr.NodeSection = snapshot.NodeSectionSessions
		section = a.sessions.appendTo(nil)
	}
	sink, err := a.n.st.BeginSnapshot(hdr)
	if err != nil {
		view.Release()
		err = fmt.Errorf("node: storage: begin snapshot at index %d: %w", meta.Index, err)
		replySnap(reqs, raft.Snapshot{}, err)
		return err
	}

	ctx, cancel := context.WithCancel(a.ctx)
	j := &snapJob{meta: meta, cancel: cancel, reqs: reqs, epoch: a.restarts, start: start, done: make(chan struct{})}
	a.job = j
	a.n.m.snapshotsStarted.Add(1)
	go func() {
		_, err := sink.Write(section)
		if err == nil {
			err = view.WriteTo(ctx, sink)
		}
		view.Release()
		if err == nil {
			if j.desc, err = sink.Commit(); err != nil {
				j.storageErr = true
				err = fmt.Errorf("node: storage: commit snapshot at index %d: %w", meta.Index, err)
			}
		} else {
			_ = sink.Abort()
		}
		j.err = err
		cancel()
		close(j.done)
		a.wake()
	}()
	return nil
}

// pollSnapshot finishes the in-flight snapshot if its body is done.
func (a *applier) pollSnapshot() error {
	if a.job == nil {
		return nil
	}
	select {
	case <-a.job.done:
		return a.finishSnapshot()
	default:
		return nil
	}
}

// cancelSnapshot gives up on the in-flight snapshot (if any) and waits for
// its body goroutine: the state machine is about to be restored or
// restarted, or the node stops. A body that completed anyway is kept;
// ExportSnapshot callers of an abandoned one wait for the next.
func (a *applier) cancelSnapshot() {
	j := a.job
	if j == nil {
		return
	}
	j.cancelled = true
	j.cancel()
	<-j.done
	_ = a.finishSnapshot() // cancelled: never an error
}

// finishSnapshot handles the outcome of a.job, whose done is closed. A
// non-nil error is fatal.
func (a *applier) finishSnapshot() error {
	j := a.job
	a.job = nil
	switch {
	case j.err == nil:
		end := a.n.now()
		a.n.m.lat.snapshotCreate.observe(end.Sub(j.start))
		a.snapPace.ran(j.start, end)
		a.snapshotTaken(raft.Snapshot{Metadata: j.meta, Data: j.desc}, j.reqs)
		return nil
	case j.cancelled:
		a.pendingReqs = append(j.reqs, a.pendingReqs...)
		return nil
	case j.storageErr:
		replySnap(j.reqs, raft.Snapshot{}, j.err)
		return j.err
	case errors.Is(j.err, ErrStateMachineCrashed) && a.restarts != j.epoch:
		// Already restarted (an Apply saw the crash first).
		a.snapFailedAt = j.meta.Index
		replySnap(j.reqs, raft.Snapshot{}, fmt.Errorf("node: snapshot at index %d: state machine crashed (restarted): %w", j.meta.Index, j.err))
		return nil
	}
	return a.snapshotFailed(j.meta, j.reqs, j.err)
}

// snapshotFailed handles a state machine error while snapshotting: a crash
// is recovered (restart, restore, replay) and the snapshot skipped until
// more entries are applied; any other error is fatal.
func (a *applier) snapshotFailed(meta raft.SnapshotMetadata, reqs []chan snapReply, err error) error {
	a.snapFailedAt = meta.Index
	if errors.Is(err, ErrStateMachineCrashed) {
		replySnap(reqs, raft.Snapshot{}, fmt.Errorf("node: snapshot at index %d: state machine crashed (restarted): %w", meta.Index, err))
		return a.withRecover(a.fsmApplied)
	}
	err = fmt.Errorf("node: state machine %q snapshot at index %d: %w", a.info.Name, meta.Index, err)
	replySnap(reqs, raft.Snapshot{}, err)
	return err
}

// snapshotTaken makes a complete snapshot the latest one (what a restart
// restores), then hands it to the loop, which records it and compacts the
// log behind it.
func (a *applier) snapshotTaken(s raft.Snapshot, reqs []chan snapReply) {
	a.n.m.snapshotsTaken.Add(1)
	if s.Metadata.Index > a.lastSnap.Metadata.Index {
		a.lastSnap = s
		a.pruneSkipped()
		a.pruneUndelivered()
		select {
		case a.n.snapc <- s:
		case <-a.n.quitc:
		}
	}
	replySnap(reqs, s, nil)
}

// stopSnapshots runs when the apply goroutine exits.
func (a *applier) stopSnapshots() {
	a.cancelSnapshot()
	a.stopReloads()
	a.mu.Lock()
	reqs := append(a.pendingReqs, a.snapReqs...)
	a.pendingReqs, a.snapReqs = nil, nil
	a.mu.Unlock()
	replySnap(reqs, raft.Snapshot{}, NotApplied(ErrStopped))
}
