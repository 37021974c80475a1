package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/raftd/raftd/core/raft"
)

var (
	// ErrClosed is returned by every method of a closed Store.
	ErrClosed = errors.New("storage: closed")
	// ErrCorrupt is matched (errors.Is) by every error that reports damaged
	// stored data; the concrete error is a *CorruptionError.
	ErrCorrupt = errors.New("storage: corrupt data")
)

// CorruptionError reports stored data that failed its checksum or the log's
// structural rules. The node must stop: the data cannot be trusted.
type CorruptionError struct {
	// Dir is the data dir; Index the log index concerned (0 if none).
	Dir   string
	Index uint64
	// What names the damaged item: "entry", "hard state", "snapshot file
	// <path>", ...
	What string
	// Stored (the checksum expected, as written) and Computed (the one
	// found over the bytes read) are set when the failure is a checksum
	// mismatch (Detail is empty); otherwise Detail explains.
	Stored, Computed uint32
	Detail           string
}

func (e *CorruptionError) Error() string {
	idx := ""
	if e.Index != 0 {
		idx = fmt.Sprintf(" at index %d", e.Index)
	}
	if e.Detail != "" {
		return fmt.Sprintf("storage: corrupt %s%s in data dir %s: %s", e.What, idx, e.Dir, e.Detail)
	}
	return fmt.Sprintf("storage: corrupt %s%s in data dir %s: checksum mismatch: expected %#08x (stored), found %#08x (computed)",
		e.What, idx, e.Dir, e.Stored, e.Computed)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// Store is the durable Raft log, hard state and snapshot files of one node,
// kept in Pebble under <dir>/log and in files under <dir>/snapshots.
//
// Concurrency: the write methods (Save, Compact, ApplySnapshot) are meant to
// be called by the node's driver; they are nevertheless safe for concurrent
// use, and concurrent Save calls with sync share fsyncs (group commit). The
// read methods (raft.LogReader) are safe from any goroutine at any time and
// see each write either entirely or not at all. Snapshot file methods are
// safe for concurrent use.
type Store struct {
	dir  string // the data dir, as given to Open
	opts Options
	log  *slog.Logger
	db   *pebble.DB

	// inflight counts readers iterating outside mu; Close waits for them.
	inflight sync.WaitGroup

	// mu orders writers with each other and gives readers a consistent view.
	// Writers hold it exclusively while their batch enters the memtable, NOT
	// while waiting for the fsync; readers hold it shared while they read
	// the fields below and open their Pebble iterator.
	mu     sync.RWMutex
	closed bool
	err    error // sticky write failure; all later writes return it
	hs     raft.HardState
	// trunc is the last index removed from the log and its term.
	// Invariant: FirstIndex() == trunc.Index+1.
	trunc truncState
	// last/lastTerm describe the last entry (trunc when the log is empty).
	// Invariant: trunc.Index <= last.
	last, lastTerm uint64
	// installed is the snapshot installed by ApplySnapshot (empty if none).
	installed raft.Snapshot
	// tail caches the entries saved last (tail.go).
	tail tail

	snaps snapshotFiles

	// check is the scan of the log that Open leaves to a goroutine with
	// Options.CheckLogLater.
	check logCheck
}

// logCheck is a scan of the whole log running after Open.
type logCheck struct {
	done   chan struct{} // nil: the log was checked in Open
	err    error         // the verdict, once done is closed
	cancel atomic.Bool   // set by Close: stop early
}

var _ raft.LogReader = (*Store)(nil)

// Open opens (creating it if needed, unless opts.MustExist) the data dir and
// verifies the log. Damaged data anywhere (a checksum mismatch, a gap, a
// term going down), beyond the commit index included, is a
// *CorruptionError naming the dir and the index, and the data dir is left
// as it was: a crash cannot produce such damage (each write is one atomic
// Pebble batch), and entries beyond the commit index may already have been
// acknowledged to a leader. The dir is stamped with opts.ClusterID/NodeID on first use and
// refused if it carries other ids. Only one Store (one process) may have a
// dir open at a time.
func Open(dir string, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	if dir == "" {
		return nil, errors.New("storage: open: empty data dir path")
	}
	fs := o.FS
	fi, err := fs.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("storage: open %s: not a directory", dir)
	case err != nil && oserror.IsNotExist(err) && o.MustExist:
		return nil, fmt.Errorf("storage: open %s: data dir does not exist", dir)
	case err != nil && !oserror.IsNotExist(err):
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	if err := makeDirs(fs, dir, o.DisableSync); err != nil {
		return nil, fmt.Errorf("storage: open %s: create data dir: %w", dir, err)
	}
	s := &Store{dir: dir, opts: o, log: o.Logger}
	s.snaps.init(s)

	cache := pebble.NewCache(o.CacheBytes)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:     fs,
		Cache:  cache,
		Logger: pebbleLogger{log: o.Logger, dir: dir},
		// NB: pinned, so the on-disk format only changes when we say so.
		FormatMajorVersion: pebble.FormatValueSeparation,
	}
	db, err := openPebble(fs.PathJoin(dir, "log"), popts)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s.db = db
	it, err := s.recover()
	if err != nil {
		_ = s.closePebble()
		return nil, err
	}
	if err := s.snaps.load(); err != nil {
		if it != nil {
			_ = it.Close()
		}
		_ = s.closePebble()
		return nil, err
	}
	s.log.Info("storage: opened", "dir", dir, "first", s.trunc.Index+1, "last", s.last,
		"commit", s.hs.Commit, "term", s.hs.Term, "snapshots", len(s.snaps.list), "log_checked", it == nil)
	if it != nil {
		s.check.done = make(chan struct{})
		s.inflight.Add(1)
		go s.checkLog(it, s.trunc, s.last, s.lastTerm)
	}
	return s, nil
}

