package transport

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/raftd/raftd/core/pki"
	"github.com/raftd/raftd/core/raft"
)

// tlsNode is a transport serving on loopback TCP with peer TLS.
type tlsNode struct {
	tr   *Transport
	h    *recorder
	log  *logRecorder
	addr string
}

func startTLSNode(t *testing.T, id uint64, auth *pki.PeerAuth, snaps SnapshotSource) *tlsNode {
	t.Helper()
	n := &tlsNode{h: newRecorder(), log: &logRecorder{}}
	n.tr = New(Options{ID: id, ClusterID: "tls", Handler: n.h, Logger: slog.New(n.log), Snapshots: snaps,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		PeerDialOptions: auth.DialOptions, Authorize: auth.Authorize})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	s := grpc.NewServer(append(n.tr.ServerOptions(), grpc.Creds(auth.ServerCredentials()))...)
	n.tr.Register(s)
	go s.Serve(lis)
	t.Cleanup(func() {
		s.Stop()
		n.tr.Close()
	})
	return n
}

func newPeerAuth(t *testing.T, f pki.Files) *pki.PeerAuth {
	t.Helper()
	a, err := pki.NewPeerAuth(f, "", true)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPeerTLS: over peer TLS with member ids pinned, messages and a
// snapshot reach the member that owns the certificate; a valid certificate
// of another member posing as node 1, and a member certificate of another
// CA, get nothing processed.
func TestPeerTLS(t *testing.T) {
	cf, err := pki.InitCluster(filepath.Join(t.TempDir(), "ca"), 3, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.InitCluster(filepath.Join(t.TempDir(), "other"), 3, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n2 := startTLSNode(t, 2, newPeerAuth(t, cf.Nodes[1]), nil)
	snaps := source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 1<<20 + 3}, nil })
	n1 := startTLSNode(t, 1, newPeerAuth(t, cf.Nodes[0]), snaps)
	got := make(chan int64, 1)
	n2.h.receive = func(ctx context.Context, m raft.Message, body io.Reader) error {
		n, err := io.Copy(io.Discard, body)
		got <- n
		return err
	}
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.Send([]raft.Message{app(1, 2, 5, []byte("x"))})
	if m := recv(t, n2.h.msgs, "message over TLS"); m.From != 1 || m.Index != 5 {
		t.Fatalf("got %+v", m)
	}
	n1.tr.Send([]raft.Message{snapMsg()})
	if n := recv(t, got, "snapshot over TLS"); n != 1<<20+3 {
		t.Fatalf("snapshot body %d bytes", n)
	}
	if st := recv(t, n1.h.snapStatus, "snapshot report"); st != raft.SnapshotFinish {
		t.Fatalf("snapshot status %v", st)
	}

	// Node 3's certificate claiming to be node 1.
	impostor := startTLSNode(t, 1, newPeerAuth(t, cf.Nodes[2]), nil)
	impostor.tr.AddPeer(2, n2.addr)
	// A certificate of node 1 from another CA (that trusts ours, so only
	// node 2's side refuses).
	foreign := startTLSNode(t, 1, newPeerAuth(t, pki.Files{CertFile: other.Nodes[0].CertFile, KeyFile: other.Nodes[0].KeyFile, TrustedCAFile: cf.CACert}), nil)
	foreign.tr.AddPeer(2, n2.addr)
	for i := range uint64(20) {
		impostor.tr.Send([]raft.Message{app(1, 2, 100+i, []byte("evil"))})
		foreign.tr.Send([]raft.Message{app(1, 2, 200+i, []byte("evil"))})
	}
	recv(t, impostor.h.unreachable, "impostor's unreachable report")
	recv(t, foreign.h.unreachable, "foreign node's unreachable report")
	deadline := time.Now().Add(waitTimeout)
	for !impostor.log.contains("certificate of member 3 presented as member 1") {
		if time.Now().After(deadline) {
			t.Fatalf("impostor's rejection not logged: %q", impostor.log.lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The server's refusal reaches the foreign node as an alert or as a
	// broken connection, depending on timing: either way its stream fails.
	for !foreign.log.contains("transport: stream down") {
		if time.Now().After(deadline) {
			t.Fatalf("foreign node's failed stream not logged: %q", foreign.log.lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Node 1, the real one, still gets through, and nothing else did.
	n1.tr.Send([]raft.Message{app(1, 2, 6, []byte("y"))})
	if m := recv(t, n2.h.msgs, "message over TLS"); m.Index != 6 {
		t.Fatalf("after the impostors: got index %d (%q), want 6", m.Index, m.Entries[0].Data)
	}
	if s := n2.tr.Stats(); s.MessagesReceived != 2 {
		t.Fatalf("node 2 received %d messages, want 2", s.MessagesReceived)
	}
}
