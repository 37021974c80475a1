package daemon

import (
	"context"
	"encoding/json"
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
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// fakeMetricsNode is a metricsNode with a settable status. With block set,
// Status waits for its context, like a node whose loop does not answer.
type fakeMetricsNode struct {
	mu      sync.Mutex
	st      node.Status
	m       node.Metrics
	lat     node.Latencies
	lead    uint64
	commit  uint64
	applied uint64
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
func (f *fakeMetricsNode) Latencies() node.Latencies {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lat
}
func (f *fakeMetricsNode) Leader() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lead
}
func (f *fakeMetricsNode) CommitIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commit
}
func (f *fakeMetricsNode) Applied() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// setProgress sets what readiness reads.
func (f *fakeMetricsNode) setProgress(lead, commit, applied uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lead, f.commit, f.applied = lead, commit, applied
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
	f.m = node.Metrics{Proposals: 11, CommandsApplied: 6, ApplyBatches: 3, Syncs: 2, StateMachineRestarts: 1, StateMachineReloads: 2, LeaderChanges: 4}
	f.m.Refused[node.RefusedTooLarge] = 2
	f.m.Refused[node.RefusedNoLeader] = 5
	// Three fsyncs: 1 ms, 3 ms, and one above the last bound.
	f.lat.StorageSync.Counts[4] = 1
	f.lat.StorageSync.Counts[6] = 1
	f.lat.StorageSync.Counts[len(node.HistogramBounds)] = 1
	f.lat.StorageSync.Sum = 10 * time.Minute
	f.lat.ReadStale.Counts[0] = 7
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "raftd_test_extra_total", Help: "extra"})
	extra.Add(3)
	ms, base := startMetrics(t, f, extra)
	ms.SetAPI(&fakeAPI{refused: map[string]uint64{"too_large": 1, "draining": 3}})

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
		"raftd_storage_syncs_total": 2, "raftd_fsm_restarts_total": 1, "raftd_fsm_reloads_total": 2, "raftd_reads_total": 0,
		"raftd_apply_halted":         0,
		"raftd_test_extra_total":     3,
		"raftd_leader_changes_total": 4,
		// The node's and the API server's refusals add up.
		`raftd_proposals_refused_total{reason="too_large"}`: 3, `raftd_proposals_refused_total{reason="no_leader"}`: 5,
		`raftd_proposals_refused_total{reason="draining"}`: 3, `raftd_proposals_refused_total{reason="backpressure"}`: 0,
		// Cumulative buckets in seconds.
		"raftd_storage_fsync_seconds_count": 3, "raftd_storage_fsync_seconds_sum": 600,
		`raftd_storage_fsync_seconds_bucket{le="0.0005"}`: 0, `raftd_storage_fsync_seconds_bucket{le="0.001"}`: 1,
		`raftd_storage_fsync_seconds_bucket{le="0.0025"}`: 1, `raftd_storage_fsync_seconds_bucket{le="0.005"}`: 2,
		`raftd_storage_fsync_seconds_bucket{le="300"}`: 2, `raftd_storage_fsync_seconds_bucket{le="+Inf"}`: 3,
		`raftd_read_seconds_count{consistency="stale"}`: 7, `raftd_read_seconds_count{consistency="linearizable"}`: 0,
		"raftd_proposal_commit_seconds_count": 0, "raftd_commit_apply_seconds_count": 0,
		"raftd_snapshot_create_seconds_count": 0, "raftd_snapshot_restore_seconds_count": 0,
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

// fakeAPI is an apiServer with a fixed answer.
type fakeAPI struct {
	st      *apiv1.StatusResponse
	err     error
	refused map[string]uint64
}

func (a *fakeAPI) Status(ctx context.Context, _ *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	return a.st, a.err
}
func (a *fakeAPI) Refused() map[string]uint64 { return a.refused }

