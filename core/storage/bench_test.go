package storage

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/raftd/raftd/core/raft"
)

// The write benchmarks run on the real disk (b.TempDir) because the fsync
// is what they measure. Each shape has a "raw" twin: a Pebble batch with
// the same keys and value sizes (entries plus the hard state) committed
// with Sync=true to the same database, measured alternately in the same
// benchmark. store/raw is ours relative to raw (1.0 = as fast).
//
//	go test ./core/storage -run '^$' -bench . -benchmem

const benchEntryBytes = 128

func benchOpen(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// benchEntries returns n entries of benchEntryBytes from index lo.
func benchEntries(lo uint64, n int, data []byte) []raft.Entry {
	es := make([]raft.Entry, n)
	for i := range es {
		es[i] = raft.Entry{Index: lo + uint64(i), Term: 1, Data: data}
	}
	return es
}

// rawHardStateKey has the length of keyHardState, outside the store's keys.
var rawHardStateKey = []byte("xhardstate")

// rawBatch writes keys and values of the same sizes as Save would (the
// entries plus the hard state), without checksums or bookkeeping, under the
// prefix 'x' that the store never reads.
func rawBatch(db *pebble.DB, lo uint64, n int, value, hsValue []byte) *pebble.Batch {
	bt := db.NewBatch()
	var k [logKeyLen]byte
	for i := 0; i < n; i++ {
		putLogKey(k[:], lo+uint64(i))
		k[0] = 'x'
		_ = bt.Set(k[:], value, nil)
	}
	_ = bt.Set(rawHardStateKey, hsValue, nil)
	return bt
}

// pairTimer collects the durations of ours and of raw Pebble, measured
// alternately (and in alternating order) inside one benchmark, on the same
// Pebble database and WAL, so that the disk's drifting fsync latency hits
// both alike. Medians are reported because single fsyncs on a shared disk
// have a long tail.
type pairTimer struct {
	ours, raw    []time.Duration
	opsPerSample int
}

func (p *pairTimer) report(b *testing.B) {
	if len(p.ours) == 0 {
		return
	}
	mo, mr := median(p.ours), median(p.raw)
	b.ReportMetric(float64(mo.Nanoseconds())/float64(p.opsPerSample), "store-p50-ns/op")
	b.ReportMetric(float64(mr.Nanoseconds())/float64(p.opsPerSample), "raw-p50-ns/op")
	// Throughput of ours relative to raw Pebble (target >= 0.80), from the
	// medians and from the totals.
	b.ReportMetric(float64(mr)/float64(mo), "store/raw")
	b.ReportMetric(float64(sum(p.raw))/float64(sum(p.ours)), "store/raw-mean")
}

func sum(d []time.Duration) time.Duration {
	var t time.Duration
	for _, x := range d {
		t += x
	}
	return t
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkSave: Save of 1 and of 64 entries of 128 B with sync, each
// operation paired with a raw Pebble batch of the same keys and value sizes
// committed with Sync=true to the same database. ns/op is the pair;
// store-ns/op and raw-ns/op split it.
func BenchmarkSave(b *testing.B) {
	data := make([]byte, benchEntryBytes)
	value := make([]byte, crcLen+entryHeaderLen+benchEntryBytes)
	hsValue := encodeHardState(raft.HardState{Term: 1, Commit: 1})
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := benchOpen(b)
			pt := pairTimer{opsPerSample: 1}
			next, rawNext := uint64(1), uint64(1)
			ours := func() {
				if err := s.Save(raft.HardState{Term: 1, Commit: next}, benchEntries(next, n, data), true); err != nil {
					b.Fatal(err)
				}
				next += uint64(n)
			}
			raw := func() {
				bt := rawBatch(s.db, rawNext, n, value, hsValue)
				if err := bt.Commit(pebble.Sync); err != nil {
					b.Fatal(err)
				}
				_ = bt.Close()
				rawNext += uint64(n)
			}
			b.SetBytes(int64(2 * n * benchEntryBytes))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%2 == 0 {
					pt.ours = append(pt.ours, timed(ours))
					pt.raw = append(pt.raw, timed(raw))
				} else {
					pt.raw = append(pt.raw, timed(raw))
					pt.ours = append(pt.ours, timed(ours))
				}
			}
			pt.report(b)
		})
	}
}

// BenchmarkGroupCommit: 16 concurrent producers each saving one 128 B entry
// with sync. Ours orders the producers with a mutex held only while the
// batch is applied (SaveAsync), and waits for the shared fsync outside it;
// raw commits Sync=true batches from 16 goroutines straight into Pebble's
// commit pipeline. Phases of 16x8 operations alternate between the two, on
// the same database.
func BenchmarkGroupCommit(b *testing.B) {
	const producers, perPhase = 16, 8
	data := make([]byte, benchEntryBytes)
	value := make([]byte, crcLen+entryHeaderLen+benchEntryBytes)
	hsValue := encodeHardState(raft.HardState{Term: 1, Commit: 1})
	b.Run("producers=16", func(b *testing.B) {
		s := benchOpen(b)
		var mu sync.Mutex
		next := uint64(1)
		var rawNext atomic.Uint64
		// phase runs ops operations spread over the producers and returns
		// the time per operation.
		phase := func(ops int, op func() error) time.Duration {
			var wg sync.WaitGroup
			t0 := time.Now()
			for p := 0; p < producers && p < ops; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := p; i < ops; i += producers {
						if err := op(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			return time.Since(t0) / time.Duration(ops)
		}
		ours := func() error {
			mu.Lock()
			idx := next
			next++
			wait, err := s.SaveAsync(raft.HardState{Term: 1, Commit: idx}, benchEntries(idx, 1, data), true)
			mu.Unlock()
			if err != nil {
				return err
			}
			return wait()
		}
		rawOp := func() error {
			bt := rawBatch(s.db, rawNext.Add(1), 1, value, hsValue)
			defer bt.Close()
			return bt.Commit(pebble.Sync)
		}
		pt := pairTimer{opsPerSample: 1}
		b.SetBytes(2 * benchEntryBytes)
		b.ResetTimer()
		for done, round := 0, 0; done < b.N; round++ {
			ops := min(b.N-done, producers*perPhase)
			if round%2 == 0 {
				pt.ours = append(pt.ours, phase(ops, ours))
				pt.raw = append(pt.raw, phase(ops, rawOp))
			} else {
				pt.raw = append(pt.raw, phase(ops, rawOp))
				pt.ours = append(pt.ours, phase(ops, ours))
			}
			done += ops
		}
		pt.report(b)
	})
}

// BenchmarkEntries reads 10,000 consecutive 128 B entries (flushed to
// sstables, block cache warm) per operation; MB/s counts entry data, and
// allocs/entry is reported separately.
func BenchmarkEntries(b *testing.B) {
	const n = 10000
	s := benchOpen(b)
	data := make([]byte, benchEntryBytes)
	for lo := uint64(1); lo <= n; lo += 1000 {
		if err := s.Save(raft.HardState{Term: 1, Commit: lo + 999}, benchEntries(lo, 1000, data), false); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n * benchEntryBytes)
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		es, err := s.Entries(1, n+1, ^uint64(0))
		if err != nil || len(es) != n {
			b.Fatalf("read %d entries: %v", len(es), err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N)/n, "allocs/entry")
}

func timed(f func()) time.Duration {
	t0 := time.Now()
	f()
	return time.Since(t0)
}
