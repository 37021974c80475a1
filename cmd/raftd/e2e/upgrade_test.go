package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/plugin/host"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// loadWriter keeps writing kv puts through the cluster's nodes in turn
// (followers forward to the leader), and reading a preloaded key from each
// node's local state (a stale read: what that node's plugin holds), and
// records every failure: during a reload clients must see none, and no
// read may find the state empty or partial.
type loadWriter struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	acked  atomic.Int64 // puts acknowledged
	mu     sync.Mutex
	errors []string
}

func startLoadWriter(c *cluster, workers int) *loadWriter {
	w := &loadWriter{stop: make(chan struct{})}
	for g := 0; g < workers; g++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				id := c.ids[(g+i)%len(c.ids)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.apply(ctx, id, fmt.Sprintf(`{"op":"put","key":"w%d/%06d","value":"%d"}`, g, i, i))
				cancel()
				if err != nil {
					w.mu.Lock()
					w.errors = append(w.errors, fmt.Sprintf("put w%d/%06d via node %d: %v", g, i, id, err))
					w.mu.Unlock()
					continue
				}
				w.acked.Add(1)
			}
		}()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			id := c.ids[i%len(c.ids)]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := c.query(ctx, id, `{"op":"get","key":"pre/000000"}`, true)
			cancel()
			if err != nil || !strings.HasPrefix(res, `{"found":true,`) {
				w.mu.Lock()
				w.errors = append(w.errors, fmt.Sprintf("stale get of pre/000000 on node %d: %s, %v", id, res, err))
				w.mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

// finish stops the writer and fails the test for every error it saw.
func (w *loadWriter) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	for i, e := range w.errors {
		if i == 10 {
			t.Errorf("... and %d more", len(w.errors)-10)
			break
		}
		t.Errorf("writer: %s", e)
	}
	if w.acked.Load() == 0 {
		t.Error("writer: nothing acknowledged")
	}
}

// waitAcked waits until the writer acknowledged n more puts.
func (w *loadWriter) waitAcked(t *testing.T, n int64) {
	t.Helper()
	target := w.acked.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for w.acked.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("writer stuck at %d acknowledged puts (want %d)", w.acked.Load(), target)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// preload writes n keys of size bytes each (concurrently), so that a
// reload hands over a state of some MB.
func preload(t *testing.T, c *cluster, n, size int) {
	t.Helper()
	val := strings.Repeat("x", size)
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.apply(ctx, c.ids[i%len(c.ids)], fmt.Sprintf(`{"op":"put","key":"pre/%06d","value":"%s"}`, i, val))
				cancel()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("preload: %v", err)
	}
}

var reloadLine = regexp.MustCompile(`took over at index (\d+)\nstate: (\d+) bytes at index (\d+) \(digest ([0-9a-f]{64})\), then (\d+) commands; took (\S+), apply paused (\S+)`)

// reload runs raftd fsm reload on node id and returns its output.
func reload(t *testing.T, c *cluster, id uint64, plugin string) string {
	t.Helper()
	code, out, stderr := raftd(t, nil, "fsm", "reload", "--addr", c.nodes[id].apiAddr, "--fsm", plugin)
	if code != 0 || !reloadLine.MatchString(out) {
		t.Fatalf("reload node %d to %s: exit %d, out %q, stderr %q", id, filepath.Base(plugin), code, out, stderr)
	}
	t.Logf("reload node %d to %s:\n%s", id, filepath.Base(plugin), strings.TrimSpace(out))
	return out
}

// setFSM makes later restarts of node id start plugin (its --fsm flag).
func setFSM(p *proc, plugin string) {
	for i := 0; i+1 < len(p.args); i++ {
		if p.args[i] == "--fsm" {
			p.args[i+1] = plugin
		}
	}
}

