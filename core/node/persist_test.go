package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// Persist before send (Raft §5.1 and figure 2; thesis §10.2.1 for the
// leader's exception), checked at the moment each message leaves a node,
// against what would survive if that node lost power right then
// (crashStore):
//
//   - a granted vote: the vote and its term are durable;
//   - any message of term T (pre-vote traffic aside): term T is durable;
//   - a follower's append acknowledgement up to index i: entry i (with the
//     term the node holds) is durable;
//   - a commit index c sent by the leader (MsgApp, MsgHeartbeat): entry c is
//     durable on a majority, the leader counted only once its own write is
//     durable (a leader may send its new entries while writing them, but
//     must not count itself before the write is done).
//
// The same majority rule is checked for every command the state machine
// applies.

// durabilityChecker holds every node's current store and records
// violations.
type durabilityChecker struct {
	mu     sync.Mutex
	stores map[uint64]*crashStore // current incarnation of each node
	voters int
	bad    []string
	// What was checked: messages, granted votes, append acknowledgements,
	// commit claims (sent or applied).
	checks, votes, acks, commits atomic.Int64
}

func (d *durabilityChecker) store(id uint64) *crashStore {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stores[id]
}

func (d *durabilityChecker) setStore(id uint64, s *crashStore) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stores[id] = s
}

func (d *durabilityChecker) violation(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bad = append(d.bad, fmt.Sprintf(format, args...))
}

func (d *durabilityChecker) violations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.bad...)
}

// checkCommitted checks that entry i, which s's node takes as committed,
// is durable on a majority, with the term s holds it at (or, if s has not
// written it yet, with the term most nodes hold durably).
func (d *durabilityChecker) checkCommitted(s *crashStore, i uint64, what string) {
	d.commits.Add(1)
	if s.compacted(i) {
		return // checked when it was first claimed
	}
	d.mu.Lock()
	stores := make([]*crashStore, 0, len(d.stores))
	for _, o := range d.stores {
		stores = append(stores, o)
	}
	d.mu.Unlock()
	covered := 0
	copies := map[uint64]int{} // term -> durable copies in logs
	for _, o := range stores {
		switch t, cov, ok := o.durableEntry(i); {
		case cov:
			covered++
		case ok:
			copies[t]++
		}
	}
	term, known := s.currentTerm(i)
	if !known {
		for t, n := range copies {
			if n > copies[term] {
				term = t
			}
		}
	}
	if n := covered + copies[term]; n <= d.voters/2 {
		d.violation("%s: entry %d (term %d) is durable on %d of %d nodes", what, i, term, n, d.voters)
	}
}

// check checks message m, which node from is sending now.
func (d *durabilityChecker) check(from uint64, m raft.Message) {
	d.checks.Add(1)
	s := d.store(from)
	hs := s.durableHardState()
	if m.Type != raft.MsgPreVote && m.Type != raft.MsgPreVoteResp && m.Term > hs.Term {
		d.violation("node %d sent %v of term %d to %d while its durable term is %d", from, m.Type, m.Term, m.To, hs.Term)
	}
	switch m.Type {
	case raft.MsgVoteResp:
		if m.Reject {
			break
		}
		d.votes.Add(1)
		if hs.Term != m.Term || hs.Vote != m.To {
			d.violation("node %d granted its vote in term %d to %d while its durable hard state is term %d vote %d", from, m.Term, m.To, hs.Term, hs.Vote)
		}
	case raft.MsgAppResp:
		if m.Reject || s.compacted(m.Index) {
			break
		}
		d.acks.Add(1)
		term, ok := s.currentTerm(m.Index)
		if !ok {
			d.violation("node %d acknowledged entries up to %d to %d before writing them", from, m.Index, m.To)
			break
		}
		if dt, covered, dok := s.durableEntry(m.Index); !covered && (!dok || dt != term) {
			d.violation("node %d acknowledged entries up to %d (term %d) to %d before they were durable", from, m.Index, term, m.To)
		}
	case raft.MsgApp, raft.MsgHeartbeat:
		if m.Commit > 0 {
			d.checkCommitted(s, m.Commit, fmt.Sprintf("leader %d sent commit index %d to %d", from, m.Commit, m.To))
		}
	}
}

