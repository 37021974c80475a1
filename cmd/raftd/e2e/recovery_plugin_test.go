package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
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
				if r.pid(id) == 0 {
					continue // down: another node takes it
				}
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
				case server.IsNotApplied(tr), strings.Contains(err.Error(), "connection refused"):
					// Refused, or never sent (the node went down).
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

// hangWatchdog is the plugin Apply watchdog (--plugin-apply-timeout) of the
// hang tests: short so that they take seconds, not the default 30 s, yet
// far above the longest legitimate Apply batch of the kv FSM on a loaded
// machine.
const hangWatchdog = 3 * time.Second

// hangCluster starts three nodes running the misbehave plugin (the kv FSM
// plus {"op":"hang"}) with an Apply watchdog of hangWatchdog, each with its
// own MISBEHAVE_ONCE_FILE, and returns a follower; only that follower's
// plugin will hang (the others' files are created up front). With once
// false the follower has no once file: its plugin hangs on every attempt.
func hangCluster(t *testing.T, once bool) (*rcluster, uint64, map[uint64]string) {
	plug := misbehaveBin(t)
	dir := t.TempDir()
	files := map[uint64]string{}
	env := map[uint64][]string{}
	for id := uint64(1); id <= 3; id++ {
		files[id] = filepath.Join(dir, fmt.Sprintf("once-%d", id))
		env[id] = []string{"MISBEHAVE_ONCE_FILE=" + files[id]}
	}
	r := newRCluster(t, rclusterOpts{n: 3, fsm: plug, env: env,
		extra: []string{"--snapshot-entries", "200", "--snapshot-trailing", "50",
			"--plugin-apply-timeout", hangWatchdog.String()}})
	lead := r.leader()
	f := lead%3 + 1
	for id, p := range files {
		if id != f {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !once {
		// Restart the follower without a once file.
		r.kill(f)
		r.nodes[f].env = nil
		r.start(f)
		r.waitConverged(r.ids, 0, 30*time.Second)
	}
	return r, f, files
}

// Issue 6, test 5: a plugin that hangs in Apply is detected by the host's
// Apply watchdog (--plugin-apply-timeout, hangWatchdog here) and
// restarted; the node restores, replays (the hang is not repeated: the
// plugin's once file exists), catches up and agrees with the others. While
// the plugin hangs, the follower applies nothing past the hang and the
// cluster keeps acknowledging writes.
func TestRecoveryPluginHang(t *testing.T) {
	r, f, files := hangCluster(t, true)
	for i := 0; i < 300; i++ {
		r.mustApply(r.ids[i%3], string(kvPut(fmt.Sprintf("k0%05d", i), "before")), 10*time.Second)
	}
	lead := r.leader()
	old := r.pluginPID(f)
	before := r.mustStatus(f).GetAppliedIndex()
	if res := r.mustApply(lead, `{"op":"hang"}`, 10*time.Second); res != `{"ok":true}` {
		t.Fatalf("hang via the leader: %s", res)
	}
	hangAt := r.mustStatus(lead).GetAppliedIndex()
	sent := time.Now()
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, err := os.Stat(files[f])
		return err == nil, fmt.Sprintf("node %d's plugin has not reached the hang: %v", f, err)
	})
	// From here until the watchdog replaces the old plugin, the follower
	// must be stuck before the hang (applying past it would be a skipped
	// entry). The plugin pid is read after the status: if the old plugin
	// still runs then, the status was taken while it hung.
	stuckChecks, ackedWhileHung := 0, 0
	checkStuck := func() {
		st := r.mustStatus(f)
		if r.pluginPID(f) != old {
			return // replaced meanwhile: the status proves nothing
		}
		stuckChecks++
		if st.GetAppliedIndex() >= hangAt {
			t.Fatalf("node %d applied %d, past the hang at <= %d, while its plugin hangs", f, st.GetAppliedIndex(), hangAt)
		}
	}
	checkStuck()
	// Writes go on while the follower's plugin hangs.
	for i := 0; i < 300; i++ {
		r.mustApply(lead, string(kvPut(fmt.Sprintf("k1%05d", i), "during")), 10*time.Second)
		if r.pluginPID(f) == old {
			ackedWhileHung++
		}
		if i%20 == 0 {
			checkStuck()
		}
	}
	if stuckChecks == 0 || ackedWhileHung == 0 {
		t.Fatalf("the %s watchdog replaced node %d's plugin before the test saw it hang (%d status checks, %d writes acknowledged while it hung): machine stalled for seconds?",
			hangWatchdog, f, stuckChecks, ackedWhileHung)
	}
	// Well before the host's default watchdog (30 s): --plugin-apply-timeout
	// must reach the plugin host.
	nu := r.waitPluginPID(f, old, hangWatchdog+15*time.Second)
	t.Logf("node %d: plugin %d hung at an index in (%d,%d]; %d writes acknowledged and %d stuck checks while it hung; replaced by %d after %s (watchdog %s)",
		f, old, before, hangAt, ackedWhileHung, stuckChecks, nu, time.Since(sent).Round(time.Millisecond), hangWatchdog)
	if log := r.logSince(f); !strings.Contains(log, "plugin broken") || !strings.Contains(log, "hung") {
		t.Errorf("node %d's log does not report the hung plugin", f)
	}
	idx := r.waitConverged(r.ids, hangAt+300, 60*time.Second)
	if r.pid(f) == 0 {
		t.Fatalf("node %d exited: %v", f, r.exitErr(f))
	}
	want := r.staleList(lead)
	if got := r.staleList(f); got != want {
		t.Fatalf("node %d's state differs from leader %d's at applied index %d", f, lead, idx)
	}
	if n := len(kvItems(t, want)); n != 600 {
		t.Fatalf("leader lists %d items, want 600", n)
	}
}