// checkLog scans the log with it (Options.CheckLogLater) and records the
// verdict: the scan must end at the last entry Open found, wantLast of
// term wantTerm.
func (s *Store) checkLog(it *pebble.Iterator, trunc truncState, wantLast, wantTerm uint64) {
	defer s.inflight.Done()
	t0 := time.Now()
	last, lastTerm, err := s.scanLog(it, trunc, &s.check.cancel)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("storage: open %s: scan log: %w", s.dir, cerr)
	}
	if err == nil && (last != wantLast || lastTerm != wantTerm) {
		err = &CorruptionError{Dir: s.dir, Index: last, What: "log",
			Detail: fmt.Sprintf("the scan ends at index %d term %d, the last entry is %d term %d", last, lastTerm, wantLast, wantTerm)}
	}
	if err == nil {
		s.log.Info("storage: log checked", "dir", s.dir, "last", last, "elapsed", time.Since(t0).Round(time.Millisecond).String())
	}
	s.check.err = err
	close(s.check.done)
}

// LogChecked waits for the check of the log that Open left running
// (Options.CheckLogLater) and returns its verdict: nil, a
// *CorruptionError as Open would have returned it, an I/O error, or
// ErrClosed if the store was closed first. Without CheckLogLater it
// returns nil at once (Open checked the log).
func (s *Store) LogChecked() error {
	if s.check.done == nil {
		return nil
	}
	<-s.check.done
	return s.check.err
}

// openPebble opens Pebble, turning a fatal report during open into an error.
func openPebble(dir string, o *pebble.Options) (db *pebble.DB, err error) {
	defer recoverFatal(&err)
	return pebble.Open(dir, o)
}

// recoverFatal converts a pebbleFatal panic into *err; other panics go on.
func recoverFatal(err *error) {
	if r := recover(); r != nil {
		pf, ok := r.(pebbleFatal)
		if !ok {
			panic(r)
		}
		*err = errors.New(pf.msg)
	}
}

// Dir returns the data dir the store was opened on.
func (s *Store) Dir() string { return s.dir }

// Close releases the store. It waits for readers in progress; later calls
// of any method return ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.check.cancel.Store(true)
	s.inflight.Wait()
	return s.closePebble()
}

func (s *Store) closePebble() (err error) {
	defer recoverFatal(&err)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", s.dir, err)
	}
	return nil
}

// getRecord reads and verifies the metadata record at key; found is false
// if there is none.
func (s *Store) getRecord(key []byte, what string) (payload []byte, found bool, err error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: read %s in %s: %w", what, s.dir, err)
	}
	defer closer.Close()
	p, cerr := openRecord(key, v)
	if cerr != nil {
		return nil, false, &CorruptionError{Dir: s.dir, What: what, Stored: cerr.stored, Computed: cerr.computed}
	}
	return append([]byte(nil), p...), true, nil
}

