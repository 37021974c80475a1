package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// procStatusKiB returns a field (VmRSS, VmHWM) of /proc/pid/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// rssBoundMiB is the resident set a raftd process must stay under in
// TestMemoryBoundedUnderSlowPlugin: the documented in-memory bounds at
// their defaults (docs/operations.md "Memory bounds": apply backlog 64 MiB,
// uncommitted tail 32 MiB, 8 MiB per Ready, 16 MiB per peer queue, the
// gRPC receive buffers of the clients' requests) plus the storage's
// memtables and the Go runtime's garbage headroom (GOGC=100 lets the heap
// reach twice the live data). Generous on purpose: the test tells bounded
// from unbounded (before the bounds, the leader accepted up to 65,536
// entries, 64 GiB at 1 MiB, and followers had no bound at all).
const rssBoundMiB = 1024

// A slow plugin (every Apply of one entry takes at least 200 ms: at most
// 5 MiB/s of 1 MiB commands) and 96 clients each writing 1 MiB commands,
// one at a time: more than the apply backlog (64 MiB) and the uncommitted
// tail (32 MiB) can hold. raftd must refuse what it cannot take ("not
// applied"; the clients retry a second later) rather than buffer it: every
// raftd process stays under rssBoundMiB, commands are acknowledged
// meanwhile, and every node applies everything in the end. It reports the
// measured high-water marks.
func TestMemoryBoundedUnderSlowPlugin(t *testing.T) {
	plug := misbehaveBin(t)
	env := map[uint64][]string{}
	for id := uint64(1); id <= 3; id++ {
		env[id] = []string{"MISBEHAVE_APPLY_DELAY=200ms"}
	}
	r := newRCluster(t, rclusterOpts{n: 3, fsm: plug, env: env,
		extra: []string{"--plugin-apply-timeout", "5m"}})
	pids := map[uint64]int{}
	for _, id := range r.ids {
		pids[id] = r.pid(id)
	}
	// Watch RSS; stop the load as soon as a node crosses the bound,
	// rather than let an unbounded node eat the machine.
	var over atomic.Value
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			for id, pid := range pids {
				if kb, err := procStatusKiB(pid, "VmRSS"); err == nil && kb > rssBoundMiB<<10 {
					over.CompareAndSwap(nil, fmt.Sprintf("node %d: VmRSS %d MiB > %d MiB", id, kb>>10, rssBoundMiB))
				}
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	value := strings.Repeat("v", 1<<20-200) // a 1 MiB command (just under --max-entry-bytes)
	const clients = 96
	load := 15 * time.Second
	var acked, refused, unknown atomic.Int64
	var otherErr atomic.Value
	deadline := time.Now().Add(load)
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		wg.Add(1)
		go func(cl int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && over.Load() == nil; i++ {
				id := r.ids[(cl+i)%3]
				cmd := fmt.Sprintf(`{"op":"put","key":"k%d","value":"%s"}`, cl%8, value)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				var tr metadata.MD
				_, err := r.client(id).Apply(ctx, &apiv1.ApplyRequest{Command: []byte(cmd)}, grpc.Trailer(&tr))
				cancel()
				switch {
				case err == nil:
					acked.Add(1)
				case server.IsNotApplied(tr):
					refused.Add(1)
					time.Sleep(time.Second)
				default:
					otherErr.CompareAndSwap(nil, err.Error())
					unknown.Add(1)
					time.Sleep(time.Second)
				}
			}
		}(cl)
	}
	wg.Wait()
	close(stopWatch)
	watch.Wait()
	var worst int64
	for _, id := range r.ids {
		hwm, err := procStatusKiB(pids[id], "VmHWM")
		if err != nil {
			t.Fatalf("node %d (pid %d): %v (exited? %v)", id, pids[id], err, r.exitErr(id))
		}
		rss, _ := procStatusKiB(pids[id], "VmRSS")
		t.Logf("node %d: VmHWM %d MiB, VmRSS %d MiB at the end", id, hwm>>10, rss>>10)
		worst = max(worst, hwm)
	}
	t.Logf("%d clients writing 1 MiB commands for %s against a plugin that takes 200 ms per entry: %d acknowledged, %d refused (not applied), %d outcome unknown; highest VmHWM %d MiB (bound %d MiB)",
		clients, load, acked.Load(), refused.Load(), unknown.Load(), worst>>10, rssBoundMiB)
	for _, id := range r.ids {
		st := r.mustStatus(id)
		t.Logf("node %d: commit %d, applied %d", id, st.GetCommitIndex(), st.GetAppliedIndex())
	}
	if s := over.Load(); s != nil {
		t.Fatalf("resident memory not bounded: %s", s)
	}
	if worst > rssBoundMiB<<10 {
		t.Fatalf("VmHWM %d MiB over the bound %d MiB", worst>>10, rssBoundMiB)
	}
	if acked.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("%d acknowledged, %d refused: want both (backpressure as \"not applied\")", acked.Load(), refused.Load())
	}
	if s := otherErr.Load(); s != nil {
		t.Logf("first error other than not applied: %s", s)
	}
	// Everything acknowledged is applied everywhere in the end.
	lead := r.leader()
	r.waitConverged(r.ids, r.mustStatus(lead).GetCommitIndex(), 5*time.Minute)
}
