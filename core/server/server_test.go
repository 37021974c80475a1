package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/server"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testFSM is the kv FSM of node id, whose query "who" answers
// {"from":id} (to tell which node served a read) and whose Apply can be
// held (to keep a request in flight).
type testFSM struct {
	id uint64
	kv *kv.FSM

	mu      sync.Mutex
	hold    chan struct{} // non-nil: Apply waits until it is closed
	entered chan struct{} // closed when a held Apply starts waiting
}

func (f *testFSM) Info(ctx context.Context) (fsm.Info, error) { return f.kv.Info(ctx) }
func (f *testFSM) Apply(ctx context.Context, e fsm.Entry) ([]byte, error) {
	f.mu.Lock()
	hold, entered := f.hold, f.entered
	f.entered = nil
	f.mu.Unlock()
	if hold != nil {
		if entered != nil {
			close(entered)
		}
		<-hold
	}
	return f.kv.Apply(ctx, e)
}
func (f *testFSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	if string(q) == "who" {
		return []byte(fmt.Sprintf(`{"from":%d}`, f.id)), nil
	}
	return f.kv.Query(ctx, q)
}
func (f *testFSM) Snapshot(ctx context.Context) (fsm.Snapshot, error) { return f.kv.Snapshot(ctx) }
func (f *testFSM) Restore(ctx context.Context, h fsm.SnapshotHeader, r io.Reader) error {
	return f.kv.Restore(ctx, h, r)
}
func (f *testFSM) Digest(ctx context.Context) ([]byte, error) { return f.kv.Digest(ctx) }

// holdApply makes the next Applies wait until the returned release is
// called; entered is closed when the first of them waits.
func (f *testFSM) holdApply() (entered chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.entered = make(chan struct{}), make(chan struct{})
	hold := f.hold
	var once sync.Once
	return f.entered, func() {
		once.Do(func() {
			f.mu.Lock()
			f.hold = nil
			f.mu.Unlock()
			close(hold)
		})
	}
}

type cluster struct {
	nodes   map[uint64]*daemon.Daemon
	fsms    map[uint64]*testFSM
	clients map[uint64]apiv1.RaftdClient
}