// TestReadyz walks /readyz through the states readiness tells apart; the
// answer is one line, 200 only when ready.
func TestReadyz(t *testing.T) {
	f := newFakeMetricsNode()
	ms, base := startMetrics(t, f)
	ms.readyMaxLag = 100
	check := func(wantCode int, wantPrefix string) {
		t.Helper()
		code, body := httpGet(t, base+"/readyz")
		if code != wantCode || !strings.HasPrefix(body, wantPrefix) || strings.Count(body, "\n") != 1 {
			t.Errorf("/readyz: %d %q, want %d and one line starting %q", code, body, wantCode, wantPrefix)
		}
	}
	f.setProgress(2, 10, 3)
	check(http.StatusServiceUnavailable, "starting: replaying the log (applied 3, commit 10)")
	close(f.ready)
	check(http.StatusOK, "ok: leader 2, applied 3, commit 10")
	f.setProgress(0, 10, 10)
	check(http.StatusServiceUnavailable, "no leader known")
	f.setProgress(1, 1000, 900)
	check(http.StatusOK, "ok: leader 1, applied 900, commit 1000")
	f.setProgress(1, 1000, 899)
	check(http.StatusServiceUnavailable, "applied index 899 is 101 entries behind the commit index 1000 (bound 100)")
	f.setProgress(1, 1000, 1000)
	check(http.StatusOK, "ok")
	f.mu.Lock()
	f.st.Halted = &node.Halt{Index: 1001, Reason: "plugin panicked\nstack"}
	f.mu.Unlock()
	check(http.StatusServiceUnavailable, "apply halted at index 1001: plugin panicked")
	f.mu.Lock()
	f.st.Halted = nil
	f.mu.Unlock()
	check(http.StatusOK, "ok")
	ms.SetStopping()
	check(http.StatusServiceUnavailable, "stopping")

	f2 := newFakeMetricsNode()
	close(f2.ready)
	f2.setProgress(1, 5, 5)
	f2.doneErr = errors.New("node 1: storage: disk on fire\nmore")
	close(f2.done)
	_, base2 := startMetrics(t, f2)
	if code, body := httpGet(t, base2+"/readyz"); code != http.StatusServiceUnavailable || body != "failed: node 1: storage: disk on fire\n" {
		t.Errorf("/readyz of a failed node: %d %q", code, body)
	}
}

// TestHealthWatcher: the gRPC health service follows readiness on the
// fake clock, for the server as a whole and for the client API, and
// answers NOT_SERVING for good once stopped.
func TestHealthWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeMetricsNode()
		close(f.ready)
		f.setProgress(1, 5, 5)
		hw := startHealth(f, 100, 10*time.Millisecond)
		check := func(want healthpb.HealthCheckResponse_ServingStatus) {
			t.Helper()
			for _, svc := range []string{"", "raftd.api.v1.Raftd"} {
				resp, err := hw.hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || resp.GetStatus() != want {
					t.Errorf("Check(%q) = %v, %v; want %v", svc, resp.GetStatus(), err, want)
				}
			}
		}
		check(healthpb.HealthCheckResponse_SERVING)
		f.setProgress(0, 5, 5)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		check(healthpb.HealthCheckResponse_NOT_SERVING)
		f.setProgress(3, 6, 6)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		check(healthpb.HealthCheckResponse_SERVING)
		hw.stop()
		hw.stop()
		check(healthpb.HealthCheckResponse_NOT_SERVING)
	})
}

