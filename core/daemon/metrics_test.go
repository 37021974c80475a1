package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fakeMetricsNode is a metricsNode with a settable status. With block set,
// Status waits for its context, like a node whose loop does not answer.
type fakeMetricsNode struct {
	mu      sync.Mutex
	st      node.Status
	m       node.Metrics
	block   bool
	calls   int
	ready   chan struct{}
	done    chan struct{}
	doneErr error
}

func newFakeMetricsNode() *fakeMetricsNode {
	return &fakeMetricsNode{ready: make(chan struct{}), done: make(chan struct{})}
}

func (f *fakeMetricsNode) Status(ctx context.Context) (node.Status, error) {
	f.mu.Lock()
	st, block := f.st, f.block
	f.calls++
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return node.Status{}, ctx.Err()
	}
	return st, nil
}

func (f *fakeMetricsNode) Metrics() node.Metrics {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m
}
func (f *fakeMetricsNode) Ready() <-chan struct{} { return f.ready }
func (f *fakeMetricsNode) Done() <-chan struct{}  { return f.done }
func (f *fakeMetricsNode) Err() error             { return f.doneErr }
func (f *fakeMetricsNode) Halted() *node.Halt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.Halted
}

// startMetrics serves a metricsServer for n on a free loopback port and
// returns its base URL.
func startMetrics(t *testing.T, n metricsNode, extra ...prometheus.Collector) (*metricsServer, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := newMetricsServer(l, n, nil, true, extra...)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	ms.Start()
	t.Cleanup(func() { ms.Close() })
	return ms, "http://" + ms.Addr()
}

// httpGet fetches url with a deadline; a hung endpoint fails the test.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// parseMetrics reads Prometheus text format into "name{labels}" -> value.
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func leaderStatus() node.Status {
	return node.Status{
		ID: 1, Role: "leader", Term: 4, Lead: 1, Commit: 9, Applied: 8, LastIndex: 10, SnapshotIndex: 5,
		FSM: node.FSMInfo{Name: "kv"}, FSMVersion: 2, Ready: true,
		Members:         []node.Member{{Peer: node.Peer{ID: 1}}, {Peer: node.Peer{ID: 2}}, {Peer: node.Peer{ID: 3}, Learner: true}},
		Progress:        map[uint64]node.Progress{1: {Match: 10}, 2: {Match: 7}, 3: {Match: 3}},
		SendingSnapshot: []uint64{3},
	}
}

// TestMetricsScrape checks that /metrics carries the node's status and
// counters under their raftd_* names, the Go and process collectors, and
// extra collectors passed in (the transport's, in raftd run).
func TestMetricsScrape(t *testing.T) {
	f := newFakeMetricsNode()
	f.st = leaderStatus()
	f.m = node.Metrics{Proposals: 11, CommandsApplied: 6, ApplyBatches: 3, Syncs: 2, StateMachineRestarts: 1}
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "raftd_test_extra_total", Help: "extra"})
	extra.Add(3)
	_, base := startMetrics(t, f, extra)

	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", code, body)
	}
	got := parseMetrics(t, body)
	want := map[string]float64{
		"raftd_term": 4, "raftd_commit_index": 9, "raftd_applied_index": 8, "raftd_last_index": 10,
		"raftd_snapshot_index": 5, "raftd_is_leader": 1, "raftd_leader_id": 1, "raftd_ready": 1, "raftd_fsm_version": 2,
		`raftd_role{role="leader"}`: 1, `raftd_role{role="follower"}`: 0, `raftd_role{role="stopped"}`: 0,
		`raftd_members{kind="voter"}`: 2, `raftd_members{kind="learner"}`: 1,
		`raftd_follower_match_index{peer="2"}`: 7, `raftd_follower_match_index{peer="3"}`: 3,
		"raftd_sending_snapshots": 1, `raftd_node_info{fsm="kv",node_id="1"}`: 1,
		"raftd_proposals_total": 11, "raftd_commands_applied_total": 6, "raftd_apply_batches_total": 3,
		"raftd_storage_syncs_total": 2, "raftd_fsm_restarts_total": 1, "raftd_reads_total": 0,
		"raftd_test_extra_total": 3, "raftd_apply_halted": 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for _, k := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from /metrics", k)
		}
	}

	// A follower: not leader, no leader-only series, role follows.
	f.mu.Lock()
	f.st.Role, f.st.Lead, f.st.Progress, f.st.SendingSnapshot = "follower", 2, nil, nil
	f.mu.Unlock()
	_, body = httpGet(t, base+"/metrics")
	got = parseMetrics(t, body)
	if got["raftd_is_leader"] != 0 || got["raftd_leader_id"] != 2 || got[`raftd_role{role="follower"}`] != 1 || got[`raftd_role{role="leader"}`] != 0 {
		t.Errorf("follower: is_leader %v, leader_id %v, role follower %v, role leader %v",
			got["raftd_is_leader"], got["raftd_leader_id"], got[`raftd_role{role="follower"}`], got[`raftd_role{role="leader"}`])
	}
	if _, ok := got[`raftd_follower_match_index{peer="2"}`]; ok {
		t.Errorf("follower exposes leader-only raftd_follower_match_index")
	}

	// Halted: the gauge names the index.
	f.mu.Lock()
	f.st.Halted = &node.Halt{Index: 77, Reason: "panic"}
	f.mu.Unlock()
	_, body = httpGet(t, base+"/metrics")
	if got = parseMetrics(t, body); got["raftd_apply_halted"] != 77 {
		t.Errorf("raftd_apply_halted = %v, want 77", got["raftd_apply_halted"])
	}
}

