package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The 3-node benchmarks run from the external test package
// (bench_kv_test.go) with fsms/kv behind core/statemachine's adapter, the
// state machine path a node runs in production; these are their bodies,
// exported to it by export_test.go.

// benchPropose measures proposals of cmd through a 3-node cluster on an
// in-memory network and in-memory storage, each node's state machine made
// by newSM, from 1 and from 64 concurrent clients on the leader;
// fsync=1ms makes every synced Save sleep 1 ms, like a fast disk, which
// shows the batching. It measures the driver, not disks or the network.
func benchPropose(b *testing.B, newSM func() StateMachine, cmd []byte) {
	for _, bc := range []struct {
		clients int
		fsync   time.Duration
	}{{1, 0}, {64, 0}, {1, time.Millisecond}, {64, time.Millisecond}} {
		b.Run(fmt.Sprintf("clients=%d/fsync=%v", bc.clients, bc.fsync), func(b *testing.B) {
			clients := bc.clients
			c := newCluster(b, 3, benchTune(newSM))
			c.nw.latency = 0
			for _, s := range c.stores {
				s.syncDelay = bc.fsync
			}
			n := c.nodes[c.waitLeader()]
			ctx := context.Background()
			before := n.Metrics()
			b.SetBytes(int64(len(cmd)))
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := n.Propose(ctx, cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			m := n.Metrics()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			if saves := m.Saves - before.Saves; saves > 0 {
				b.ReportMetric(float64(b.N)/float64(saves), "cmds/save")
			}
			if ab := m.ApplyBatches - before.ApplyBatches; ab > 0 {
				b.ReportMetric(float64(b.N)/float64(ab), "cmds/apply")
			}
		})
	}
}

// benchTune uses the default 1 s election timeout (benchmarks run in real
// time on a possibly loaded machine, where 100 ms stalls happen) and gives
// every node a state machine from newSM.
func benchTune(newSM func() StateMachine) func(*Config) {
	return func(cfg *Config) {
		cfg.ElectionTimeout = time.Second
		cfg.StateMachine = newSM()
	}
}

// benchRead measures linearizable reads of query on a follower from 64
// concurrent clients, after write was applied.
func benchRead(b *testing.B, newSM func() StateMachine, write, query []byte) {
	c := newCluster(b, 3, benchTune(newSM))
	c.nw.latency = 0
	lead := c.waitLeader()
	var f *Node
	for id, n := range c.nodes {
		if id != lead {
			f = n
		}
	}
	ctx := context.Background()
	if _, err := c.nodes[lead].Propose(ctx, write); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Read(ctx, query); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
