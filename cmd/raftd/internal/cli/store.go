package cli

import (
	"fmt"
	"io"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/storage"
)

// nodeStore adapts *storage.Store to node.Storage. Snapshot bodies are
// storage snapshot files; the descriptor the node keeps in
// raft.Snapshot.Data is the file's storage.SnapshotMeta.
//
// NB: storage makes a committed snapshot file its newest snapshot at once,
// so SaveSnapshot has nothing left to do.
type nodeStore struct {
	*storage.Store
}

var _ node.Storage = nodeStore{}

func (s nodeStore) BeginSnapshot(meta raft.SnapshotMetadata) (node.SnapshotSink, error) {
	w, err := s.CreateSnapshot(storage.SnapshotMeta{Index: meta.Index, Term: meta.Term, ConfState: meta.ConfState})
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

func (s nodeStore) OpenSnapshot(snap raft.Snapshot) (io.ReadCloser, error) {
	idx := snap.Metadata.Index
	if m, err := storage.UnmarshalSnapshotMeta(snap.Data); err == nil {
		idx = m.Index
	}
	_, rc, err := s.Store.OpenSnapshot(idx)
	return rc, err
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