// recover loads the metadata records, checks the stamp and verifies the
// whole log; any damage is a *CorruptionError and nothing is changed.
// With Options.CheckLogLater it verifies only the last entry and returns
// the iterator that the scan of the whole log is to use (it sees the log
// as it is now); otherwise it is nil.
func (s *Store) recover() (*pebble.Iterator, error) {
	if err := s.checkStamp(); err != nil {
		return nil, err
	}
	corrupt := func(what string, err error) error {
		return &CorruptionError{Dir: s.dir, What: what, Detail: err.Error()}
	}
	if p, ok, err := s.getRecord(keyHardState, "hard state"); err != nil {
		return nil, err
	} else if ok {
		if s.hs, err = decodeHardState(p); err != nil {
			return nil, corrupt("hard state", err)
		}
	}
	if p, ok, err := s.getRecord(keyTrunc, "truncation record"); err != nil {
		return nil, err
	} else if ok {
		if s.trunc, err = decodeTrunc(p); err != nil {
			return nil, corrupt("truncation record", err)
		}
	}
	if p, ok, err := s.getRecord(keySnapshot, "snapshot record"); err != nil {
		return nil, err
	} else if ok {
		if s.installed, err = decodeSnapshotRecord(p); err != nil {
			return nil, corrupt("snapshot record", err)
		}
	}

	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(s.trunc.Index + 1), UpperBound: logKeyEnd})
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", s.dir, err)
	}
	if s.opts.CheckLogLater {
		if err := s.readLast(it); err != nil {
			_ = it.Close()
			return nil, err
		}
	} else {
		// NB: damage anywhere in the log, beyond the commit index too, is
		// corruption and never a torn write: every write is one Pebble
		// batch, which a crash leaves entirely present or entirely absent
		// (Pebble drops a torn final WAL record itself). Entries beyond the
		// commit index may have been fsynced and acknowledged to a leader,
		// which counted them towards a commit: cutting them off could lose
		// a committed entry if other members fail too. Fail-stop instead;
		// the member is removed, wiped and re-added (docs/operations.md).
		s.last, s.lastTerm, err = s.scanLog(it, s.trunc, nil)
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("storage: open %s: scan log: %w", s.dir, cerr)
		}
		if err != nil {
			return nil, err
		}
		it = nil
	}

	if err := s.checkStructure(); err != nil {
		if it != nil {
			_ = it.Close()
		}
		return nil, err
	}
	return it, nil
}

// checkStructure checks snapshot <= truncation <= commit <= last.
func (s *Store) checkStructure() error {
	switch {
	case s.installed.Metadata.Index > s.trunc.Index:
		return &CorruptionError{Dir: s.dir, What: "log", Detail: fmt.Sprintf("installed snapshot index %d is above the compacted index %d", s.installed.Metadata.Index, s.trunc.Index)}
	case s.hs.Commit < s.trunc.Index:
		return &CorruptionError{Dir: s.dir, What: "log", Detail: fmt.Sprintf("commit index %d is below the compacted index %d", s.hs.Commit, s.trunc.Index)}
	case s.hs.Commit > s.last:
		return &CorruptionError{Dir: s.dir, What: "log", Detail: fmt.Sprintf("commit index %d is beyond the last index %d", s.hs.Commit, s.last)}
	}
	return nil
}

// readLast sets s.last and s.lastTerm from the last entry it finds (the
// truncation record's if there is none), whose checksum and index it
// verifies.
func (s *Store) readLast(it *pebble.Iterator) error {
	s.last, s.lastTerm = s.trunc.Index, s.trunc.Term
	if !it.Last() {
		if err := it.Error(); err != nil {
			return fmt.Errorf("storage: open %s: read last entry: %w", s.dir, err)
		}
		return nil
	}
	k := it.Key()
	idx, ok := parseLogKey(k)
	if !ok || idx <= s.trunc.Index {
		return &CorruptionError{Dir: s.dir, What: "log", Detail: fmt.Sprintf("the last log key %x is not an entry after the compacted index %d", k, s.trunc.Index)}
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return fmt.Errorf("storage: open %s: read entry %d: %w", s.dir, idx, err)
	}
	e, err := s.openEntry(idx, k, v)
	if err != nil {
		return err
	}
	s.last, s.lastTerm = idx, e.Term
	return nil
}

// scanLog walks the log with it from the entry after trunc: every entry must
// pass its checksum, carry the next index and a term no lower than the one
// before. It returns the last entry's index and term, or the first
// problem found as a *CorruptionError. A set cancel stops it with
// ErrClosed.
func (s *Store) scanLog(it *pebble.Iterator, trunc truncState, cancel *atomic.Bool) (last, lastTerm uint64, err error) {
	next, prevTerm := trunc.Index+1, trunc.Term
	for ok := it.First(); ok; ok = it.Next() {
		if cancel != nil && next%1024 == 0 && cancel.Load() {
			return 0, 0, ErrClosed
		}
		k := it.Key()
		idx, kok := parseLogKey(k)
		if !kok || idx != next {
			return 0, 0, &CorruptionError{Dir: s.dir, Index: next, What: "log", Detail: fmt.Sprintf("entry %d is missing (next key found is %x)", next, k)}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, 0, fmt.Errorf("storage: open %s: read entry %d: %w", s.dir, idx, err)
		}
		e, err := s.openEntry(idx, k, v)
		if err != nil {
			return 0, 0, err
		}
		if e.Term < prevTerm {
			return 0, 0, &CorruptionError{Dir: s.dir, Index: idx, What: "entry", Detail: fmt.Sprintf("term %d is below the previous entry's term %d", e.Term, prevTerm)}
		}
		prevTerm = e.Term
		next++
	}
	if err := it.Error(); err != nil {
		return 0, 0, fmt.Errorf("storage: open %s: scan log: %w", s.dir, err)
	}
	return next - 1, prevTerm, nil
}

