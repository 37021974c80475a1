package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// kill -9 a node's plugin while the node writes a snapshot of it (the
// Snapshot call breaks mid-stream), and a follower's plugin right after
// the follower received a snapshot from the leader (while the body is
// restored into the plugin). Each time the node restarts its plugin,
// recovers, keeps running and ends with the same state as the others.
// About 30 s: RAFTD_SOAK=1 only, to keep make test within budget.
func TestRecoveryPluginKillDuringSnapshot(t *testing.T) {
	if !soak() {
		t.Skip("about 30 s; RAFTD_SOAK=1")
	}
	const valueBytes = 8 << 10
	r := newRCluster(t, rclusterOpts{n: 3, fsm: bin("raftd-fsm-kv"),
		extra: []string{"--snapshot-entries", "1000", "--snapshot-trailing", "100"}})
	keys := 0
	write := func(n int, skip ...uint64) {
		base := keys
		r.putLoad(n, 32, 3*time.Minute, r.leaderTarget(skip...), func(i int) []byte {
			return kvPut(fmt.Sprintf("k%06d", base+i), bigValue(base+i, valueBytes))
		})
		keys += n
	}
	checkSame := func() {
		t.Helper()
		lead := r.leader()
		idx := r.waitConverged(r.ids, 0, 90*time.Second)
		for _, id := range r.ids {
			if id != lead {
				if got := r.kvEqual(lead, id); got != keys {
					t.Fatalf("node %d lists %d keys at applied index %d, want %d", id, got, idx, keys)
				}
			}
		}
	}
	write(500)

	// During creation, on a follower and on the leader.
	for _, role := range []string{"follower", "leader"} {
		lead := r.leader()
		victim := lead
		if role == "follower" {
			victim = lead%3 + 1
		}
		old := r.pluginPID(victim)
		if old == 0 {
			t.Fatalf("node %d: no plugin process", victim)
		}
		k := r.watchKillPID(victim, old, func() bool { return r.pluginPID(victim) == old })
		for round := 0; round < 5 && !k.killed.Load(); round++ {
			write(1000)
		}
		tmp, killed := k.stop()
		if !killed {
			t.Fatalf("%s %d's plugin never caught during a snapshot", role, victim)
		}
		nu := r.waitPluginPID(victim, old, 30*time.Second)
		t.Logf("%s %d: plugin %d killed while the node wrote %s; new plugin %d", role, victim, old, tmp, nu)
		write(1000) // and the next snapshot works
		checkSame()
		if r.pid(victim) == 0 {
			t.Fatalf("node %d exited: %v", victim, r.exitErr(victim))
		}
		if s := r.logSince(victim); !strings.Contains(s, "plugin broken") {
			t.Errorf("node %d's log does not report the broken plugin", victim)
		}
	}

	// During restore of a snapshot received from the leader.
	lead := r.leader()
	g := lead%3 + 1
	if err := r.stop(g); err != nil {
		t.Fatalf("stop node %d: %v", g, err)
	}
	write(1500, g)
	r.start(g)
	var old int
	waitFor(t, 30*time.Second, func() (bool, string) {
		old = r.pluginPID(g)
		return old != 0, fmt.Sprintf("node %d has no plugin yet", g)
	})
	deadline := time.Now().Add(60 * time.Second)
	for r.restoredSnapshotAt(g) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node %d received no snapshot", g)
		}
		time.Sleep(time.Millisecond)
	}
	killPID(t, old)
	nu := r.waitPluginPID(g, old, 30*time.Second)
	t.Logf("node %d: plugin %d killed right after the snapshot at %d arrived; new plugin %d", g, old, r.restoredSnapshotAt(g), nu)
	checkSame()
	if r.pid(g) == 0 {
		t.Fatalf("node %d exited: %v", g, r.exitErr(g))
	}
}
