package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
)

// fakeNode is a single-node server.Node: a kv map, a settable leader, and
// an optional hang in Propose.
type fakeNode struct {
	mu     sync.Mutex
	leader uint64
	hang   bool
	kv     map[string]string
	index  uint64
}

func (f *fakeNode) ID() uint64 { return 1 }
func (f *fakeNode) Leader() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}
func (f *fakeNode) Propose(ctx context.Context, cmd []byte) ([]byte, uint64, uint64, error) {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, 0, 0, ctx.Err()
	}
	var c struct{ Op, Key, Value string }
	if err := json.Unmarshal(cmd, &c); err != nil {
		return []byte(`{"error":"bad command"}`), 0, 0, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.kv[c.Key] = c.Value
	return []byte(`{"ok":true}`), f.index, 1, nil
}
func (f *fakeNode) Query(ctx context.Context, q []byte, lin bool) ([]byte, uint64, error) {
	var c struct{ Op, Key string }
	_ = json.Unmarshal(q, &c)
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.kv[c.Key]
	b, _ := json.Marshal(map[string]any{"found": ok, "value": v})
	return b, f.index, nil
}
func (f *fakeNode) Status(ctx context.Context) (*apiv1.NodeStatus, error) {
	return &apiv1.NodeStatus{Id: 1, RaftAddr: "127.0.0.1:1", Role: "leader", Term: 3, Leader: f.Leader(),
		CommitIndex: 7, AppliedIndex: 7, LastIndex: 7, Fsm: &apiv1.FSMStatus{Name: "kv", Version: 1}}, nil
}
func (f *fakeNode) Members(ctx context.Context) ([]*apiv1.Member, error) {
	return []*apiv1.Member{{Id: 1, RaftAddr: "127.0.0.1:1"}, {Id: 2, RaftAddr: "127.0.0.1:2"}}, nil
}
func (f *fakeNode) AddMember(context.Context, uint64, string, bool) error { return server.ErrRejected }
func (f *fakeNode) RemoveMember(context.Context, uint64) error            { return nil }
func (f *fakeNode) TransferLeader(context.Context, uint64) error          { return nil }

func startFake(t *testing.T) (*fakeNode, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fn := &fakeNode{leader: 1, kv: map[string]string{}}
	srv := server.New(server.Config{Node: fn, MaxEntryBytes: 100, APIAddr: l.Addr().String(),
		ForwardAddr: func(id uint64) (string, bool) { return "", false }})
	gs := grpc.NewServer()
	srv.Register(gs)
	go gs.Serve(l)
	t.Cleanup(func() { gs.Stop(); srv.Close() })
	return fn, l.Addr().String()
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
		{[]string{"apply"}, "expected one COMMAND"},
		{[]string{"query", "--consistency", "eventual", "{}"}, "is not linearizable or stale"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"dev"}, "--fsm is required"},
		{[]string{"members", "remove", "x"}, "not a positive integer"},
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
	_, addr := startFake(t)
	code, out, stderr := run(t, nil, "apply", "--addr", addr, `{"op":"put","key":"a","value":"1"}`)
	if code != 0 || out != "{\"ok\":true}\n" {
		t.Fatalf("apply: exit %d out %q err %q", code, out, stderr)
	}
	// RAFTD_ADDR, with a dead address first: the next one is tried.
	env := map[string]string{"RAFTD_ADDR": deadAddr(t) + "," + addr}
	code, out, stderr = run(t, env, "query", `{"op":"get","key":"a"}`)
	if code != 0 || out != "{\"found\":true,\"value\":\"1\"}\n" {
		t.Fatalf("query: exit %d out %q err %q", code, out, stderr)
	}
}

func TestApplyExitCodes(t *testing.T) {
	fn, addr := startFake(t)
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
	// No leader: retried until the timeout, then not applied.
	fn.mu.Lock()
	fn.leader = 0
	fn.mu.Unlock()
	code, _, stderr = run(t, nil, "apply", "--addr", addr, "--timeout", "300ms", "{}")
	if code != ExitNotApplied || !strings.Contains(stderr, "no leader") {
		t.Fatalf("no leader: exit %d, stderr %q", code, stderr)
	}
	// Sent but no answer: outcome unknown.
	fn.mu.Lock()
	fn.leader, fn.hang = 1, true
	fn.mu.Unlock()
	code, _, stderr = run(t, nil, "apply", "--addr", addr, "--timeout", "300ms", "{}")
	if code != ExitFailure || !strings.Contains(stderr, "outcome unknown") {
		t.Fatalf("hang: exit %d, stderr %q", code, stderr)
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Fatalf("error is not one line: %q", stderr)
	}
	// A refused membership change is not applied.
	code, _, stderr = run(t, nil, "members", "add", "--addr", addr, "3", "127.0.0.1:3")
	if code != ExitNotApplied {
		t.Fatalf("members add refused: exit %d, stderr %q", code, stderr)
	}
}

func TestStatusJSON(t *testing.T) {
	_, addr := startFake(t)
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
	if got.Leader != 1 || got.Term != 3 || len(got.Nodes) != 2 {
		t.Fatalf("status --json: %s", out)
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
	if e, _ := got.Nodes[1]["error"].(string); e == "" {
		t.Errorf("node 2 (no address) should carry an error: %v", got.Nodes[1])
	}
	code, out, _ = run(t, nil, "status", "--addr", addr)
	if code != 0 || !strings.Contains(out, "leader 1, term 3") || !strings.Contains(out, "unreachable") {
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
	_, addr := startFake(t)
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