// openEntry verifies and decodes the stored entry idx (key k, value v):
// a bad checksum or encoding is a *CorruptionError naming idx.
func (s *Store) openEntry(idx uint64, k, v []byte) (raft.Entry, error) {
	p, cerr := openRecord(k, v)
	if cerr != nil {
		return raft.Entry{}, &CorruptionError{Dir: s.dir, Index: idx, What: "entry", Stored: cerr.stored, Computed: cerr.computed}
	}
	e, err := decodeEntryPayload(idx, p)
	if err != nil {
		return raft.Entry{}, &CorruptionError{Dir: s.dir, Index: idx, What: "entry", Detail: err.Error()}
	}
	return e, nil
}

// checkStamp compares the data dir's stamp with the ids in the options and
// writes the missing parts.
func (s *Store) checkStamp() error {
	p, found, err := s.getRecord(keyStamp, "stamp")
	if err != nil {
		return err
	}
	var st stamp
	if found {
		if st, err = decodeStamp(p); err != nil {
			return &CorruptionError{Dir: s.dir, What: "stamp", Detail: err.Error()}
		}
		if st.Format != formatVersion {
			return fmt.Errorf("storage: open %s: data dir format %d is not supported (want %d)", s.dir, st.Format, formatVersion)
		}
	}
	want := st
	if s.opts.ClusterID != "" {
		if st.ClusterID != "" && st.ClusterID != s.opts.ClusterID {
			return fmt.Errorf("storage: open %s: data dir belongs to cluster %q node %d; refusing to open it as cluster %q node %d",
				s.dir, st.ClusterID, st.NodeID, s.opts.ClusterID, s.opts.NodeID)
		}
		want.ClusterID = s.opts.ClusterID
	}
	if s.opts.NodeID != 0 {
		if st.NodeID != 0 && st.NodeID != s.opts.NodeID {
			return fmt.Errorf("storage: open %s: data dir belongs to cluster %q node %d; refusing to open it as cluster %q node %d",
				s.dir, st.ClusterID, st.NodeID, s.opts.ClusterID, s.opts.NodeID)
		}
		want.NodeID = s.opts.NodeID
	}
	want.Format = formatVersion
	if found && want == st || !found && want.ClusterID == "" && want.NodeID == 0 {
		return nil
	}
	b := s.db.NewBatch()
	_ = b.Set(keyStamp, encodeStamp(want), nil)
	if err := s.commitBatch(b, true); err != nil {
		return fmt.Errorf("storage: open %s: write stamp: %w", s.dir, err)
	}
	return nil
}

// Stamp returns the cluster id and node id the data dir is stamped with
// (zero values if not stamped).
func (s *Store) Stamp() (clusterID string, nodeID uint64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return "", 0, ErrClosed
	}
	p, found, err := s.getRecord(keyStamp, "stamp")
	if err != nil || !found {
		return "", 0, err
	}
	st, err := decodeStamp(p)
	if err != nil {
		return "", 0, &CorruptionError{Dir: s.dir, What: "stamp", Detail: err.Error()}
	}
	return st.ClusterID, st.NodeID, nil
}

// commitBatch commits and closes b, waiting for the fsync if sync (and
// syncing is not disabled).
func (s *Store) commitBatch(b *pebble.Batch, sync bool) error {
	wait, err := s.applyBatch(b, sync)
	if err != nil {
		return err
	}
	return wait()
}

// applyBatch applies b to Pebble (visible to readers when it returns) and
// returns a function that waits for durability and releases b.
func (s *Store) applyBatch(b *pebble.Batch, sync bool) (wait func() error, err error) {
	sync = sync && !s.opts.DisableSync
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	defer recoverFatal(&err)
	if !sync {
		if err := s.db.Apply(b, pebble.NoSync); err != nil {
			return nil, err
		}
		return func() error { return b.Close() }, nil
	}
	if err := s.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return nil, err
	}
	return func() error {
		err := b.SyncWait()
		_ = b.Close()
		return err
	}, nil
}

