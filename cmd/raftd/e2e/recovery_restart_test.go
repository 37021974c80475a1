package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRestartSpeed (RAFTD_SOAK=1) measures the restart of a node that
// holds RAFTD_RESTART_MB MiB of kv state (default 1024, 512 KiB values)
// in a snapshot, followed by RAFTD_RESTART_TAIL small puts in its log
// (default 1000). The node is a single voter with the default
// --snapshot-trailing (5000), so its log also still holds the entries the
// snapshot covers; RAFTD_RESTART_TRAILING=10 compacts them away (as a
// follower that caught up through a snapshot has them).
//
// It restarts the node RAFTD_RESTART_RUNS times (default 4) and reports,
// for each, the time from process start until it answers a status call
// with its applied index back where it was, and the phases from its log:
// storage open (Pebble, the log check, the snapshot files), plugin start,
// restore of the snapshot into the plugin, raft start and log replay,
// election and API. Then the time to read the snapshot file through the
// page cache (as `cat` does) and bypassing it (O_DIRECT, as a cold read).
//
// RAFTD_RESTART_BINS=dirA,dirB alternates the restarts between two builds
// (raftd and raftd-fsm-kv of each) on the same data dir, for a
// before/after comparison. RAFTD_MEASURE_LOCK=/tmp/raftd-measure.lock
// holds a shared flock on that file for the whole test, turned exclusive
// around each timed restart and read (do not run the test under flock(1)
// as well: its lock would block the exclusive one).
// RAFTD_RESTART_DIR keeps the data dir there and reuses it if it holds one.
//
//	RAFTD_SOAK=1 RAFTD_BIN=$PWD/bin RAFTD_MEASURE_LOCK=/tmp/raftd-measure.lock \
//	  go test -count=1 -timeout 60m -run TestRestartSpeed -v ./cmd/raftd/e2e
func TestRestartSpeed(t *testing.T) {
	if !soak() {
		t.Skip("writes about 2 GiB; RAFTD_SOAK=1")
	}
	mb := envInt(t, "RAFTD_RESTART_MB", 1024)
	tail := envInt(t, "RAFTD_RESTART_TAIL", 1000)
	runs := envInt(t, "RAFTD_RESTART_RUNS", 4)
	const valueBytes = 512 << 10
	puts := mb * 2
	bins := []string{binDir}
	if s := os.Getenv("RAFTD_RESTART_BINS"); s != "" {
		bins = strings.Split(s, ",")
	}
	extra := []string{"--snapshot-entries", fmt.Sprint(puts)}
	if s := os.Getenv("RAFTD_RESTART_TRAILING"); s != "" {
		extra = append(extra, "--snapshot-trailing", s)
	}

	lock := newMeasureLocker(t)
	root := os.Getenv("RAFTD_RESTART_DIR")
	if root == "" {
		root = t.TempDir()
	}
	dataDir := filepath.Join(root, "n1")
	c := &cluster{t: t, nodes: map[uint64]*proc{}, conns: map[string]*grpc.ClientConn{}}
	r := &rcluster{cluster: c}
	p := &proc{id: 1, dataDir: dataDir, logPath: filepath.Join(root, "n1.log")}
	c.nodes[1], c.ids = p, []uint64{1}
	t.Cleanup(c.cleanup)
	setArgs := func(bin string) {
		p.apiAddr, p.raftAddr = freeAddr(t), freeAddr(t)
		p.exe = filepath.Join(bin, "raftd")
		p.args = append([]string{"run", "--fsm", filepath.Join(bin, "raftd-fsm-kv"), "--id", "1", "--data-dir", dataDir,
			"--raft-addr", p.raftAddr, "--api-addr", p.apiAddr, "--log-level", "info"}, extra...)
	}

	var idx uint64
	if _, err := os.Stat(filepath.Join(root, "applied")); err == nil {
		b, _ := os.ReadFile(filepath.Join(root, "applied"))
		idx, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		t.Logf("reusing the data dir %s (applied index %d)", dataDir, idx)
	} else {
		setArgs(bins[0])
		c.start(1)
		c.waitLeader(30*time.Second, 0)
		start := time.Now()
		r.putLoad(puts, 8, 30*time.Minute, func() uint64 { return 1 }, func(i int) []byte {
			return kvPut(fmt.Sprintf("k%06d", i), bigValue(i, valueBytes))
		})
		t.Logf("wrote %d MiB (%d puts of %d KiB) in %s", mb, puts, valueBytes>>10, time.Since(start).Round(time.Millisecond))
		waitFor(t, 10*time.Minute, func() (bool, string) {
			st, err := r.localStatus(1, 2*time.Second)
			if err == nil && st.GetSnapshotIndex() > 0 {
				return true, ""
			}
			r.mustApply(1, string(kvPut("tick", time.Now().String())), 30*time.Second)
			return false, fmt.Sprintf("no snapshot yet: %v", err)
		})
		r.putLoad(tail, 8, 10*time.Minute, func() uint64 { return 1 }, func(i int) []byte {
			return kvPut(fmt.Sprintf("t%06d", i), fmt.Sprintf("value-%06d-%040d", i, i))
		})
		st := r.mustStatus(1)
		idx = st.GetAppliedIndex()
		if err := r.stop(1); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := os.WriteFile(filepath.Join(root, "applied"), []byte(fmt.Sprint(idx)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snaps, _ := snapFiles(dataDir)
	if len(snaps) == 0 {
		t.Fatalf("no snapshot file in %s", dataDir)
	}
	snapPath := snaps[len(snaps)-1]
	fi, err := os.Stat(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("data dir: snapshot %s (%.1f MiB), log/ %.1f MiB, applied index %d", filepath.Base(snapPath), mib(fi.Size()),
		mib(dirSize(filepath.Join(dataDir, "log"))), idx)

	for i := 0; i < runs; i++ {
		bin := bins[i%len(bins)]
		setArgs(bin)
		func() {
			defer lock.exclusive(t)()
			load := loadAvg()
			t0 := time.Now()
			c.start(1)
			served := waitServing(t, p.apiAddr, idx, 10*time.Minute)
			el := served.Sub(t0)
			t.Logf("RESTART %d (%s): serving at applied index %d after %s (load %s)", i+1, bin, idx, el.Round(time.Millisecond), load)
			t.Logf("RESTART %d phases: %s", i+1, r.restartPhases(1, t0))
			if err := r.stop(1); err != nil {
				t.Fatalf("stop: %v", err)
			}
		}()
	}

	unlock := lock.exclusive(t)
	warm := readFile(t, snapPath)
	direct, derr := readDirect(snapPath)
	unlock()
	if derr != nil {
		t.Logf("READ %s: through the page cache %s (%.0f MB/s); O_DIRECT: %v", filepath.Base(snapPath), warm.Round(time.Millisecond),
			float64(fi.Size())/1e6/warm.Seconds(), derr)
	} else {
		t.Logf("READ %s: through the page cache %s (%.0f MB/s); bypassing it (O_DIRECT, 4 MiB reads) %s (%.0f MB/s)", filepath.Base(snapPath),
			warm.Round(time.Millisecond), float64(fi.Size())/1e6/warm.Seconds(), direct.Round(time.Millisecond), float64(fi.Size())/1e6/direct.Seconds())
	}
}

// envInt reads a positive integer from the environment, def if unset.
func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q is not a non-negative integer", name, s)
	}
	return v
}

// measureLocker holds a shared flock on $RAFTD_MEASURE_LOCK, if set, for
// the whole test (a heavy run), and turns it exclusive for measurements.
type measureLocker struct{ f *os.File }

func newMeasureLocker(t *testing.T) *measureLocker {
	path := os.Getenv("RAFTD_MEASURE_LOCK")
	if path == "" {
		return &measureLocker{}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		t.Fatalf("measure lock: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	m := &measureLocker{f: f}
	m.flock(t, syscall.LOCK_SH)
	return m
}

func (m *measureLocker) flock(t *testing.T, how int) {
	if m.f == nil {
		return
	}
	if err := syscall.Flock(int(m.f.Fd()), how); err != nil {
		t.Fatalf("measure lock: %v", err)
	}
}

// exclusive turns the lock exclusive and returns the turn back to shared.
func (m *measureLocker) exclusive(t *testing.T) func() {
	m.flock(t, syscall.LOCK_EX)
	return func() { m.flock(t, syscall.LOCK_SH) }
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// waitServing polls addr with a fresh connection each time (a reused one
// would wait out gRPC's reconnect backoff) until its local status shows
// applied index idx, and returns when it did.
func waitServing(t *testing.T, addr string, idx uint64, d time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := apiv1.NewRaftdClient(cc).Status(ctx, &apiv1.StatusRequest{Local: true})
		now := time.Now()
		cancel()
		cc.Close()
		if err == nil && len(resp.GetNodes()) == 1 && resp.GetNodes()[0].GetAppliedIndex() >= idx {
			return now
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("node at %s not serving at index %d within %s: %v", addr, idx, d, last)
	return time.Time{}
}

// restartPhases describes the phases of node id's last start from its log,
// as offsets from t0 (the process start).
func (r *rcluster) restartPhases(id uint64, t0 time.Time) string {
	marks := []struct{ name, substr string }{
		{"first log line", "storage: pebble:"},
		{"storage opened", "storage: opened"},
		{"plugin started, restore begins", "restoring the state machine"},
		{"log checked", "storage: log checked"},
		{"restored", "restored the state machine"},
		{"raft started", fmt.Sprintf("raft: %x starting:", id)},
		{"leader", "became leader"},
		{"serving", "serving node="},
	}
	type mark struct {
		name string
		at   time.Time
	}
	var found []mark
	for _, m := range marks {
		if at, ok := r.logTime(id, m.substr); ok {
			found = append(found, mark{m.name, at})
		}
	}
	slices.SortStableFunc(found, func(a, b mark) int { return a.at.Compare(b.at) })
	var b strings.Builder
	prev := t0
	for _, m := range found {
		fmt.Fprintf(&b, "%s +%s (at %s); ", m.name, m.at.Sub(prev).Round(time.Millisecond), m.at.Sub(t0).Round(time.Millisecond))
		prev = m.at
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// readFile reads path through the page cache, like cat > /dev/null.
func readFile(t *testing.T, path string) time.Duration {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		t.Fatal(err)
	}
	return time.Since(t0)
}

// readDirect reads path with O_DIRECT (dd iflag=direct), past the page
// cache: the time a cold read takes, where dropping the caches is not
// possible.
func readDirect(path string) (time.Duration, error) {
	t0 := time.Now()
	out, err := exec.Command("dd", "if="+path, "of=/dev/null", "bs=4M", "iflag=direct").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("dd: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return time.Since(t0), nil
}
