package statemachine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
)

// recFSM records what the adapter hands it and fails on demand. It has no
// ApplyBatch, so the adapter calls Apply once per command.
type recFSM struct {
	entries  []fsm.Entry
	restored fsm.SnapshotHeader
	err      error // returned by every method when set
}

func (f *recFSM) Info(context.Context) (fsm.Info, error) {
	return fsm.Info{Name: "rec", MinVersion: 1, MaxVersion: 3, AppliedIndex: 7}, f.err
}

func (f *recFSM) Apply(_ context.Context, e fsm.Entry) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.entries = append(f.entries, e)
	return []byte(fmt.Sprintf("r%d", e.Index)), nil
}

func (f *recFSM) Query(context.Context, []byte) ([]byte, error) { return nil, f.err }
func (f *recFSM) Digest(context.Context) ([]byte, error)        { return nil, f.err }
func (f *recFSM) Snapshot(context.Context) (fsm.Snapshot, error) {
	return nil, f.err
}

func (f *recFSM) Restore(_ context.Context, h fsm.SnapshotHeader, r io.Reader) error {
	f.restored = h
	_, err := io.Copy(io.Discard, r)
	if f.err != nil {
		return f.err
	}
	return err
}

// restartable is a recFSM that can be restarted, like a plugin.
type restartable struct {
	recFSM
	restarts int
}

func (f *restartable) Restart(context.Context) error { f.restarts++; return nil }

// TestApplyConvertsOnePerCommand: without ApplyBatch every command becomes
// one Apply call with the same index, term, data and version, in order.
func TestApplyConvertsOnePerCommand(t *testing.T) {
	f := &recFSM{}
	sm := statemachine.New(f)
	cmds := []node.Command{{Index: 4, Term: 2, Data: []byte("a"), Version: 1}, {Index: 9, Term: 3, Data: []byte("b"), Version: 2}}
	res, err := sm.Apply(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || string(res[0]) != "r4" || string(res[1]) != "r9" {
		t.Fatalf("results %q", res)
	}
	want := []fsm.Entry{{Index: 4, Term: 2, Data: []byte("a"), Version: 1}, {Index: 9, Term: 3, Data: []byte("b"), Version: 2}}
	if fmt.Sprint(f.entries) != fmt.Sprint(want) {
		t.Fatalf("FSM got %v, want %v", f.entries, want)
	}
	info, err := sm.Info(context.Background())
	if err != nil || info != (node.FSMInfo{Name: "rec", MinVersion: 1, MaxVersion: 3, Applied: 7}) {
		t.Fatalf("info %+v, %v", info, err)
	}
}

// TestRestoreHeader: the FSM is told the snapshot's index, term, active
// version and body format, and reads the body.
func TestRestoreHeader(t *testing.T) {
	f := &recFSM{}
	sm := statemachine.New(f)
	h := node.SnapshotHeader{Index: 40, Term: 5, FSMName: "rec", FSMVersion: 2, FSMVersionIndex: 33, FSMFormat: "rec.v1",
		ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}}}
	if err := sm.Restore(context.Background(), h, bytes.NewReader([]byte("body"))); err != nil {
		t.Fatal(err)
	}
	if want := (fsm.SnapshotHeader{Index: 40, Term: 5, Version: 2, Format: "rec.v1"}); f.restored != want {
		t.Fatalf("FSM restored with %+v, want %+v", f.restored, want)
	}
}