// writable reports why writes are refused, if they are. Callers hold mu.
func (s *Store) writable() error {
	if s.closed {
		return ErrClosed
	}
	return s.err
}

// fail records a write failure; every later write returns it. Callers hold
// mu.
func (s *Store) fail(err error) error {
	if s.err == nil {
		s.err = err
		s.log.Error("storage: write failed; the store refuses further writes", "err", err)
	}
	return err
}

// Save persists hs (unless empty) and ents in one atomic Pebble batch, with
// at most one fsync when sync is true. ents must have consecutive indexes;
// an entry whose index is at or below LastIndex replaces the stored entry
// and every entry after it (the conflicting suffix, Raft §5.3). Entries at
// or below the compacted index are ignored. A gap after LastIndex is an
// error.
//
// The store keeps the last entries saved in memory for Entries and Term,
// sharing their Data: the caller must not modify it afterwards (raft never
// does).
//
// When Save returns nil and sync is true, the data is durable. An error is
// an environmental failure (I/O, full disk): the store refuses further
// writes and the driver must stop. Concurrent Save calls share fsyncs.
func (s *Store) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	wait, err := s.SaveAsync(hs, ents, sync)
	if err != nil {
		return err
	}
	return wait()
}

// SaveAsync is Save split in two: when it returns, the write is visible to
// readers and ordered after every earlier write; the returned wait function
// (which must be called exactly once) blocks until it is durable and
// reports the outcome. Callers that hold a lock to order their writes can
// release it before waiting, so that their fsyncs are shared.
func (s *Store) SaveAsync(hs raft.HardState, ents []raft.Entry, sync bool) (wait func() error, err error) {
	// Check the shape of ents and encode them (the CPU-heavy part: copies
	// and checksums) before taking the lock, so that concurrent callers
	// overlap this work.
	if len(ents) > 0 {
		lo, hi := ents[0].Index, ents[len(ents)-1].Index
		for i := 1; i < len(ents); i++ {
			if ents[i].Index != lo+uint64(i) || ents[i].Term < ents[i-1].Term {
				return nil, fmt.Errorf("storage: save [%d,%d]: entry %d (term %d) does not follow entry %d (term %d)",
					lo, hi, ents[i].Index, ents[i].Term, ents[i-1].Index, ents[i-1].Term)
			}
		}
	}
	b, err := s.encodeEntries(ents)
	if err != nil {
		return nil, err
	}
	closeBatch := func() {
		if b != nil {
			_ = b.Close()
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		closeBatch()
		return nil, err
	}
	// Drop entries that were compacted away (they are committed, hence
	// identical to what we had). Rare: re-encode the rest.
	if len(ents) > 0 && ents[0].Index <= s.trunc.Index {
		skip := s.trunc.Index + 1 - ents[0].Index
		if skip >= uint64(len(ents)) {
			ents = nil
		} else {
			ents = ents[skip:]
		}
		closeBatch()
		if b, err = s.encodeEntries(ents); err != nil {
			return nil, err
		}
	}
	if len(ents) == 0 && hs.IsEmpty() {
		closeBatch()
		return func() error { return nil }, nil
	}
	if b == nil {
		b = s.db.NewBatch()
	}
	fail := func(err error) (func() error, error) {
		closeBatch()
		return nil, err
	}
	newLast, newLastTerm := s.last, s.lastTerm
	if len(ents) > 0 {
		lo, hi := ents[0].Index, ents[len(ents)-1].Index
		if lo > s.last+1 {
			return fail(fmt.Errorf("storage: save [%d,%d]: gap after last index %d", lo, hi, s.last))
		}
		newLast, newLastTerm = hi, ents[len(ents)-1].Term
		// Raft §5.3/§5.4: a committed entry is never replaced. Checking the
		// last overlapped committed entry covers the ones before it (Log
		// Matching).
		if k := min(hi, s.hs.Commit, s.last); lo <= k && k > s.trunc.Index {
			stored, err := s.termLocked(k)
			if err != nil {
				return fail(err)
			}
			if t := ents[k-lo].Term; t != stored {
				return fail(fmt.Errorf("storage: save [%d,%d]: entry %d (term %d) would replace committed entry %d (term %d) in %s",
					lo, hi, k, t, k, stored, s.dir))
			}
		}
	}
	if !hs.IsEmpty() && hs.Commit > newLast {
		return fail(fmt.Errorf("storage: save: commit index %d is beyond the last index %d", hs.Commit, newLast))
	}
	if len(ents) > 0 && newLast < s.last {
		// The new entries end before the old log did: drop the rest of the
		// conflicting suffix. Indexes up to newLast were overwritten above.
		_ = b.DeleteRange(logKey(newLast+1), logKeyEnd, nil)
	}
	if !hs.IsEmpty() {
		_ = b.Set(keyHardState, encodeHardState(hs), nil)
	}
	syncWait, err := s.applyBatch(b, sync) // closes b on error
	if err != nil {
		if len(ents) > 0 {
			err = fmt.Errorf("storage: save [%d,%d] in %s: %w", ents[0].Index, newLast, s.dir, err)
		} else {
			err = fmt.Errorf("storage: save hard state in %s: %w", s.dir, err)
		}
		return nil, s.fail(err)
	}
	if len(ents) > 0 {
		s.last, s.lastTerm = newLast, newLastTerm
		s.tail.saved(ents)
	}
	if !hs.IsEmpty() {
		s.hs = hs
	}
	return func() error {
		if err := syncWait(); err != nil {
			err = fmt.Errorf("storage: save: sync %s: %w", s.dir, err)
			s.mu.Lock()
			s.fail(err)
			s.mu.Unlock()
			return err
		}
		return nil
	}, nil
}

// encodeEntries returns a batch holding ents (nil if there are none).
func (s *Store) encodeEntries(ents []raft.Entry) (*pebble.Batch, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	b := s.db.NewBatch()
	for i := range ents {
		e := &ents[i]
		op := b.SetDeferred(logKeyLen, entryValueLen(e))
		putLogKey(op.Key, e.Index)
		putEntryValue(op.Value, op.Key, e)
		if err := op.Finish(); err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("storage: save entry %d: %w", e.Index, err)
		}
	}
	return b, nil
}

