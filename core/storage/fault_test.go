package storage

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/raftd/raftd/core/raft"
)

// evictTail empties the store's in-memory copy of the entries it saved
// last (tail.go), so that the next reads go to disk: damage done behind the
// store's back is on disk only, and reads from memory return the entries
// as they were saved.
func evictTail(s *Store) {
	s.mu.Lock()
	s.tail.reset()
	s.mu.Unlock()
}

// corruptEntry rewrites the stored value of entry index with one bit
// flipped, directly through Pebble (bypassing the checksum), and evicts the
// tail cache.
func corruptEntry(t *testing.T, s *Store, index uint64) {
	t.Helper()
	defer evictTail(s)
	k := logKey(index)
	v, closer, err := s.db.Get(k)
	if err != nil {
		t.Fatalf("get entry %d: %v", index, err)
	}
	bad := append([]byte(nil), v...)
	closer.Close()
	bad[len(bad)-1] ^= 0x10
	if err := s.db.Set(k, bad, nil); err != nil {
		t.Fatal(err)
	}
}

func wantCorruption(t *testing.T, err error, index uint64) {
	t.Helper()
	var ce *CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v; want a *CorruptionError", err)
	}
	if ce.Index != index || ce.Dir != "/data" {
		t.Fatalf("corruption reported at index %d in %q; want %d in /data: %v", ce.Index, ce.Dir, index, err)
	}
	if !strings.Contains(err.Error(), "/data") || !strings.Contains(err.Error(), "index ") {
		t.Fatalf("error %q does not name the dir and index", err)
	}
}

// TestBitFlipDetected: a flipped bit in a stored entry is reported by every
// read path and by Open, never returned as data.
func TestBitFlipDetected(t *testing.T) {
	s, opts := openMem(t)
	if err := s.Save(raft.HardState{Term: 1, Commit: 10}, entriesN(1, 10, 1, 32), true); err != nil {
		t.Fatal(err)
	}
	corruptEntry(t, s, 5)
	_, err := s.Entries(1, 11, ^uint64(0))
	wantCorruption(t, err, 5)
	if !strings.Contains(err.Error(), "checksum mismatch: expected 0x") || !strings.Contains(err.Error(), ", found 0x") {
		t.Fatalf("error %q does not give expected vs found checksums", err)
	}
	_, err = s.Term(5)
	wantCorruption(t, err, 5)
	// Reads that do not touch entry 5 still work.
	if es, err := s.Entries(6, 11, ^uint64(0)); err != nil || len(es) != 5 {
		t.Fatalf("Entries(6, 11) = %d entries, %v", len(es), err)
	}
	// A committed entry is damaged: Open refuses.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open("/data", opts)
	wantCorruption(t, err, 5)
}

// TestCorruptTailFailStops: damage to an entry beyond the commit index is
// corruption, not a torn write (a Pebble batch is applied entirely or not
// at all, and Pebble itself drops a torn final WAL record), so Open fails
// naming the dir, the index and the expected and found checksums, and
// changes nothing: the entries after the damaged one may have been fsynced
// and acknowledged to a leader, and cutting them off would silently undo
// that promise. (It replaces TestCorruptTailTruncated, which asserted that
// the tail was cut off.)
func TestCorruptTailFailStops(t *testing.T) {
	s, opts := openMem(t)
	if err := s.Save(raft.HardState{Term: 1, Commit: 6}, entriesN(1, 10, 1, 32), true); err != nil {
		t.Fatal(err)
	}
	corruptEntry(t, s, 8)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // a second open sees the same data: nothing was cut
		s2, err := Open("/data", opts)
		if err == nil {
			last, _ := s2.LastIndex()
			s2.Close()
			t.Fatalf("open %d: Open succeeded (last index %d) over a damaged entry 8 beyond commit 6", i, last)
		}
		wantCorruption(t, err, 8)
		if msg := err.Error(); !strings.Contains(msg, "expected 0x") || !strings.Contains(msg, "found 0x") {
			t.Fatalf("open %d: error %q does not give the expected and found checksums", i, msg)
		}
	}
	if w := recorded(opts.Logger).warnings(); strings.Contains(w, "truncated") {
		t.Fatalf("a failed Open logged a truncation: %q", w)
	}
	// Entries 9 and 10, written by the same synced Save, are still stored.
	raw, err := pebble.Open("/data/log", &pebble.Options{FS: opts.FS, FormatMajorVersion: pebble.FormatValueSeparation})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, i := range []uint64{8, 9, 10} {
		v, closer, err := raw.Get(logKey(i))
		if err != nil {
			t.Fatalf("entry %d is gone after the failed opens: %v", i, err)
		}
		if _, cerr := openRecord(logKey(i), v); (cerr != nil) != (i == 8) {
			t.Fatalf("entry %d: checksum error %v", i, cerr)
		}
		closer.Close()
	}
}