// startCluster runs n real nodes with in-process FSMs on loopback, each
// limiting commands to 64 bytes, and makes node 1 the leader. The election
// timeout is long, so that leadership does not move during a test unless
// the test moves it.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := &cluster{nodes: map[uint64]*daemon.Daemon{}, fsms: map[uint64]*testFSM{}, clients: map[uint64]apiv1.RaftdClient{}}
	var mu sync.Mutex
	ds, err := daemon.StartCluster(ctx, n, t.TempDir(), 0, func(cfg *daemon.Config) {
		f := &testFSM{id: cfg.ID, kv: kv.New()}
		mu.Lock()
		c.fsms[cfg.ID] = f
		mu.Unlock()
		cfg.FSM, cfg.NoSync, cfg.MaxEntryBytes = f, true, 64
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 20*time.Millisecond, 10*time.Second
	})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		for _, f := range c.fsms {
			f.mu.Lock()
			if f.hold != nil {
				close(f.hold)
				f.hold = nil
			}
			f.mu.Unlock()
		}
		_ = daemon.StopAll(ds)
	})
	for _, d := range ds {
		c.nodes[d.ID()] = d
		cc, err := grpc.NewClient("passthrough:///"+d.APIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		c.clients[d.ID()] = apiv1.NewRaftdClient(cc)
	}
	if err := c.nodes[1].Node().Campaign(ctx); err != nil {
		t.Fatalf("campaign: %v", err)
	}
	for id, d := range c.nodes {
		for d.Node().Leader() != 1 {
			if ctx.Err() != nil {
				t.Fatalf("node %d does not know leader 1 (knows %d)", id, d.Node().Leader())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return c
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFollowerForwardsApplyAndQuery(t *testing.T) {
	c := startCluster(t, 3)
	resp, err := c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)})
	if err != nil {
		t.Fatalf("apply via follower: %v", err)
	}
	if string(resp.Result) != `{"ok":true}` || resp.Index == 0 || resp.Term == 0 {
		t.Fatalf("apply via follower: got %q index %d term %d", resp.Result, resp.Index, resp.Term)
	}
	q, err := c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte("who")})
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Result) != `{"from":1}` {
		t.Fatalf("linearizable query via follower answered by %s, want the leader", q.Result)
	}
	q, err = c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"a"}`)})
	if err != nil || string(q.Result) != `{"found":true,"value":"1"}` || q.AppliedIndex < resp.Index {
		t.Fatalf("linearizable get via follower: %v %v", q, err)
	}
	q, err = c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte("who"), Consistency: apiv1.Consistency_CONSISTENCY_STALE})
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Result) != `{"from":3}` {
		t.Fatalf("stale query answered by %s, want the local node 3", q.Result)
	}
}

// TestRequestIDAppliesOnce: an Apply with a request id, sent through a
// follower and then to the leader, is applied once; the second answer
// is the first application's, marked duplicate. A request id without a
// client is refused (not applied); one of an expired session gets
// AlreadyExists without the not-applied mark.
func TestRequestIDAppliesOnce(t *testing.T) {
	c := startCluster(t, 3)
	id := &apiv1.RequestID{Client: []byte("client-1"), Seq: 1}
	put := func(v string) []byte { return []byte(`{"op":"put","key":"a","value":"` + v + `"}`) }
	first, err := c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: put("1"), RequestId: id})
	if err != nil || first.Duplicate {
		t.Fatalf("first apply: %v %v", first, err)
	}
	// Another command under the same id is not applied: the id names the
	// command.
	again, err := c.clients[1].Apply(ctx(t), &apiv1.ApplyRequest{Command: put("2"), RequestId: id})
	if err != nil || !again.Duplicate || again.Index != first.Index || again.Term != first.Term || string(again.Result) != string(first.Result) {
		t.Fatalf("retry: %v %v; first %v", again, err, first)
	}
	q, err := c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"a"}`)})
	if err != nil || string(q.Result) != `{"found":true,"value":"1"}` {
		t.Fatalf("get a: %v %v", q, err)
	}
	var tr metadata.MD
	_, err = c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: put("3"), RequestId: &apiv1.RequestID{Seq: 1}}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.InvalidArgument, "request id without a client")
	tr = nil
	_, err = c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: put("3"), RequestId: &apiv1.RequestID{Client: []byte("c"), Seq: 1, Acked: 2}}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.InvalidArgument, "beyond its own seq")
	tr = nil
	_, err = c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: put("3"), RequestId: &apiv1.RequestID{Client: []byte("gone"), Seq: 5, Acked: 5}}, grpc.Trailer(&tr))
	if status.Code(err) != codes.AlreadyExists || server.IsNotApplied(tr) {
		t.Fatalf("expired session: %v (not-applied mark %v), want AlreadyExists unmarked", err, server.IsNotApplied(tr))
	}
}

func wantNotApplied(t *testing.T, err error, tr metadata.MD, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("message %q does not contain %q", status.Convert(err).Message(), substr)
	}
	if !server.IsNotApplied(tr) {
		t.Fatalf("error %v lacks the not-applied trailer (trailer %v)", err, tr)
	}
}

// TestRefusedCounts: the server counts the Applies it refuses itself.
func TestRefusedCounts(t *testing.T) {
	c := startCluster(t, 1)
	srv := server.New(server.Config{Node: c.nodes[1].Node(), MaxEntryBytes: 8})
	defer srv.Close()
	for _, cmd := range []string{"", "123456789", "123456789"} {
		if _, err := srv.Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte(cmd)}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("apply %q: %v, want InvalidArgument", cmd, err)
		}
	}
	if _, err := srv.Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte(`{"op":"x"}`[:8])}); err != nil {
		t.Fatalf("apply of 8 bytes: %v", err)
	}
	got := srv.Refused()
	if got["invalid"] != 1 || got["too_large"] != 2 || got["draining"] != 0 {
		t.Fatalf("Refused() = %v, want invalid 1, too_large 2", got)
	}
}