// checkedTransport checks every message as it leaves its node and drops
// everything once the node is crashed.
type checkedTransport struct {
	Transport
	id   uint64
	chk  *durabilityChecker
	mu   sync.Mutex
	dead bool
}

func (t *checkedTransport) Send(msgs []raft.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return
	}
	for _, m := range msgs {
		t.chk.check(t.id, m)
	}
	t.Transport.Send(msgs)
}

// kill stops all further sends: the node lost power.
func (t *checkedTransport) kill() {
	t.mu.Lock()
	t.dead = true
	t.mu.Unlock()
}

// checkedFSM checks that every command it applies is durable on a majority.
type checkedFSM struct {
	*testFSM
	id  uint64
	chk *durabilityChecker
}

func (f checkedFSM) Apply(ctx context.Context, cmds []Command) ([][]byte, error) {
	s := f.chk.store(f.id)
	for _, c := range cmds {
		f.chk.checkCommitted(s, c.Index, fmt.Sprintf("node %d applied command %d", f.id, c.Index))
	}
	return f.testFSM.Apply(ctx, cmds)
}

// crashRun is one run of the crash workload.
type crashRun struct {
	violations                   []string
	checks, votes, acks, commits int64
	acked                        int
	lost                         []string // acknowledged writes missing at the end
	crashes, leaderCrashes       int
}

// runCrashWorkload runs a 3-node cluster on crash-faithful storage with a
// slow fsync, proposes unique writes from two clients, and power-cycles a
// random node (the leader included) every few heartbeats. At the end, with
// every node back, it checks that every acknowledged write is applied on
// every node. unsafeOrder makes every node send before it persists.
func runCrashWorkload(t *testing.T, seed uint64, unsafeOrder bool) crashRun {
	var run crashRun
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 17))
		chk := &durabilityChecker{stores: map[uint64]*crashStore{}, voters: 3}
		for id := uint64(1); id <= 3; id++ {
			chk.stores[id] = newCrashStore(3 * time.Millisecond)
		}
		trs := map[uint64]*checkedTransport{}
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.Storage = chk.store(cfg.ID)
			tr := &checkedTransport{Transport: cfg.Transport, id: cfg.ID, chk: chk}
			trs[cfg.ID] = tr
			cfg.Transport = tr
			cfg.StateMachine = checkedFSM{testFSM: cfg.StateMachine.(*testFSM), id: cfg.ID, chk: chk}
			cfg.SnapshotEntries = 60
			cfg.SnapshotTrailing = 10
			cfg.unsafeSendBeforeSave = unsafeOrder
		})
		c.waitLeader()

		// Clients: unique puts through random running nodes.
		var (
			mu      sync.Mutex
			nodes   = map[uint64]*Node{}
			acked   []string
			stopped = make(chan struct{})
			wg      sync.WaitGroup
		)
		for id, n := range c.nodes {
			nodes[id] = n
		}
		pick := func(i int) *Node {
			mu.Lock()
			defer mu.Unlock()
			for k := uint64(0); k < 3; k++ {
				if n := nodes[(uint64(i)+k)%3+1]; n != nil {
					return n
				}
			}
			return nil
		}
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stopped:
						return
					default:
					}
					n := pick(i + w)
					key := fmt.Sprintf("w%d-%d", w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 30*testTick)
					_, err := n.Propose(ctx, []byte("put:"+key+":v"))
					cancel()
					if err == nil {
						mu.Lock()
						acked = append(acked, key)
						mu.Unlock()
					} else {
						time.Sleep(testTick)
					}
				}
			}()
		}

		// Power-cycle nodes, one at a time so that a majority stays up.
		for range 12 {
			time.Sleep(time.Duration(10+rng.IntN(60)) * testTick / 4)
			id := uint64(1 + rng.IntN(3))
			var lead uint64
			for _, n := range c.nodes {
				if l := n.Leader(); l != 0 && c.nodes[l] != nil {
					lead = l
				}
			}
			if rng.IntN(2) == 0 && lead != 0 {
				id = lead
			}
			if id == lead {
				run.leaderCrashes++
			}
			n := c.nodes[id]
			trs[id].kill()
			c.nw.set(id, nil)
			image := chk.store(id).crash()
			mu.Lock()
			delete(nodes, id)
			mu.Unlock()
			_ = n.Stop(context.Background())
			delete(c.nodes, id)
			run.crashes++

			time.Sleep(time.Duration(rng.IntN(30)) * testTick / 4)
			chk.setStore(id, image)
			c.fsms[id] = newTestFSM() // the in-memory FSM lost its state too
			n = c.start(id)
			mu.Lock()
			nodes[id] = n
			mu.Unlock()
		}
		close(stopped)
		wg.Wait()

		lead := c.waitLeader()
		if _, err := c.nodes[lead].Propose(context.Background(), []byte("put:final:v")); err != nil {
			t.Fatalf("final proposal: %v", err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		c.checkFSMs()
		for id, f := range c.fsms {
			f.mu.Lock()
			for _, k := range acked {
				if _, ok := f.kv[k]; !ok {
					run.lost = append(run.lost, fmt.Sprintf("node %d lacks acknowledged write %s", id, k))
				}
			}
			f.mu.Unlock()
		}
		run.violations = chk.violations()
		run.checks, run.votes, run.acks, run.commits = chk.checks.Load(), chk.votes.Load(), chk.acks.Load(), chk.commits.Load()
		run.acked = len(acked)
	})
	return run
}

