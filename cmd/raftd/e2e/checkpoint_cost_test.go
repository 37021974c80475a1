package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// cpuSeconds is the user+system CPU time of pid so far, from
// /proc/<pid>/stat (clock ticks of 1/100 s).
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("cpu of pid %d: %v", pid, err)
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+2:])
	utime, _ := strconv.ParseFloat(string(f[11]), 64)
	stime, _ := strconv.ParseFloat(string(f[12]), 64)
	return (utime + stime) / 100
}

// The cost of a digest checkpoint on a large state: RAFTD_CHECKPOINT_MB
// MiB of kv state (default 1024) on 3 nodes, then `raftd fsm verify`
// while one client keeps writing small puts. Reported: the verify's
// duration, the CPU it took in raftd and in the plugins (all nodes), and
// the writer's put latency before and during the checkpoint (its maximum
// bounds how long apply stalled). RAFTD_SOAK=1 only.
//
//	RAFTD_SOAK=1 RAFTD_CHECKPOINT_MB=1024 go test -run TestCheckpointCost -v ./cmd/raftd/e2e
func TestCheckpointCost(t *testing.T) {
	if !soak() {
		t.Skip("writes about 1 GiB per node; RAFTD_SOAK=1")
	}
	mb := 1024
	if s := os.Getenv("RAFTD_CHECKPOINT_MB"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("RAFTD_CHECKPOINT_MB=%q is not a positive integer", s)
		}
		mb = v
	}
	const valueBytes = 512 << 10
	puts := mb * 2
	r := newRCluster(t, rclusterOpts{n: 3, fsm: bin("raftd-fsm-kv"),
		extra: []string{"--checkpoint-entries", "0", "--plugin-call-timeout", "5m"}})
	start := time.Now()
	r.putLoad(puts, 8, 30*time.Minute, r.leaderTarget(), func(i int) []byte {
		return kvPut(fmt.Sprintf("k%06d", i), bigValue(i, valueBytes))
	})
	t.Logf("wrote %d MiB (%d puts of %d KiB) in %s", mb, puts, valueBytes>>10, time.Since(start).Round(time.Millisecond))
	lead := r.leader()
	r.waitConverged(r.ids, 0, 5*time.Minute)

	// One writer, small puts to the leader, latencies recorded by phase.
	var mu sync.Mutex
	phase := 0
	lat := map[int][]time.Duration{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			p := phase
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			t0 := time.Now()
			_, err := r.client(lead).Apply(ctx, &apiv1.ApplyRequest{Command: kvPut(fmt.Sprintf("w%06d", i), "v")})
			cancel()
			if err != nil {
				t.Errorf("writer put %d: %v", i, err)
				return
			}
			mu.Lock()
			lat[p] = append(lat[p], time.Since(t0))
			mu.Unlock()
		}
	}()
	var pids []int
	for _, id := range r.ids {
		pids = append(pids, r.pid(id), r.pluginPID(id))
	}
	cpu := func() (host, plug float64) {
		for i, p := range pids {
			if i%2 == 0 {
				host += cpuSeconds(t, p)
			} else {
				plug += cpuSeconds(t, p)
			}
		}
		return
	}
	ha, pa := cpu()
	time.Sleep(3 * time.Second) // phase 0: the writer alone
	h0, p0 := cpu()
	mu.Lock()
	phase = 1
	mu.Unlock()
	t0 := time.Now()
	code, out, errOut := raftd(t, nil, "fsm", "verify", "--addr", r.nodes[lead].apiAddr, "--timeout", "10m")
	took := time.Since(t0)
	mu.Lock()
	phase = 2
	mu.Unlock()
	h1, p1 := cpu()
	close(stop)
	<-done
	if code != 0 {
		t.Fatalf("fsm verify: exit %d %q %q", code, out, errOut)
	}
	stats := func(d []time.Duration) string {
		if len(d) == 0 {
			return "no puts"
		}
		slices.Sort(d)
		return fmt.Sprintf("%d puts, p50 %s, p99 %s, max %s", len(d), d[len(d)/2].Round(10*time.Microsecond),
			d[len(d)*99/100].Round(10*time.Microsecond), d[len(d)-1].Round(time.Millisecond))
	}
	mu.Lock()
	defer mu.Unlock()
	// The writer's own share, at its CPU per put before the checkpoint,
	// is taken out.
	before, during := float64(len(lat[0])), float64(len(lat[1]))
	hw, pw := (h0-ha)/before*during, (p0-pa)/before*during
	t.Logf("CHECKPOINT of %d MiB of kv state: fsm verify took %s; CPU (3 nodes) raftd %.2f s, plugins %.2f s; less the writer's puts at their CPU cost before (%.0f µs per put): raftd %.2f s, plugins %.2f s",
		mb, took.Round(time.Millisecond), h1-h0, p1-p0, (h0-ha+p0-pa)/before*1e6, h1-h0-hw, p1-p0-pw)
	t.Logf("writer before: %s", stats(lat[0]))
	t.Logf("writer during: %s", stats(lat[1]))
	if len(lat[1]) == 0 {
		t.Errorf("no put completed during the checkpoint: apply stalled for all of %s", took)
	}
}
