package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// catchUpPuts is the number of puts written while a follower is away:
// 50,000 (issue 6) with RAFTD_SOAK=1; 10,000 in make test, where 50,000
// take 15-30 s on a loaded 2-core machine.
func catchUpPuts() int {
	if soak() {
		return 50000
	}
	return 10000
}

// listAlphabet holds every byte the recovery tests' kv keys start with
// after a common prefix; staleListAll splits a prefix over it.
const listAlphabet = "-0123456789abcdefghijklmnopqrstuvwxyz"

// staleListAll returns node id's whole local kv list, as the items of
// several list queries: a prefix whose reply exceeds the gRPC message
// limit (32 MiB on the server) is split by its next byte.
func (r *rcluster) staleListAll(id uint64) []kvItem {
	r.t.Helper()
	var out []kvItem
	var walk func(prefix string)
	walk = func(prefix string) {
		q, _ := json.Marshal(map[string]any{"op": "list", "prefix": prefix, "limit": 100000000})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := r.client(id).Query(ctx, &apiv1.QueryRequest{Query: q, Consistency: apiv1.Consistency_CONSISTENCY_STALE},
			grpc.MaxCallRecvMsgSize(1<<30))
		cancel()
		if status.Code(err) == codes.ResourceExhausted && len(prefix) < 16 {
			for _, c := range listAlphabet {
				walk(prefix + string(c))
			}
			return
		}
		if err != nil {
			r.t.Fatalf("stale list %q on node %d: %v", prefix, id, err)
		}
		var res struct{ Items []kvItem }
		if err := json.Unmarshal(resp.GetResult(), &res); err != nil {
			r.t.Fatalf("kv list result: %v", err)
		}
		out = append(out, res.Items...)
	}
	walk("")
	return out
}

type kvItem struct{ Key, Value string }

// kvEqual compares the stale kv lists of nodes a and b and returns the
// number of items.
func (r *rcluster) kvEqual(a, b uint64) int {
	r.t.Helper()
	la, lb := r.staleListAll(a), r.staleListAll(b)
	if slices.Equal(la, lb) {
		return len(la)
	}
	ib := make(map[string]string, len(lb))
	for _, it := range lb {
		ib[it.Key] = it.Value
	}
	diff := 0
	for _, it := range la {
		if v, ok := ib[it.Key]; !ok || v != it.Value {
			diff++
		}
	}
	r.t.Fatalf("stale lists differ: node %d has %d items, node %d has %d items, %d of node %d's missing or different on node %d",
		a, len(la), b, len(lb), diff, a, b)
	return 0
}

// Issue 6, tests 1 and 2. Five members: node `away` is a follower stopped
// after boot, node 5 is listed in --peers but first started only after the
// puts (empty data dir, never voted). With --snapshot-entries 1000 the
// leader compacts the log far past both, so each must catch up through a
// snapshot (raft logs "restored snapshot" on it, at an index above its
// last log index before it went away), not a replay; afterwards each stale
// list equals the leader's, and every node's log is bounded: last index
// minus snapshot index stays below snapshot-entries plus one apply batch.
func TestRecoverySnapshotCatchUp(t *testing.T) {
	const snapEntries = 1000
	r := newRCluster(t, rclusterOpts{n: 5, fsm: bin("raftd-fsm-kv"), later: []uint64{5},
		extra: []string{"--snapshot-entries", fmt.Sprint(snapEntries)}})
	lead := r.leader(5)
	var away uint64
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != lead {
			away = id
		}
	}
	r.mustApply(lead, string(kvPut("before", "stop")), 10*time.Second)
	r.waitConverged([]uint64{1, 2, 3, 4}, 0, 20*time.Second)
	awayLast := r.mustStatus(away).GetLastIndex()
	if err := r.stop(away); err != nil {
		t.Fatalf("stop node %d: %v", away, err)
	}
	up := []uint64{}
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != away {
			up = append(up, id)
		}
	}

	n := catchUpPuts()
	start := time.Now()
	st := r.putLoad(n, 64, 5*time.Minute, r.leaderTarget(away, 5), func(i int) []byte {
		return kvPut(fmt.Sprintf("k%06d", i), fmt.Sprintf("value-%06d-%040d", i, i))
	})
	el := time.Since(start)
	t.Logf("%d puts in %s (%.0f/s); refused %d, unknown %d (retried)", n, el.Round(time.Millisecond), float64(n)/el.Seconds(), st.notApplied.Load(), st.unknown.Load())

	idx := r.waitConverged(up, uint64(n), 60*time.Second)
	lead = r.leader(away, 5)
	ls := r.mustStatus(lead)
	// The default --snapshot-trailing keeps 5,000 entries behind it.
	if ls.GetSnapshotIndex() <= awayLast+5000 {
		t.Fatalf("leader %d snapshot index %d: log not compacted past node %d's last index %d", lead, ls.GetSnapshotIndex(), away, awayLast)
	}

	// Both late nodes catch up.
	caught := time.Now()
	r.start(away)
	r.start(5)
	all := []uint64{1, 2, 3, 4, 5}
	idx = r.waitConverged(all, idx, 120*time.Second)
	t.Logf("nodes %d and 5 caught up to index %d in %s", away, idx, time.Since(caught).Round(time.Millisecond))
	for _, id := range []uint64{away, 5} {
		at := r.restoredSnapshotAt(id)
		before := awayLast
		if id == 5 {
			before = 0
		}
		if at == 0 || at <= before {
			t.Errorf("node %d: no snapshot restored since restart (last restored at %d, last index before %d): caught up by replay?", id, at, before)
		} else {
			t.Logf("node %d restored a snapshot at index %d (its last index before: %d)", id, at, before)
		}
	}
	for _, id := range all {
		if id == lead {
			continue
		}
		if got := r.kvEqual(lead, id); got != n+1 {
			t.Fatalf("node %d lists %d items, want %d", id, got, n+1)
		}
	}

	// Bounded logs.
	for _, id := range all {
		s := r.mustStatus(id)
		span := s.GetLastIndex() - s.GetSnapshotIndex()
		size := dirSize(r.nodes[id].dataDir)
		snaps, _ := snapFiles(r.nodes[id].dataDir)
		t.Logf("node %d: last index %d, snapshot index %d (span %d), data dir %.1f MiB (%d snapshot files, log %.1f MiB)",
			id, s.GetLastIndex(), s.GetSnapshotIndex(), span, mib(size), len(snaps), mib(dirSize(r.nodes[id].dataDir+"/log")))
		if s.GetSnapshotIndex() == 0 || span > 2*snapEntries+1024 {
			t.Errorf("node %d: log not bounded: last index %d, snapshot index %d", id, s.GetLastIndex(), s.GetSnapshotIndex())
		}
	}
}
