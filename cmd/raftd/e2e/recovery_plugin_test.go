package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
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

// counterLoad adds random positive deltas from concurrent clients through
// random running nodes until stopped, and sums the deltas by outcome.
type counterLoad struct {
	acked, unknown atomic.Int64 // sums of deltas
	ackedOps       atomic.Int64
	unknownOps     atomic.Int64
	stop           chan struct{}
	wg             sync.WaitGroup
}

func (r *rcluster) startCounterLoad(clients int, seed uint64) *counterLoad {
	l := &counterLoad{stop: make(chan struct{})}
	for cl := 0; cl < clients; cl++ {
		l.wg.Add(1)
		go func(cl int) {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(cl)))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				id := r.ids[rng.IntN(len(r.ids))]
				delta := int64(1 + rng.IntN(9))
				cmd := fmt.Sprintf(`{"op":"add","delta":%d}`, delta)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var tr metadata.MD
				_, err := r.client(id).Apply(ctx, &apiv1.ApplyRequest{Command: []byte(cmd)}, grpc.Trailer(&tr))
				cancel()
				switch {
				case err == nil:
					l.acked.Add(delta)
					l.ackedOps.Add(1)
				case server.IsNotApplied(tr):
					time.Sleep(10 * time.Millisecond)
				default:
					// Sent, outcome unknown: it may or may not count.
					l.unknown.Add(delta)
					l.unknownOps.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}(cl)
	}
	return l
}

func (l *counterLoad) close() {
	close(l.stop)
	l.wg.Wait()
}

// waitAcked waits until at least n more adds are acknowledged.
func (l *counterLoad) waitAcked(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	want := l.ackedOps.Load() + n
	waitFor(t, d, func() (bool, string) {
		got := l.ackedOps.Load()
		return got >= want, fmt.Sprintf("%d adds acknowledged, want %d (cluster not serving?)", got, want)
	})
}

// counterValue is node id's local counter value.
func (r *rcluster) counterValue(id uint64) int64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.query(ctx, id, `{"op":"get"}`, true)
	if err != nil {
		r.t.Fatalf("counter get on node %d: %v", id, err)
	}
	var v struct{ Value int64 }
	if err := json.Unmarshal([]byte(res), &v); err != nil {
		r.t.Fatalf("counter get result %q: %v", res, err)
	}
	return v.Value
}

// Issue 6, test 3: kill -9 the plugin process of a follower five times,
// then of the leader five times, under load. After each kill the node
// starts a new plugin (a different pid), applies past the index it had,
// and the cluster keeps acknowledging adds. At the end every replica has
// the same counter value, which equals the sum of acknowledged adds plus
// some subset of the adds whose outcome was unknown: acked <= value <=
// acked + unknown. A double application of an acknowledged add would push
// it above (unless hidden by as many unknown adds).
func TestRecoveryPluginKill(t *testing.T) {
	needPlugin(t, bin("raftd-fsm-counter"))
	r := newRCluster(t, rclusterOpts{n: 3, fsm: bin("raftd-fsm-counter"),
		extra: []string{"--snapshot-entries", "500", "--snapshot-trailing", "200"}})
	load := r.startCounterLoad(16, 6)
	defer func() {
		select {
		case <-load.stop:
		default:
			load.close()
		}
	}()
	load.waitAcked(t, 300, 30*time.Second)

	kills := 5
	if soak() {
		kills = 20
	}
	for _, role := range []string{"follower", "leader"} {
		for k := 0; k < kills; k++ {
			lead := r.leader()
			target := lead
			if role == "follower" {
				target = r.ids[(int(lead)+k)%len(r.ids)] // never lead: ids are 1..3
				if target == lead {
					target = r.ids[(int(lead)+k+1)%len(r.ids)]
				}
			}
			old := r.pluginPID(target)
			if old == 0 {
				t.Fatalf("%s %d: no plugin process found (children of pid %d: %v)", role, target, r.pid(target), childPIDs(r.pid(target)))
			}
			at := r.mustStatus(target).GetAppliedIndex()
			killPID(t, old)
			killed := time.Now()
			nu := r.waitPluginPID(target, old, 20*time.Second)
			waitFor(t, 30*time.Second, func() (bool, string) {
				st, err := r.localStatus(target, time.Second)
				if err != nil {
					return false, fmt.Sprintf("node %d: %v", target, err)
				}
				return st.GetAppliedIndex() > at+50, fmt.Sprintf("node %d applied %d, had %d before its plugin was killed", target, st.GetAppliedIndex(), at)
			})
			load.waitAcked(t, 100, 30*time.Second)
			t.Logf("%s %d: plugin %d killed at applied index %d; new plugin %d; applying and serving again after %s",
				role, target, old, at, nu, time.Since(killed).Round(time.Millisecond))
			if r.pid(target) == 0 {
				t.Fatalf("node %d exited after its plugin was killed: %v", target, r.exitErr(target))
			}
		}
	}
	load.close()
	idx := r.waitConverged(r.ids, 0, 60*time.Second)
	acked, unknown := load.acked.Load(), load.unknown.Load()
	var vals []string
	want := r.counterValue(r.ids[0])
	for _, id := range r.ids {
		v := r.counterValue(id)
		vals = append(vals, fmt.Sprintf("node %d: %d", id, v))
		if v != want {
			t.Errorf("replicas differ at applied index %d: %s", idx, strings.Join(vals, ", "))
		}
	}
	t.Logf("applied index %d; %d adds acknowledged (sum %d), %d unknown (sum %d); values %s",
		idx, load.ackedOps.Load(), acked, load.unknownOps.Load(), unknown, strings.Join(vals, ", "))
	if want < acked || want > acked+unknown {
		t.Fatalf("counter value %d outside [acked %d, acked+unknown %d]: an add was lost or applied twice", want, acked, acked+unknown)
	}
}

// misbehaveBin builds plugin/testdata/misbehave into a temp dir of t.
func misbehaveBin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "misbehave")
	cmd := exec.Command("go", "build", "-o", out, "./plugin/testdata/misbehave")
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build misbehave: %v\n%s", err, b)
	}
	return out
}