// TestStructuralTailDamageFailStops: a gap or a term going down beyond the
// commit index cannot come from an interrupted write either; Open fails and
// names the index.
func TestStructuralTailDamageFailStops(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, s *Store)
		index  uint64
		detail string
	}{
		{"gap", func(t *testing.T, s *Store) {
			if err := s.db.Delete(logKey(8), nil); err != nil {
				t.Fatal(err)
			}
		}, 8, "entry 8 is missing"},
		{"term goes down", func(t *testing.T, s *Store) {
			e := entriesN(9, 9, 1, 32)[0]
			v := make([]byte, entryValueLen(&e))
			putEntryValue(v, logKey(9), &e)
			if err := s.db.Set(logKey(9), v, nil); err != nil {
				t.Fatal(err)
			}
		}, 9, "term 1 is below the previous entry's term 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, opts := openMem(t)
			if err := s.Save(raft.HardState{Term: 2, Commit: 6}, append(entriesN(1, 7, 1, 32), entriesN(8, 10, 2, 32)...), true); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := Open("/data", opts)
			wantCorruption(t, err, tc.index)
			if !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("error %q does not say %q", err, tc.detail)
			}
		})
	}
}

// TestGapDetectedOnOpen: a missing committed entry stops Open.
func TestGapDetectedOnOpen(t *testing.T) {
	s, opts := openMem(t)
	if err := s.Save(raft.HardState{Term: 1, Commit: 10}, entriesN(1, 10, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Delete(logKey(4), nil); err != nil {
		t.Fatal(err)
	}
	evictTail(s)
	_, err := s.Entries(1, 11, ^uint64(0))
	wantCorruption(t, err, 4)
	s.Close()
	_, err = Open("/data", opts)
	wantCorruption(t, err, 4)
}

func TestCorruptHardStateDetected(t *testing.T) {
	s, opts := openMem(t)
	if err := s.Save(raft.HardState{Term: 1, Commit: 1}, entriesN(1, 1, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	v := encodeHardState(raft.HardState{Term: 1, Commit: 1})
	v[len(v)-1] ^= 1
	if err := s.db.Set(keyHardState, v, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open("/data", opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "hard state") {
		t.Fatalf("Open with a damaged hard state: %v", err)
	}
}

// walFaults injects err into operations of kind on Pebble's WAL files
// while armed.
type walFaults struct {
	armed atomic.Bool
	kinds []errorfs.OpKind
	err   error
}

func (w *walFaults) String() string { return "walFaults" }

func (w *walFaults) MaybeError(op errorfs.Op) error {
	if !w.armed.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	for _, k := range w.kinds {
		if op.Kind == k {
			return w.err
		}
	}
	return nil
}

// TestSaveIOErrorReturned: an I/O error while writing or syncing the WAL is
// returned by Save, and the store refuses further writes.
func TestSaveIOErrorReturned(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
		err   error
		want  string
	}{
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, errorfs.ErrInjected, "injected error"},
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}, errorfs.ErrInjected, "injected error"},
		{"disk full", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, syscall.ENOSPC, "no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			faults := &walFaults{kinds: tc.kinds, err: tc.err}
			fs := errorfs.Wrap(vfs.NewMem(), faults)
			s, err := Open("/data", &Options{FS: fs, Logger: newTestLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Save(raft.HardState{Term: 1, Commit: 1}, entriesN(1, 3, 1, 64), true); err != nil {
				t.Fatal(err)
			}
			faults.armed.Store(true)
			err = s.Save(raft.HardState{Term: 1, Commit: 3}, entriesN(4, 6, 1, 64), true)
			if err == nil {
				t.Fatal("Save succeeded although the WAL failed")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/data") {
				t.Fatalf("Save error %q does not carry the cause %q and the dir", err, tc.want)
			}
			faults.armed.Store(false)
			if err2 := s.Save(raft.HardState{Term: 1, Commit: 3}, nil, true); err2 == nil {
				t.Fatal("Save after a failed Save succeeded; the store must refuse writes")
			}
			_ = s.Close()
		})
	}
}

// TestGroupCommit: concurrent Save callers share fsyncs. The WAL sync is
// slowed down so that callers pile up behind it.
func TestGroupCommit(t *testing.T) {
	var syncs atomic.Int64
	slow := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".log") {
			switch op.Kind {
			case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
				syncs.Add(1)
				time.Sleep(2 * time.Millisecond) // a slow disk
			}
		}
		return nil
	})
	s, err := Open("/data", &Options{FS: errorfs.Wrap(vfs.NewMem(), slow)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const producers, each = 16, 20
	var mu sync.Mutex // orders index assignment with the append
	next := uint64(1)
	var wg sync.WaitGroup
	errc := make(chan error, producers)
	syncs.Store(0)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				mu.Lock()
				idx := next
				next++
				wait, err := s.SaveAsync(raft.HardState{Term: 1, Commit: idx}, entriesN(idx, idx, 1, 100), true)
				mu.Unlock()
				if err == nil {
					err = wait()
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	n := syncs.Load()
	t.Logf("%d synced saves used %d WAL syncs", producers*each, n)
	if n == 0 || n > producers*each/2 {
		t.Fatalf("%d synced saves used %d WAL syncs; want them shared", producers*each, n)
	}
	if last, _ := s.LastIndex(); last != producers*each {
		t.Fatalf("LastIndex = %d; want %d", last, producers*each)
	}
}

// TestCrashCloneRecovery: after a simulated power loss (pebble's crashable
// MemFS keeps only synced data plus a random part of the rest), every entry
// whose synced Save returned is present and intact, and the log is a
// gap-free prefix of what was written.
func TestCrashCloneRecovery(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	fs := vfs.NewCrashableMem()
	opts := &Options{FS: fs, Logger: newTestLogger(t)}
	s, err := Open("/data", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var durable, last uint64
	for round := 0; round < 20; round++ {
		for i := 0; i < 1+rng.IntN(30); i++ {
			n := uint64(1 + rng.IntN(8))
			sync := rng.IntN(3) > 0
			if err := s.Save(raft.HardState{Term: 1, Commit: last}, entriesN(last+1, last+n, 1, rng.IntN(300)), sync); err != nil {
				t.Fatal(err)
			}
			last += n
			if sync {
				durable = last
			}
			if rng.IntN(10) == 0 && last > 20 {
				if err := s.Compact(last - 20); err != nil && !errors.Is(err, raft.ErrCompacted) {
					t.Fatal(err)
				}
			}
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		c, err := Open("/data", &Options{FS: clone, Logger: newTestLogger(t)})
		if err != nil {
			t.Fatalf("round %d: open after crash: %v", round, err)
		}
		first, _ := c.FirstIndex()
		cl, _ := c.LastIndex()
		if cl < durable || cl > last {
			t.Fatalf("round %d: recovered last index %d; durable %d, written %d", round, cl, durable, last)
		}
		es, err := c.Entries(first, cl+1, ^uint64(0))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, e := range es {
			if want := entriesN(e.Index, e.Index, 1, len(e.Data))[0]; string(e.Data) != string(want.Data) {
				t.Fatalf("round %d: entry %d has wrong content", round, e.Index)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenIOError: a data dir that cannot be read gives a clear error
// naming it, not a panic, whichever operation fails first.
func TestOpenIOError(t *testing.T) {
	base := vfs.NewMem()
	s, err := Open("/data", &Options{FS: base})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(raft.HardState{Term: 1, Commit: 3}, entriesN(1, 3, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(SnapshotMeta{Index: 2, Term: 1}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Count the operations of a clean open, then fail each one in turn.
	// NB: MANIFEST, marker and Pebble directory syncs are left alone:
	// Pebble treats their failure in a background flush as fatal (the
	// process stops, see pebbleLogger.Fatalf), which a test cannot survive.
	target := func(op errorfs.Op) bool {
		return strings.HasPrefix(op.Path, "/data") && !strings.Contains(op.Path, "MANIFEST") &&
			!strings.Contains(op.Path, "marker") && !(op.Path == "/data/log" && op.Kind == errorfs.OpFileSync)
	}
	var total atomic.Int32
	counter := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if target(op) {
			total.Add(1)
		}
		return nil
	})
	s, err = Open("/data", &Options{FS: errorfs.Wrap(base, counter)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	failed := 0
	for n := int32(0); n < total.Load(); n++ {
		var count atomic.Int32
		inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
			if target(op) && count.Add(1)-1 == n {
				return errorfs.ErrInjected
			}
			return nil
		})
		s, err := Open("/data", &Options{FS: errorfs.Wrap(base, inj)})
		if err == nil {
			// The failed operation was one Open can do without (or retries).
			if last, _ := s.LastIndex(); last != 3 {
				t.Fatalf("n=%d: LastIndex = %d", n, last)
			}
			s.Close()
			continue
		}
		failed++
		if !strings.Contains(err.Error(), "/data") || !strings.Contains(err.Error(), "injected error") {
			t.Fatalf("n=%d: Open error %q does not name the dir and the cause", n, err)
		}
	}
	t.Logf("%d operations, %d made Open fail cleanly", total.Load(), failed)
	if failed == 0 {
		t.Fatal("no injected failure made Open fail")
	}
}

// TestNoLockAcrossFsync: while one Save waits for its WAL fsync, readers
// and another writer proceed (the store's lock is not held across the
// fsync), and the second write is covered by a later fsync.
func TestNoLockAcrossFsync(t *testing.T) {
	var armed atomic.Bool
	entered := make(chan struct{})
	release := make(chan struct{})
	block := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".log") && (op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo) &&
			armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return nil
	})
	s, err := Open("/data", &Options{FS: errorfs.Wrap(vfs.NewMem(), block)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	armed.Store(true)
	first := make(chan error, 1)
	go func() { first <- s.Save(raft.HardState{Term: 1, Commit: 1}, entriesN(1, 1, 1, 8), true) }()
	<-entered // the first Save's fsync is in progress and blocked

	// Reads see the applied (not yet durable) write without waiting, and a
	// second writer gets its batch in. If either blocked behind the fsync
	// the test fails at the deadline instead of hanging.
	var wait func() error
	during := make(chan error, 1)
	go func() {
		if last, err := s.LastIndex(); err != nil || last != 1 {
			during <- fmt.Errorf("LastIndex during fsync = %d, %v", last, err)
			return
		}
		if es, err := s.Entries(1, 2, ^uint64(0)); err != nil || len(es) != 1 {
			during <- fmt.Errorf("Entries during fsync = %d, %v", len(es), err)
			return
		}
		var err error
		wait, err = s.SaveAsync(raft.HardState{Term: 1, Commit: 2}, entriesN(2, 2, 1, 8), true)
		during <- err
	}()
	select {
	case err := <-during:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("reads or a second Save blocked behind another Save's fsync")
	}
	select {
	case err := <-first:
		t.Fatalf("first Save returned (%v) before its fsync completed", err)
	default:
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
}
