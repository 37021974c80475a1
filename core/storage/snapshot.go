package storage

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/raftd/raftd/core/snapshot"
)

// ErrNoSnapshot is returned by OpenSnapshot for an index with no snapshot
// file.
var ErrNoSnapshot = errors.New("storage: no such snapshot")

// SnapshotMeta describes a snapshot file: its header (core/snapshot, the
// one framing of a raftd snapshot) plus Size and CRC32C of its body, from
// its trailer.
type SnapshotMeta = snapshot.Header

// UnmarshalSnapshotMeta decodes SnapshotMeta.Marshal's output, a stored
// snapshot's descriptor (Store.Snapshot's Data).
func UnmarshalSnapshotMeta(b []byte) (SnapshotMeta, error) {
	m, err := snapshot.Unmarshal(b)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("storage: snapshot metadata: %w", err)
	}
	return m, nil
}

// A snapshot file is exactly a core/snapshot stream: header | body |
// trailer (docs/storage-format.md).
const (
	snapSuffix    = ".snap"
	snapTmpSuffix = ".tmp"
	snapDirName   = "snapshots"
	snapIOBytes   = 256 << 10
)

// bodyOffset is where the body of m's file begins (the header's length).
func bodyOffset(m SnapshotMeta) int64 { return int64(len(m.Append(nil))) }

func snapFileName(index, term uint64) string {
	return fmt.Sprintf("%016x-%016x%s", index, term, snapSuffix)
}

// snapshotFiles is the set of committed snapshot files of a Store.
type snapshotFiles struct {
	s   *Store
	fs  vfs.FS
	dir string

	mu   sync.Mutex
	list []SnapshotMeta // committed files, ascending by index
	seq  uint64         // temp file name uniquifier
}

func (sf *snapshotFiles) init(s *Store) {
	sf.s = s
	sf.fs = s.opts.FS
	sf.dir = sf.fs.PathJoin(s.dir, snapDirName)
}

func (sf *snapshotFiles) path(m SnapshotMeta) string {
	return sf.fs.PathJoin(sf.dir, snapFileName(m.Index, m.Term))
}

// load lists the snapshot dir: temp files (from a crash during a write)
// are removed, committed files have their metadata read and checked.
func (sf *snapshotFiles) load() error {
	if err := sf.fs.MkdirAll(sf.dir, 0o755); err != nil {
		return fmt.Errorf("storage: open %s: create %s: %w", sf.s.dir, sf.dir, err)
	}
	names, err := sf.fs.List(sf.dir)
	if err != nil {
		return fmt.Errorf("storage: open %s: list %s: %w", sf.s.dir, sf.dir, err)
	}
	slices.Sort(names)
	for _, name := range names {
		p := sf.fs.PathJoin(sf.dir, name)
		switch {
		case strings.HasSuffix(name, snapTmpSuffix):
			if err := sf.fs.Remove(p); err != nil {
				return fmt.Errorf("storage: open %s: remove unfinished snapshot %s: %w", sf.s.dir, p, err)
			}
			sf.s.log.Info("storage: removed unfinished snapshot file", "file", p)
		case strings.HasSuffix(name, snapSuffix):
			m, err := sf.readMeta(p)
			if err != nil {
				return err
			}
			if name != snapFileName(m.Index, m.Term) {
				return &CorruptionError{Dir: sf.s.dir, Index: m.Index, What: "snapshot file " + p,
					Detail: fmt.Sprintf("metadata says index %d term %d, which does not match the file name", m.Index, m.Term)}
			}
			sf.list = append(sf.list, m)
		default:
			sf.s.log.Warn("storage: ignoring unknown file", "file", p)
		}
	}
	return nil
}

