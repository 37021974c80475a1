package node

import (
	"bytes"
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

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

func TestElectionAndProposalsRoutedToCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		if st, _ := c.nodes[lead].Status(context.Background()); st.Role != "leader" || len(st.Members) != 3 || st.Members[1].RaftAddr != "raft-2" {
			t.Fatalf("leader status: %+v", st)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 300)
		for id, n := range c.nodes {
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					want := fmt.Sprintf("n%d-%d", id, i)
					res, err := n.Propose(context.Background(), []byte("echo:"+want))
					if err != nil {
						errs <- fmt.Errorf("node %d proposal %d: %v", id, i, err)
						return
					}
					if got, _, _ := strings.Cut(string(res), "@"); got != want {
						errs <- fmt.Errorf("node %d proposal %d: got result %q, want %q@…", id, i, res, want)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
	})
}

func TestConcurrentProposalsAreBatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		n := c.nodes[lead]
		for _, s := range c.stores {
			s.syncDelay = time.Millisecond
		}
		before := c.stores[lead].saves.Load()
		mBefore := n.Metrics()
		const N = 500
		var wg sync.WaitGroup
		for i := range N {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := n.Propose(context.Background(), []byte(fmt.Sprintf("add:%d", i))); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		saves := c.stores[lead].saves.Load() - before
		m := n.Metrics()
		t.Logf("%d proposals: %d saves on the leader, %d apply batches", N, saves, m.ApplyBatches-mBefore.ApplyBatches)
		if saves >= N/5 {
			t.Errorf("%d saves for %d concurrent proposals: not batched", saves, N)
		}
		if b := m.ApplyBatches - mBefore.ApplyBatches; b >= N/5 {
			t.Errorf("%d apply batches for %d proposals: not batched", b, N)
		}
		q, err := n.Read(context.Background(), []byte("sum"))
		if err != nil || string(q) != fmt.Sprint(N*(N-1)/2) {
			t.Fatalf("sum = %q, %v; want %d", q, err, N*(N-1)/2)
		}
	})
}

func TestLinearizableReadsOnEveryNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		ctx := context.Background()
		for i := range 20 {
			w := c.nodes[uint64(i%3+1)]
			if _, err := w.Propose(ctx, []byte(fmt.Sprintf("put:k:%d", i))); err != nil {
				t.Fatal(err)
			}
			// A read on any node, after the write returned, sees it.
			r := c.nodes[uint64((i+1)%3+1)]
			got, err := r.Read(ctx, []byte("get:k"))
			if err != nil || string(got) != fmt.Sprint(i) {
				t.Fatalf("read %d on node %d: %q, %v", i, r.ID(), got, err)
			}
		}
		// Concurrent reads on a follower share ReadIndex rounds.
		var f *Node
		for id, n := range c.nodes {
			if id != lead {
				f = n
			}
		}
		before := f.Metrics().ReadIndexRounds
		var wg sync.WaitGroup
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got, err := f.Read(ctx, []byte("get:k")); err != nil || string(got) != "19" {
					t.Errorf("read: %q, %v", got, err)
				}
			}()
		}
		wg.Wait()
		rounds := f.Metrics().ReadIndexRounds - before
		t.Logf("200 concurrent follower reads: %d ReadIndex rounds", rounds)
		if rounds >= 50 {
			t.Errorf("%d ReadIndex rounds for 200 concurrent reads: not batched", rounds)
		}
		// Stale reads are local.
		if got, err := f.StaleRead(ctx, []byte("get:k")); err != nil || string(got) != "19" {
			t.Fatalf("stale read: %q, %v", got, err)
		}
	})
}

func TestReadWithoutLeaderFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		for id := range c.nodes {
			if id != lead {
				c.nw.isolate(id, true)
			}
		}
		// The leader steps down (check-quorum) and nobody can win.
		time.Sleep(40 * testTick)
		ctx, cancel := context.WithTimeout(context.Background(), 50*testTick)
		defer cancel()
		_, err := c.nodes[lead].Read(ctx, []byte("sum"))
		if err == nil {
			t.Fatal("read without a quorum succeeded")
		}
		_, err = c.nodes[lead].Propose(ctx, []byte("add:1"))
		if err == nil {
			t.Fatal("proposal without a quorum succeeded")
		}
		t.Logf("read: %v", err)
	})
}

func TestRestartReplaysWithoutDoubleApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		c.waitLeader()
		ctx := context.Background()
		for i := range 50 {
			if _, err := c.nodes[1].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
			_ = i
		}
		c.waitApplied(c.nodes[1].Applied())
		for _, id := range []uint64{2, 3} {
			c.stop(id)
		}
		// Node 2 restarts with a fresh (in-memory) FSM: full replay.
		c.fsms[2] = newTestFSM()
		// Node 3 keeps its FSM, which reports applied = its last index: no
		// command may be fed to it again.
		cmds3 := c.fsms[3].cmds
		c.start(2)
		c.start(3)
		for _, id := range []uint64{2, 3} {
			select {
			case <-c.nodes[id].Ready():
			case <-time.After(time.Second):
				t.Fatalf("node %d did not become ready", id)
			}
		}
		// Node 1 may have stepped down (check-quorum) while both followers
		// were away; propose once the cluster agrees on a leader again.
		c.waitLeader()
		if _, err := c.nodes[2].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[1].Applied())
		c.checkFSMs()
		if _, sum, cmds, _ := c.fsms[2].snapshotOf(); sum != 51 || cmds != 51 {
			t.Fatalf("node 2 after replay: sum %d, %d commands applied; want 51, 51", sum, cmds)
		}
		if _, _, cmds, _ := c.fsms[3].snapshotOf(); cmds != cmds3+1 {
			t.Fatalf("node 3 applied %d commands after restart, want 1", cmds-cmds3)
		}
	})
}

func TestSnapshotCompactionAndCatchUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 100
			cfg.SnapshotTrailing = 20
		})
		c.waitLeader()
		ctx := context.Background()
		c.stop(3)
		var lead uint64
		for i := range 600 {
			lead = c.waitLeader()
			if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("put:k%d:%d", i%10, i))); err != nil {
				t.Fatal(err)
			}
		}
		st, _ := c.nodes[lead].Status(ctx)
		first, _ := c.stores[lead].FirstIndex()
		t.Logf("leader: snapshot %d, first index %d, last %d, %d snapshots", st.SnapshotIndex, first, st.LastIndex, st.Metrics.SnapshotsTaken)
		if st.SnapshotIndex < 500 || first < 400 || st.Metrics.SnapshotsTaken < 5 {
			t.Fatalf("expected snapshots and compaction: %+v first=%d", st, first)
		}
		c.start(3)
		c.waitApplied(c.nodes[lead].Applied())
		m := c.nodes[3].Metrics()
		if m.SnapshotsInstalled != 1 {
			t.Fatalf("node 3 installed %d snapshots, want 1", m.SnapshotsInstalled)
		}
		if got, err := c.nodes[3].Read(ctx, []byte("get:k9")); err != nil || string(got) != "599" {
			t.Fatalf("node 3 read k9: %q, %v", got, err)
		}
		c.checkFSMs()
		// The leader restarts with its (persistent) FSM, which is ahead of
		// the latest snapshot: no restore, no command applied again.
		f := c.fsms[lead]
		_, _, cmdsBefore, _ := f.snapshotOf()
		restoresBefore := f.restores
		c.stop(lead)
		c.start(lead)
		<-c.nodes[lead].Ready()
		if _, _, cmds, _ := f.snapshotOf(); cmds != cmdsBefore || f.restores != restoresBefore {
			t.Fatalf("persistent FSM after restart: %d commands applied again, %d restores", cmds-cmdsBefore, f.restores-restoresBefore)
		}
		// Node 3 restarts from its received snapshot.
		c.stop(3)
		c.fsms[3] = newTestFSM()
		c.start(3)
		<-c.nodes[3].Ready()
		if got, err := c.nodes[3].StaleRead(ctx, []byte("get:k9")); err != nil || string(got) != "599" {
			t.Fatalf("node 3 after restart: %q, %v", got, err)
		}
	})
}

func TestStateMachineCrashIsRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 40
			cfg.SnapshotTrailing = 10
		})
		lead := c.waitLeader()
		var follower uint64
		for id := range c.nodes {
			if id != lead {
				follower = id
				break
			}
		}
		for _, idx := range []uint64{30, 75, 120} {
			c.fsms[follower].crashAt[idx] = true
		}
		c.fsms[lead].crashAt[90] = true
		c.fsms[lead].crashAt[130] = true
		ctx := context.Background()
		// A reader on each crashing node: linearizable reads never go back
		// in time, even while the state machine is rebuilt.
		stopReads := make(chan struct{})
		var readers sync.WaitGroup
		for _, id := range []uint64{lead, follower} {
			readers.Add(1)
			go func() {
				defer readers.Done()
				last := int64(-1)
				for {
					select {
					case <-stopReads:
						return
					default:
					}
					got, err := c.nodes[id].Read(ctx, []byte("sum"))
					if err == nil {
						v, _ := strconv.ParseInt(string(got), 10, 64)
						if v < last {
							t.Errorf("node %d: read %d after %d", id, v, last)
						}
						last = v
					}
					time.Sleep(time.Millisecond)
				}
			}()
		}
		defer func() { close(stopReads); readers.Wait() }()
		var wg sync.WaitGroup
		var mu sync.Mutex
		acked, unknown := 0, 0
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					res, err := c.nodes[lead].Propose(ctx, []byte("add:1"))
					mu.Lock()
					switch {
					case err == nil:
						if !strings.HasPrefix(string(res), "sum=") {
							t.Errorf("worker %d: bad result %q", g, res)
						}
						acked++
					case errors.Is(err, ErrOutcomeUnknown):
						unknown++
					default:
						t.Errorf("worker %d: %v", g, err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		q, _ := c.nodes[lead].Read(ctx, []byte("sum"))
		t.Logf("acked %d, unknown %d, sum %s, restarts: leader %d follower %d", acked, unknown, q, c.fsms[lead].restarts, c.fsms[follower].restarts)
		if string(q) != "160" || acked+unknown != 160 {
			t.Fatalf("sum %s, acked %d + unknown %d; want 160", q, acked, unknown)
		}
		if c.fsms[follower].restarts != 3 || c.fsms[lead].restarts != 2 {
			t.Fatalf("restarts: follower %d (want 3), leader %d (want 2)", c.fsms[follower].restarts, c.fsms[lead].restarts)
		}
	})
}

func TestStateMachineRestartsExhaustedFailStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		var follower uint64
		for id := range c.nodes {
			if id != lead {
				follower = id
			}
		}
		f := c.fsms[follower]
		f.mu.Lock()
		f.crashAt[10] = true
		f.restartFails = 100
		f.mu.Unlock()
		for range 12 {
			if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		n := c.nodes[follower]
		select {
		case <-n.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("node did not stop")
		}
		err := n.Err()
		if err == nil || !strings.Contains(err.Error(), "3 restarts in a row failed at index 10") || !strings.Contains(err.Error(), `"test"`) {
			t.Fatalf("err = %v", err)
		}
		if f.restarts != 3 {
			t.Fatalf("%d restarts, want 3", f.restarts)
		}
		c.nw.set(follower, nil)
		delete(c.nodes, follower)
		// Non-crash apply errors fail-stop at once.
		c.fsms[lead].mu.Lock()
		c.fsms[lead].failWith = errors.New("disk full")
		c.fsms[lead].mu.Unlock()
		_, perr := c.nodes[lead].Propose(context.Background(), []byte("add:1"))
		<-c.nodes[lead].Done()
		if err := c.nodes[lead].Err(); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("leader err = %v", err)
		}
		if !errors.Is(perr, ErrOutcomeUnknown) {
			t.Fatalf("pending proposal: %v, want outcome unknown", perr)
		}
		delete(c.nodes, lead)
	})
}

func TestStorageErrorFailStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		boom := errors.New("injected fsync failure")
		c.stores[lead].saveErr.Store(&boom)
		_, err := c.nodes[lead].Propose(context.Background(), []byte("add:1"))
		if err == nil || !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("proposal: %v", err)
		}
		<-c.nodes[lead].Done()
		if err := c.nodes[lead].Err(); !errors.Is(err, boom) || !strings.Contains(err.Error(), "storage: save") {
			t.Fatalf("err = %v", err)
		}
		if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:1")); !errors.Is(err, ErrStopped) {
			t.Fatalf("propose after fail-stop: %v", err)
		}
		c.nw.set(lead, nil)
		delete(c.nodes, lead)
		// The others elect a new leader and keep going.
		c.waitLeader()
		var other *Node
		for _, n := range c.nodes {
			other = n
		}
		if _, err := other.Propose(context.Background(), []byte("add:1")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMembershipChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 30
			cfg.SnapshotTrailing = 5
		})
		lead := c.waitLeader()
		ctx := context.Background()
		for range 50 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:2")); err != nil {
				t.Fatal(err)
			}
		}
		// Node 4 joins empty: learner first, then promoted.
		c.stores[4] = newMemStorage()
		c.fsms[4] = newTestFSM()
		cfg := c.config(4)
		cfg.Peers = nil
		n4, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[4] = n4
		c.nw.set(4, n4)
		if err := c.nodes[lead].AddLearner(ctx, Peer{ID: 4, RaftAddr: "raft-4", APIAddr: "api-4"}); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		if st, _ := n4.Status(ctx); st.Role != "learner" {
			t.Fatalf("node 4 role %q, want learner", st.Role)
		}
		if err := c.nodes[lead].Promote(ctx, 4); err != nil {
			t.Fatal(err)
		}
		// A proposal on a follower, a removal, and everyone agrees.
		if err := c.nodes[lead].RemoveMember(ctx, 4); err != nil {
			t.Fatal(err)
		}
		ms, _ := c.nodes[lead].Members(ctx)
		if len(ms) != 3 {
			t.Fatalf("members after removal: %+v", ms)
		}
		if err := c.nodes[lead].AddMember(ctx, Peer{ID: 4, RaftAddr: "raft-4b"}); err != nil {
			t.Fatal(err)
		}
		ms, _ = c.nodes[lead].Members(ctx)
		if len(ms) != 4 || ms[3].RaftAddr != "raft-4b" || ms[3].Learner {
			t.Fatalf("members: %+v", ms)
		}
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		if got, err := n4.Read(ctx, []byte("sum")); err != nil || string(got) != "101" {
			t.Fatalf("node 4 sum %q, %v", got, err)
		}
		// Restarts replay membership from snapshot + log (conf changes in
		// the trailing entries are applied again, idempotently).
		for _, id := range []uint64{lead, 4} {
			cfg := c.config(id)
			if id == 4 {
				cfg.Peers = nil
			}
			c.stop(id)
			n, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.nodes[id] = n
			c.nw.set(id, n)
			<-n.Ready()
			ms, _ := n.Members(ctx)
			if len(ms) != 4 || ms[3].RaftAddr != "raft-4b" || ms[3].Learner {
				t.Fatalf("node %d members after restart: %+v", id, ms)
			}
		}
		lead = c.waitLeader()
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFSMVersionActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := map[uint64]*logBuffer{1: {}, 2: {}, 3: {}}
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 10
			cfg.SnapshotTrailing = 2
			cfg.Logger = logs[cfg.ID].logger()
		})
		lead := c.waitLeader()
		ctx := context.Background()
		if _, err := c.nodes[lead].ActivateFSMVersion(ctx, 3); !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("activate 3: %v", err)
		}
		idx, err := c.nodes[lead].ActivateFSMVersion(ctx, 2)
		if err != nil || idx == 0 {
			t.Fatal(idx, err)
		}
		for range 15 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		for id, f := range c.fsms {
			if f.lastVersion != 2 {
				t.Errorf("node %d got version %d", id, f.lastVersion)
			}
			st, _ := c.nodes[id].Status(ctx)
			if st.FSMVersion != 2 || st.FSMVersionIndex != idx {
				t.Errorf("node %d status version %d@%d", id, st.FSMVersion, st.FSMVersionIndex)
			}
			// Operators see the switch in every node's log.
			if want := fmt.Sprintf("version=2 previous=1 index=%d", idx); !strings.Contains(logs[id].String(), want) {
				t.Errorf("node %d logged no activation (%q):\n%s", id, want, logs[id].String())
			}
		}
		// A restarted node whose FSM only supports version 1 refuses to start
		// (the snapshot says 2 is active).
		c.stop(2)
		c.fsms[2] = newTestFSM()
		c.fsms[2].versions = [2]uint32{1, 1}
		if _, err := New(c.config(2)); err == nil || !strings.Contains(err.Error(), "version 2 is active") {
			t.Fatalf("restart with old FSM: %v", err)
		}
	})
}

func TestBadConfig(t *testing.T) {
	s := newMemStorage()
	cases := []Config{
		{},
		{ID: 1},
		{ID: 1, Storage: s, Transport: &transport{}, StateMachine: newTestFSM(), HeartbeatInterval: time.Second},
		{ID: 1, Storage: s, Transport: &transport{}, StateMachine: newTestFSM(), Peers: []Peer{{ID: 2}}},
	}
	for i, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
}