// Compact removes the entries up to and including index with one range
// deletion; the term of index is kept so that Term(index) still answers.
// The caller must hold a snapshot that covers index. ErrCompacted if index
// is already compacted; an error if index is beyond the commit index or the
// last index. Compact does not fsync: if it is lost in a crash the log just
// holds more entries.
func (s *Store) Compact(index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if index <= s.trunc.Index {
		return raft.ErrCompacted
	}
	if index > s.last {
		return fmt.Errorf("storage: compact %d: beyond the last index %d", index, s.last)
	}
	if index > s.hs.Commit {
		return fmt.Errorf("storage: compact %d: beyond the commit index %d", index, s.hs.Commit)
	}
	term, err := s.termLocked(index)
	if err != nil {
		return err
	}
	ts := truncState{Index: index, Term: term}
	b := s.db.NewBatch()
	_ = b.Set(keyTrunc, encodeTrunc(ts), nil)
	_ = b.DeleteRange(logKeyMin, logKey(index+1), nil)
	if err := s.commitBatch(b, false); err != nil {
		return s.fail(fmt.Errorf("storage: compact %d in %s: %w", index, s.dir, err))
	}
	s.trunc = ts
	s.tail.compacted(index)
	return nil
}

// ApplySnapshot installs snap: the whole log is discarded, FirstIndex
// becomes snap.Metadata.Index+1, and Snapshot/InitialState report snap.
// The hard state's commit is raised to the snapshot index (and its term to
// the snapshot term) if below. The write is synced. ErrSnapOutOfDate if
// snap is not newer than the compacted index. As with raft.MemoryStorage, a
// snapshot at index 0 is accepted by a store that never held an entry or a
// snapshot: it only records the initial ConfState (bootstrapping).
func (s *Store) ApplySnapshot(snap raft.Snapshot) error {
	wait, err := s.applySnapshot(snap)
	if err != nil {
		return err
	}
	// NB: the fsync is waited for outside the lock, as in Save.
	if err := wait(); err != nil {
		err = fmt.Errorf("storage: apply snapshot %d: sync %s: %w", snap.Metadata.Index, s.dir, err)
		s.mu.Lock()
		s.fail(err)
		s.mu.Unlock()
		return err
	}
	return nil
}