// readMeta reads and verifies the header and trailer of the snapshot file
// p (the body's checksum is verified when it is read).
func (sf *snapshotFiles) readMeta(p string) (SnapshotMeta, error) {
	f, err := sf.fs.Open(p)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("storage: open snapshot %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("storage: stat snapshot %s: %w", p, err)
	}
	corrupt := func(detail string) error {
		return &CorruptionError{Dir: sf.s.dir, What: "snapshot file " + p, Detail: detail}
	}
	size := fi.Size()
	m, hlen, err := snapshot.ReadHeader(io.NewSectionReader(f, 0, size))
	switch {
	case errors.Is(err, snapshot.ErrOldFormat):
		return SnapshotMeta{}, fmt.Errorf("storage: open %s: snapshot file %s: %w; remove the data dir (or the file) to start this build", sf.s.dir, p, err)
	case errors.Is(err, snapshot.ErrCorrupt), errors.Is(err, snapshot.ErrNotSnapshot):
		return SnapshotMeta{}, corrupt(err.Error())
	case err != nil:
		return SnapshotMeta{}, fmt.Errorf("storage: read snapshot %s: %w", p, err)
	}
	if size < hlen+int64(snapshot.TrailerBytes) {
		return SnapshotMeta{}, corrupt(fmt.Sprintf("file is %d bytes, shorter than its header and trailer", size))
	}
	var tr [snapshot.TrailerBytes]byte
	if _, err := f.ReadAt(tr[:], size-int64(len(tr))); err != nil {
		return SnapshotMeta{}, fmt.Errorf("storage: read snapshot %s: %w", p, err)
	}
	if m.Size, m.CRC32C, err = snapshot.ParseTrailer(tr[:]); err != nil {
		return SnapshotMeta{}, corrupt(err.Error())
	}
	if body := size - hlen - int64(len(tr)); body != m.Size {
		return SnapshotMeta{}, corrupt(fmt.Sprintf("body is %d bytes, trailer says %d", body, m.Size))
	}
	return m, nil
}

func (sf *snapshotFiles) latest() (SnapshotMeta, bool) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if len(sf.list) == 0 {
		return SnapshotMeta{}, false
	}
	return sf.list[len(sf.list)-1], true
}

func (sf *snapshotFiles) find(index uint64) (SnapshotMeta, bool) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	for _, m := range sf.list {
		if m.Index == index {
			return m, true
		}
	}
	return SnapshotMeta{}, false
}

// newestAtOrBelow returns the newest file with Index <= index.
func (sf *snapshotFiles) newestAtOrBelow(index uint64) (SnapshotMeta, bool) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	for i := len(sf.list) - 1; i >= 0; i-- {
		if sf.list[i].Index <= index {
			return sf.list[i], true
		}
	}
	return SnapshotMeta{}, false
}

// add records a committed file and removes the oldest files beyond keep,
// except the newest one at or below commit (the one a restart would use).
func (sf *snapshotFiles) add(m SnapshotMeta, commit uint64) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	i, _ := slices.BinarySearchFunc(sf.list, m.Index, func(a SnapshotMeta, idx uint64) int {
		switch {
		case a.Index < idx:
			return -1
		case a.Index > idx:
			return 1
		}
		return 0
	})
	if i < len(sf.list) && sf.list[i].Index == m.Index {
		if sf.list[i].Term != m.Term {
			// A different file name for the same index: drop the old one.
			_ = sf.fs.Remove(sf.path(sf.list[i]))
		}
		sf.list[i] = m
	} else {
		sf.list = slices.Insert(sf.list, i, m)
	}
	inUse := -1
	for j := len(sf.list) - 1; j >= 0; j-- {
		if sf.list[j].Index <= commit {
			inUse = j
			break
		}
	}
	for j := 0; len(sf.list) > sf.s.opts.KeepSnapshots && j < len(sf.list); {
		if j == inUse {
			j++
			continue
		}
		old := sf.list[j]
		sf.list = slices.Delete(sf.list, j, j+1)
		if inUse > j {
			inUse--
		}
		if err := sf.fs.Remove(sf.path(old)); err != nil && !isNotExist(err) {
			sf.s.log.Warn("storage: cannot remove old snapshot", "file", sf.path(old), "err", err)
		}
	}
}

