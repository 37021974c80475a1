package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// writer proposes add:1 on node id until stopped and counts what failed.
type writer struct {
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	failed []error
}

func startWriter(c *cluster, id uint64) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	n := c.nodes[id]
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if _, err := n.Propose(context.Background(), []byte("add:1")); err != nil {
				w.failed = append(w.failed, err)
				return
			}
			w.ok.Add(1)
		}
	}()
	return w
}

func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	for _, err := range w.failed {
		t.Errorf("writer: %v", err)
	}
}

// gateSnapshots holds the bodies of f's next snapshot views until the
// returned function is called.
func gateSnapshots(f *testFSM) func() {
	g := make(chan struct{})
	f.mu.Lock()
	f.snapGate = g
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.snapGate = nil
		f.mu.Unlock()
		close(g)
	}
}

// TestReplaceStateMachineUnderLoad: the leader's state machine is
// replaced while a writer keeps proposing and a reader keeps reading: the
// new one gets the state at a snapshot index, then the commands applied
// while that state was handed over, and takes over at an exact index with
// the same digest. No proposal fails, reads never go back, the node keeps
// leading, the old state machine gets nothing after the switch, and the
// replicas agree at the end.
func TestReplaceStateMachineUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 40; cfg.SnapshotTrailing = 10 })
		lead := c.waitLeader()
		ctx := context.Background()
		w := startWriter(c, lead)
		var reads sync.WaitGroup
		stopReads := make(chan struct{})
		reads.Add(1)
		go func() {
			defer reads.Done()
			last := int64(-1)
			for {
				select {
				case <-stopReads:
					return
				default:
				}
				res, err := c.nodes[lead].Read(ctx, []byte("sum"))
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				v, _ := strconv.ParseInt(string(res), 10, 64)
				if v < last {
					t.Errorf("read went back from %d to %d", last, v)
					return
				}
				last = v
				time.Sleep(testTick / 2)
			}
		}()
		time.Sleep(20 * testTick)

		old := c.fsms[lead]
		open := gateSnapshots(old)
		next := newTestFSM()
		resc := make(chan error, 1)
		var res ReloadResult
		go func() {
			var err error
			res, err = c.nodes[lead].ReplaceStateMachine(ctx, next)
			resc <- err
		}()
		time.Sleep(30 * testTick) // applying goes on while the body is held
		before := w.ok.Load()
		time.Sleep(30 * testTick)
		if w.ok.Load() == before {
			t.Fatal("no proposal completed while the state was being handed over")
		}
		open()
		if err := <-resc; err != nil {
			t.Fatal(err)
		}
		if res.Mirrored == 0 || res.SnapshotIndex >= res.Index || len(res.Digest) == 0 || res.Info.Name != "test" {
			t.Fatalf("result %+v: want commands mirrored after the snapshot index", res)
		}
		_, _, oldCmds, _ := old.snapshotOf()
		oldApplied, _, _, _ := old.snapshotOf()
		c.fsms[lead] = next
		time.Sleep(30 * testTick)
		w.finish(t)
		close(stopReads)
		reads.Wait()
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		if a, _, cmds, _ := old.snapshotOf(); cmds != oldCmds || a != oldApplied {
			t.Errorf("old state machine applied %d more commands after the switch", cmds-oldCmds)
		}
		if a, _, _, _ := next.snapshotOf(); a <= res.Index {
			t.Errorf("new state machine applied up to %d, nothing after the switch at %d", a, res.Index)
		}
		st, _ := c.nodes[lead].Status(ctx)
		if st.Role != "leader" || st.Metrics.StateMachineReloads != 1 || st.Metrics.StateMachineRestarts != 0 {
			t.Errorf("after the reload: role %s, reloads %d, restarts %d", st.Role, st.Metrics.StateMachineReloads, st.Metrics.StateMachineRestarts)
		}
		// Snapshots resume, from the new state machine.
		w2 := startWriter(c, lead)
		time.Sleep(60 * testTick)
		w2.finish(t)
		next.mu.Lock()
		starts := next.snapStarts
		next.mu.Unlock()
		if starts == 0 {
			t.Error("no snapshot taken from the new state machine")
		}
	})
}

// lying answers commands differently from testFSM.
type lying struct{ *testFSM }

func (l lying) Apply(ctx context.Context, cmds []Command) ([][]byte, error) {
	res, err := l.testFSM.Apply(ctx, cmds)
	for i := range res {
		res[i] = append(res[i], '!')
	}
	return res, err
}

// lossy restores a state that differs from the one it was given.
type lossy struct{ *testFSM }

func (l lossy) Restore(ctx context.Context, h SnapshotHeader, r io.Reader) error {
	err := l.testFSM.Restore(ctx, h, r)
	l.mu.Lock()
	l.sum++
	l.mu.Unlock()
	return err
}

// renamed reports another name after its first Info.
type renamed struct {
	*testFSM
	calls atomic.Int32
}