// TestLeaderChangesNeverGiveWrongResults proposes from every node while
// the leader is cut off again and again. Every caller gets its own result
// (applied exactly once), or an error that tells the truth: "not applied"
// errors were never applied, "outcome unknown" at most once.
func TestLeaderChangesNeverGiveWrongResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotEntries = 200
			cfg.SnapshotTrailing = 50
		})
		c.waitLeader()
		type outcome struct {
			payload string
			res     []byte
			err     error
		}
		outcomes := make(chan outcome, 100000)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for id, n := range c.nodes {
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						p := fmt.Sprintf("n%dw%di%d", id, w, i)
						ctx, cancel := context.WithTimeout(context.Background(), 30*testTick)
						res, err := n.Propose(ctx, []byte("echo:"+p))
						cancel()
						outcomes <- outcome{p, res, err}
						if err != nil {
							time.Sleep(testTick)
						}
					}
				}()
			}
		}
		for range 5 {
			time.Sleep(20 * testTick)
			lead := c.waitLeader()
			c.nw.isolate(lead, true)
			time.Sleep(30 * testTick)
			c.nw.isolate(lead, false)
		}
		time.Sleep(20 * testTick)
		close(stop)
		wg.Wait()
		close(outcomes)
		lead := c.waitLeader()
		if _, err := c.nodes[lead].Propose(context.Background(), []byte("echo:final")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		f := c.fsms[lead]
		count := func(p string) int {
			f.mu.Lock()
			defer f.mu.Unlock()
			n, _ := strconv.Atoi(f.kv["e/"+p])
			return n
		}
		var ok, notApplied, unknown int
		for o := range outcomes {
			n := count(o.payload)
			switch {
			case o.err == nil:
				ok++
				if got, _, _ := strings.Cut(string(o.res), "@"); got != o.payload || n != 1 {
					t.Errorf("%s: result %q, applied %d times", o.payload, o.res, n)
				}
			case errors.Is(o.err, ErrOutcomeUnknown) && errors.Is(o.err, ErrNotApplied):
				t.Errorf("%s: %v is both unknown and not applied", o.payload, o.err)
			case errors.Is(o.err, ErrOutcomeUnknown):
				unknown++
				if n > 1 {
					t.Errorf("%s: applied %d times", o.payload, n)
				}
			case errors.Is(o.err, ErrNotApplied):
				notApplied++
				if n != 0 {
					t.Errorf("%s: %v, but applied %d times", o.payload, o.err, n)
				}
			default:
				t.Errorf("%s: unexpected error %v", o.payload, o.err)
			}
		}
		t.Logf("ok %d, not applied %d, unknown %d", ok, notApplied, unknown)
		if ok < 100 || notApplied+unknown == 0 {
			t.Errorf("the test did not exercise what it should")
		}
	})
}

func TestStateMachineCrashDuringSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 20; cfg.SnapshotTrailing = 5 })
		lead := c.waitLeader()
		c.fsms[lead].mu.Lock()
		c.fsms[lead].crashOnSnapshot = 2
		c.fsms[lead].mu.Unlock()
		ctx := context.Background()
		for range 100 {
			if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
				t.Fatal(err)
			}
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		st, _ := c.nodes[lead].Status(ctx)
		if st.Metrics.StateMachineRestarts != 2 || st.SnapshotIndex < 80 {
			t.Fatalf("restarts %d, snapshot index %d", st.Metrics.StateMachineRestarts, st.SnapshotIndex)
		}
		if got, _ := c.nodes[lead].Read(ctx, []byte("sum")); string(got) != "100" {
			t.Fatalf("sum %s", got)
		}
	})
}

func TestGracefulStopFinishesApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		n := c.nodes[lead]
		c.fsms[lead].applyDelay = 5 * time.Millisecond
		ctx := context.Background()
		var wg sync.WaitGroup
		var okCount, unknown atomic.Int64
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * 100 * time.Microsecond)
				_, err := n.Propose(ctx, []byte("add:1"))
				switch {
				case err == nil:
					okCount.Add(1)
				case errors.Is(err, ErrOutcomeUnknown), errors.Is(err, ErrStopped):
					unknown.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		time.Sleep(10 * time.Millisecond)
		c.stop(lead)
		wg.Wait()
		if n.Applied() != n.handed || n.handed == 0 {
			t.Fatalf("stopped with applied %d, handed to the applier %d", n.Applied(), n.handed)
		}
		if _, sum, _, _ := c.fsms[lead].snapshotOf(); sum < okCount.Load() {
			t.Fatalf("sum %d < %d acknowledged", sum, okCount.Load())
		}
		t.Logf("ok %d, unknown %d, applied %d", okCount.Load(), unknown.Load(), n.Applied())
	})
}