// TestMetricsScrapeStatusTimeout checks that a node whose loop does not
// answer delays a scrape by at most metricsStatusTimeout (plus slack), and
// that the counters, which need no loop, are still served.
func TestMetricsScrapeStatusTimeout(t *testing.T) {
	f := newFakeMetricsNode()
	f.block = true
	f.m = node.Metrics{CommandsApplied: 42}
	_, base := startMetrics(t, f)
	t0 := time.Now()
	_, body := httpGet(t, base+"/metrics")
	if d := time.Since(t0); d > metricsStatusTimeout+3*time.Second {
		t.Fatalf("scrape took %s with a blocked status (budget %s)", d, metricsStatusTimeout)
	}
	got := parseMetrics(t, body)
	if got["raftd_commands_applied_total"] != 42 {
		t.Errorf("raftd_commands_applied_total = %v, want 42 (counters must not depend on the loop)", got["raftd_commands_applied_total"])
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Errorf("go_goroutines missing: a blocked status must not cost the other collectors")
	}
	if _, ok := got["raftd_applied_index"]; ok {
		t.Errorf("raftd_applied_index served without a status")
	}
	f.mu.Lock()
	calls := f.calls
	f.mu.Unlock()
	if calls == 0 {
		t.Fatalf("Status was never asked")
	}
}

// TestHealthz walks /healthz through a node's life: starting (replay),
// serving, stopping, and stopped with and without a failure. Every answer
// is one line.
func TestHealthz(t *testing.T) {
	check := func(base string, wantCode int, wantPrefix string) {
		t.Helper()
		code, body := httpGet(t, base+"/healthz")
		if code != wantCode || !strings.HasPrefix(body, wantPrefix) || strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
			t.Errorf("/healthz: %d %q, want %d and one line starting %q", code, body, wantCode, wantPrefix)
		}
	}
	f := newFakeMetricsNode()
	ms, base := startMetrics(t, f)
	check(base, http.StatusServiceUnavailable, "starting")
	close(f.ready)
	check(base, http.StatusOK, "ok")
	f.mu.Lock()
	f.st.Halted = &node.Halt{Index: 9, Reason: "state machine \"kv\" failed\nmore"}
	f.mu.Unlock()
	check(base, http.StatusServiceUnavailable, `halted: apply halted at index 9 (raftd status; raftd fsm skip 9): state machine "kv" failed`)
	f.mu.Lock()
	f.st.Halted = nil
	f.mu.Unlock()
	ms.SetStopping()
	check(base, http.StatusServiceUnavailable, "stopping")

	f2 := newFakeMetricsNode()
	close(f2.ready)
	f2.doneErr = errors.New("node 1: storage: save [5,6]: disk on fire\nsecond line")
	close(f2.done)
	_, base2 := startMetrics(t, f2)
	check(base2, http.StatusServiceUnavailable, "failed: node 1: storage: save [5,6]: disk on fire")

	f3 := newFakeMetricsNode()
	close(f3.ready)
	close(f3.done)
	_, base3 := startMetrics(t, f3)
	check(base3, http.StatusServiceUnavailable, "stopped")
}

