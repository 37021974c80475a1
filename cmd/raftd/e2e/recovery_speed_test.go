package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 6, speed: a follower misses RAFTD_CATCHUP_MB MiB of kv state
// (default 1024) and catches up through one snapshot; then it restarts
// with that state. Reported: catch-up seconds and MB/s over loopback, peak
// RSS (VmHWM) of raftd and its plugin on the leader and the follower, the
// restart time, and the time to read the same snapshot file with a plain
// read (page cache as it is: nothing dropped). RAFTD_SOAK=1 only.
//
//	RAFTD_SOAK=1 RAFTD_CATCHUP_MB=1024 go test -run TestRecoveryCatchUpSpeed -v ./cmd/raftd/e2e
func TestRecoveryCatchUpSpeed(t *testing.T) {
	if !soak() {
		t.Skip("writes about 1 GiB per node; RAFTD_SOAK=1")
	}
	mb := 1024
	if s := os.Getenv("RAFTD_CATCHUP_MB"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("RAFTD_CATCHUP_MB=%q is not a positive integer", s)
		}
		mb = v
	}
	const valueBytes = 512 << 10
	puts := mb * 2 // 512 KiB values
	r := newRCluster(t, rclusterOpts{n: 3, fsm: bin("raftd-fsm-kv"),
		// One snapshot after all the puts; a short trailing log.
		extra: []string{"--snapshot-entries", fmt.Sprint(puts), "--snapshot-trailing", "10"}})
	lead := r.leader()
	f := lead%3 + 1
	if err := r.stop(f); err != nil {
		t.Fatalf("stop node %d: %v", f, err)
	}
	start := time.Now()
	r.putLoad(puts, 8, 30*time.Minute, r.leaderTarget(f), func(i int) []byte {
		return kvPut(fmt.Sprintf("k%06d", i), bigValue(i, valueBytes))
	})
	el := time.Since(start)
	t.Logf("wrote %d MiB (%d puts of %d KiB) in %s: %.1f MB/s", mb, puts, valueBytes>>10, el.Round(time.Millisecond), float64(puts)*valueBytes/1e6/el.Seconds())
	rest := notIn(r.ids, []uint64{f})
	// Add entries until the leader has a snapshot and compacted past f.
	var idx uint64
	waitFor(t, 10*time.Minute, func() (bool, string) {
		st, err := r.localStatus(lead, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		if st.GetSnapshotIndex() == 0 {
			r.mustApply(lead, string(kvPut("tick", time.Now().String())), 30*time.Second)
			return false, fmt.Sprintf("leader %d has no snapshot yet (applied %d)", lead, st.GetAppliedIndex())
		}
		return true, ""
	})
	idx = r.waitConverged(rest, 0, 5*time.Minute)
	snaps, _ := snapFiles(r.nodes[lead].dataDir)
	if len(snaps) == 0 {
		t.Fatalf("leader %d has no snapshot file", lead)
	}
	snapPath := snaps[len(snaps)-1]
	fi, err := os.Stat(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	snapBytes := fi.Size()

	// While f catches up, the leader's status shows it receiving a
	// snapshot (issue 6: "the leader shows which followers are receiving
	// a snapshot").
	var sawSnapState atomic.Bool
	pollStop := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			select {
			case <-pollStop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			st, err := r.localStatus(lead, 500*time.Millisecond)
			if err != nil {
				continue
			}
			for _, fp := range st.GetFollowers() {
				if fp.GetId() == f && fp.GetState() == "snapshot" {
					sawSnapState.Store(true)
				}
			}
		}
	}()
	caught := time.Now()
	r.start(f)
	r.waitConverged(r.ids, idx, 30*time.Minute)
	cu := time.Since(caught)
	close(pollStop)
	<-pollDone
	if !sawSnapState.Load() {
		t.Errorf("leader %d's status never showed node %d in state snapshot during its catch-up", lead, f)
	}
	at := r.restoredSnapshotAt(f)
	if at == 0 {
		t.Fatalf("node %d caught up without a snapshot", f)
	}
	t.Logf("CATCH-UP: node %d took %s to go from empty state to applied index %d through the snapshot at %d (%.1f MiB): %.1f MB/s over loopback (includes process and plugin start, stream to disk, restore into the plugin)",
		f, cu.Round(time.Millisecond), idx, at, mib(snapBytes), float64(snapBytes)/1e6/cu.Seconds())
	// Phases from f's log: raft started (storage open, plugin started),
	// snapshot body received and stepped, state restored and caught up.
	if t0, ok := r.logTime(f, "starting: term="); ok {
		if t1, ok := r.logTime(f, "restored snapshot [index"); ok {
			done := caught.Add(cu)
			t.Logf("CATCH-UP phases: process start to raft start %s; raft start to body received %s (%.1f MB/s); restore into the plugin and tail %s",
				t0.Sub(caught).Round(time.Millisecond), t1.Sub(t0).Round(time.Millisecond), float64(snapBytes)/1e6/t1.Sub(t0).Seconds(), done.Sub(t1).Round(time.Millisecond))
		}
	}
	for _, id := range []uint64{lead, f} {
		rp, pp := r.pid(id), r.pluginPID(id)
		t.Logf("PEAK RSS node %d: raftd %.0f MiB, plugin %.0f MiB", id, mib(vmHWM(rp)), mib(vmHWM(pp)))
	}
	for i := 0; i < puts; i += puts / 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := r.query(ctx, f, fmt.Sprintf(`{"op":"get","key":"k%06d"}`, i), true)
		cancel()
		if want := fmt.Sprintf(`{"found":true,"value":%q}`, bigValue(i, valueBytes)); err != nil || res != want {
			t.Fatalf("node %d get k%06d: %v (%d bytes, want %d)", f, i, err, len(res), len(want))
		}
	}

	// Restart with that state vs reading the snapshot file.
	if err := r.stop(f); err != nil {
		t.Fatalf("stop node %d: %v", f, err)
	}
	fsnaps, _ := snapFiles(r.nodes[f].dataDir)
	rs := time.Now()
	r.start(f)
	// NB: a fresh connection per poll; the test's own connection to f
	// would wait out gRPC's reconnect backoff (seconds) after the stop.
	restart := waitServing(t, r.nodes[f].apiAddr, idx, 10*time.Minute).Sub(rs)
	t.Logf("RESTART phases: %s", r.restartPhases(f, rs))
	rd := time.Now()
	var n int64
	for _, p := range fsnaps {
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.Copy(io.Discard, fh)
		fh.Close()
		n += m
	}
	read := time.Since(rd)
	t.Logf("RESTART: node %d with %.1f MiB of snapshot serves again after %s; reading its %d snapshot file(s) (%.1f MiB, page cache warm) takes %s; data dir %.1f MiB",
		f, mib(snapBytes), restart.Round(time.Millisecond), len(fsnaps), mib(n), read.Round(time.Millisecond), mib(dirSize(r.nodes[f].dataDir)))
}