// The other side of test 5: a plugin that hangs in Apply on every attempt
// (on one node only) is restarted, the node restores and replays, it hangs
// again; after the restarts the node halts apply at the hang's index
// instead of fail-stopping: it keeps running, status shows the halt, and
// the rest of the cluster keeps serving. `raftd fsm skip` then resumes it
// (the other nodes applied the command and ignore the skip), and it
// catches up and agrees with the others. It waits out five hangWatchdog
// rounds.
func TestRecoveryPluginHangHalts(t *testing.T) {
	r, f, _ := hangCluster(t, false)
	lead := r.leader()
	before := r.mustStatus(f).GetAppliedIndex()
	if res := r.mustApply(lead, `{"op":"hang"}`, 10*time.Second); res != `{"ok":true}` {
		t.Fatalf("hang via the leader: %s", res)
	}
	hangAt := r.mustStatus(lead).GetAppliedIndex()
	sent := time.Now()
	var halt uint64
	waitFor(t, 5*hangWatchdog+90*time.Second, func() (bool, string) {
		if r.pid(f) == 0 {
			t.Fatalf("node %d exited: %v\n%s", f, r.exitErr(f), lastLines(r.logSince(f), 5))
		}
		st, err := r.localStatus(f, time.Second)
		if err != nil || st.GetHalted() == nil {
			return false, fmt.Sprintf("node %d not halted: %v", f, err)
		}
		halt = st.GetHalted().GetIndex()
		return true, ""
	})
	t.Logf("node %d halted at %d after %s: %s", f, halt, time.Since(sent).Round(time.Second), r.mustStatus(f).GetHalted().GetReason())
	if halt <= before || halt > hangAt {
		t.Fatalf("node %d halted at %d, not at the hang's index in (%d,%d]", f, halt, before, hangAt)
	}
	if st := r.mustStatus(f); st.GetAppliedIndex() != halt-1 || !strings.Contains(st.GetHalted().GetReason(), "hung") {
		t.Fatalf("node %d: applied %d, halt reason %q; want applied %d and the watchdog named", f, st.GetAppliedIndex(), st.GetHalted().GetReason(), halt-1)
	}
	others := []uint64{}
	for _, id := range r.ids {
		if id != f {
			others = append(others, id)
		}
	}
	r.mustApply(others[0], string(kvPut("after", "halt")), 10*time.Second)
	r.waitConverged(others, hangAt+1, 20*time.Second)
	code, out, errOut := raftd(t, nil, "fsm", "skip", "--addr", r.nodes[lead].apiAddr, fmt.Sprint(halt))
	if code != 0 || !strings.Contains(out, "the leader was not halted there") {
		t.Fatalf("fsm skip %d: exit %d, %q %q", halt, code, out, errOut)
	}
	idx := r.waitConverged(r.ids, hangAt+2, 30*time.Second)
	if h := r.mustStatus(f).GetHalted(); h != nil {
		t.Fatalf("node %d still halted after the skip: %v", f, h)
	}
	if got, want := r.staleList(f), r.staleList(lead); got != want {
		t.Fatalf("node %d's state differs from leader %d's at applied index %d", f, lead, idx)
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
