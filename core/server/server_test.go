package server

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeNode is a Node whose leader is set by the test; the leader "applies"
// by appending to a shared log.
type fakeNode struct {
	id     uint64
	mu     sync.Mutex
	leader uint64
	log    *[]string
	addrs  map[uint64]string
}

func (f *fakeNode) ID() uint64 { return f.id }
func (f *fakeNode) Leader() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}
func (f *fakeNode) Propose(ctx context.Context, cmd []byte) ([]byte, uint64, uint64, error) {
	if f.Leader() != f.id {
		return nil, 0, 0, ErrNotLeader
	}
	*f.log = append(*f.log, string(cmd))
	return []byte(`{"ok":true}`), uint64(len(*f.log)), 1, nil
}
func (f *fakeNode) Query(ctx context.Context, q []byte, lin bool) ([]byte, uint64, error) {
	if lin && f.Leader() != f.id {
		return nil, 0, ErrNotLeader
	}
	return []byte(`{"from":` + string(rune('0'+f.id)) + `}`), uint64(len(*f.log)), nil
}
func (f *fakeNode) Status(ctx context.Context) (*apiv1.NodeStatus, error) {
	role := "follower"
	if f.Leader() == f.id {
		role = "leader"
	}
	return &apiv1.NodeStatus{Id: f.id, RaftAddr: f.addrs[f.id], Role: role, Term: 2, Leader: f.Leader()}, nil
}
func (f *fakeNode) Members(ctx context.Context) ([]*apiv1.Member, error) {
	var ms []*apiv1.Member
	for id, a := range f.addrs {
		ms = append(ms, &apiv1.Member{Id: id, RaftAddr: a})
	}
	return ms, nil
}
func (f *fakeNode) AddMember(ctx context.Context, id uint64, addr string, learner bool) error {
	return ErrRejected
}
func (f *fakeNode) RemoveMember(ctx context.Context, id uint64) error   { return nil }
func (f *fakeNode) TransferLeader(ctx context.Context, id uint64) error { return nil }

type cluster struct {
	nodes   []*fakeNode
	addrs   map[uint64]string
	clients map[uint64]apiv1.RaftdClient
}

// startCluster serves n fake nodes on loopback; node ids in down get an
// address but no server.
func startCluster(t *testing.T, n int, down map[uint64]bool) *cluster {
	t.Helper()
	c := &cluster{addrs: map[uint64]string{}, clients: map[uint64]apiv1.RaftdClient{}}
	var log []string
	lis := map[uint64]net.Listener{}
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.addrs[uint64(i)] = l.Addr().String()
		if down[uint64(i)] {
			l.Close()
			continue
		}
		lis[uint64(i)] = l
	}
	for id, l := range lis {
		fn := &fakeNode{id: id, leader: 1, log: &log, addrs: c.addrs}
		c.nodes = append(c.nodes, fn)
		srv := New(Config{Node: fn, MaxEntryBytes: 64, APIAddr: l.Addr().String(), ForwardAddr: func(id uint64) (string, bool) {
			a, ok := c.addrs[id]
			return a, ok
		}})
		gs := grpc.NewServer()
		srv.Register(gs)
		go gs.Serve(l)
		t.Cleanup(func() { gs.Stop(); srv.Close() })
		cc, err := grpc.NewClient("passthrough:///"+l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		c.clients[id] = apiv1.NewRaftdClient(cc)
	}
	return c
}

func (c *cluster) setLeader(id uint64) {
	for _, n := range c.nodes {
		n.mu.Lock()
		n.leader = id
		n.mu.Unlock()
	}
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFollowerForwardsApplyAndQuery(t *testing.T) {
	c := startCluster(t, 3, nil)
	resp, err := c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte("x")})
	if err != nil {
		t.Fatalf("apply via follower: %v", err)
	}
	if string(resp.Result) != `{"ok":true}` || resp.Index != 1 {
		t.Fatalf("apply via follower: got %q index %d", resp.Result, resp.Index)
	}
	q, err := c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte("q")})
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Result) != `{"from":1}` {
		t.Fatalf("linearizable query via follower answered by %s, want the leader", q.Result)
	}
	q, err = c.clients[3].Query(ctx(t), &apiv1.QueryRequest{Query: []byte("q"), Consistency: apiv1.Consistency_CONSISTENCY_STALE})
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Result) != `{"from":3}` {
		t.Fatalf("stale query answered by %s, want the local node 3", q.Result)
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
	if !IsNotApplied(tr) {
		t.Fatalf("error %v lacks the not-applied trailer (trailer %v)", err, tr)
	}
}

