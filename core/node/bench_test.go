package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPropose3Nodes measures proposals through a 3-node cluster on an
// in-memory network and in-memory storage, with a 128-byte command, from 1
// and from 64 concurrent clients on the leader; fsync=1ms makes every
// synced Save sleep 1 ms, like a fast disk, which shows the batching. It
// measures the driver, not disks or the network.
func BenchmarkPropose3Nodes(b *testing.B) {
	for _, bc := range []struct {
		clients int
		fsync   time.Duration
	}{{1, 0}, {64, 0}, {1, time.Millisecond}, {64, time.Millisecond}} {
		b.Run(fmt.Sprintf("clients=%d/fsync=%v", bc.clients, bc.fsync), func(b *testing.B) {
			clients := bc.clients
			c := newCluster(b, 3, benchTune)
			c.nw.latency = 0
			for _, s := range c.stores {
				s.syncDelay = bc.fsync
			}
			n := c.nodes[c.waitLeader()]
			cmd := []byte("put:" + strings.Repeat("k", 16) + ":" + strings.Repeat("v", 128-21))
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

// benchTune uses the default 1 s election timeout: benchmarks run in real
// time on a possibly loaded machine, where 100 ms stalls happen.
func benchTune(cfg *Config) { cfg.ElectionTimeout = time.Second }

// BenchmarkRead3Nodes measures linearizable reads on a follower from 64
// concurrent clients.
func BenchmarkRead3Nodes(b *testing.B) {
	c := newCluster(b, 3, benchTune)
	c.nw.latency = 0
	lead := c.waitLeader()
	var f *Node
	for id, n := range c.nodes {
		if id != lead {
			f = n
		}
	}
	ctx := context.Background()
	if _, err := c.nodes[lead].Propose(ctx, []byte("put:k:v")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Read(ctx, []byte("get:k")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