func (s *Store) applySnapshot(snap raft.Snapshot) (wait func() error, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return nil, err
	}
	m := snap.Metadata
	installed := raft.Snapshot{Metadata: m, Data: append([]byte(nil), snap.Data...)}
	if m.Index == 0 && s.installed.Metadata.Index == 0 && s.last == 0 {
		// Bootstrap: an empty store takes the initial membership.
		b := s.db.NewBatch()
		_ = b.Set(keySnapshot, encodeSnapshotRecord(snap), nil)
		if wait, err = s.applyBatch(b, true); err != nil {
			return nil, s.fail(fmt.Errorf("storage: apply initial membership in %s: %w", s.dir, err))
		}
		s.installed = installed
		return wait, nil
	}
	if m.Index <= s.trunc.Index || m.Index <= s.installed.Metadata.Index {
		return nil, raft.ErrSnapOutOfDate
	}
	hs := s.hs
	if hs.Commit < m.Index {
		hs.Commit = m.Index
	}
	if hs.Term < m.Term {
		hs.Term, hs.Vote = m.Term, raft.None
	}
	ts := truncState{Index: m.Index, Term: m.Term}
	b := s.db.NewBatch()
	_ = b.Set(keySnapshot, encodeSnapshotRecord(snap), nil)
	_ = b.Set(keyTrunc, encodeTrunc(ts), nil)
	_ = b.Set(keyHardState, encodeHardState(hs), nil)
	_ = b.DeleteRange(logKeyMin, logKeyEnd, nil)
	if wait, err = s.applyBatch(b, true); err != nil {
		return nil, s.fail(fmt.Errorf("storage: apply snapshot %d in %s: %w", m.Index, s.dir, err))
	}
	s.installed = installed
	s.trunc = ts
	s.tail.reset()
	s.last, s.lastTerm = m.Index, m.Term
	s.hs = hs
	return wait, nil
}

// InitialState returns the saved HardState and the ConfState of the newest
// snapshot (see Snapshot).
func (s *Store) InitialState() (raft.HardState, raft.ConfState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return raft.HardState{}, raft.ConfState{}, ErrClosed
	}
	snap := s.newestSnapshotLocked()
	return s.hs, snap.Metadata.ConfState, nil
}

// Snapshot returns the newest snapshot: the one installed with
// ApplySnapshot or the newest committed snapshot file whose index is at or
// below the saved commit index, whichever has the higher index. For a file,
// Data is its SnapshotMeta (see UnmarshalSnapshotMeta), which a receiver
// needs to check the stream.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return raft.Snapshot{}, ErrClosed
	}
	return s.newestSnapshotLocked(), nil
}

// newestSnapshotLocked returns the newer of the installed snapshot and the
// newest snapshot file at or below the durable commit index. NB: a file
// above the commit index (a body received from a leader but not yet
// installed, e.g. because the node crashed in between) is not reported: a
// restart must not restore state beyond what this node knows is committed.
func (s *Store) newestSnapshotLocked() raft.Snapshot {
	snap := s.installed
	if m, ok := s.snaps.newestAtOrBelow(s.hs.Commit); ok && m.Index > snap.Metadata.Index {
		snap = raft.Snapshot{
			Metadata: raft.SnapshotMetadata{Index: m.Index, Term: m.Term, ConfState: m.ConfState},
			Data:     m.Marshal(),
		}
	}
	return snap
}

// HardState returns the saved hard state.
func (s *Store) HardState() (raft.HardState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return raft.HardState{}, ErrClosed
	}
	return s.hs, nil
}

// FirstIndex returns the index of the first entry that may be available:
// the compacted (or snapshot) index + 1.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.trunc.Index + 1, nil
}

// LastIndex returns the index of the last entry (the compacted index when
// the log is empty).
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.last, nil
}

// Term returns the term of entry i, for i in [FirstIndex()-1, LastIndex()].
// ErrCompacted below, ErrUnavailable above; a *CorruptionError if the
// stored entry fails its checksum.
func (s *Store) Term(i uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.termLocked(i)
}

func (s *Store) termLocked(i uint64) (uint64, error) {
	switch {
	case i < s.trunc.Index:
		return 0, raft.ErrCompacted
	case i == s.trunc.Index:
		return s.trunc.Term, nil
	case i > s.last:
		return 0, raft.ErrUnavailable
	case i == s.last:
		return s.lastTerm, nil
	}
	if t, ok := s.tail.term(i); ok {
		return t, nil
	}
	k := logKey(i)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, &CorruptionError{Dir: s.dir, Index: i, What: "log", Detail: "entry is missing"}
	}
	if err != nil {
		return 0, fmt.Errorf("storage: term %d in %s: %w", i, s.dir, err)
	}
	defer closer.Close()
	e, err := s.openEntry(i, k, v)
	if err != nil {
		return 0, err
	}
	return e.Term, nil
}

// arenaBytes is the chunk size entry data is copied into by Entries.
const arenaBytes = 64 << 10