func TestRefusals(t *testing.T) {
	c := startCluster(t, 3, nil)
	var tr metadata.MD
	_, err := c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: make([]byte, 65)}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.InvalidArgument, "over the limit of 64 bytes")

	c.setLeader(0)
	tr = nil
	_, err = c.clients[2].Apply(ctx(t), &apiv1.ApplyRequest{Command: []byte("x")}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.Unavailable, "no leader")

	// The leader's own not-applied refusal is relayed through the follower.
	c.setLeader(1)
	tr = nil
	_, err = c.clients[2].AddMember(ctx(t), &apiv1.AddMemberRequest{Id: 4, RaftAddr: "127.0.0.1:1"}, grpc.Trailer(&tr))
	wantNotApplied(t, err, tr, codes.FailedPrecondition, "add member")
}

func TestForwardToUnreachableLeaderIsNotApplied(t *testing.T) {
	c := startCluster(t, 3, map[uint64]bool{1: true})
	var tr metadata.MD
	cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.clients[2].Apply(cctx, &apiv1.ApplyRequest{Command: []byte("x")}, grpc.Trailer(&tr))
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	if status.Code(err) == codes.Unavailable && !IsNotApplied(tr) {
		t.Fatalf("unreachable leader: %v without not-applied trailer", err)
	}
}

func TestStatusFanOut(t *testing.T) {
	c := startCluster(t, 3, map[uint64]bool{3: true})
	st, err := c.clients[2].Status(ctx(t), &apiv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != 1 || st.Term != 2 || len(st.Nodes) != 3 {
		t.Fatalf("status: %v", st)
	}
	for i, n := range st.Nodes {
		if n.Id != uint64(i+1) {
			t.Fatalf("nodes not ordered by id: %v", st.Nodes)
		}
	}
	if st.Nodes[0].Role != "leader" || st.Nodes[1].Role != "follower" || st.Nodes[1].ApiAddr == "" {
		t.Fatalf("status: %v", st.Nodes)
	}
	if st.Nodes[2].Error == "" || st.Nodes[2].RaftAddr != c.addrs[3] {
		t.Fatalf("unreachable node 3 should be listed with an error: %v", st.Nodes[2])
	}
}

func TestDrainRefusesNewAndWaitsForInflight(t *testing.T) {
	var log []string
	fn := &fakeNode{id: 1, leader: 1, log: &log, addrs: map[uint64]string{1: "x"}}
	block := make(chan struct{})
	hn := &hangNode{fakeNode: fn, block: block}
	srv := New(Config{Node: hn})
	done := make(chan error, 1)
	started := make(chan struct{})
	hn.started = started
	go func() {
		_, err := srv.Apply(context.Background(), &apiv1.ApplyRequest{Command: []byte("x")})
		done <- err
	}()
	<-started
	dctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Drain(dctx); err == nil {
		t.Fatal("Drain returned while an Apply was in flight")
	}
	if _, err := srv.Apply(context.Background(), &apiv1.ApplyRequest{Command: []byte("y")}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Apply while draining: %v, want Unavailable", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatalf("in-flight Apply: %v", err)
	}
	if err := srv.Drain(context.Background()); err != nil {
		t.Fatalf("Drain after the in-flight Apply finished: %v", err)
	}
}

// hangNode blocks Propose until block is closed.
type hangNode struct {
	*fakeNode
	block, started chan struct{}
}

func (h *hangNode) Propose(ctx context.Context, cmd []byte) ([]byte, uint64, uint64, error) {
	close(h.started)
	<-h.block
	return h.fakeNode.Propose(ctx, cmd)
}