func TestRefusals(t *testing.T) {
	c := startCluster(t, 3)
	var tr metadata.MD
	_, err := c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: make([]byte, 65)}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.InvalidArgument, "over the limit of 64 bytes")

	// The leader's own not-applied refusal is relayed through the follower.
	tr = nil
	_, err = c.clients[2].AddMember(ctx(t), &apiv1.AddMemberRequest{Id: 3, RaftAddr: "127.0.0.1:1"}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "add member: node 3 is already a voter")
	tr = nil
	_, err = c.clients[3].ActivateFSMVersion(ctx(t), &apiv1.ActivateFSMVersionRequest{Version: 99}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "not 99")
	stream, err := c.clients[2].DownloadSnapshot(ctx(t), &apiv1.DownloadSnapshotRequest{})
	if err == nil {
		_, err = stream.Recv() // a server stream reports its error here
		tr = stream.Trailer()
	}
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "has no snapshot yet")

	// Nodes with their FSM in process have no plugin to reload; a request
	// without a path is refused before that.
	tr = nil
	_, err = c.clients[2].ReloadFSM(ctx(t), &apiv1.ReloadFSMRequest{Path: "/bin/true"}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "runs its FSM in process")
	tr = nil
	_, err = c.clients[2].ReloadFSM(ctx(t), &apiv1.ReloadFSMRequest{}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.InvalidArgument, "plugin path is required")
}

// TestActivateDowngrade: once version 2 is active, version 1 is refused
// without allow_downgrade (through a follower), and accepted with it since
// kv declares downgrade_safe_to 1; status reports the versions and what the
// plugin declares.
func TestActivateDowngrade(t *testing.T) {
	c := startCluster(t, 3)
	if _, err := c.clients[2].ActivateFSMVersion(ctx(t), &apiv1.ActivateFSMVersionRequest{Version: 2}); err != nil {
		t.Fatal(err)
	}
	var tr metadata.MD
	_, err := c.clients[2].ActivateFSMVersion(ctx(t), &apiv1.ActivateFSMVersionRequest{Version: 1}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "version 1 is below the active version 2")
	resp, err := c.clients[3].ActivateFSMVersion(ctx(t), &apiv1.ActivateFSMVersionRequest{Version: 1, AllowDowngrade: true})
	if err != nil {
		t.Fatal(err)
	}
	// Followers apply the entry shortly after the leader.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.clients[1].Status(ctx(t), &apiv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for _, n := range st.GetNodes() {
			f := n.GetFsm()
			if f.GetVersion() != 1 || f.GetActivatedIndex() != resp.GetIndex() || f.GetDowngradeSafeTo() != 1 || f.GetBinarySha256() != "" {
				bad = append(bad, fmt.Sprintf("node %d fsm status %v", n.GetId(), f))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s; want version 1 at %d, downgrade_safe_to 1, no binary", strings.Join(bad, "; "), resp.GetIndex())
		}
		time.Sleep(10 * time.Millisecond)
	}
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