// TestCrashOnlyForRestartable: an fsm.ErrCrashed error is a node crash
// (restart, restore, replay) only for an FSM that can be restarted; for an
// FSM in this process it is final (the node fail-stops), and Restart
// refuses.
func TestCrashOnlyForRestartable(t *testing.T) {
	ctx := context.Background()
	crash := fmt.Errorf("plugin exited: %w", fsm.ErrCrashed)
	cmds := []node.Command{{Index: 1, Term: 1}}

	plain := statemachine.New(&recFSM{err: crash})
	if _, err := plain.Apply(ctx, cmds); !errors.Is(err, fsm.ErrCrashed) || errors.Is(err, node.ErrStateMachineCrashed) {
		t.Fatalf("in-process apply error %v: want the FSM's error, not a restartable crash", err)
	}
	if err := plain.Restart(ctx); !errors.Is(err, statemachine.ErrNotRestartable) {
		t.Fatalf("restart of an in-process FSM: %v", err)
	}

	rf := &restartable{recFSM: recFSM{err: crash}}
	sm := statemachine.New(rf)
	checks := map[string]error{}
	_, checks["apply"] = sm.Apply(ctx, cmds)
	_, checks["info"] = sm.Info(ctx)
	_, checks["query"] = sm.Query(ctx, nil)
	_, qerrs := sm.QueryBatch(ctx, [][]byte{nil, nil})
	checks["query batch 0"], checks["query batch 1"] = qerrs[0], qerrs[1]
	_, checks["digest"] = sm.Digest(ctx)
	_, checks["snapshot"] = sm.Snapshot(ctx)
	checks["restore"] = sm.Restore(ctx, node.SnapshotHeader{}, bytes.NewReader(nil))
	for what, err := range checks {
		if !errors.Is(err, node.ErrStateMachineCrashed) || !errors.Is(err, fsm.ErrCrashed) {
			t.Errorf("%s: error %v does not match node.ErrStateMachineCrashed and fsm.ErrCrashed", what, err)
		}
	}
	other := errors.New("disk on fire")
	rf.err = other
	if _, err := sm.Apply(ctx, cmds); !errors.Is(err, other) || errors.Is(err, node.ErrStateMachineCrashed) {
		t.Fatalf("a non-crash error %v became a crash", err)
	}
	if err := sm.Restart(ctx); err != nil || rf.restarts != 1 {
		t.Fatalf("restart: %v, %d restarts", err, rf.restarts)
	}
}

// blockWriter blocks its first Write until gate is closed.
type blockWriter struct {
	started, gate chan struct{}
	once          sync.Once
	buf           bytes.Buffer
}

func (w *blockWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.started)
		<-w.gate
	})
	return w.buf.Write(p)
}

func puts(from, n int, value string) []node.Command {
	cmds := make([]node.Command, n)
	for i := range cmds {
		idx := from + i
		cmds[i] = node.Command{Index: uint64(idx), Term: 1, Version: 1,
			Data: []byte(fmt.Sprintf(`{"op":"put","key":"k%05d","value":"%s%d"}`, idx%500, value, idx))}
	}
	return cmds
}

// TestSnapshotBodyOutsideLock: while a snapshot body is stuck in its
// writer, Apply and Query go on, and the body is the state at capture.
func TestSnapshotBodyOutsideLock(t *testing.T) {
	ctx := context.Background()
	sm := statemachine.New(kv.New())
	if _, err := sm.Apply(ctx, puts(1, 1000, "a")); err != nil {
		t.Fatal(err)
	}
	want, err := sm.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	view, err := sm.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if view.Format() != kv.Format {
		t.Fatalf("format %q", view.Format())
	}
	w := &blockWriter{started: make(chan struct{}), gate: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- view.WriteTo(ctx, w)
		view.Release()
	}()
	<-w.started
	applied := make(chan error, 1)
	go func() {
		_, err := sm.Apply(ctx, puts(1001, 1000, "b"))
		if err == nil {
			_, err = sm.Query(ctx, []byte(`{"op":"get","key":"k00001"}`))
		}
		applied <- err
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(w.gate)
		t.Fatal("Apply waited for the snapshot body")
	}
	close(w.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(w.buf.Bytes()); !bytes.Equal(got[:], want) {
		t.Fatal("snapshot body is not the state at capture")
	}
}

// gatedFSM is the kv FSM whose Apply waits at gate (once started is
// closed), and which may declare itself an fsm.ConcurrentQuerier.
type gatedFSM struct {
	*kv.FSM
	started, gate chan struct{}
}

func (f *gatedFSM) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	close(f.started)
	<-f.gate
	return f.FSM.Apply(ctx, e)
}