func (r *renamed) Info(ctx context.Context) (FSMInfo, error) {
	i, err := r.testFSM.Info(ctx)
	if r.calls.Add(1) > 1 {
		i.Name = "sneaky"
	}
	return i, err
}

// TestReplaceStateMachineRefusals: a state machine of another FSM, one
// that cannot run the active version, one that answers a command
// differently, one whose digest differs, and a caller that gives up are
// all refused (ErrReload, not applied) with the reason; the running state
// machine stays and keeps applying.
func TestReplaceStateMachineRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = -1 })
		lead := c.waitLeader()
		ctx := context.Background()
		for range 5 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		id := lead%3 + 1
		n := c.nodes[id]
		c.waitApplied(c.nodes[lead].Applied())

		counter := newTestFSM()
		counter.name = "counter"
		v2only := newTestFSM()
		v2only.versions = [2]uint32{2, 2}
		cancelled, cancel := context.WithCancel(ctx)
		for _, tc := range []struct {
			name string
			sm   StateMachine
			ctx  context.Context
			// during runs while the state is held back (commands are
			// then mirrored); nil: no hold.
			during func()
			want   string
			is     error
		}{
			{name: "another FSM", sm: counter, ctx: ctx, want: `fsm "counter" cannot run this cluster's fsm "test"`, is: ErrWrongFSM},
			{name: "version", sm: v2only, ctx: ctx, want: "supports versions [2,2] but version 1 is active", is: ErrUnsupportedVersion},
			{name: "results", sm: lying{newTestFSM()}, ctx: ctx, during: func() {
				if _, err := c.nodes[lead].Propose(ctx, []byte("add:7")); err != nil {
					t.Fatal(err)
				}
			}, want: `!" to the command at index`},
			{name: "restore", sm: lossy{newTestFSM()}, ctx: ctx, want: "the new one's after its restore"},
			{name: "renamed", sm: &renamed{testFSM: newTestFSM()}, ctx: ctx, want: `fsm "sneaky" cannot run`, is: ErrWrongFSM},
			{name: "caller gave up", sm: newTestFSM(), ctx: cancelled, during: cancel, want: "context canceled", is: context.Canceled},
		} {
			open := gateSnapshots(c.fsms[id])
			if tc.during == nil {
				open()
			}
			errc := make(chan error, 1)
			go func() {
				_, err := n.ReplaceStateMachine(tc.ctx, tc.sm)
				errc <- err
			}()
			if tc.during != nil {
				time.Sleep(5 * testTick)
				tc.during()
				c.waitApplied(c.nodes[lead].Applied())
				open()
			}
			err := <-errc
			if !errors.Is(err, ErrReload) || !errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), tc.want) ||
				(tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("%s: err = %v; want %q", tc.name, err, tc.want)
			}
			// The running state machine stays.
			before, _, _, _ := c.fsms[id].snapshotOf()
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
			c.waitApplied(c.nodes[lead].Applied())
			if after, _, _, _ := c.fsms[id].snapshotOf(); after <= before {
				t.Errorf("%s: the running state machine stopped applying (%d -> %d)", tc.name, before, after)
			}
		}
		if st, _ := n.Status(ctx); st.Metrics.StateMachineReloads != 0 || st.FSM.Name != "test" {
			t.Errorf("status after refusals: reloads %d, fsm %q", st.Metrics.StateMachineReloads, st.FSM.Name)
		}
		c.checkFSMs()
	})
}

// TestReplaceStateMachineGivesUpOnCrash: when the running state machine
// crashes while its state is being handed over, the node restarts it as
// usual and the reload fails, saying why; nothing is applied twice.
func TestReplaceStateMachineGivesUpOnCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = -1 })
		lead := c.waitLeader()
		ctx := context.Background()
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		old := c.fsms[lead]
		open := gateSnapshots(old)
		defer open()
		errc := make(chan error, 1)
		go func() {
			_, err := c.nodes[lead].ReplaceStateMachine(ctx, newTestFSM())
			errc <- err
		}()
		time.Sleep(5 * testTick)
		old.mu.Lock()
		old.crashAt[c.nodes[lead].Applied()+1] = true
		old.mu.Unlock()
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		err := <-errc
		if !errors.Is(err, ErrReload) || !strings.Contains(err.Error(), "restarted") {
			t.Fatalf("reload during a crash: %v", err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		if st, _ := c.nodes[lead].Status(ctx); st.Metrics.StateMachineRestarts == 0 {
			t.Fatal("no restart recorded")
		}
	})
}

func TestClip(t *testing.T) {
	long := strings.Repeat("x", 500)
	if got := clip([]byte(long)); !strings.HasSuffix(got, "...") || len(got) > 130 {
		t.Fatalf("clip: %d bytes: %s", len(got), got)
	}
	if got := clip([]byte(`{"ok":true}`)); got != fmt.Sprintf("%q", `{"ok":true}`) {
		t.Fatalf("clip short: %s", got)
	}
}
