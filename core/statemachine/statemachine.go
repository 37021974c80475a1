// Package statemachine runs a plugin/fsm.FSM as the node's state machine
// (core/node.StateMachine). The FSM may be compiled into this process
// (fsms/kv.New()) or be a plugin process: plugin/host's client implements
// fsm.FSM too, so both go through this one adapter, and the in-process
// path is the baseline the plugin path is measured against.
//
// The adapter converts types only (node.Command to fsm.Entry, the node's
// snapshot header to the FSM's), serializes the FSM's calls as fsm.FSM
// requires (only a snapshot body is written outside the lock, from the view
// the FSM captured, and the queries of an fsm.ConcurrentQuerier, which
// orders its calls itself: a read need not wait for an Apply batch in
// flight), and reports an fsm.ErrCrashed error of an FSM that
// can be restarted (fsm.Restarter: a plugin process) as
// node.ErrStateMachineCrashed, so that the node restarts it, restores and
// replays. Any other FSM error fail-stops the node.
package statemachine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/plugin/fsm"
)

// StateMachine adapts an fsm.FSM to node.StateMachine and node.Restarter.
// It is safe for concurrent use.
type StateMachine struct {
	f         fsm.FSM
	batch     fsm.BatchApplier // nil if f applies one entry at a time
	restarter fsm.Restarter    // nil if f cannot be restarted
	queries   fsm.QueryBatcher // nil if f answers one query per call
	// concurrentQuery: f is an fsm.ConcurrentQuerier; Query runs outside mu.
	concurrentQuery bool

	mu sync.Mutex // serializes f's methods (fsm.FSM's contract)
}

var (
	_ node.StateMachine = (*StateMachine)(nil)
	_ node.Restarter    = (*StateMachine)(nil)
	_ node.QueryBatcher = (*StateMachine)(nil)
)

// ErrNotRestartable is returned by Restart for an FSM that does not
// implement fsm.Restarter.
var ErrNotRestartable = errors.New("statemachine: fsm cannot be restarted")

// New returns the adapter for f. It type-asserts f once for the optional
// fsm.BatchApplier, fsm.Restarter, fsm.QueryBatcher and
// fsm.ConcurrentQuerier.
func New(f fsm.FSM) *StateMachine {
	s := &StateMachine{f: f}
	s.batch, _ = f.(fsm.BatchApplier)
	s.restarter, _ = f.(fsm.Restarter)
	s.queries, _ = f.(fsm.QueryBatcher)
	_, s.concurrentQuery = f.(fsm.ConcurrentQuerier)
	return s
}

// FSM returns the adapted FSM.
func (s *StateMachine) FSM() fsm.FSM { return s.f }

// crashed marks an error of a restartable FSM that reports a crash so that
// the node restarts it; any other error is returned as it is (and
// fail-stops the node).
func (s *StateMachine) crashed(err error) error {
	if err != nil && s.restarter != nil && errors.Is(err, fsm.ErrCrashed) {
		return fmt.Errorf("%w: %w", node.ErrStateMachineCrashed, err)
	}
	return err
}

// Info implements node.StateMachine.
func (s *StateMachine) Info(ctx context.Context) (node.FSMInfo, error) {
	s.mu.Lock()
	i, err := s.f.Info(ctx)
	s.mu.Unlock()
	if err != nil {
		return node.FSMInfo{}, s.crashed(err)
	}
	return node.FSMInfo{Name: i.Name, MinVersion: i.MinVersion, MaxVersion: i.MaxVersion, Applied: i.AppliedIndex,
		DowngradeSafeTo: i.DowngradeSafeTo, Build: i.Build}, nil
}

// Apply implements node.StateMachine: one ApplyBatch call for a
// BatchApplier, else one Apply call per command.
func (s *StateMachine) Apply(ctx context.Context, cmds []node.Command) ([][]byte, error) {
	es := make([]fsm.Entry, len(cmds))
	for i, c := range cmds {
		es[i] = fsm.Entry(c) // the two types have the same fields (compile-time checked)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batch != nil {
		res, err := s.batch.ApplyBatch(ctx, es)
		return res, s.crashed(err)
	}
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := s.f.Apply(ctx, e)
		if err != nil {
			return nil, s.crashed(err)
		}
		out[i] = r
	}
	return out, nil
}

// Query implements node.StateMachine. It holds the lock unless f is an
// fsm.ConcurrentQuerier.
func (s *StateMachine) Query(ctx context.Context, q []byte) ([]byte, error) {
	if s.concurrentQuery {
		res, err := s.f.Query(ctx, q)
		return res, s.crashed(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := s.f.Query(ctx, q)
	return res, s.crashed(err)
}

// QueryBatch implements node.QueryBatcher: one QueryBatch call for an
// fsm.QueryBatcher, else one Query call per query (holding the lock once
// for all of them unless f is an fsm.ConcurrentQuerier).
func (s *StateMachine) QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error) {
	if !s.concurrentQuery {
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	var res [][]byte
	var errs []error
	if s.queries != nil {
		res, errs = s.queries.QueryBatch(ctx, qs)
	} else {
		res, errs = make([][]byte, len(qs)), make([]error, len(qs))
		for i, q := range qs {
			res[i], errs[i] = s.f.Query(ctx, q)
		}
	}
	for i, err := range errs {
		errs[i] = s.crashed(err)
	}
	return res, errs
}

// Digest implements node.StateMachine.
func (s *StateMachine) Digest(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.f.Digest(ctx)
	return d, s.crashed(err)
}

// Snapshot implements node.StateMachine: the FSM captures its view under
// the lock; the view's body is written without it.
func (s *StateMachine) Snapshot(ctx context.Context) (node.StateSnapshot, error) {
	s.mu.Lock()
	snap, err := s.f.Snapshot(ctx)
	s.mu.Unlock()
	if err != nil {
		return nil, s.crashed(err)
	}
	return &view{s: s, snap: snap}, nil
}

// view is an FSM's snapshot as a node.StateSnapshot.
type view struct {
	s    *StateMachine
	snap fsm.Snapshot
}

func (v *view) Format() string { return v.snap.Header().Format }

func (v *view) WriteTo(ctx context.Context, w io.Writer) error {
	return v.s.crashed(v.snap.WriteTo(ctx, w))
}

func (v *view) Release() { v.snap.Release() }

// Restore implements node.StateMachine. The FSM is told the snapshot's
// index, term, active version and body format.
func (s *StateMachine) Restore(ctx context.Context, h node.SnapshotHeader, body io.Reader) error {
	fh := fsm.SnapshotHeader{Index: h.Index, Term: h.Term, Version: h.FSMVersion, Format: h.FSMFormat}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed(s.f.Restore(ctx, fh, body))
}

// Restart implements node.Restarter for an fsm.Restarter (a plugin
// process); for any other FSM it returns ErrNotRestartable.
func (s *StateMachine) Restart(ctx context.Context) error {
	if s.restarter == nil {
		return ErrNotRestartable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarter.Restart(ctx)
}

// Close closes the FSM if it is an io.Closer (the plugin host's client
// stops its process).
func (s *StateMachine) Close() error {
	if c, ok := s.f.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