// TestPprofAndClose checks the pprof index and a profile on the private
// mux, and that Close stops serving and may be called again.
func TestPprofAndClose(t *testing.T) {
	f := newFakeMetricsNode()
	ms, base := startMetrics(t, f)
	code, body := httpGet(t, base+"/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d %.200q", code, body)
	}
	code, body = httpGet(t, base+"/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine: %d %.200q", code, body)
	}
	if code, _ := httpGet(t, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("/nope: %d, want 404", code)
	}
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("/healthz answered %d after Close", resp.StatusCode)
	}
}

// kvPlugin returns the kv plugin binary: $RAFTD_BIN/raftd-fsm-kv (make
// test), else one built into a temporary directory.
func kvPlugin(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("RAFTD_BIN"); d != "" {
		if p := filepath.Join(d, "raftd-fsm-kv"); fileExists(p) {
			return p
		}
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "github.com/raftd/raftd/cmd/raftd-fsm-kv").CombinedOutput()
	if err != nil {
		t.Fatalf("building raftd-fsm-kv: %v\n%s", err, out)
	}
	return filepath.Join(dir, "raftd-fsm-kv")
}

// loopbackListener listens on a free loopback port.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// singleNodeConfig is the configuration of a fast single node in dir.
func singleNodeConfig(plugin, dir string, raftLis, apiLis net.Listener, metricsAddr string) Config {
	return Config{FSMPath: plugin, ID: 1, DataDir: dir, RaftListener: raftLis, APIListener: apiLis,
		HeartbeatInterval: 50 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, NoSync: true,
		MetricsAddr: metricsAddr}
}

// apply applies cmd through the client API at addr.
func apply(t *testing.T, addr, cmd string) *apiv1.ApplyResponse {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := apiv1.NewRaftdClient(cc).Apply(ctx, &apiv1.ApplyRequest{Command: []byte(cmd)})
	if err != nil {
		t.Fatalf("apply %s: %v", cmd, err)
	}
	return resp
}

// TestStartMetrics runs a real single node in process with the
// endpoint on: the gauges follow an apply, and stopping the node closes
// the endpoint (the process is still alive, so only Stop can have closed
// it).
func TestStartMetrics(t *testing.T) {
	plugin := kvPlugin(t)
	ml := loopbackListener(t)
	maddr := ml.Addr().String()
	ml.Close()
	cfg := singleNodeConfig(plugin, t.TempDir(), loopbackListener(t), loopbackListener(t), maddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	base := "http://" + maddr
	// waitMetrics polls /metrics until cond holds or 10 s pass.
	waitMetrics := func(what string, cond func(map[string]float64) bool) map[string]float64 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, body := httpGet(t, base+"/metrics")
			m := parseMetrics(t, body)
			if cond(m) {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; is_leader %v applied %v commands %v", what,
					m["raftd_is_leader"], m["raftd_applied_index"], m["raftd_commands_applied_total"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	m := waitMetrics("single node leads", func(m map[string]float64) bool { return m["raftd_is_leader"] == 1 })
	before := m["raftd_applied_index"]
	if _, ok := m["raftd_transport_messages_sent_total"]; !ok {
		t.Errorf("raftd_transport_messages_sent_total missing: transport collector not registered")
	}
	if r := apply(t, d.APIAddr(), `{"op":"put","key":"a","value":"1"}`); string(r.Result) != `{"ok":true}` {
		t.Fatalf("apply: result %q", r.Result)
	}
	m = waitMetrics("apply shows", func(m map[string]float64) bool { return m["raftd_commands_applied_total"] == 1 })
	if m["raftd_applied_index"] < before+1 || m["raftd_commit_index"] < m["raftd_applied_index"] {
		t.Errorf("after one apply: applied %v (before %v), commit %v", m["raftd_applied_index"], before, m["raftd_commit_index"])
	}
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}

	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("/healthz answered %d after Stop", resp.StatusCode)
	}
}

// TestStartMetricsAddrInUse: a taken metrics address fails the start
// with the listeners' one-line error, and leaves nothing bound.
func TestStartMetricsAddrInUse(t *testing.T) {
	busy := loopbackListener(t)
	defer busy.Close()
	raftLis := loopbackListener(t)
	raftAddr := raftLis.Addr().String()
	_, err := Start(context.Background(), singleNodeConfig(kvPlugin(t), t.TempDir(), raftLis, loopbackListener(t), busy.Addr().String()))
	want := "metrics address (--metrics-addr) " + busy.Addr().String() + " is already in use"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start with a taken metrics address: %v, want one line with %q", err, want)
	}
	l, err := net.Listen("tcp", raftAddr)
	if err != nil {
		t.Fatalf("raft listener left open after a failed start: %v", err)
	}
	l.Close()
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