// checkReplicasAgree waits until the nodes applied the same index and
// compares their whole kv state (a stale list on each); no node may be
// halted (a digest checkpoint that found a difference halts it).
func checkReplicasAgree(t *testing.T, c *cluster) {
	t.Helper()
	idx := c.waitConverged(c.ids, 0, 30*time.Second)
	list := func(id uint64) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.client(id).Query(ctx, &apiv1.QueryRequest{Query: []byte(`{"op":"list","prefix":"","limit":10000000}`),
			Consistency: apiv1.Consistency_CONSISTENCY_STALE}, grpc.MaxCallRecvMsgSize(256<<20))
		if err != nil {
			t.Fatalf("stale list on node %d: %v", id, err)
		}
		return string(resp.GetResult())
	}
	ref := list(c.ids[0])
	for _, id := range c.ids[1:] {
		if got := list(id); got != ref {
			t.Errorf("node %d's state differs from node %d's at index %d (%d vs %d bytes)", id, c.ids[0], idx, len(got), len(ref))
		}
	}
	for _, id := range c.ids {
		st, err := c.localStatus(id, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if h := st.GetHalted(); h != nil {
			t.Errorf("node %d halted at %d: %s", id, h.GetIndex(), h.GetReason())
		}
	}
	t.Logf("%d nodes agree at index %d (%d keys)", len(c.ids), idx, len(kvItems(t, ref)))
}