func TestRestartRefusesInconsistentState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		c.waitLeader()
		if _, err := c.nodes[1].Propose(context.Background(), []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		c.stop(1)
		f := newTestFSM()
		f.applied = 1000 // a persistent FSM from somewhere else
		cfg := c.config(1)
		cfg.StateMachine = f
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "beyond the commit index") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestReceiveSnapshotRejectsBadBodies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		n := c.nodes[1]
		snap := &raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 50, Term: 3}}
		m := raft.Message{Type: raft.MsgSnap, From: 2, To: 1, Term: 3, Snapshot: snap}
		if err := n.ReceiveSnapshot(context.Background(), m, strings.NewReader("garbage that is not a snapshot")); err == nil || !strings.Contains(err.Error(), "magic") {
			t.Fatalf("garbage body: %v", err)
		}
		stream := func(h SnapshotHeader, body string) []byte {
			b, err := io.ReadAll(snapshot.Encode(h, strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if err := n.ReceiveSnapshot(context.Background(), m, bytes.NewReader(stream(SnapshotHeader{Index: 49, Term: 3}, ""))); err == nil || !strings.Contains(err.Error(), "index 49") {
			t.Fatalf("mismatched body: %v", err)
		}
		// A format-1 stream (node header "RAFTDSN1" first) is refused as
		// old, naming the format.
		old := "RAFTDSN1\x00\x00\x00\x0d{\"index\":50}RFSNAP01..."
		if err := n.ReceiveSnapshot(context.Background(), m, strings.NewReader(old)); !errors.Is(err, snapshot.ErrOldFormat) || !strings.Contains(err.Error(), "format 1") {
			t.Fatalf("old format: %v", err)
		}
		// A damaged or cut body is refused, and what was stored is aborted.
		good := stream(SnapshotHeader{Index: 50, Term: 3, FSMName: "test", FSMFormat: testFormat}, `{"Applied":50,"Sum":7}`+"\n")
		flipped := bytes.Clone(good)
		flipped[len(flipped)-snapshot.TrailerBytes-3] ^= 0x20
		aborts := c.stores[1].aborts.Load()
		for name, b := range map[string][]byte{"flipped": flipped, "cut": good[:len(good)-snapshot.TrailerBytes-1]} {
			if err := n.ReceiveSnapshot(context.Background(), m, bytes.NewReader(b)); !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("%s body: %v", name, err)
			}
		}
		if got := c.stores[1].aborts.Load() - aborts; got != 2 {
			t.Fatalf("%d sinks aborted for 2 damaged bodies", got)
		}
		if err := n.Process(context.Background(), m); err == nil {
			t.Fatal("MsgSnap through Process accepted")
		}
	})
}

// TestSnapshotOfAnotherFSMRefused: a node whose storage holds a snapshot
// of FSM "kv" refuses to start with FSM "test" (it would restore the wrong
// state machine's body, or replay onto it), naming both; the same snapshot
// made for "test" starts and is restored.
func TestSnapshotOfAnotherFSMRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := newNetwork()
		defer nw.close()
		start := func(fsmName string) (*Node, *testFSM, error) {
			h := SnapshotHeader{Index: 40, Term: 2, FSMName: fsmName, FSMVersion: 1, FSMFormat: testFormat}
			b, err := io.ReadAll(snapshot.Encode(h, strings.NewReader(`{"Applied":40,"Sum":5,"KV":{"a":"1"}}`+"\n")))
			if err != nil {
				t.Fatal(err)
			}
			st := newMemStorage()
			if _, err := SeedFromSnapshot(st, Peer{ID: 1, RaftAddr: "raft-1"}, bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			f := newTestFSM()
			n, err := New(Config{ID: 1, Storage: st, Transport: &transport{nw: nw, id: 1}, StateMachine: f,
				HeartbeatInterval: testTick, ElectionTimeout: 10 * testTick})
			return n, f, err
		}
		_, _, err := start("kv")
		if !errors.Is(err, ErrWrongFSM) || !strings.Contains(err.Error(), `fsm "test" cannot run this cluster's fsm "kv"`) {
			t.Fatalf("kv snapshot into the test FSM: %v", err)
		}
		n, f, err := start("test")
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop(context.Background())
		if applied, sum, _, _ := f.snapshotOf(); applied != 40 || sum != 5 {
			t.Fatalf("restored state: applied %d sum %d", applied, sum)
		}
	})
}

// TestSeedRefusesOldAndDamagedFiles: disaster recovery refuses a snapshot
// file of the old format (clearly, as old) and a truncated or damaged one
// (its trailer), and leaves the storage empty.
func TestSeedRefusesOldAndDamagedFiles(t *testing.T) {
	h := SnapshotHeader{Index: 40, Term: 2, FSMName: "test", FSMVersion: 1, FSMFormat: testFormat}
	good, err := io.ReadAll(snapshot.Encode(h, strings.NewReader(`{"Applied":40,"Sum":5}`+"\n")))
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(good)
	damaged[len(damaged)-snapshot.TrailerBytes-2] ^= 0x01
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"old format", []byte("RAFTDSN1\x00\x00\x00\x02{}RFSNAP01"), snapshot.ErrOldFormat},
		{"truncated", good[:len(good)-1], snapshot.ErrCorrupt},
		{"damaged body", damaged, snapshot.ErrCorrupt},
	} {
		st := newMemStorage()
		_, err := SeedFromSnapshot(st, Peer{ID: 1, RaftAddr: "raft-1"}, bytes.NewReader(tc.b))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if snap, _ := st.Snapshot(); !snap.IsEmpty() || len(st.bodies) != 0 {
			t.Errorf("%s: storage not left empty", tc.name)
		}
	}
	if _, err := SeedFromSnapshot(newMemStorage(), Peer{ID: 1, RaftAddr: "raft-1"}, bytes.NewReader(good)); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	e, err := decodeEnvelope(encodeCommand(7, 1<<40, []byte("hello")))
	if err != nil || e.kind != kindCommand || e.proposer != 7 || e.req != 1<<40 || string(e.payload) != "hello" {
		t.Fatalf("%+v %v", e, err)
	}
	e, err = decodeEnvelope(encodeVersion(3, 9, 2))
	if err != nil || e.kind != kindVersion || e.version != 2 {
		t.Fatalf("%+v %v", e, err)
	}
	e, err = decodeEnvelope(encodeSkip(3, 9, 1<<33))
	if err != nil || e.kind != kindSkip || e.skip != 1<<33 || e.req != 9 {
		t.Fatalf("%+v %v", e, err)
	}
	for _, bad := range [][]byte{{9, 1, 1}, {kindCommand}, {kindVersion, 1, 1}, {kindVersion, 1, 1, 0}, {kindSkip, 1, 1, 0}, {kindSkip, 1, 1}, {kindSkip, 1, 1, 5, 5}} {
		if _, err := decodeEnvelope(bad); err == nil {
			t.Errorf("%v decoded", bad)
		}
	}
}

