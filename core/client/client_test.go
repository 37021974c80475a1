package client_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/core/daemon"
	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/fsms/kv"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc/codes"
)

func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, cfg daemon.Config) *daemon.Daemon {
	t.Helper()
	cfg.DataDir, cfg.FSM, cfg.NoSync = t.TempDir(), kv.New(), true
	if cfg.RaftAddr == "" && cfg.RaftListener == nil {
		cfg.RaftAddr = "127.0.0.1:0"
	}
	cfg.APIAddr = "127.0.0.1:0"
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d
}

func TestCall(t *testing.T) {
	d := start(t, daemon.Config{ID: 1})
	ctx := context.Background()
	// A dead address first: the next one is tried.
	c := &client.Client{Addrs: []string{deadAddr(t), d.APIAddr()}, Timeout: 5 * time.Second}
	resp, err := client.Do(ctx, c, apiv1.RaftdClient.Apply, &apiv1.ApplyRequest{Command: []byte(`{"op":"put","key":"a","value":"1"}`)})
	if err != nil || string(resp.GetResult()) != `{"ok":true}` {
		t.Fatalf("apply: %v %v", resp, err)
	}
	// A refusal of the request itself comes back at once, not applied.
	_, err = client.Do(ctx, c, apiv1.RaftdClient.AddMember, &apiv1.AddMemberRequest{Id: 1, RaftAddr: "127.0.0.1:1"})
	var ce *client.Error
	if !errors.As(err, &ce) || !ce.NotApplied || ce.Status.Code() != codes.FailedPrecondition || ce.Addr != d.APIAddr() {
		t.Fatalf("add a voter again: %v", err)
	}
	// Nobody listening: unreachable, every address named.
	dead := []string{deadAddr(t), deadAddr(t)}
	_, err = client.Do(ctx, &client.Client{Addrs: dead, Timeout: 5 * time.Second}, apiv1.RaftdClient.Status, &apiv1.StatusRequest{})
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || len(ue.Addrs) != 2 || ue.TimedOut {
		t.Fatalf("dead cluster: %v", err)
	}
	// A snapshot taken on demand is streamed with its header first, which
	// announces the stream's exact size.
	var body bytes.Buffer
	var announced int64 = -2
	hdr, err := c.DownloadSnapshot(ctx, true, &body, func(h *apiv1.SnapshotHeader) {
		if body.Len() != 0 {
			t.Errorf("header after %d bytes of data", body.Len())
		}
		announced = h.GetSize()
	})
	if err != nil || hdr.GetIndex() == 0 || body.Len() == 0 {
		t.Fatalf("download: header %v, %d bytes, %v", hdr, body.Len(), err)
	}
	if announced != int64(body.Len()) || hdr.GetSize() != announced {
		t.Fatalf("download: header announced %d bytes (returned header %d), received %d", announced, hdr.GetSize(), body.Len())
	}
}

// TestCallRetriesNoLeader: a node without a leader refuses, not applied;
// the client keeps trying until its timeout and returns that refusal.
func TestCallRetriesNoLeader(t *testing.T) {
	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := start(t, daemon.Config{ID: 1, RaftListener: raftLis,
		Peers: []node.Peer{{ID: 1, RaftAddr: raftLis.Addr().String()}, {ID: 2, RaftAddr: deadAddr(t)}, {ID: 3, RaftAddr: deadAddr(t)}}})
	c := &client.Client{Addrs: []string{d.APIAddr()}, Timeout: 300 * time.Millisecond}
	t0 := time.Now()
	_, err = client.Do(context.Background(), c, apiv1.RaftdClient.Apply, &apiv1.ApplyRequest{Command: []byte(`{}`)})
	var ce *client.Error
	if !errors.As(err, &ce) || !ce.NotApplied || ce.Status.Code() != codes.Unavailable {
		t.Fatalf("apply without a leader: %v", err)
	}
	if el := time.Since(t0); el < 300*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", el)
	}
}