// CreateSnapshot starts writing a snapshot file with header meta. Write the
// body to the returned writer, then Commit or Abort it. The body is
// streamed to a temporary file; it is never held in memory.
//
// If meta.Size is non-zero (a snapshot received from a leader, whose
// metadata came with it), Commit refuses a body whose size or CRC32C differ
// from meta's.
func (s *Store) CreateSnapshot(meta SnapshotMeta) (*SnapshotWriter, error) {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if meta.Index == 0 {
		return nil, errors.New("storage: create snapshot: index 0")
	}
	sf := &s.snaps
	sf.mu.Lock()
	sf.seq++
	seq := sf.seq
	sf.mu.Unlock()
	final := sf.path(meta)
	tmp := fmt.Sprintf("%s.%d%s", final, seq, snapTmpSuffix)
	f, err := sf.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("storage: create snapshot %d: %w", meta.Index, err)
	}
	w := &SnapshotWriter{sf: sf, meta: meta.Clone(), tmp: tmp, final: final, f: f,
		bw: bufio.NewWriterSize(f, snapIOBytes)}
	if _, err := w.bw.Write(meta.Append(nil)); err != nil {
		_ = w.Abort()
		return nil, fmt.Errorf("storage: create snapshot %d: %w", meta.Index, err)
	}
	return w, nil
}

// SnapshotWriter streams the body of a new snapshot file. It is not safe
// for concurrent use.
type SnapshotWriter struct {
	sf         *snapshotFiles
	meta       SnapshotMeta
	tmp, final string
	f          vfs.File
	bw         *bufio.Writer
	n          int64
	crc        uint32
	done       bool
	err        error
}

// Write appends p to the body.
func (w *SnapshotWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("storage: write to a finished snapshot")
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("storage: write snapshot %d: %w", w.meta.Index, err)
		return n, w.err
	}
	return n, nil
}

// Commit makes the snapshot durable and visible: it appends the trailer
// (body length and CRC32C), fsyncs the temporary file, renames it into
// place and fsyncs the directory. Store.Snapshot reports it once the saved commit index reaches
// its index (at once for a snapshot of the local applied state; after
// ApplySnapshot for one received from a leader). Afterwards only the newest
// Options.KeepSnapshots files are kept, plus the newest one at or below the
// commit index. It returns the final metadata (with Size and CRC32C). On error the
// temporary file is removed.
func (w *SnapshotWriter) Commit() (SnapshotMeta, error) {
	if w.done {
		return SnapshotMeta{}, errors.New("storage: snapshot already committed or aborted")
	}
	m, err := w.commit()
	if err != nil {
		_ = w.Abort()
		return SnapshotMeta{}, err
	}
	w.done = true
	w.sf.s.mu.RLock()
	commit := w.sf.s.hs.Commit
	w.sf.s.mu.RUnlock()
	w.sf.add(m, commit)
	return m, nil
}

func (w *SnapshotWriter) commit() (SnapshotMeta, error) {
	if w.err != nil {
		return SnapshotMeta{}, w.err
	}
	m := w.meta
	if m.Size != 0 && (m.Size != w.n || m.CRC32C != w.crc) {
		return SnapshotMeta{}, fmt.Errorf("storage: snapshot %d: body is %d bytes with CRC32C %#08x, expected %d bytes with CRC32C %#08x",
			m.Index, w.n, w.crc, m.Size, m.CRC32C)
	}
	m.Size, m.CRC32C = w.n, w.crc
	wrap := func(step string, err error) error {
		return fmt.Errorf("storage: commit snapshot %d: %s %s: %w", m.Index, step, w.tmp, err)
	}
	if _, err := w.bw.Write(snapshot.AppendTrailer(nil, m.Size, m.CRC32C)); err != nil {
		return m, wrap("write", err)
	}
	if err := w.bw.Flush(); err != nil {
		return m, wrap("write", err)
	}
	if !w.sf.s.opts.DisableSync {
		if err := w.f.Sync(); err != nil {
			return m, wrap("sync", err)
		}
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return m, wrap("close", err)
	}
	if err := w.sf.fs.Rename(w.tmp, w.final); err != nil {
		return m, wrap("rename", err)
	}
	if !w.sf.s.opts.DisableSync {
		if err := syncDir(w.sf.fs, w.sf.dir); err != nil {
			return m, fmt.Errorf("storage: commit snapshot %d: sync dir %s: %w", m.Index, w.sf.dir, err)
		}
	}
	return m, nil
}

