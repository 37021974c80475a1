package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// nopSM answers every command with a short result, at no cost: the
// benchmarks below measure the node's apply path, not a state machine.
type nopSM struct{ res [][]byte }

func (s *nopSM) Info(context.Context) (FSMInfo, error) {
	return FSMInfo{Name: "nop", MinVersion: 1, MaxVersion: 1}, nil
}
func (s *nopSM) Apply(_ context.Context, cmds []Command) ([][]byte, error) {
	for len(s.res) < len(cmds) {
		s.res = append(s.res, []byte(`{"value":123456}`))
	}
	return s.res[:len(cmds)], nil
}
func (s *nopSM) Query(context.Context, []byte) ([]byte, error)            { return nil, nil }
func (s *nopSM) Snapshot(context.Context) (StateSnapshot, error)          { return nil, nil }
func (s *nopSM) Restore(context.Context, SnapshotHeader, io.Reader) error { return nil }
func (s *nopSM) Digest(context.Context) ([]byte, error)                   { return nil, nil }
func (s *nopSM) Close() error                                             { return nil }

// benchApplier is an applier on a Node that has nothing but what the apply
// path touches (no loop, no storage): applyEntries runs on the caller's
// goroutine.
func benchApplier() *applier {
	n := &Node{sm: &nopSM{}, appliedCh: newBroadcast(), leadCh: newBroadcast(), readyc: make(chan struct{})}
	n.waits = newWaitRegistry(&n.m.lat.proposalCommit)
	n.cfg.MaxApplyBatch = DefaultMaxApplyBatch
	n.cfg.MaxRestarts = 1
	close(n.readyc)
	return newApplier(n, newClusterMeta(), newSessionTable(), raft.Snapshot{}, FSMInfo{Name: "nop", MinVersion: 1, MaxVersion: 1}, 0)
}

// BenchmarkApplyEntries measures the node's apply path per entry, in
// batches of 1024 committed 128-byte commands, against a state machine
// that costs nothing: plain commands, commands with a request id in 1,000
// sessions (each acknowledging its previous command), and retries that are
// all duplicates. The difference between plain and keyed is what
// exactly-once costs at apply. On a loaded machine compare CPU time of a
// fixed number of entries rather than ns/entry:
//
//	go test -c -o /tmp/node.test ./core/node
//	/usr/bin/time -f %U /tmp/node.test -test.run '^$' -test.bench 'ApplyEntries/keyed$' -test.benchtime 2000000x
func BenchmarkApplyEntries(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 128)
	const batch = 1024
	const sessions = 1000
	for _, mode := range []string{"plain", "keyed", "duplicates"} {
		b.Run(mode, func(b *testing.B) {
			a := benchApplier()
			ids := make([]string, sessions)
			for i := range ids {
				ids[i] = fmt.Sprintf("%016x", i*7919)
			}
			var seq [sessions]uint64
			entries := func(from uint64, dup bool) []raft.Entry {
				ents := make([]raft.Entry, batch)
				for i := range ents {
					idx := from + uint64(i)
					var data []byte
					if mode == "plain" {
						data = encodeCommand(1, 0, payload)
					} else {
						s := int(idx % sessions)
						if !dup {
							seq[s]++
						}
						data = encodeSession(1, 0, RequestID{Client: ids[s], Seq: seq[s], Acked: seq[s]}, payload)
					}
					ents[i] = raft.Entry{Index: idx, Term: 1, Type: raft.EntryNormal, Data: data}
				}
				return ents
			}
			next := uint64(1)
			if mode == "duplicates" {
				if err := a.applyEntries(entries(next, false), nil); err != nil {
					b.Fatal(err)
				}
				next += batch
			}
			// Entries are made 64 batches at a time with the timer stopped.
			var chunk [][]raft.Entry
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				if len(chunk) == 0 {
					b.StopTimer()
					for range 64 {
						chunk = append(chunk, entries(next, mode == "duplicates"))
						next += batch
					}
					runtime.GC()
					b.StartTimer()
				}
				if err := a.applyEntries(chunk[0], nil); err != nil {
					b.Fatal(err)
				}
				chunk = chunk[1:]
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64((b.N+batch-1)/batch*batch), "ns/entry")
		})
	}
}

// fillSessions makes a table of n sessions with idBytes-byte client ids,
// each keeping one 16-byte result (a counter add's {"value":123456}).
func fillSessions(n, idBytes int) *sessionTable {
	t := newSessionTable()
	for i := range n {
		id := fmt.Sprintf("%0*x", idBytes, i)
		_, rec := t.decide([]byte(id), 1, 0, uint64(i+1), 1)
		rec.keep([]byte(`{"value":123456}`))
	}
	return t
}

// BenchmarkSessionTable100k measures a table of 100,000 sessions (16-byte
// client ids, as the Go client makes; 32, as raftd apply makes), each
// keeping one result: the heap it holds (B/session), the size of its
// snapshot section, and the time to encode it (an apply pause at each
// snapshot start) and to decode it (at restore).
//
//	go test -run '^$' -bench SessionTable100k -benchtime 20x ./core/node
func BenchmarkSessionTable100k(b *testing.B) {
	const n = 100_000
	for _, idBytes := range []int{16, 32} {
		t := fillSessions(n, idBytes)
		sec := t.appendTo(nil)
		b.Run(fmt.Sprintf("id=%dB/heap", idBytes), func(b *testing.B) {
			var heap float64
			for range b.N {
				var ms0, ms1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms0)
				t := fillSessions(n, idBytes)
				runtime.GC()
				runtime.ReadMemStats(&ms1)
				runtime.KeepAlive(t)
				heap = float64(ms1.HeapAlloc - ms0.HeapAlloc)
			}
			b.ReportMetric(heap/n, "B/session")
			b.ReportMetric(heap/(1<<20), "MiB/100k")
			b.ReportMetric(float64(len(sec))/(1<<20), "section-MiB")
		})
		b.Run(fmt.Sprintf("id=%dB/encode", idBytes), func(b *testing.B) {
			buf := make([]byte, 0, len(sec))
			for range b.N {
				buf = t.appendTo(buf[:0])
			}
		})
		b.Run(fmt.Sprintf("id=%dB/decode", idBytes), func(b *testing.B) {
			for range b.N {
				if _, err := readSessionTable(bufio.NewReader(bytes.NewReader(sec))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProposeKeyed3Nodes measures 128-byte commands through a 3-node
// cluster (in-memory network and storage, the in-process test state
// machine) from 64 concurrent clients, without and with a request id (each
// client a session, acknowledging its previous command): the end-to-end
// cost of exactly-once.
//
//	go test -run '^$' -bench ProposeKeyed3Nodes ./core/node
func BenchmarkProposeKeyed3Nodes(b *testing.B) {
	cmd := []byte("put:k:" + string(bytes.Repeat([]byte("v"), 122)))
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			c := newCluster(b, 3, func(cfg *Config) { cfg.ElectionTimeout = time.Second })
			c.nw.latency = 0
			n := c.nodes[c.waitLeader()]
			ctx := context.Background()
			const clients = 64
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(cmd)))
			b.ResetTimer()
			for k := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := RequestID{Client: fmt.Sprintf("bench-client-%d", k)}
					for next.Add(1) <= int64(b.N) {
						var err error
						if keyed {
							id.Seq++
							id.Acked = id.Seq
							_, err = n.ProposeWithID(ctx, id, cmd)
						} else {
							_, err = n.Propose(ctx, cmd)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