// TestRollingUpgradeKVv1ToKV is the upgrade rehearsal of docs/upgrades.md,
// under a continuous writer: a cluster running kv-v1 (versions 1..1)
// reloads each node in turn to kv (1..2) without restarting raftd or
// moving leadership, activates version 2, and incr works; a downgrade is
// refused; the replicas agree, and fsm status shows the new binary on
// every node, also after a node restart.
func TestRollingUpgradeKVv1ToKV(t *testing.T) {
	v1, v2 := bin("raftd-fsm-kv-v1"), bin("raftd-fsm-kv")
	needPlugin(t, v1)
	r := newRCluster(t, rclusterOpts{n: 3, fsm: v1, extra: []string{"--snapshot-entries", "3000"}})
	c := r.cluster
	preload(t, c, 4000, 1024) // about 4 MiB of state
	lead, term := c.waitLeader(10*time.Second, 0)
	pids := map[uint64]int{}
	for _, id := range c.ids {
		pids[id] = r.pid(id)
	}
	sum2, err := host.FileSHA256(v2)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := raftd(t, nil, "fsm", "activate", "2", "--addr", c.nodes[1].apiAddr)
	if code != 3 || !strings.Contains(stderr, "supports versions [1, 1], not 2") {
		t.Fatalf("activate 2 on kv-v1: exit %d, %q", code, stderr)
	}

	w := startLoadWriter(c, 4)
	w.waitAcked(t, 200)
	// Followers first, the leader last (docs/upgrades.md).
	order := []uint64{}
	for _, id := range c.ids {
		if id != lead {
			order = append(order, id)
		}
	}
	order = append(order, lead)
	for _, id := range order {
		reload(t, c, id, v2)
		setFSM(c.nodes[id], v2)
		w.waitAcked(t, 200) // the cluster keeps committing after each reload
	}
	code, out, stderr := raftd(t, nil, "fsm", "activate", "2", "--addr", c.nodes[order[0]].apiAddr)
	if code != 0 {
		t.Fatalf("activate 2: exit %d, %q %q", code, out, stderr)
	}
	code, out, _ = raftd(t, nil, "apply", "--addr", c.nodes[1].apiAddr, `{"op":"incr","key":"n","delta":41}`)
	if code != 0 || strings.TrimSpace(out) != `{"value":41}` {
		t.Fatalf("incr after activation: exit %d, %q", code, out)
	}
	code, _, stderr = raftd(t, nil, "fsm", "activate", "1", "--addr", c.nodes[2].apiAddr)
	if code != 3 || !strings.Contains(stderr, "below the active version 2") {
		t.Fatalf("downgrade to 1: exit %d, %q", code, stderr)
	}
	w.waitAcked(t, 200)
	w.finish(t)

	for _, id := range c.ids {
		if got := r.pid(id); got != pids[id] {
			t.Errorf("node %d: raftd pid %d, was %d (restarted)", id, got, pids[id])
		}
	}
	if l, tm := c.waitLeader(10*time.Second, 0); l != lead || tm != term {
		t.Errorf("leader %d term %d after the upgrade; was %d term %d", l, tm, lead, term)
	}
	checkReplicasAgree(t, c)
	checkFSMStatus := func(what string) {
		t.Helper()
		code, out, stderr := raftd(t, nil, "fsm", "status", "--json", "--addr", c.nodes[1].apiAddr)
		var st struct {
			Nodes []struct {
				ID  uint64 `json:"id"`
				FSM struct {
					Name           string `json:"name"`
					Version        uint32 `json:"version"`
					Min            uint32 `json:"min_version"`
					Max            uint32 `json:"max_version"`
					ActivatedIndex uint64 `json:"activated_index"`
					SHA256         string `json:"binary_sha256"`
					DowngradeTo    uint32 `json:"downgrade_safe_to"`
				} `json:"fsm"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Nodes) != 3 {
			t.Fatalf("%s: fsm status: exit %d, %v, %q %q", what, code, err, out, stderr)
		}
		for _, n := range st.Nodes {
			f := n.FSM
			if f.Name != "kv" || f.Version != 2 || f.Min != 1 || f.Max != 2 || f.ActivatedIndex == 0 || f.SHA256 != sum2 || f.DowngradeTo != 1 {
				t.Errorf("%s: fsm status of node %d: %+v; want kv [1, 2], version 2 activated, binary %s, downgrade_safe_to 1", what, n.ID, f, sum2)
			}
		}
	}
	checkFSMStatus("after the reloads")
	// A node restarted with the new binary reports it too.
	if err := c.stop(3); err != nil {
		t.Fatalf("stop node 3: %v", err)
	}
	c.start(3)
	c.waitConverged(c.ids, 0, 30*time.Second)
	checkFSMStatus("after restarting node 3")
}

// TestCounterPluginOnKVLogRefused: a node restarted with the counter
// plugin on a kv data dir that has no snapshot yet (the log is all there
// is) refuses to start, naming both FSMs.
func TestCounterPluginOnKVLogRefused(t *testing.T) {
	c := newCluster(t, 1, bin("raftd-fsm-kv"), "--snapshot-entries", "0")
	c.mustApply(1, `{"op":"put","key":"a","value":"1"}`, 10*time.Second)
	st, err := c.localStatus(1, 2*time.Second)
	if err != nil || st.GetSnapshotIndex() != 0 {
		t.Fatalf("status %v, %v; want no snapshot", st, err)
	}
	if err := c.stop(1); err != nil {
		t.Fatal(err)
	}
	p := c.nodes[1]
	args := append([]string(nil), p.args...)
	setFSM(&proc{args: args}, bin("raftd-fsm-counter"))
	code, _, stderr := raftd(t, nil, args...)
	want := `fsm "counter" cannot run this cluster's fsm "kv" (recorded in log entry 1)`
	if code == 0 || !strings.Contains(lastLine(stderr), want) {
		t.Fatalf("counter on a kv log: exit %d, stderr %q; want %q", code, stderr, want)
	}
	t.Logf("refused: %s", lastLine(stderr))
	// The same data dir still starts with kv and has its data.
	c.start(1)
	c.waitLeader(10*time.Second, 0)
	if res := c.mustApply(1, `{"op":"put","key":"b","value":"2"}`, 10*time.Second); res != `{"ok":true}` {
		t.Fatalf("put after restart: %s", res)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// languagePlugins returns the kv plugin in Go, Node.js and Python, or
// skips the test (fails it in CI) when Node's dependencies or Python's
// grpc are missing.
func languagePlugins(t *testing.T) (goKV, nodeKV, pyKV string) {
	t.Helper()
	missing := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mixed-language cluster: %s", why)
		}
		t.Skipf("mixed-language cluster: %s", why)
	}
	nodeDir := filepath.Join(repoRoot, "fsms", "node-kv")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules")); err != nil {
		missing("fsms/node-kv/node_modules missing (cd fsms/node-kv && npm ci)")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import grpc, google.protobuf").Run(); err != nil {
		missing("/usr/bin/python3 with grpc and protobuf missing (apt-get install python3-grpcio python3-protobuf)")
	}
	return bin("raftd-fsm-kv"), filepath.Join(nodeDir, "raftd-fsm-node-kv"), filepath.Join(repoRoot, "fsms", "python-kv", "raftd-fsm-python-kv")
}

// TestMixedLanguageHotReload: a cluster whose nodes run the kv FSM in Go,
// Node.js and Python (one each) takes load, and each node is hot-reloaded
// to another language's kv in turn: clients see no errors and the replicas
// agree at the end.
func TestMixedLanguageHotReload(t *testing.T) {
	goKV, nodeKV, pyKV := languagePlugins(t)
	plugins := []string{goKV, nodeKV, pyKV}
	r := newRCluster(t, rclusterOpts{n: 3, fsm: goKV, fsmFor: map[uint64]string{2: nodeKV, 3: pyKV},
		extra: []string{"--snapshot-entries", "2000"}})
	c := r.cluster
	// The Node.js and Python plugins report the digest of their sources
	// (their binary SHA-256 covers only the launcher); Go's reports none.
	builds := fsmBuilds(t, c)
	if builds[1] != "" || len(builds[2]) != 64 || len(builds[3]) != 64 || builds[2] == builds[3] {
		t.Fatalf("builds %v: want none for Go, a SHA-256 each for Node.js and Python", builds)
	}
	preload(t, c, 1000, 512)
	pids := map[uint64]int{}
	for _, id := range c.ids {
		pids[id] = r.pid(id)
	}
	w := startLoadWriter(c, 4)
	w.waitAcked(t, 200)
	// Node i moves to language i+1 (Go -> Node.js, Node.js -> Python,
	// Python -> Go), then back (Node.js -> Go, Python -> Node.js,
	// Go -> Python): every implementation takes over from every other one.
	for round := 1; round <= 2; round++ {
		for i, id := range c.ids {
			next := plugins[(i+1)%3]
			if round == 2 {
				next = plugins[i]
			}
			reload(t, c, id, next)
			setFSM(c.nodes[id], next)
			w.waitAcked(t, 100)
		}
	}
	w.finish(t)
	for _, id := range c.ids {
		if got := r.pid(id); got != pids[id] {
			t.Errorf("node %d: raftd pid %d, was %d (restarted)", id, got, pids[id])
		}
	}
	checkReplicasAgree(t, c)
	// Back on their first plugins after two reloads each: the same builds.
	if got := fsmBuilds(t, c); got[1] != builds[1] || got[2] != builds[2] || got[3] != builds[3] {
		t.Errorf("builds after the reloads %v, before %v", got, builds)
	}
}

// fsmBuilds returns the build each node's plugin reports, from `raftd fsm
// status --json`.
func fsmBuilds(t *testing.T, c *cluster) map[uint64]string {
	t.Helper()
	var addrs []string
	for _, id := range c.ids {
		addrs = append(addrs, c.nodes[id].apiAddr)
	}
	code, out, stderr := raftd(t, nil, "fsm", "status", "--json", "--addr", strings.Join(addrs, ","))
	var st struct {
		Nodes []struct {
			ID  uint64 `json:"id"`
			FSM struct {
				Build string `json:"build"`
			} `json:"fsm"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Nodes) != len(c.ids) {
		t.Fatalf("fsm status --json: %d %q %q: %v", code, out, stderr, err)
	}
	b := map[uint64]string{}
	for _, n := range st.Nodes {
		b[n.ID] = n.FSM.Build
	}
	return b
}
