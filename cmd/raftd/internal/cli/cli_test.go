package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/fsms/kv"
)

// startNode runs a single real node with an in-process kv FSM that takes
// commands of up to 100 bytes, and returns its client API address.
func startNode(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, daemon.Config{ID: 1, DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		FSM: kv.New(), NoSync: true, MaxEntryBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d.APIAddr()
}

// startLeaderless runs node 1 of a three-node cluster whose other members
// never run: it never has a leader. It returns its client API address.
func startLeaderless(t *testing.T) string {
	t.Helper()
	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers := []node.Peer{{ID: 1, RaftAddr: raftLis.Addr().String()}, {ID: 2, RaftAddr: deadAddr(t)}, {ID: 3, RaftAddr: deadAddr(t)}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, daemon.Config{ID: 1, DataDir: t.TempDir(), RaftListener: raftLis, APIAddr: "127.0.0.1:0",
		FSM: kv.New(), NoSync: true, Peers: peers, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d.APIAddr()
}

// startLonelyLeader runs a two-node cluster, makes node 1 the leader and
// stops node 2: node 1 keeps leading (for an election timeout of 10 s) but
// cannot commit. It returns node 1 and node 2's raft address.
func startLonelyLeader(t *testing.T) (*daemon.Daemon, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := daemon.StartCluster(ctx, 2, t.TempDir(), 0, func(cfg *daemon.Config) {
		cfg.FSM, cfg.NoSync = kv.New(), true
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 20*time.Millisecond, 10*time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.StopAll(ds) })
	if err := ds[0].Node().Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	for ds[0].Node().Leader() != 1 || ds[1].Node().Leader() != 1 {
		if ctx.Err() != nil {
			t.Fatal("node 1 did not become the leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := ds[1].Stop(); err != nil {
		t.Fatal(err)
	}
	return ds[0], ds[1].RaftAddr()
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	f := &Factory{Out: &out, ErrOut: &errb, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = Run(ctx, f, args)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"run"}, "--fsm is required"},
		{[]string{"run", "--fsm", "x", "--id", "0"}, "--id must be a positive integer"},
		{[]string{"run", "--fsm", "x", "--peers", "1=a:1,1=b:2"}, "node 1 listed twice"},
		{[]string{"run", "--fsm", "x", "--id", "4", "--peers", "1=a:1"}, "--id 4 is not in --peers"},
		{[]string{"run", "--fsm", "x", "--election-timeout", "100ms"}, "at least twice"},
		{[]string{"run", "--fsm", "x", "--id", "4", "--join", "--cluster-id", "c1"}, "--join needs --peers"},
		{[]string{"apply"}, "expected one COMMAND"},
		{[]string{"query", "--consistency", "eventual", "{}"}, "is not linearizable or stale"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"dev"}, "--fsm is required"},
		{[]string{"members", "remove", "x"}, "not a positive integer"},
		{[]string{"fsm", "frobnicate"}, `unknown command "frobnicate" for "raftd fsm"`},
		{[]string{"fsm", "stauts"}, `did you mean status?`},
		{[]string{"snapshot", "frobnicate"}, `unknown command "frobnicate" for "raftd snapshot"`},
		{[]string{"certs", "frobnicate"}, `unknown command "frobnicate" for "raftd certs"`},
	} {
		code, _, stderr := run(t, nil, tc.args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, ExitUsage, stderr)
		}
		if !strings.Contains(stderr, tc.msg) || !strings.HasPrefix(stderr, "raftd: ") {
			t.Errorf("%v: stderr %q lacks %q", tc.args, stderr, tc.msg)
		}
		if strings.Contains(stderr, "goroutine") {
			t.Errorf("%v: stack trace on stderr", tc.args)
		}
	}
}

func TestApplyQuery(t *testing.T) {
	addr := startNode(t)
	code, out, stderr := run(t, nil, "apply", "--addr", addr, `{"op":"put","key":"a","value":"1"}`)
	if code != 0 || out != "{\"ok\":true}\n" {
		t.Fatalf("apply: exit %d out %q err %q", code, out, stderr)
	}
	// One request id applies once: a second apply with it, even of
	// another command, answers the first result and changes nothing.
	for i, v := range []string{"2", "3"} {
		code, out, stderr = run(t, nil, "apply", "--addr", addr, "--request-id", "order-1", `{"op":"put","key":"a","value":"`+v+`"}`)
		if code != 0 || out != "{\"ok\":true}\n" || (i == 1) != strings.Contains(stderr, "request id order-1 was applied before") {
			t.Fatalf("apply %d with --request-id: exit %d out %q err %q", i, code, out, stderr)
		}
	}
	code, out, _ = run(t, nil, "query", "--addr", addr, `{"op":"get","key":"a"}`)
	if code != 0 || out != "{\"found\":true,\"value\":\"2\"}\n" {
		t.Fatalf("after two applies with one request id: %q", out)
	}
	if code, _, stderr = run(t, nil, "apply", "--addr", addr, "--request-id", strings.Repeat("x", 65), "{}"); code != ExitUsage {
		t.Fatalf("long --request-id: exit %d, stderr %q", code, stderr)
	}
	// RAFTD_ADDR, with a dead address first: the next one is tried.
	env := map[string]string{"RAFTD_ADDR": deadAddr(t) + "," + addr}
	code, out, stderr = run(t, env, "query", `{"op":"get","key":"a"}`)
	if code != 0 || out != "{\"found\":true,\"value\":\"2\"}\n" {
		t.Fatalf("query: exit %d out %q err %q", code, out, stderr)
	}
}

func TestApplyExitCodes(t *testing.T) {
	addr := startNode(t)
	// Too large: certainly not applied.
	code, _, stderr := run(t, nil, "apply", "--addr", addr, strings.Repeat("x", 101))
	if code != ExitNotApplied || !strings.Contains(stderr, "over the limit of 100 bytes") {
		t.Fatalf("oversized: exit %d, stderr %q", code, stderr)
	}
	// Unreachable cluster: not applied, quickly.
	t0 := time.Now()
	code, _, stderr = run(t, nil, "apply", "--addr", deadAddr(t)+","+deadAddr(t), "{}")
	if code != ExitNotApplied || !strings.Contains(stderr, "cannot reach") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, stderr)
	}
	if time.Since(t0) > 3*time.Second {
		t.Fatalf("unreachable cluster took %s", time.Since(t0))
	}
	// A refused membership change is not applied.
	code, _, stderr = run(t, nil, "members", "add", "--addr", addr, "1", "127.0.0.1:3")
	if code != ExitNotApplied || !strings.Contains(stderr, "already a voter") {
		t.Fatalf("members add refused: exit %d, stderr %q", code, stderr)
	}
	// No leader: retried until the timeout, then not applied.
	code, _, stderr = run(t, nil, "apply", "--addr", startLeaderless(t), "--timeout", "300ms", "{}")
	if code != ExitNotApplied || !strings.Contains(stderr, "no leader") {
		t.Fatalf("no leader: exit %d, stderr %q", code, stderr)
	}
	// Sent but no answer (the leader cannot commit): outcome unknown.
	lead, _ := startLonelyLeader(t)
	code, _, stderr = run(t, nil, "apply", "--addr", lead.APIAddr(), "--timeout", "300ms", `{"op":"put","key":"a","value":"1"}`)
	if code != ExitFailure || !strings.Contains(stderr, "outcome unknown") || !strings.Contains(stderr, "retry with --request-id ") {
		t.Fatalf("no quorum: exit %d, stderr %q", code, stderr)
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Fatalf("error is not one line: %q", stderr)
	}
}

