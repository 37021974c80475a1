package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/storage/storagetest"
)

// testLogger is a slog.Handler that forwards records to t.Log and keeps
// warnings and errors ("message k=v ...").
type testLogger struct {
	t  testing.TB
	mu sync.Mutex
	w  []string // warnings and errors
}

// newTestLogger returns a logger on a new testLogger; recorded(l) reads it.
func newTestLogger(t testing.TB) *slog.Logger { return slog.New(&testLogger{t: t}) }

func recorded(l *slog.Logger) *testLogger { return l.Handler().(*testLogger) }

func (l *testLogger) Enabled(context.Context, slog.Level) bool { return true }
func (l *testLogger) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *testLogger) WithGroup(string) slog.Handler            { return l }
func (l *testLogger) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	l.t.Logf("%s %s", r.Level, line)
	if r.Level >= slog.LevelWarn {
		l.mu.Lock()
		l.w = append(l.w, line)
		l.mu.Unlock()
	}
	return nil
}

func (l *testLogger) warnings() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.w, "\n")
}

// openMem opens a store on a fresh in-memory filesystem.
func openMem(t *testing.T) (*Store, *Options) {
	t.Helper()
	opts := &Options{FS: vfs.NewMem(), Logger: newTestLogger(t)}
	s, err := Open("/data", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, opts
}

func reopen(t *testing.T, s *Store, opts *Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(s.Dir(), opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	return s2
}

// reopenable lets the conformance suite restart a Store.
type reopenable struct {
	*Store
	opts *Options
}

func (r *reopenable) Reopen(t *testing.T) storagetest.Store {
	return &reopenable{Store: reopen(t, r.Store, r.opts), opts: r.opts}
}

func TestConformancePebble(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		s, opts := openMem(t)
		return &reopenable{Store: s, opts: opts}
	})
}

func entriesN(lo, hi, term uint64, size int) []raft.Entry {
	var es []raft.Entry
	for i := lo; i <= hi; i++ {
		d := make([]byte, size)
		for j := range d {
			d[j] = byte(i*31 + term*7 + uint64(j))
		}
		es = append(es, raft.Entry{Index: i, Term: term, Data: d})
	}
	return es
}

func TestOpenErrors(t *testing.T) {
	fs := vfs.NewMem()
	f, err := fs.Create("/file", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Open("/file", &Options{FS: fs}); err == nil || !strings.Contains(err.Error(), "/file: not a directory") {
		t.Fatalf("Open(file) = %v; want not-a-directory error naming it", err)
	}
	if _, err := Open("/missing", &Options{FS: fs, MustExist: true}); err == nil || !strings.Contains(err.Error(), "/missing: data dir does not exist") {
		t.Fatalf("Open(missing, MustExist) = %v", err)
	}
	if _, err := Open("", nil); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
	// Without MustExist the dir (and parents) are created.
	s, err := Open("/a/b/c", &Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A second open of the same dir is refused (Pebble's lock).
	if s2, err := Open("/a/b/c", &Options{FS: fs}); err == nil {
		s2.Close()
		t.Fatal("second Open of a dir in use succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastIndex(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LastIndex after Close = %v; want ErrClosed", err)
	}
	if err := s.Save(raft.HardState{Term: 1}, nil, true); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close = %v; want ErrClosed", err)
	}
}

func TestStamp(t *testing.T) {
	fs := vfs.NewMem()
	open := func(cluster string, node uint64) (*Store, error) {
		return Open("/d", &Options{FS: fs, ClusterID: cluster, NodeID: node})
	}
	s, err := open("alpha", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, tc := range []struct {
		cluster string
		node    uint64
		ok      bool
	}{
		{"alpha", 1, true},
		{"", 0, true}, // tools that do not know the ids
		{"alpha", 0, true},
		{"alpha", 2, false},
		{"beta", 1, false},
		{"beta", 3, false},
	} {
		s, err := open(tc.cluster, tc.node)
		if tc.ok != (err == nil) {
			t.Fatalf("open as %q/%d: err = %v; want ok=%v", tc.cluster, tc.node, err, tc.ok)
		}
		if err != nil {
			want := fmt.Sprintf(`storage: open /d: data dir belongs to cluster "alpha" node 1; refusing to open it as cluster %q node %d`, tc.cluster, tc.node)
			if err.Error() != want {
				t.Fatalf("error = %q\nwant    %q", err, want)
			}
			continue
		}
		c, n, err := s.Stamp()
		if err != nil || c != "alpha" || n != 1 {
			t.Fatalf("Stamp() = %q, %d, %v", c, n, err)
		}
		s.Close()
	}
}

func TestCommittedEntryNeverReplaced(t *testing.T) {
	s, _ := openMem(t)
	if err := s.Save(raft.HardState{Term: 1, Commit: 3}, entriesN(1, 5, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	err := s.Save(raft.HardState{Term: 2, Commit: 3}, entriesN(2, 4, 2, 8), true)
	if err == nil || !strings.Contains(err.Error(), "would replace committed entry 3") {
		t.Fatalf("overwriting committed entries: %v", err)
	}
	// Uncommitted entries may be replaced; identical committed ones may be
	// re-sent.
	if err := s.Save(raft.HardState{Term: 2, Commit: 3}, append(entriesN(3, 3, 1, 8), entriesN(4, 6, 2, 8)...), true); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(raft.HardState{Term: 2, Commit: 9}, nil, true); err == nil {
		t.Fatal("commit beyond the last index accepted")
	}
	if err := s.Compact(4); err == nil || !strings.Contains(err.Error(), "beyond the commit index 3") {
		t.Fatalf("Compact beyond commit: %v", err)
	}
}

// TestConcurrentReaders reads from several goroutines while the writer
// appends, overwrites uncommitted suffixes and compacts: every read must
// return a consistent, gap-free slice of what was written.
func TestConcurrentReaders(t *testing.T) {
	s, _ := openMem(t)
	const steps = 400
	var wg sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, 8)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last < first {
					continue
				}
				es, err := s.Entries(first, last+1, 4096)
				if errors.Is(err, raft.ErrCompacted) || errors.Is(err, raft.ErrUnavailable) {
					continue // raced with a compaction or a truncation
				}
				if err != nil {
					errc <- err
					return
				}
				for i, e := range es {
					want := entriesN(e.Index, e.Index, e.Term, 16)[0]
					if e.Index != first+uint64(i) || string(e.Data) != string(want.Data) {
						errc <- fmt.Errorf("read entry %d (term %d) at position %d of a read from %d: bad content", e.Index, e.Term, i, first)
						return
					}
				}
			}
		}()
	}
	term, last, commit := uint64(1), uint64(0), uint64(0)
	for step := 0; step < steps; step++ {
		lo := last + 1
		if step%7 == 3 && last > commit+2 {
			lo = commit + 2 // replace an uncommitted suffix
			term++
		}
		hi := lo + 5
		commit = lo
		if err := s.Save(raft.HardState{Term: term, Commit: commit}, entriesN(lo, hi, term, 16), step%2 == 0); err != nil {
			t.Fatal(err)
		}
		last = hi
		if step%10 == 9 {
			if err := s.Compact(commit - 1); err != nil && !errors.Is(err, raft.ErrCompacted) {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}
