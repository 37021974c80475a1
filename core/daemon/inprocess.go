package daemon

import (
	"bufio"
	"context"
	"io"
	"sync"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
)

// localSM runs a plugin/fsm.FSM in this process as a node.StateMachine.
// Its snapshot stream is the plugin host's envelope (header, then the FSM
// body), so a snapshot taken in process restores into a plugin and back.
// FSM methods are called one at a time (fsm.FSM's contract); a snapshot
// body is written outside the lock from the view Snapshot captured.
//
// An error from the FSM fail-stops the node: there is no process to
// restart.
type localSM struct {
	mu sync.Mutex
	f  fsm.FSM
}

var (
	_ node.StateMachine    = (*localSM)(nil)
	_ node.SnapshotStarter = (*localSM)(nil)
)

func (l *localSM) Info(ctx context.Context) (node.FSMInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, err := l.f.Info(ctx)
	if err != nil {
		return node.FSMInfo{}, err
	}
	return node.FSMInfo{Name: i.Name, MinVersion: i.MinVersion, MaxVersion: i.MaxVersion, Applied: i.AppliedIndex}, nil
}

func (l *localSM) Apply(ctx context.Context, cmds []node.Command) ([][]byte, error) {
	es := make([]fsm.Entry, len(cmds))
	for i, c := range cmds {
		es[i] = fsm.Entry{Index: c.Index, Term: c.Term, Data: c.Data, Version: c.Version}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.f.(fsm.BatchApplier); ok {
		return b.ApplyBatch(ctx, es)
	}
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := l.f.Apply(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func (l *localSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Query(ctx, q)
}

func (l *localSM) Digest(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Digest(ctx)
}

func (l *localSM) capture(ctx context.Context) (fsm.Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Snapshot(ctx)
}

func writeSnapshot(ctx context.Context, s fsm.Snapshot, w io.Writer) error {
	defer s.Release()
	if err := host.WriteEnvelopeHeader(w, s.Header()); err != nil {
		return err
	}
	return s.WriteTo(ctx, w)
}

func (l *localSM) Snapshot(ctx context.Context, w io.Writer) error {
	s, err := l.capture(ctx)
	if err != nil {
		return err
	}
	return writeSnapshot(ctx, s, w)
}

// StartSnapshot implements node.SnapshotStarter: the view is captured
// before it returns, the body is written in the background.
func (l *localSM) StartSnapshot(ctx context.Context, w io.Writer) (func() error, error) {
	s, err := l.capture(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- writeSnapshot(ctx, s, w) }()
	return func() error { return <-done }, nil
}

func (l *localSM) Restore(ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	h, err := host.ReadEnvelopeHeader(br)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Restore(ctx, h, br)
}

// Close closes the FSM if it is an io.Closer.
func (l *localSM) Close() error {
	if c, ok := l.f.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
