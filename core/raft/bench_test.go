package raft

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the process's user+system CPU time. On a shared machine
// wall-clock throughput depends on the load; CPU throughput does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchCluster is a minimal single-goroutine driver for benchmarks: it
// follows the Ready contract with MemoryStorage and compacts the logs as
// it goes so memory stays flat.
type benchCluster struct {
	nodes   []*RawNode
	stores  []*MemoryStorage
	pending []Message
	next    []Message
	applied []uint64
	// delivered counts the messages stepped into the nodes.
	delivered int
}

func newBenchCluster(tb testing.TB, n int) *benchCluster {
	c := &benchCluster{applied: make([]uint64, n)}
	for i := 1; i <= n; i++ {
		s := NewMemoryStorage()
		s.SetConfState(ConfState{Voters: ids(n)})
		cfg := newTestConfig(uint64(i), s)
		cfg.MaxSizePerMsg = 1 << 20
		cfg.MaxInflightMsgs = 256
		rn, err := NewRawNode(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		c.nodes = append(c.nodes, rn)
		c.stores = append(c.stores, s)
	}
	c.settle()
	if err := c.nodes[0].Campaign(); err != nil {
		tb.Fatal(err)
	}
	c.settle()
	if c.nodes[0].r.state != StateLeader {
		tb.Fatal("node 1 not elected")
	}
	return c
}

// round handles one Ready per node and delivers the messages; it returns
// the number of entries the leader (node 1) applied.
func (c *benchCluster) round() (leaderApplied int, busy bool) {
	for i, rn := range c.nodes {
		if !rn.HasReady() {
			continue
		}
		busy = true
		rd := rn.Ready()
		s := c.stores[i]
		if err := s.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
			panic(err)
		}
		c.pending = append(c.pending, rd.Messages...)
		if n := len(rd.CommittedEntries); n > 0 {
			if i == 0 {
				leaderApplied += n
			}
			c.applied[i] = rd.CommittedEntries[n-1].Index
		}
		rn.Advance(rd)
	}
	msgs := c.pending
	c.pending = c.next[:0]
	c.delivered += len(msgs)
	for j := range msgs {
		busy = true
		_ = c.nodes[msgs[j].To-1].Step(msgs[j])
		msgs[j] = Message{}
	}
	c.next = msgs
	return leaderApplied, busy
}

func (c *benchCluster) settle() {
	for {
		if _, busy := c.round(); !busy {
			return
		}
	}
}

// compact drops applied entries from every store.
func (c *benchCluster) compact() {
	for i, s := range c.stores {
		if a := c.applied[i]; a > s.offset()+1 {
			if err := s.Compact(a); err != nil {
				panic(err)
			}
		}
	}
}

// BenchmarkCluster3Commit drives a 3-node in-memory cluster in one
// goroutine, proposing 128-byte entries in batches on the leader, and
// reports committed entries per second (wall and CPU), allocations per
// committed entry (whole cluster: three nodes' engines and storages, not
// just the leader) and messages delivered per committed entry.
func BenchmarkCluster3Commit(b *testing.B) {
	for _, batch := range []int{64, 256} {
		b.Run(itoa(batch), func(b *testing.B) {
			c := newBenchCluster(b, 3)
			payload := make([]byte, 128)
			datas := make([][]byte, batch)
			for i := range datas {
				datas[i] = payload
			}
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			msgs0 := c.delivered
			b.ResetTimer()
			committed := 0
			proposed := 0
			rounds := 0
			for committed < b.N {
				if proposed-committed < 4*batch && proposed < b.N {
					if err := c.nodes[0].ProposeBatch(datas); err != nil {
						b.Fatal(err)
					}
					proposed += batch
				}
				n, _ := c.round()
				committed += n
				rounds++
				if rounds%8 == 0 {
					c.compact()
				}
			}
			b.StopTimer()
			cpu := (cpuTime() - cpu0).Seconds()
			runtime.ReadMemStats(&ms1)
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(committed)/sec, "entries/s")
			if cpu > 0 {
				b.ReportMetric(float64(committed)/cpu, "entries/cpu-s")
			}
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(committed), "allocs/entry")
			b.ReportMetric(float64(c.delivered-msgs0)/float64(committed), "msgs/entry")
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for n > 0 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	return "batch=" + string(buf[i:])
}

// BenchmarkStepHeartbeatResp is the leader's cost of one heartbeat
// response from an up-to-date follower.
func BenchmarkStepHeartbeatResp(b *testing.B) {
	r, _ := newLeader(&testing.T{}, 3)
	m := Message{From: 2, To: 1, Type: MsgHeartbeatResp, Term: r.Term}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = r.Step(m)
	}
	if len(r.msgs) != 0 {
		b.Fatalf("unexpected messages: %s", msgTypes(r.msgs))
	}
}

// BenchmarkStepAppResp is the leader's cost of one MsgAppResp that
// acknowledges a new index: match moves, inflights are freed and the
// commit index advances. The commit-only MsgApps to the followers are
// built when the next Ready is (flushCommit), not in this Step.
// The log is refilled (untimed) every 1024 steps so memory stays flat.
func BenchmarkStepAppResp(b *testing.B) {
	s := NewMemoryStorage()
	s.SetConfState(ConfState{Voters: ids(3)})
	r := newTestRaftWith(b, 1, s, 10, 1)
	persist(r, s)
	r.becomeCandidate()
	r.becomeLeader()
	persist(r, s)
	readMessages(r)
	pr := r.progress(2)
	payload := make([]byte, 128)
	const chunk = 1024
	ents := make([]Entry, chunk)
	refill := func() {
		for i := range ents {
			ents[i] = Entry{Data: payload}
		}
		r.appendEntry(ents...)
		persist(r, s)
		if c := r.raftLog.committed; c > s.offset()+1 {
			_ = s.Compact(c)
		}
		pr.becomeReplicate()
		pr.next = r.raftLog.lastIndex() + 1 // as if everything was sent
		r.msgs = r.msgs[:0]
	}
	refill()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if pr.match == r.raftLog.lastIndex() {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		_ = r.Step(Message{From: 2, To: 1, Type: MsgAppResp, Term: r.Term, Index: pr.match + 1})
		r.msgs = r.msgs[:0]
	}
}