func TestStatusJSON(t *testing.T) {
	lead, raft2 := startLonelyLeader(t)
	addr := lead.APIAddr()
	st, err := lead.Node().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, nil, "status", "--json", "--addr", addr)
	if code != 0 {
		t.Fatalf("status: exit %d, %s", code, stderr)
	}
	var got struct {
		Leader uint64 `json:"leader"`
		Term   uint64 `json:"term"`
		Nodes  []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status --json is not JSON: %v: %q", err, out)
	}
	if got.Leader != 1 || got.Term != st.Term || len(got.Nodes) != 2 {
		t.Fatalf("status --json (leader 1 at term %d): %s", st.Term, out)
	}
	n1 := got.Nodes[0]
	for _, k := range []string{"id", "raft_addr", "api_addr", "role", "term", "commit_index", "applied_index", "last_index", "snapshot_index", "fsm"} {
		if _, ok := n1[k]; !ok {
			t.Errorf("node 1 lacks %q: %v", k, n1)
		}
	}
	if n1["role"] != "leader" || n1["fsm"].(map[string]any)["name"] != "kv" || n1["api_addr"] != addr {
		t.Errorf("node 1: %v", n1)
	}
	if e, _ := got.Nodes[1]["error"].(string); e == "" || got.Nodes[1]["raft_addr"] != raft2 {
		t.Errorf("node 2 (stopped) should carry an error and its address: %v", got.Nodes[1])
	}
	code, out, _ = run(t, nil, "status", "--addr", addr)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("leader 1, term %d", st.Term)) || !strings.Contains(out, "unreachable") {
		t.Fatalf("status table: %d %q", code, out)
	}
}

func TestPluginChecks(t *testing.T) {
	code, _, stderr := run(t, nil, "run", "--fsm", "/nonexistent/raftd-fsm-kv", "--data-dir", t.TempDir())
	if code != ExitFailure || !strings.Contains(stderr, "no such file") {
		t.Fatalf("missing plugin: exit %d, %q", code, stderr)
	}
}

func TestApplyFromStdin(t *testing.T) {
	addr := startNode(t)
	var out, errb bytes.Buffer
	f := &Factory{In: strings.NewReader(`{"op":"put","key":"s","value":"1"}` + "\n"), Out: &out, ErrOut: &errb, Getenv: func(string) string { return "" }}
	if code := Run(context.Background(), f, []string{"apply", "--addr", addr, "-"}); code != 0 || out.String() != "{\"ok\":true}\n" {
		t.Fatalf("apply -: exit %d, out %q, err %q", code, out.String(), errb.String())
	}
	out.Reset()
	f.In = strings.NewReader(`{"op":"get","key":"s"}`)
	if code := Run(context.Background(), f, []string{"query", "--addr", addr, "-"}); code != 0 || out.String() != "{\"found\":true,\"value\":\"1\"}\n" {
		t.Fatalf("query -: exit %d, out %q, err %q", code, out.String(), errb.String())
	}
}
