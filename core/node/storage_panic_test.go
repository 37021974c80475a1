package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
)

// A storage read that fails under the raft core (here: the leader cannot
// read back the entries it must apply) stops the node with an error that
// wraps the storage error, instead of crashing the process.
func TestStorageReadErrorFailStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		lead := c.waitLeader()
		if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:1")); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("injected checksum mismatch at index 99")
		c.stores[lead].entriesErr.Store(&boom)
		_, err := c.nodes[lead].Propose(context.Background(), []byte("add:1"))
		if err == nil {
			t.Fatal("proposal succeeded although the leader cannot read its log")
		}
		<-c.nodes[lead].Done()
		err = c.nodes[lead].Err()
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "raft: storage Entries") {
			t.Fatalf("err = %v, want the storage error from raft's Entries read", err)
		}
		if _, err := c.nodes[lead].Propose(context.Background(), []byte("add:1")); !errors.Is(err, ErrStopped) {
			t.Fatalf("propose after fail-stop: %v", err)
		}
	})
}