// A state machine that is slower than the proposals: the apply backlog
// stays bounded (Config.MaxApplyBacklogBytes) and the proposals beyond it
// are refused at once as not applied (backpressure), never dropped
// silently or blocked; every accepted one is applied exactly once. A
// follower that is slower still holds no more than the bound in memory
// either: it leaves the rest in Storage and reads it back.
func TestSlowStateMachineThrottlesProposals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 4 << 10
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.MaxApplyBacklogBytes = limit
			cfg.MaxUncommittedEntriesSize = limit
			cfg.MaxApplyBatch = 4
		})
		lead := c.waitLeader()
		slow := lead%3 + 1
		for id, f := range c.fsms {
			f.applyDelay = 5 * time.Millisecond
			if id == slow {
				f.applyDelay = 100 * time.Millisecond
			}
		}
		n := c.nodes[lead]
		var wg sync.WaitGroup
		var acked, refused atomic.Int64
		var maxBacklog atomic.Int64
		pad := strings.Repeat("x", 200)
		// Clients retry what is refused (as a client that gets "not
		// applied" may), so the load is sustained.
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done := 0; done < 10; {
					_, err := n.Propose(context.Background(), []byte("put:k:"+pad))
					switch {
					case err == nil:
						acked.Add(1)
						done++
					case errors.Is(err, ErrNotApplied) && (errors.Is(err, ErrOverloaded) || errors.Is(err, raft.ErrProposalDropped)):
						refused.Add(1)
						time.Sleep(2 * time.Millisecond)
					default:
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for id, m := range c.nodes {
			t.Logf("node %d: peak %d spills %d", id, m.app.backlogPeak.Load(), m.Metrics().ApplySpills)
			maxBacklog.Store(max(maxBacklog.Load(), m.app.backlogPeak.Load()))
		}
		t.Logf("acked %d, refused %d, largest in-memory backlog %d bytes (limit %d)", acked.Load(), refused.Load(), maxBacklog.Load(), limit)
		if refused.Load() == 0 {
			t.Fatalf("nothing refused: %+v", n.Metrics())
		}
		if m := n.Metrics(); m.Refused[RefusedBackpressure] == 0 || m.Refused[RefusedBackpressure]+m.Refused[RefusedDropped] != uint64(refused.Load()) {
			t.Errorf("Refused: backpressure %d + dropped %d, clients saw %d refusals", m.Refused[RefusedBackpressure], m.Refused[RefusedDropped], refused.Load())
		}
		if b := maxBacklog.Load(); b > limit {
			t.Fatalf("in-memory apply backlog reached %d bytes, limit %d", b, limit)
		}
		if m := c.nodes[slow].Metrics(); m.ApplySpills == 0 {
			t.Fatalf("the slow follower never left entries in storage: %+v", m)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		if _, _, cmds, _ := c.fsms[lead].snapshotOf(); int64(cmds) != acked.Load() {
			t.Fatalf("leader applied %d commands, %d acknowledged (refused ones must not be applied)", cmds, acked.Load())
		}
	})
}

func TestExportSnapshotAndSeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		ctx := context.Background()
		for i := range 30 {
			if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("put:k%d:v%d", i, i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := c.nodes[lead].ExportSnapshot(ctx, false); err == nil {
			t.Fatal("export without a snapshot succeeded")
		}
		meta, rc, err := c.nodes[lead].ExportSnapshot(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		if _, err := io.Copy(&body, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if meta.Index < 30 {
			t.Fatalf("snapshot at %d", meta.Index)
		}
		// Disaster recovery: a fresh single-node cluster from the file.
		st := newMemStorage()
		hdr, err := SeedFromSnapshot(st, Peer{ID: 9, RaftAddr: "raft-9"}, strings.NewReader(body.String()))
		if err != nil || hdr.Index != meta.Index {
			t.Fatal(hdr, err)
		}
		if _, err := SeedFromSnapshot(st, Peer{ID: 9}, strings.NewReader(body.String())); err == nil {
			t.Fatal("seeding a non-empty storage succeeded")
		}
		nw := newNetwork()
		defer nw.close()
		n, err := New(Config{ID: 9, Storage: st, Transport: &transport{nw: nw, id: 9}, StateMachine: newTestFSM(), HeartbeatInterval: testTick, ElectionTimeout: 10 * testTick})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop(ctx)
		nw.set(9, n)
		if err := n.Campaign(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Propose(ctx, []byte("put:after:1")); err != nil {
			t.Fatal(err)
		}
		if got, err := n.Read(ctx, []byte("get:k29")); err != nil || string(got) != "v29" {
			t.Fatalf("k29 = %q, %v", got, err)
		}
		ms, _ := n.Members(ctx)
		if len(ms) != 1 || ms[0].ID != 9 || ms[0].RaftAddr != "raft-9" {
			t.Fatalf("members %+v", ms)
		}
	})
}

func TestTransferLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		to := lead%3 + 1
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.nodes[lead].TransferLeader(ctx, to); err != nil {
			t.Fatal(err)
		}
		if got := c.waitLeader(); got != to {
			t.Fatalf("leader %d, want %d", got, to)
		}
		if _, err := c.nodes[lead].Propose(ctx, []byte("add:1")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLateInitialMemberCatchesUpBySnapshot: a node listed in the initial
// peers starts for the first time after the others compacted their logs.
func TestLateInitialMemberCatchesUpBySnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = 50; cfg.SnapshotTrailing = 10 })
		c.stop(3)
		c.stores[3] = newMemStorage()
		c.fsms[3] = newTestFSM()
		lead := c.waitLeader()
		ctx := context.Background()
		for i := range 300 {
			if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("add:%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		c.start(3)
		c.waitApplied(c.nodes[lead].Applied())
		if m := c.nodes[3].Metrics(); m.SnapshotsInstalled != 1 {
			t.Fatalf("late node installed %d snapshots", m.SnapshotsInstalled)
		}
		c.checkFSMs()
		// And it restarts from what it received.
		c.stop(3)
		c.fsms[3] = newTestFSM()
		c.start(3)
		<-c.nodes[3].Ready()
		ms, _ := c.nodes[3].Members(ctx)
		if len(ms) != 3 || ms[2].RaftAddr != "raft-3" {
			t.Fatalf("members after restart: %+v", ms)
		}
		if got, _ := c.nodes[3].StaleRead(ctx, []byte("sum")); string(got) != fmt.Sprint(299*300/2) {
			t.Fatalf("sum %s", got)
		}
	})
}

// A restart replay does not hold the log in memory: raft hands the
// committed entries out in pieces (MaxCommittedSizePerReady) and beyond
// MaxApplyBacklogBytes the applier reads them back from storage as the
// state machine gets to them.
func TestRestartReplayIsBoundedInBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const backlog = 32 << 10
		c := newCluster(t, 3, func(cfg *Config) { cfg.SnapshotEntries = -1 })
		lead := c.waitLeader()
		ctx := context.Background()
		pad := strings.Repeat("x", 1000)
		for i := range 300 {
			if _, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("put:k%d:%s", i, pad))); err != nil {
				t.Fatal(err)
			}
		}
		f := lead%3 + 1
		c.waitApplied(c.nodes[lead].Applied())
		c.stop(f)
		c.fsms[f] = newTestFSM()
		c.fsms[f].applyDelay = time.Millisecond
		c.tune = func(cfg *Config) {
			cfg.SnapshotEntries = -1
			if cfg.ID == f {
				cfg.MaxCommittedSizePerReady = 16 << 10
				cfg.MaxApplyBacklogBytes = backlog
				cfg.MaxApplyBatch = 8
			}
		}
		n := c.start(f)
		select {
		case <-n.Ready():
		case <-time.After(time.Minute):
			t.Fatalf("node %d did not finish its replay (applied %d)", f, n.Applied())
		}
		m := n.Metrics()
		t.Logf("replay of 300 entries of 1 KiB: in-memory backlog peak %d bytes (limit %d), %d batches left in storage", n.app.backlogPeak.Load(), backlog, m.ApplySpills)
		if p := n.app.backlogPeak.Load(); p > backlog {
			t.Fatalf("replay held %d bytes of entries in memory, limit %d", p, backlog)
		}
		if m.ApplySpills == 0 {
			t.Fatalf("the replay never read entries back from storage: %+v", m)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
	})
}