// TestPersistBeforeSendUnderCrashes: with crash-faithful storage and nodes
// losing power at random points (inside fsyncs included), no message ever
// claims more than is durable and no acknowledged write is lost.
func TestPersistBeforeSendUnderCrashes(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		run := runCrashWorkload(t, seed, false)
		t.Logf("seed %d: %d crashes (%d of the leader); checked %d messages, %d granted votes, %d append acks, %d commit claims; %d writes acknowledged",
			seed, run.crashes, run.leaderCrashes, run.checks, run.votes, run.acks, run.commits, run.acked)
		for i, v := range run.violations {
			if i == 10 {
				t.Errorf("... and %d more", len(run.violations)-i)
				break
			}
			t.Errorf("seed %d: %s", seed, v)
		}
		for _, l := range run.lost {
			t.Errorf("seed %d: %s", seed, l)
		}
		if run.acked < 30 || run.leaderCrashes == 0 || run.votes == 0 || run.acks == 0 || run.commits == 0 {
			t.Fatalf("seed %d: the workload did not exercise every rule", seed)
		}
	}
}

// TestPersistBeforeSendCatchesUnsafeOrder: the same run with every message
// sent before the write it depends on is persisted fails the checks, so
// the test above can fail.
func TestPersistBeforeSendCatchesUnsafeOrder(t *testing.T) {
	run := runCrashWorkload(t, 1, true)
	kinds := map[string]int{}
	for _, v := range run.violations {
		switch {
		case strings.Contains(v, "granted its vote"):
			kinds["vote"]++
		case strings.Contains(v, " acknowledged entries"):
			kinds["append ack"]++
		case strings.Contains(v, "durable term"):
			kinds["term"]++
		default:
			kinds["commit"]++
		}
	}
	t.Logf("unsafe order: %d violations %v, %d acknowledged writes lost", len(run.violations), kinds, len(run.lost))
	if kinds["append ack"] == 0 {
		t.Fatal("followers acknowledged appends before persisting them, and the check did not notice")
	}
	lost := runLostAckScenario(t, true)
	t.Logf("unsafe order, follower power loss: x acknowledged %v, lost %v; %d violations", lost.acked, lost.lost, len(lost.violations))
	if !lost.lost {
		t.Fatal("with the unsafe order the follower's early acknowledgement did not lose the acknowledged write x")
	}
}

// lostAckRun is the outcome of runLostAckScenario.
type lostAckRun struct {
	acked, lost bool
	violations  []string
}