// TestNoLeaderIsNotApplied: a node that cannot reach a quorum never has a
// leader; writes and linearizable reads are refused, not applied.
func TestNoLeaderIsNotApplied(t *testing.T) {
	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Node 1 of a three-node cluster whose other members never run.
	peers := []node.Peer{{ID: 1, RaftAddr: raftLis.Addr().String()}, {ID: 2, RaftAddr: deadAddr(t)}, {ID: 3, RaftAddr: deadAddr(t)}}
	d, err := daemon.Start(ctx(t), daemon.Config{ID: 1, DataDir: t.TempDir(), RaftListener: raftLis, APIAddr: "127.0.0.1:0",
		FSM: kv.New(), NoSync: true, Peers: peers, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	cc, err := grpc.NewClient("passthrough:///"+d.APIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := apiv1.NewRaftdClient(cc)
	var tr metadata.MD
	_, err = c.Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.Unavailable, "no leader")
	tr = nil
	_, err = c.Query(ctx(t), &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"a"}`)}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.Unavailable, "no leader")
	// Refused by the server itself, counted there (the node never saw it).
	srv := server.New(server.Config{Node: d.Node()})
	defer srv.Close()
	if _, err := srv.Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte("x")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("apply without a leader: %v", err)
	}
	if got := srv.Refused()["no_leader"]; got != 1 {
		t.Fatalf("Refused()[no_leader] = %d, want 1 (%v)", got, srv.Refused())
	}
	// A stale read needs no leader.
	q, err := c.Query(ctx(t), &apiv1.QueryRequest{Query: []byte(`{"op":"get","key":"a"}`), Consistency: apiv1.Consistency_CONSISTENCY_STALE})
	if err != nil || string(q.Result) != `{"found":false,"value":""}` {
		t.Fatalf("stale read without a leader: %v %v", q, err)
	}
}

func TestForwardToUnreachableLeaderIsNotApplied(t *testing.T) {
	c := startCluster(t, 3)
	if err := c.nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	// Node 2 still takes node 1 for the leader (no election timeout has
	// passed) and cannot reach it.
	var tr metadata.MD
	cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.clients[2].Apply(cctx, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)}, grpc.Trailer(&tr))
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	if status.Code(err) == codes.Unavailable && !server.IsNotApplied(tr) {
		t.Fatalf("unreachable leader: %v without not-applied trailer", err)
	}
}

func TestStatusFanOut(t *testing.T) {
	c := startCluster(t, 3)
	raft3 := c.nodes[3].RaftAddr()
	if err := c.nodes[3].Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := c.clients[2].Status(ctx(t), &apiv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != 1 || len(st.Nodes) != 3 || st.Term == 0 || st.Term != st.Nodes[0].Term {
		t.Fatalf("status: %v", st)
	}
	for i, n := range st.Nodes {
		if n.Id != uint64(i+1) {
			t.Fatalf("nodes not ordered by id: %v", st.Nodes)
		}
	}
	if st.Nodes[0].Role != "leader" || st.Nodes[1].Role != "follower" || st.Nodes[1].ApiAddr != c.nodes[2].APIAddr() {
		t.Fatalf("status: %v", st.Nodes)
	}
	if st.Nodes[0].Fsm.GetName() != "kv" || st.Nodes[0].ClusterId == "" || st.Nodes[0].ClusterId != st.Nodes[1].ClusterId {
		t.Fatalf("status: fsm or cluster id missing: %v", st.Nodes)
	}
	if st.Nodes[2].Error == "" || st.Nodes[2].RaftAddr != raft3 {
		t.Fatalf("unreachable node 3 should be listed with an error: %v", st.Nodes[2])
	}
}

func TestDrainRefusesNewAndWaitsForInflight(t *testing.T) {
	c := startCluster(t, 1)
	srv := server.New(server.Config{Node: c.nodes[1].Node()})
	defer srv.Close()
	entered, release := c.fsms[1].holdApply()
	defer release()
	done := make(chan error, 1)
	go func() {
		_, err := srv.Apply(context.Background(), &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)})
		done <- err
	}()
	<-entered
	dctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Drain(dctx); err == nil {
		t.Fatal("Drain returned while an Apply was in flight")
	}
	if _, err := srv.Apply(context.Background(), &apiv1.ApplyRequest{Command: []byte("y")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Apply while draining: %v, want Unavailable", err)
	}
	if got := srv.Refused(); got["draining"] != 1 || got["no_leader"] != 0 || len(got) != 5 {
		t.Fatalf("Refused() = %v, want draining 1 and the other reasons 0", got)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("in-flight Apply: %v", err)
	}
	if err := srv.Drain(context.Background()); err != nil {
		t.Fatalf("Drain after the in-flight Apply finished: %v", err)
	}
}
