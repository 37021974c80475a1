package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/raftd/raftd/core/raft"
)

// damagedStorage is a memStorage whose snapshot bodies can be made to fail
// their checksum, the way a storage that verifies bodies reports it.
type damagedStorage struct {
	*memStorage
	// mode: 0 sound; corruptOnOpen fails OpenSnapshot; corruptAtEOF serves
	// the body with a byte flipped and fails the read at its end.
	mode  atomic.Int32
	opens atomic.Int64 // OpenSnapshot calls while damaged
}

const (
	corruptOnOpen = 1
	corruptAtEOF  = 2
)

func (s *damagedStorage) damage(snap raft.Snapshot) error {
	return fmt.Errorf("%w: snapshot file %s at index %d: checksum mismatch", ErrCorrupt, snap.Data, snap.Metadata.Index)
}

func (s *damagedStorage) OpenSnapshot(snap raft.Snapshot) (SnapshotHeader, io.ReadCloser, error) {
	mode := s.mode.Load()
	if mode == 0 {
		return s.memStorage.OpenSnapshot(snap)
	}
	s.opens.Add(1)
	if mode == corruptOnOpen {
		return SnapshotHeader{}, nil, s.damage(snap)
	}
	h, rc, err := s.memStorage.OpenSnapshot(snap)
	if err != nil {
		return SnapshotHeader{}, nil, err
	}
	body, err := io.ReadAll(rc)
	if err != nil {
		return SnapshotHeader{}, nil, err
	}
	body[len(body)-1] ^= 0xff
	return h, io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{s.damage(snap)})), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// A leader whose own newest snapshot body fails its checksum while it
// sends it to a follower that needs it fail-stops with that error (once:
// it does not offer the damaged body again), the follower never installs
// it, and the two others elect a new leader from which the follower
// catches up (DESIGN "Durability and bad input").
func TestLeaderWithCorruptSnapshotFailStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{{"on open", corruptOnOpen}, {"at end of body", corruptAtEOF}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stores := map[uint64]*damagedStorage{}
				c := newCluster(t, 3, func(cfg *Config) {
					cfg.SnapshotEntries = 100
					cfg.SnapshotTrailing = 20
					ms := cfg.Storage.(*memStorage)
					if stores[cfg.ID] == nil || stores[cfg.ID].memStorage != ms {
						stores[cfg.ID] = &damagedStorage{memStorage: ms}
					}
					cfg.Storage = stores[cfg.ID]
				})
				ctx := context.Background()
				lead := c.waitLeader()
				away := lead%3 + 1
				c.stop(away)
				for i := range 300 {
					if _, err := c.nodes[c.waitLeader()].Propose(ctx, []byte(fmt.Sprintf("put:k%d:%d", i%10, i))); err != nil {
						t.Fatal(err)
					}
				}
				lead = c.waitLeader()
				c.waitApplied(c.nodes[lead].Applied())
				time.Sleep(10 * testTick) // let an in-flight snapshot body finish
				snap, _ := c.stores[lead].Snapshot()
				if first, _ := c.stores[lead].FirstIndex(); first < 100 || snap.Metadata.Index < 200 {
					t.Fatalf("leader %d: snapshot %d, first index %d: the follower would not need a snapshot", lead, snap.Metadata.Index, first)
				}
				stores[lead].mode.Store(tc.mode)
				restoresBefore := c.fsms[away].restores
				c.start(away)

				select {
				case <-c.nodes[lead].Done():
				case <-time.After(100 * testTick):
					t.Fatalf("leader %d still runs after %d attempts to send its damaged snapshot", lead, stores[lead].opens.Load())
				}
				err := c.nodes[lead].Err()
				want := fmt.Sprintf("at index %d", snap.Metadata.Index)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "checksum mismatch") {
					t.Fatalf("leader %d stopped with %v; want ErrCorrupt naming %q", lead, err, want)
				}
				if k := stores[lead].opens.Load(); k > 2 {
					t.Fatalf("leader %d opened the damaged snapshot %d times before stopping", lead, k)
				}
				if f := c.fsms[away]; f.restores != restoresBefore {
					t.Fatalf("node %d restored a snapshot from the damaged body", away)
				}
				t.Logf("leader %d stopped: %v", lead, err)
				c.nw.set(lead, nil)
				delete(c.nodes, lead)

				// The others elect a new leader; the follower catches up from it.
				newLead := c.waitLeader()
				if newLead == lead || newLead == away {
					t.Fatalf("new leader %d (old %d, lagging %d)", newLead, lead, away)
				}
				if _, err := c.nodes[newLead].Propose(ctx, []byte("put:k9:after")); err != nil {
					t.Fatal(err)
				}
				c.waitApplied(c.nodes[newLead].Applied())
				if got, err := c.nodes[away].Read(ctx, []byte("get:k9")); err != nil || string(got) != "after" {
					t.Fatalf("node %d read k9: %q, %v", away, got, err)
				}
				if m := c.nodes[away].Metrics(); m.SnapshotsInstalled != 1 {
					t.Fatalf("node %d installed %d snapshots, want 1 (the new leader's)", away, m.SnapshotsInstalled)
				}
				c.checkFSMs()
			})
		})
	}
}
