package daemon

import (
	"errors"
	"fmt"
	"io"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/storage"
)

// nodeStore adapts *storage.Store to node.Storage. Snapshots are storage
// snapshot files, whose header is the node's (storage.SnapshotMeta and
// node.SnapshotHeader are both core/snapshot.Header); the descriptor the
// node keeps in raft.Snapshot.Data is the file's encoded header and
// trailer. Read errors that
// report damaged data (storage.ErrCorrupt) also match node.ErrCorrupt, with
// storage's message (it names the file and index) unchanged, so the node
// fail-stops on them wherever it reads.
//
// NB: storage makes a committed snapshot file its newest snapshot at once,
// so SaveSnapshot has nothing left to do.
type nodeStore struct {
	*storage.Store
}

var _ node.Storage = nodeStore{}

func (s nodeStore) BeginSnapshot(h node.SnapshotHeader) (node.SnapshotSink, error) {
	w, err := s.CreateSnapshot(h)
	if err != nil {
		return nil, err
	}
	return snapSink{w}, nil
}

func (s nodeStore) SaveSnapshot(snap raft.Snapshot) error {
	m, err := storage.UnmarshalSnapshotMeta(snap.Data)
	if err != nil {
		return fmt.Errorf("save snapshot %d: %w", snap.Metadata.Index, err)
	}
	if m.Index != snap.Metadata.Index {
		return fmt.Errorf("save snapshot %d: descriptor names index %d", snap.Metadata.Index, m.Index)
	}
	return nil
}

func (s nodeStore) OpenSnapshot(snap raft.Snapshot) (node.SnapshotHeader, io.ReadCloser, error) {
	idx := snap.Metadata.Index
	if m, err := storage.UnmarshalSnapshotMeta(snap.Data); err == nil {
		idx = m.Index
	}
	h, rc, err := s.Store.OpenSnapshot(idx)
	if err != nil {
		return node.SnapshotHeader{}, nil, corruptErr(err)
	}
	return h, corruptMapReader{rc}, nil
}

func (s nodeStore) InitialState() (raft.HardState, raft.ConfState, error) {
	hs, cs, err := s.Store.InitialState()
	return hs, cs, corruptErr(err)
}

func (s nodeStore) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	ents, err := s.Store.Entries(lo, hi, maxBytes)
	return ents, corruptErr(err)
}

func (s nodeStore) Term(i uint64) (uint64, error) {
	t, err := s.Store.Term(i)
	return t, corruptErr(err)
}

func (s nodeStore) Snapshot() (raft.Snapshot, error) {
	snap, err := s.Store.Snapshot()
	return snap, corruptErr(err)
}

// corruptError is a storage error reporting damaged data, made to match
// node.ErrCorrupt as well. Its message is storage's.
type corruptError struct{ err error }

func (e corruptError) Error() string        { return e.err.Error() }
func (e corruptError) Unwrap() error        { return e.err }
func (e corruptError) Is(target error) bool { return target == node.ErrCorrupt }

// corruptErr maps an error matching storage.ErrCorrupt to one that also
// matches node.ErrCorrupt; any other error (and nil) is returned as is.
func corruptErr(err error) error {
	if err == nil || !errors.Is(err, storage.ErrCorrupt) {
		return err
	}
	return corruptError{err}
}

// corruptMapReader is a snapshot body whose read errors go through
// corruptErr (a checksum mismatch shows up at the end of the body).
type corruptMapReader struct{ io.ReadCloser }

func (r corruptMapReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	return n, corruptErr(err)
}

type snapSink struct {
	w *storage.SnapshotWriter
}

func (k snapSink) Write(p []byte) (int, error) { return k.w.Write(p) }
func (k snapSink) Abort() error                { return k.w.Abort() }
func (k snapSink) Commit() ([]byte, error) {
	m, err := k.w.Commit()
	if err != nil {
		return nil, err
	}
	return m.Marshal(), nil
}