// TestStatusPage: / serves the page, /status.json the API server's status
// fan-out as protojson with every field present, and a one-line JSON
// error (503) before the API exists or when the status fails.
func TestStatusPage(t *testing.T) {
	f := newFakeMetricsNode()
	ms, base := startMetrics(t, f)
	code, body := httpGet(t, base+"/status.json")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"starting`) {
		t.Errorf("/status.json before the API: %d %s", code, body)
	}
	api := &fakeAPI{st: &apiv1.StatusResponse{Leader: 2, Term: 7, Nodes: []*apiv1.NodeStatus{
		{Id: 1, Role: "follower", Term: 7, Leader: 2, CommitIndex: 12, AppliedIndex: 11, Fsm: &apiv1.FSMStatus{Name: "kv", Version: 1, MinVersion: 1, MaxVersion: 2, BinarySha256: "ab12"}},
		{Id: 2, Role: "leader", Term: 7, Leader: 2, CommitIndex: 12, AppliedIndex: 12, Followers: []*apiv1.FollowerProgress{{Id: 1, MatchIndex: 12}}},
		{Id: 3, RaftAddr: "127.0.0.1:9", Error: "unreachable at 127.0.0.1:9: connection refused"},
	}}}
	ms.SetAPI(api)
	code, body = httpGet(t, base+"/status.json")
	if code != http.StatusOK {
		t.Fatalf("/status.json: %d %s", code, body)
	}
	var got struct {
		Leader string `json:"leader"`
		Term   string `json:"term"`
		Nodes  []struct {
			ID           string `json:"id"`
			Role         string `json:"role"`
			SnapshotIdx  string `json:"snapshot_index"`
			AppliedIndex string `json:"applied_index"`
			Error        string `json:"error"`
			Fsm          *struct {
				Name         string `json:"name"`
				BinarySha256 string `json:"binary_sha256"`
			} `json:"fsm"`
			Followers []struct {
				MatchIndex string `json:"match_index"`
			} `json:"followers"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("/status.json is not JSON: %v\n%s", err, body)
	}
	if got.Leader != "2" || got.Term != "7" || len(got.Nodes) != 3 || got.Nodes[0].Role != "follower" ||
		got.Nodes[0].AppliedIndex != "11" || got.Nodes[0].SnapshotIdx != "0" || got.Nodes[0].Fsm == nil ||
		got.Nodes[0].Fsm.BinarySha256 != "ab12" || got.Nodes[1].Followers[0].MatchIndex != "12" ||
		!strings.HasPrefix(got.Nodes[2].Error, "unreachable") {
		t.Errorf("/status.json: %s", body)
	}

	api.err = status.Error(codes.DeadlineExceeded, "status: deadline exceeded")
	code, body = httpGet(t, base+"/status.json")
	if code != http.StatusServiceUnavailable || body != `{"error":"status: status: deadline exceeded"}`+"\n" {
		t.Errorf("/status.json on error: %d %q", code, body)
	}

	code, body = httpGet(t, base+"/")
	if code != http.StatusOK || !strings.Contains(body, "<title>raftd status</title>") || !strings.Contains(body, `fetch("status.json"`) {
		t.Errorf("/: %d %.300s", code, body)
	}
	for _, bad := range []string{"http:", "https:", "//cdn", "src=\"/"} {
		if strings.Contains(body, bad) {
			t.Errorf("the status page refers to %q: it must be self-contained", bad)
		}
	}
	if code, _ := httpGet(t, base+"/index.html"); code != http.StatusNotFound {
		t.Errorf("/index.html: %d, want 404 (only / serves the page)", code)
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
	// The apply went through a proposal, a commit, an fsync-less Save
	// (NoSync still asks Save to sync) and an apply.
	for _, k := range []string{"raftd_proposal_commit_seconds_count", "raftd_commit_apply_seconds_count", "raftd_storage_fsync_seconds_count"} {
		if m[k] < 1 {
			t.Errorf("%s = %v after an apply, want >= 1", k, m[k])
		}
	}
	if m["raftd_leader_changes_total"] != 1 {
		t.Errorf("raftd_leader_changes_total = %v, want 1", m["raftd_leader_changes_total"])
	}
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "ok: leader 1,") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/status.json"); code != http.StatusOK || !strings.Contains(body, `"role":"leader"`) || !strings.Contains(body, `"leader":"1"`) {
		t.Errorf("/status.json: %d %s", code, body)
	}
	hc := healthClient(t, d.APIAddr())
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health: %v %v, want SERVING", resp.GetStatus(), err)
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

// healthClient is a grpc.health.v1 client of addr.
func healthClient(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
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