// runLostAckScenario: a follower F loses power while it fsyncs an entry x,
// with the third node O cut off, so that F's acknowledgement is the only
// one the leader L can count. Then L loses power too, F restarts from what
// it had made durable, O comes back, and F and O carry on without L; L
// restarts last. If x was acknowledged to the client, every node must hold
// it at the end.
func runLostAckScenario(t *testing.T, unsafeOrder bool) lostAckRun {
	var run lostAckRun
	synctest.Test(t, func(t *testing.T) {
		chk := &durabilityChecker{stores: map[uint64]*crashStore{}, voters: 3}
		for id := uint64(1); id <= 3; id++ {
			chk.stores[id] = newCrashStore(3 * time.Millisecond)
		}
		trs := map[uint64]*checkedTransport{}
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.Storage = chk.store(cfg.ID)
			tr := &checkedTransport{Transport: cfg.Transport, id: cfg.ID, chk: chk}
			trs[cfg.ID] = tr
			cfg.Transport = tr
			cfg.unsafeSendBeforeSave = unsafeOrder
		})
		ctx := context.Background()
		lead := c.waitLeader()
		if _, err := c.nodes[lead].Propose(ctx, []byte("put:warm:1")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[lead].Applied())
		var f, o uint64
		for id := range c.nodes {
			if id != lead && f == 0 {
				f = id
			} else if id != lead {
				o = id
			}
		}
		c.nw.isolate(o, true)

		// F loses power at the start of the fsync of x.
		images := make(chan *crashStore, 1)
		fs := chk.store(f)
		fs.mu.Lock()
		fs.beforeSync = func(ents []raft.Entry) {
			for _, e := range ents {
				if strings.Contains(string(e.Data), "put:x:1") {
					trs[f].kill()
					fs.mu.Lock()
					fs.beforeSync = nil
					fs.mu.Unlock()
					images <- fs.crash()
					return
				}
			}
		}
		fs.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, 30*testTick)
		_, err := c.nodes[lead].Propose(pctx, []byte("put:x:1"))
		cancel()
		run.acked = err == nil
		var imgF *crashStore
		select {
		case imgF = <-images:
		case <-time.After(time.Second):
			t.Fatal("follower never started to fsync x")
		}
		powerOff := func(id uint64) *crashStore {
			trs[id].kill()
			img := chk.store(id).crash()
			c.nw.set(id, nil)
			_ = c.nodes[id].Stop(ctx)
			delete(c.nodes, id)
			return img
		}
		powerOff(f) // its image was taken in the fsync
		imgL := powerOff(lead)

		restart := func(id uint64, img *crashStore) {
			chk.setStore(id, img)
			c.fsms[id] = newTestFSM()
			c.start(id)
		}
		restart(f, imgF)
		c.nw.isolate(o, false)
		l2 := c.waitLeader()
		if _, err := c.nodes[l2].Propose(ctx, []byte("put:y:1")); err != nil {
			t.Fatalf("F and O: %v", err)
		}
		restart(lead, imgL)
		l3 := c.waitLeader()
		if _, err := c.nodes[l3].Propose(ctx, []byte("put:z:1")); err != nil {
			t.Fatal(err)
		}
		c.waitApplied(c.nodes[l3].Applied())
		c.checkFSMs()
		for _, fsm := range c.fsms {
			fsm.mu.Lock()
			_, has := fsm.kv["x"]
			fsm.mu.Unlock()
			run.lost = run.lost || run.acked && !has
		}
		run.violations = chk.violations()
	})
	return run
}

// TestAckedWriteSurvivesFollowerPowerLoss: in the scenario above, x is
// acknowledged only if it survives; with the safe order the follower never
// acknowledges it (it lost power before x was durable), so the client is
// not told it is done.
func TestAckedWriteSurvivesFollowerPowerLoss(t *testing.T) {
	run := runLostAckScenario(t, false)
	t.Logf("x acknowledged: %v", run.acked)
	if run.lost {
		t.Fatal("x was acknowledged to the client, then lost")
	}
	for _, v := range run.violations {
		t.Error(v)
	}
}
