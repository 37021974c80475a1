package storage

import (
	"testing"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/storage/storagetest"
)

// TestConformanceMemoryStorage runs the suite against the core's in-memory
// store, so both implementations are held to the same contract.
func TestConformanceMemoryStorage(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		return raft.NewMemoryStorage()
	})
}
