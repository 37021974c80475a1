package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/fsms/counter"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const add = `{"op":"add","delta":1}`

// startCluster runs three in-process nodes with the counter FSM and
// returns their API addresses.
func startCluster(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := daemon.StartCluster(ctx, 3, t.TempDir(), 0, func(cfg *daemon.Config) {
		cfg.FSM, cfg.NoSync = counter.New(), true
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 20*time.Millisecond, 400*time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.StopAll(ds) })
	var addrs []string
	for _, d := range ds {
		addrs = append(addrs, d.APIAddr())
	}
	// Every node serves linearizable reads once a leader is known.
	for _, a := range addrs {
		c, err := New(Config{Endpoints: []string{a}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Query(ctx, []byte(`{"op":"get"}`))
		c.Close()
		if err != nil {
			t.Fatalf("node %s: %v", a, err)
		}
	}
	return addrs
}

// lossyProxy passes Apply to a node and then loses the answer: the
// command is applied, its caller hears Unavailable (outcome unknown), as
// when a connection drops after the request was sent.
type lossyProxy struct {
	apiv1.UnimplementedRaftdServer
	to      apiv1.RaftdClient
	applied atomic.Int64
}

func (p *lossyProxy) Apply(ctx context.Context, req *apiv1.ApplyRequest) (*apiv1.ApplyResponse, error) {
	if _, err := p.to.Apply(ctx, req); err != nil {
		return nil, err
	}
	p.applied.Add(1)
	return nil, status.Error(codes.Unavailable, "connection reset after the request was sent")
}

func startLossyProxy(t *testing.T, to string) (*lossyProxy, string) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+to, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	p := &lossyProxy{to: apiv1.NewRaftdClient(cc)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	apiv1.RegisterRaftdServer(s, p)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return p, l.Addr().String()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func query(t *testing.T, c *Client) string {
	t.Helper()
	q, err := c.Query(ctxT(t), []byte(`{"op":"get"}`))
	if err != nil {
		t.Fatal(err)
	}
	return string(q.Value)
}

// TestApplyRetriesLostAnswerOnce: the first attempt goes through a proxy
// that applies the command and loses the answer; Apply retries with the
// same identity on the next endpoint and gets the first application's
// result: the counter moved once. The same retry without a request
// identity (the negative control) moves it twice.
func TestApplyRetriesLostAnswerOnce(t *testing.T) {
	addrs := startCluster(t)
	p, lossy := startLossyProxy(t, addrs[0])
	c, err := New(Config{Endpoints: []string{lossy, addrs[1], addrs[2]}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Apply(ctxT(t), []byte(add))
	if err != nil {
		t.Fatal(err)
	}
	if p.applied.Load() != 1 || !r.Duplicate || string(r.Value) != `{"value":1}` || r.Attempts != 2 || r.ID.Seq != 1 {
		t.Fatalf("result %+v after %d applies through the proxy; want the proxied application's answer as a duplicate", r, p.applied.Load())
	}
	if got := query(t, c); got != `{"value":1}` {
		t.Fatalf("counter %s after one Apply, want 1", got)
	}
	// Negative control: the same lost answer and retry, without identity.
	cc, err := grpc.NewClient("passthrough:///"+lossy, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := apiv1.NewRaftdClient(cc).Apply(ctxT(t), &apiv1.ApplyRequest{Command: []byte(add)}); status.Code(err) != codes.Unavailable {
		t.Fatalf("proxy: %v", err)
	}
	cc2, err := grpc.NewClient("passthrough:///"+addrs[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	if _, err := apiv1.NewRaftdClient(cc2).Apply(ctxT(t), &apiv1.ApplyRequest{Command: []byte(add)}); err != nil {
		t.Fatal(err)
	}
	if got := query(t, c); got != `{"value":3}` {
		t.Fatalf("counter %s after a retry without identity, want 3 (applied twice)", got)
	}
	// The session's next command acknowledges the first and applies.
	r, err = c.Apply(ctxT(t), []byte(add))
	if err != nil || r.Duplicate || r.ID.Seq != 2 || r.ID.Acked != 2 || string(r.Value) != `{"value":4}` {
		t.Fatalf("second Apply: %+v, %v", r, err)
	}
}

// TestApplyOutcomes: refusals and unreachable clusters are not applied;
// an identity the cluster will not apply again is an unknown outcome
// (session expired); a session the cluster forgot is replaced when no
// attempt can have been applied.
func TestApplyOutcomes(t *testing.T) {
	addrs := startCluster(t)
	c, err := New(Config{Endpoints: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	_, err = c.Apply(ctx, make([]byte, 2<<20))
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrNotApplied) || errors.Is(err, ErrOutcomeUnknown) || e.Code != codes.InvalidArgument {
		t.Fatalf("too large: %v", err)
	}
	if _, err := c.ApplyWithID(ctx, RequestID{Seq: 1}, []byte(add)); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("empty client id: %v", err)
	}
	_, err = c.ApplyWithID(ctx, RequestID{Client: []byte("forgotten"), Seq: 9, Acked: 9}, []byte(add))
	if !errors.Is(err, ErrSessionExpired) || !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotApplied) {
		t.Fatalf("unknown session acknowledging 9: %v", err)
	}
	// A session the cluster does not know, numbered past 1: its first
	// attempt is refused, and the command moves to a new session.
	old := c.SessionID()
	c.mu.Lock()
	c.sess.next = 7
	c.mu.Unlock()
	r, err := c.Apply(ctx, []byte(add))
	if err != nil || r.ID.Seq != 1 || string(r.ID.Client) == string(old) || string(c.SessionID()) == string(old) || string(r.Value) != `{"value":1}` {
		t.Fatalf("Apply in a forgotten session: %+v, %v", r, err)
	}

	// No node reachable at all: not applied, at once.
	dead, err := New(Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	_, err = dead.Apply(ctx, []byte(add))
	if !errors.As(err, &e) || !errors.Is(err, ErrNotApplied) || e.Code != codes.Unavailable || !strings.Contains(e.Message, "cannot reach 127.0.0.1:1") {
		t.Fatalf("no node reachable: %v", err)
	}
	dead.Close()
	if _, err := dead.Apply(ctx, []byte(add)); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("closed client: %v", err)
	}
}

// TestErrorMessage: one attempt reads as its answer and the outcome; after
// several, the outcome (the call's, over all attempts) comes first and the
// last answer is named as such, so that a refused last retry does not read
// as "not applied" when an earlier attempt may have been.
func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{Op: "apply", Attempts: 1, Addr: "127.0.0.1:7000", Message: "no leader", notApplied: true},
			"raftd apply: no leader (127.0.0.1:7000); not applied"},
		{Error{Op: "apply", Attempts: 3, Addr: "127.0.0.1:7001", Message: "no leader"},
			"raftd apply: outcome unknown after 3 attempts; the last: no leader (127.0.0.1:7001)"},
		{Error{Op: "query", Attempts: 0, Message: "cannot reach 127.0.0.1:1", notApplied: true},
			"raftd query: cannot reach 127.0.0.1:1; not applied"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
