package node

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// crashStore is a crash-faithful Storage for node tests. Writes are visible
// to reads at once, as on a real disk, but only synced writes survive a
// simulated crash (crash): Save with sync=false, and Compact, become durable
// only with the next synced write, and a synced Save becomes durable only
// when it returns (after syncDelay, fake time under synctest), so a crash
// during the fsync loses it. ApplySnapshot, SaveSnapshot and snapshot
// bodies are durable when they return (the Storage contract).
//
// Durable state is always a prefix of the writes, in order: it is kept as
// that prefix of operations and replayed into fresh stores at a crash.
type crashStore struct {
	*memStorage // the state the running node sees
	syncDelay   time.Duration

	mu sync.Mutex
	// beforeSync, if set, is called by a synced Save (on the node's loop
	// goroutine) before the fsync starts: a test can crash the node there.
	beforeSync func(ents []raft.Entry)
	durable    []storeOp           // survives a crash
	pending    []storeOp           // written, not yet synced
	dur        *raft.MemoryStorage // durable applied to an empty store
}

// storeOp is one write, replayable on a raft.MemoryStorage.
type storeOp func(*raft.MemoryStorage) error

func newCrashStore(syncDelay time.Duration) *crashStore {
	return &crashStore{memStorage: newMemStorage(), syncDelay: syncDelay, dur: raft.NewMemoryStorage()}
}

// write records op as written; when sync, it and every earlier write
// become durable after the fsync delay.
func (s *crashStore) write(op storeOp, sync bool) error {
	s.mu.Lock()
	s.pending = append(s.pending, op)
	s.mu.Unlock()
	if !sync {
		return nil
	}
	if s.syncDelay > 0 {
		time.Sleep(s.syncDelay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range s.pending {
		if err := op(s.dur); err != nil {
			return fmt.Errorf("crash store: durable replay: %w", err)
		}
	}
	s.durable = append(s.durable, s.pending...)
	s.pending = nil
	return nil
}

func (s *crashStore) Save(hs raft.HardState, ents []raft.Entry, sync bool) error {
	if err := s.memStorage.Save(hs, ents, sync); err != nil {
		return err
	}
	ents = slices.Clone(ents)
	s.mu.Lock()
	hook := s.beforeSync
	s.mu.Unlock()
	if sync && hook != nil {
		hook(ents)
	}
	return s.write(func(ms *raft.MemoryStorage) error { return ms.Save(hs, ents, sync) }, sync)
}

func (s *crashStore) ApplySnapshot(snap raft.Snapshot) error {
	if err := s.memStorage.ApplySnapshot(snap); err != nil {
		return err
	}
	return s.write(func(ms *raft.MemoryStorage) error { return ms.ApplySnapshot(snap) }, true)
}

func (s *crashStore) SaveSnapshot(snap raft.Snapshot) error {
	if err := s.memStorage.SaveSnapshot(snap); err != nil {
		return err
	}
	return s.write(func(ms *raft.MemoryStorage) error {
		cs := snap.Metadata.ConfState
		_, err := ms.CreateSnapshot(snap.Metadata.Index, &cs, snap.Data)
		return err
	}, true)
}

func (s *crashStore) Compact(i uint64) error {
	if err := s.memStorage.Compact(i); err != nil {
		return err
	}
	return s.write(func(ms *raft.MemoryStorage) error { return ms.Compact(i) }, false)
}

// crash returns the store a node restarted after a power loss at this
// instant would find: the durable writes only. The receiver may go on
// being written by the dying node; the result does not see that.
func (s *crashStore) crash() *crashStore {
	s.mu.Lock()
	ops := slices.Clone(s.durable)
	s.mu.Unlock()
	s.memStorage.mu.Lock()
	bodies := maps.Clone(s.memStorage.bodies)
	seq := s.memStorage.seq
	s.memStorage.mu.Unlock()

	c := newCrashStore(s.syncDelay)
	c.memStorage.bodies, c.memStorage.seq = bodies, seq
	for _, op := range ops {
		if err := op(c.memStorage.ms); err != nil {
			panic(fmt.Sprintf("crash store: replaying durable writes: %v", err))
		}
		if err := op(c.dur); err != nil {
			panic(fmt.Sprintf("crash store: replaying durable writes: %v", err))
		}
	}
	c.durable = ops
	return c
}

// durableHardState returns the hard state that would survive a crash now.
func (s *crashStore) durableHardState() raft.HardState {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs, _, _ := s.dur.InitialState()
	return hs
}

// durableEntry describes entry i in what would survive a crash now:
// covered is true if a durable snapshot or compaction includes it (it is
// committed, so it is the committed entry), else ok says whether the
// durable log holds it, with term.
func (s *crashStore) durableEntry(i uint64) (term uint64, covered, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if first, _ := s.dur.FirstIndex(); i < first {
		return 0, true, true
	}
	t, err := s.dur.Term(i)
	return t, false, err == nil
}

// currentTerm returns the term of entry i as the running node's storage
// holds it: ok is false if the entry is not in it (not written yet, or
// compacted: see compacted).
func (s *crashStore) currentTerm(i uint64) (term uint64, ok bool) {
	t, err := s.memStorage.Term(i)
	return t, err == nil
}

// compacted reports whether entry i is below the running node's log.
func (s *crashStore) compacted(i uint64) bool {
	first, _ := s.memStorage.FirstIndex()
	return i+1 < first
}