// Abort discards the snapshot being written. It is a no-op after Commit.
func (w *SnapshotWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	if err := w.sf.fs.Remove(w.tmp); err != nil && !isNotExist(err) {
		return fmt.Errorf("storage: abort snapshot %d: %w", w.meta.Index, err)
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// LatestSnapshot returns the metadata of the newest committed snapshot
// file; ok is false if there is none.
func (s *Store) LatestSnapshot() (meta SnapshotMeta, ok bool) {
	return s.snaps.latest()
}

// Snapshots returns the metadata of every committed snapshot file, oldest
// first.
func (s *Store) Snapshots() []SnapshotMeta {
	s.snaps.mu.Lock()
	defer s.snaps.mu.Unlock()
	return slices.Clone(s.snaps.list)
}

// OpenSnapshot opens the body of the snapshot file at index for reading;
// the returned metadata is the file's header, with the body's Size and
// CRC32C.
// The reader verifies the body's checksum as it reaches the end: the read
// that delivers the last bytes returns a *CorruptionError instead of
// io.EOF if they do not match (and io.ErrUnexpectedEOF-wrapping corruption
// if the file is short). Consumers must discard everything they read when
// any Read returns an error other than io.EOF. ErrNoSnapshot if there is
// no such file.
func (s *Store) OpenSnapshot(index uint64) (SnapshotMeta, io.ReadCloser, error) {
	m, ok := s.snaps.find(index)
	if !ok {
		return SnapshotMeta{}, nil, fmt.Errorf("storage: open snapshot %d in %s: %w", index, s.dir, ErrNoSnapshot)
	}
	p := s.snaps.path(m)
	f, err := s.snaps.fs.Open(p)
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("storage: open snapshot %d: %w", index, err)
	}
	body := io.NewSectionReader(f, bodyOffset(m), m.Size)
	return m, &snapshotReader{f: f, r: bufio.NewReaderSize(body, snapIOBytes), remain: m.Size, meta: m, path: p, dir: s.dir}, nil
}

// VerifySnapshot reads the whole body of the snapshot file at index and
// checks its checksum.
func (s *Store) VerifySnapshot(index uint64) error {
	_, rc, err := s.OpenSnapshot(index)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

type snapshotReader struct {
	f      vfs.File
	r      *bufio.Reader
	remain int64
	crc    uint32
	meta   SnapshotMeta
	path   string
	dir    string
	err    error
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.remain == 0 {
		r.err = r.verify()
		return 0, r.err
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.crc = crc32.Update(r.crc, crcTable, p[:n])
	r.remain -= int64(n)
	switch {
	case r.remain == 0:
		if verr := r.verify(); verr != io.EOF {
			r.err = verr
			return n, verr
		}
		return n, nil
	case err == io.EOF:
		r.err = &CorruptionError{Dir: r.dir, Index: r.meta.Index, What: "snapshot file " + r.path,
			Detail: fmt.Sprintf("body ends %d bytes early: %v", r.remain, io.ErrUnexpectedEOF)}
		return n, r.err
	case err != nil:
		r.err = fmt.Errorf("storage: read snapshot %s: %w", r.path, err)
		return n, r.err
	}
	return n, nil
}

func (r *snapshotReader) verify() error {
	if r.crc != r.meta.CRC32C {
		return &CorruptionError{Dir: r.dir, Index: r.meta.Index, What: "snapshot file " + r.path,
			Stored: r.meta.CRC32C, Computed: r.crc}
	}
	return io.EOF
}

func (r *snapshotReader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