// Entries returns the entries in [lo, hi), stopping before the total
// Entry.Size() would exceed maxBytes but always returning at least one
// entry when lo < hi. ErrCompacted if lo < FirstIndex(); ErrUnavailable if
// hi > LastIndex()+1. Every entry read from disk has its checksum
// verified; a mismatch is a *CorruptionError. The entries saved last by
// this Store are answered from memory (tail.go). The returned entries'
// Data share larger buffers (or the buffers given to Save); the caller may
// keep but must not modify them.
func (s *Store) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	switch {
	case lo <= s.trunc.Index:
		s.mu.RUnlock()
		return nil, raft.ErrCompacted
	case hi > s.last+1:
		last := s.last
		s.mu.RUnlock()
		return nil, fmt.Errorf("storage: entries [%d,%d) beyond last index %d: %w", lo, hi, last, raft.ErrUnavailable)
	case lo > hi:
		s.mu.RUnlock()
		return nil, fmt.Errorf("storage: entries: invalid range [%d,%d)", lo, hi)
	case lo == hi:
		s.mu.RUnlock()
		return nil, nil
	case s.tail.covers(lo, hi):
		ents := s.tail.entries(lo, hi, maxBytes)
		s.mu.RUnlock()
		return ents, nil
	}
	// The iterator sees exactly the state described by the fields read
	// above: writers change both under the exclusive lock.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(lo), UpperBound: logKey(hi)})
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("storage: entries [%d,%d) in %s: %w", lo, hi, s.dir, err)
	}
	s.inflight.Add(1)
	s.mu.RUnlock()
	defer s.inflight.Done()

	ents, err := s.readEntries(it, lo, hi, maxBytes)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("storage: entries [%d,%d) in %s: %w", lo, hi, s.dir, cerr)
	}
	if err != nil {
		return nil, err
	}
	return ents, nil
}

func (s *Store) readEntries(it *pebble.Iterator, lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	n := hi - lo
	if lim := maxBytes/entryOverhead + 1; lim < n {
		n = lim
	}
	if n > 1<<16 {
		n = 1 << 16
	}
	ents := make([]raft.Entry, 0, n)
	var arena []byte
	var size uint64
	next := lo
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if idx, kok := parseLogKey(k); !kok || idx != next {
			return nil, &CorruptionError{Dir: s.dir, Index: next, What: "log", Detail: "entry is missing"}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("storage: read entry %d in %s: %w", next, s.dir, err)
		}
		e, err := s.openEntry(next, k, v)
		if err != nil {
			return nil, err
		}
		size += e.Size()
		if len(ents) > 0 && size > maxBytes {
			return ents, nil
		}
		if len(e.Data) == 0 {
			e.Data = nil
		} else {
			if cap(arena)-len(arena) < len(e.Data) {
				// Room for the rest of the range if its entries are of
				// this size, up to arenaBytes: a read of a few entries
				// does not allocate a whole arena.
				want := uint64(len(e.Data)) * (hi - next)
				arena = make([]byte, 0, max(min(arenaBytes, want), uint64(len(e.Data))))
			}
			start := len(arena)
			arena = append(arena, e.Data...)
			e.Data = arena[start:len(arena):len(arena)]
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("storage: entries [%d,%d) in %s: %w", lo, hi, s.dir, err)
	}
	if next != hi {
		return nil, &CorruptionError{Dir: s.dir, Index: next, What: "log", Detail: "entry is missing"}
	}
	return ents, nil
}

// entryOverhead is raft.Entry.Size() of an entry with no data.
var entryOverhead = (&raft.Entry{}).Size()

func isNotExist(err error) bool { return oserror.IsNotExist(err) }

// makeDirs creates dir, dir/log and dir/snapshots as needed and, unless
// noSync, fsyncs every directory whose entries changed, so that a crash
// cannot forget the data dir after files in it were synced.
func makeDirs(fs vfs.FS, dir string, noSync bool) error {
	// Find the deepest existing ancestor; everything below it is new.
	var created []string
	for d := dir; ; {
		if _, err := fs.Stat(d); err == nil {
			break
		} else if !oserror.IsNotExist(err) {
			return err
		}
		created = append(created, d)
		parent := fs.PathDir(d)
		if parent == d {
			break
		}
		d = parent
	}
	for _, sub := range []string{dir, fs.PathJoin(dir, "log"), fs.PathJoin(dir, snapDirName)} {
		if _, err := fs.Stat(sub); oserror.IsNotExist(err) && sub != dir {
			created = append(created, sub)
		}
		if err := fs.MkdirAll(sub, 0o755); err != nil {
			return err
		}
	}
	if noSync || len(created) == 0 {
		return nil
	}
	toSync := map[string]bool{}
	for _, d := range created {
		toSync[fs.PathDir(d)] = true
		toSync[d] = true
	}
	for d := range toSync {
		if err := syncDir(fs, d); err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return nil
}