func (f *gatedFSM) ApplyBatch(ctx context.Context, es []fsm.Entry) ([][]byte, error) {
	out := make([][]byte, len(es))
	for i, e := range es {
		r, err := f.Apply(ctx, e)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

type concurrentGatedFSM struct{ *gatedFSM }

func (concurrentGatedFSM) ConcurrentQuery() {}

// TestQueryDuringApply: the Query of an fsm.ConcurrentQuerier runs while an
// Apply is in flight (a read does not wait for a plugin's batch); any other
// FSM's Query waits for the Apply, as fsm.FSM requires.
func TestQueryDuringApply(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("concurrent=%v", concurrent), func(t *testing.T) {
			ctx := context.Background()
			g := &gatedFSM{FSM: kv.New(), started: make(chan struct{}), gate: make(chan struct{})}
			if _, err := g.FSM.Apply(ctx, fsm.Entry{Index: 1, Data: []byte(`{"op":"put","key":"a","value":"1"}`)}); err != nil {
				t.Fatal(err)
			}
			var f fsm.FSM = g
			if concurrent {
				f = concurrentGatedFSM{g}
			}
			sm := statemachine.New(f)
			applied := make(chan error, 1)
			go func() {
				_, err := sm.Apply(ctx, []node.Command{{Index: 2, Term: 1, Data: []byte(`{"op":"put","key":"a","value":"2"}`)}})
				applied <- err
			}()
			<-g.started
			queried := make(chan string, 1)
			go func() {
				r, err := sm.Query(ctx, []byte(`{"op":"get","key":"a"}`))
				if err != nil {
					r = []byte(err.Error())
				}
				queried <- string(r)
			}()
			select {
			case r := <-queried:
				if !concurrent {
					t.Fatalf("Query ran during Apply: %s", r)
				}
				if r != `{"found":true,"value":"1"}` {
					t.Fatalf("Query during Apply: %s", r)
				}
			case <-time.After(wait(concurrent)):
				if concurrent {
					t.Fatal("Query waited for Apply")
				}
			}
			close(g.gate)
			if err := <-applied; err != nil {
				t.Fatal(err)
			}
			if !concurrent {
				if r := <-queried; r != `{"found":true,"value":"2"}` {
					t.Fatalf("Query after Apply: %s", r)
				}
			}
		})
	}
}

// wait is how long TestQueryDuringApply gives a Query during an Apply:
// long when it must answer (no false failure on a loaded machine), short
// when it must not (it would answer at once if the lock were missing).
func wait(mustAnswer bool) time.Duration {
	if mustAnswer {
		return 10 * time.Second
	}
	return 200 * time.Millisecond
}

// batchQuerier is kv with QueryBatch: it records the batches it gets.
type batchQuerier struct {
	*kv.FSM
	batches []int
}

func (f *batchQuerier) QueryBatch(ctx context.Context, qs [][]byte) ([][]byte, []error) {
	f.batches = append(f.batches, len(qs))
	res, errs := make([][]byte, len(qs)), make([]error, len(qs))
	for i, q := range qs {
		res[i], errs[i] = f.FSM.Query(ctx, q)
	}
	return res, errs
}

// TestQueryBatch: the adapter hands a batch to an fsm.QueryBatcher in one
// call, and asks any other FSM one query at a time, with the same answers.
func TestQueryBatch(t *testing.T) {
	ctx := context.Background()
	qs := [][]byte{[]byte(`{"op":"get","key":"a"}`), []byte(`{"op":"get","key":"b"}`), []byte(`{"op":"get","key":"c"}`)}
	want := []string{`{"found":true,"value":"1"}`, `{"found":false,"value":""}`, `{"found":true,"value":"3"}`}
	bq := &batchQuerier{FSM: kv.New()}
	for _, f := range []fsm.FSM{kv.New(), bq} {
		sm := statemachine.New(f)
		cmds := []node.Command{{Index: 1, Term: 1, Data: []byte(`{"op":"put","key":"a","value":"1"}`)},
			{Index: 2, Term: 1, Data: []byte(`{"op":"put","key":"c","value":"3"}`)}}
		if _, err := sm.Apply(ctx, cmds); err != nil {
			t.Fatal(err)
		}
		res, errs := sm.QueryBatch(ctx, qs)
		for i := range qs {
			if errs[i] != nil || string(res[i]) != want[i] {
				t.Fatalf("%T: query %d: %s, %v; want %s", f, i, res[i], errs[i], want[i])
			}
		}
	}
	if len(bq.batches) != 1 || bq.batches[0] != 3 {
		t.Fatalf("QueryBatcher got batches %v; want one of 3", bq.batches)
	}
}
