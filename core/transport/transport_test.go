package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// waitTimeout bounds every wait for an event; tests fail rather than hang.
const waitTimeout = 10 * time.Second

// bufnet is an in-memory network of named bufconn listeners.
type bufnet struct {
	mu  sync.Mutex
	lis map[string]*bufconn.Listener
}

func newBufnet() *bufnet { return &bufnet{lis: make(map[string]*bufconn.Listener)} }

func (n *bufnet) listen(addr string) *bufconn.Listener {
	l := bufconn.Listen(1 << 20)
	n.mu.Lock()
	n.lis[addr] = l
	n.mu.Unlock()
	return l
}

func (n *bufnet) unlisten(addr string) {
	n.mu.Lock()
	delete(n.lis, addr)
	n.mu.Unlock()
}

func (n *bufnet) dial(ctx context.Context, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.lis[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	return l.DialContext(ctx)
}

// recorder is a Handler that records everything as events.
type recorder struct {
	msgs        chan raft.Message
	unreachable chan uint64
	snapStatus  chan raft.SnapshotStatus
	// process and receive, if set, replace the default behaviour.
	process func(ctx context.Context, m raft.Message) error
	receive func(ctx context.Context, m raft.Message, body io.Reader) error
}

func newRecorder() *recorder {
	return &recorder{
		msgs:        make(chan raft.Message, 1<<16),
		unreachable: make(chan uint64, 1<<10),
		snapStatus:  make(chan raft.SnapshotStatus, 16),
	}
}

func (r *recorder) Process(ctx context.Context, m raft.Message) error {
	if r.process != nil {
		return r.process(ctx, m)
	}
	select {
	case r.msgs <- m:
	default:
		panic("recorder: message buffer full")
	}
	return nil
}

func (r *recorder) ReportUnreachable(id uint64) {
	select {
	case r.unreachable <- id:
	default:
	}
}

func (r *recorder) ReportSnapshot(id uint64, st raft.SnapshotStatus) { r.snapStatus <- st }

func (r *recorder) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	if r.receive != nil {
		return r.receive(ctx, m, body)
	}
	_, err := io.Copy(io.Discard, body)
	return err
}

// logRecorder is a slog.Handler that keeps warnings and errors as
// "message k=v ...".
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l *logRecorder) WithGroup(string) slog.Handler                 { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

type node struct {
	id    uint64
	addr  string
	tr    *Transport
	h     *recorder
	log   *logRecorder
	serve chan error
}

// startNode starts a transport for id serving on the bufnet address
// "node-<id>". The test closes it at cleanup.
func startNode(t *testing.T, bn *bufnet, id uint64, h *recorder, mod func(*Options)) *node {
	t.Helper()
	n := &node{id: id, addr: fmt.Sprintf("node-%d", id), h: h, log: &logRecorder{}, serve: make(chan error, 1)}
	opts := Options{
		ID:          id,
		ClusterID:   "test",
		Handler:     h,
		Logger:      slog.New(n.log),
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  100 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(bn.dial)},
	}
	if mod != nil {
		mod(&opts)
	}
	n.tr = New(opts)
	lis := bn.listen(n.addr)
	go func() { n.serve <- n.tr.Serve(lis) }()
	t.Cleanup(func() { n.stop(t, bn) })
	return n
}

// stop closes the node's transport and takes its address off the network.
func (n *node) stop(t *testing.T, bn *bufnet) {
	bn.unlisten(n.addr)
	if n.tr.Close() != nil {
		t.Error("close failed")
	}
	select {
	case err := <-n.serve:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("node %d: Serve: %v", n.id, err)
		}
		n.serve <- nil // stop is idempotent
	case <-time.After(waitTimeout):
		t.Errorf("node %d: Serve did not return after Close", n.id)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

func app(from, to, index uint64, data []byte) raft.Message {
	return raft.Message{Type: raft.MsgApp, From: from, To: to, Term: 1, Index: index,
		Entries: []raft.Entry{{Term: 1, Index: index + 1, Data: data}}}
}

func TestBatchesDeliveredInOrder(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.QueueMessages = 20000 })
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n3 := startNode(t, bn, 3, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.AddPeer(3, n3.addr)
	n1.tr.AddPeer(1, "self is ignored")

	const total = 10000
	var msgs []raft.Message
	for i := uint64(0); i < total; i++ {
		msgs = append(msgs, app(1, 2+i%2, i, []byte(fmt.Sprint(i))))
		if len(msgs) == 100 {
			n1.tr.Send(msgs)
			msgs = nil
		}
	}
	for _, n := range []*node{n2, n3} {
		next := uint64(n.id - 2)
		for next < total {
			m := recv(t, n.h.msgs, fmt.Sprintf("message %d at node %d", next, n.id))
			if m.Index != next || m.From != 1 || m.To != n.id || string(m.Entries[0].Data) != fmt.Sprint(next) {
				t.Fatalf("node %d: got %s index %d from %d, want index %d", n.id, m.Type, m.Index, m.From, next)
			}
			next += 2
		}
	}
	st := n1.tr.Stats()
	if st.MessagesSent != total || st.MessagesDropped != 0 {
		t.Fatalf("stats %+v, want %d sent and none dropped", st, total)
	}
	if st.BatchesSent >= total {
		t.Errorf("no batching: %d batches for %d messages", st.BatchesSent, total)
	}
	if got := n2.tr.Stats().MessagesReceived; got != total/2 {
		t.Errorf("node 2 received %d, want %d", got, total/2)
	}
	if !n1.tr.Connected(2) || n1.tr.Connected(9) {
		t.Error("Connected: wrong answer")
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), nil)
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	hb := []raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 1}}
	n1.tr.Send(hb)
	recv(t, n2.h.msgs, "first heartbeat")

	n2.stop(t, bn)
	// The stream notices the restart by itself, without traffic.
	if id := recv(t, n1.h.unreachable, "unreachable report"); id != 2 {
		t.Fatalf("unreachable %d, want 2", id)
	}
	n2b := startNode(t, bn, 2, newRecorder(), nil)
	deadline := time.Now().Add(waitTimeout)
	for {
		n1.tr.Send(hb)
		select {
		case <-n2b.h.msgs:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat delivered after the peer restarted")
		}
	}
}

// sendAll calls Send n times from a goroutine and fails the test if that
// takes longer than limit: Send must never block.
func sendAll(t *testing.T, tr *Transport, msgs []raft.Message, n int, limit time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			tr.Send(msgs)
		}
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%d Sends did not return within %v: Send blocked", n, limit)
	}
}

func TestSlowOrDeadPeerNeverBlocksSend(t *testing.T) {
	bn := newBufnet()
	release := make(chan struct{})
	defer close(release)
	slow := newRecorder()
	slow.process = func(ctx context.Context, m raft.Message) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.QueueMessages = 64 })
	n2 := startNode(t, bn, 2, slow, nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.AddPeer(3, "node-3") // nothing listens there

	payload := bytes.Repeat([]byte{'x'}, 16<<10)
	msgs := []raft.Message{app(1, 2, 1, payload), app(1, 3, 1, payload)}
	// 20000 x 16 KiB to the slow peer is far more than any stream window.
	sendAll(t, n1.tr, msgs, 20000, 5*time.Second)
	seen := map[uint64]bool{}
	for !seen[2] || !seen[3] {
		seen[recv(t, n1.h.unreachable, "unreachable reports for 2 and 3")] = true
	}
	if n1.tr.Stats().MessagesDropped == 0 {
		t.Fatal("nothing dropped")
	}
	// Unknown peers are reported too.
	n1.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 7}})
	for id := uint64(0); id != 7; {
		id = recv(t, n1.h.unreachable, "unreachable report for unknown peer 7")
	}
}

// The per-peer queue is bounded in bytes too (Options.QueueBytes): a slow
// peer holds at most that much of the sender's memory, whatever the
// message count; what is over is dropped and reported, and the accounting
// returns to zero once the queue drains.
func TestPeerQueueBoundedInBytes(t *testing.T) {
	bn := newBufnet()
	release := make(chan struct{})
	slow := newRecorder()
	slow.process = func(ctx context.Context, m raft.Message) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	const limit = 1 << 20
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.QueueBytes = limit })
	n2 := startNode(t, bn, 2, slow, nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.mu.RLock()
	p := n1.tr.peers[2]
	n1.tr.mu.RUnlock()
	payload := bytes.Repeat([]byte{'x'}, 64<<10)
	var peak int64
	for i := range 2000 {
		n1.tr.Send([]raft.Message{app(1, 2, uint64(i+1), payload)})
		peak = max(peak, p.queuedBytes.Load())
	}
	t.Logf("peak queued %d bytes (limit %d), %d dropped", peak, limit, n1.tr.Stats().MessagesDropped)
	if peak > limit {
		t.Fatalf("queue held %d bytes, limit %d", peak, limit)
	}
	if n1.tr.Stats().MessagesDropped == 0 {
		t.Fatal("nothing dropped")
	}
	if id := recv(t, n1.h.unreachable, "unreachable report for 2"); id != 2 {
		t.Fatalf("unreachable report for %d", id)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for p.queuedBytes.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queued bytes stay at %d after the peer drained", p.queuedBytes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOversizedMessageDropped(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.MaxMessageBytes = 64 << 10 })
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.Send([]raft.Message{app(1, 2, 1, make([]byte, 100<<10)), app(1, 2, 2, []byte("ok"))})
	if m := recv(t, n2.h.msgs, "the small message"); m.Index != 2 {
		t.Fatalf("got index %d, want 2", m.Index)
	}
	recv(t, n1.h.unreachable, "unreachable report for the dropped message")
	if !n1.log.contains("exceeds MaxMessageBytes") {
		t.Error("oversized message not logged")
	}
	// Messages that fit alone but not together are split across batches
	// instead of making a batch over the limit.
	dropped := n1.tr.Stats().MessagesDropped
	var msgs []raft.Message
	for i := uint64(10); i < 20; i++ {
		msgs = append(msgs, app(1, 2, i, make([]byte, 20<<10)))
	}
	n1.tr.Send(msgs)
	for i := uint64(10); i < 20; i++ {
		if m := recv(t, n2.h.msgs, "20 KiB message"); m.Index != i {
			t.Fatalf("got index %d, want %d", m.Index, i)
		}
	}
	if d := n1.tr.Stats().MessagesDropped; d != dropped {
		t.Fatalf("%d messages dropped", d-dropped)
	}
}

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	n, off int
	failAt int // if > 0, fail after this many bytes
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.failAt > 0 && r.off >= r.failAt {
		return 0, errors.New("disk on fire")
	}
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := min(len(p), r.n-r.off)
	if r.failAt > 0 {
		k = min(k, r.failAt-r.off)
	}
	for i := range k {
		x := uint32(r.off + i)
		p[i] = byte((x * 2654435761) >> 13)
	}
	r.off += k
	return k, nil
}

func (r *patternReader) Close() error { return nil }

type source func(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error)

func (f source) OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
	return f(meta, data)
}

func snapMsg() raft.Message {
	return raft.Message{Type: raft.MsgSnap, From: 1, To: 2, Term: 3, Snapshot: &raft.Snapshot{
		Metadata: raft.SnapshotMetadata{Index: 1000, Term: 2, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}}},
		Data:     []byte("snap-1000"),
	}}
}

func TestSnapshotStreamedInChunks(t *testing.T) {
	const size = 20 << 20
	want := sha256.New()
	if _, err := io.Copy(want, &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	bn := newBufnet()
	type result struct {
		m       raft.Message
		sum     []byte
		n       int64
		maxRead int
		reads   int
		err     error
	}
	got := make(chan result, 1)
	midway := make(chan struct{})
	resume := make(chan struct{})
	h2 := newRecorder()
	h2.receive = func(ctx context.Context, m raft.Message, body io.Reader) error {
		res := result{m: m}
		sum := sha256.New()
		buf := make([]byte, 4<<20)
		for {
			n, err := body.Read(buf)
			res.n += int64(n)
			res.reads++
			res.maxRead = max(res.maxRead, n)
			sum.Write(buf[:n])
			if res.reads == 3 {
				close(midway)
				<-resume
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				res.err = err
				break
			}
		}
		res.sum = sum.Sum(nil)
		got <- res
		return res.err
	}
	var opened atomic.Value
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) {
		o.Snapshots = source(func(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
			opened.Store(string(data))
			return &patternReader{n: size}, nil
		})
	})
	n2 := startNode(t, bn, 2, h2, nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.Send([]raft.Message{snapMsg()})

	// While the receiver holds the transfer, heartbeats still flow.
	recv(t, midway, "the transfer to start")
	if x := n1.tr.SnapshotTransfers(); len(x) != 1 || x[0].To != 2 || x[0].Index != 1000 || x[0].BytesSent == 0 {
		t.Fatalf("transfers in progress: %+v", x)
	}
	n1.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 3}})
	if m := recv(t, n2.h.msgs, "heartbeat during transfer"); m.Type != raft.MsgHeartbeat {
		t.Fatalf("got %s, want MsgHeartbeat", m.Type)
	}
	close(resume)

	res := recv(t, got, "snapshot body")
	if res.err != nil {
		t.Fatalf("receive: %v", res.err)
	}
	if res.n != size || !bytes.Equal(res.sum, want.Sum(nil)) {
		t.Fatalf("got %d bytes (sha %x), want %d bytes (sha %x)", res.n, res.sum, size, want.Sum(nil))
	}
	if res.maxRead > MaxSnapshotChunkBytes || res.reads < size/MaxSnapshotChunkBytes {
		t.Fatalf("%d reads of at most %d bytes: not chunked at <= 1 MiB", res.reads, res.maxRead)
	}
	if res.m.Type != raft.MsgSnap || res.m.Snapshot.Metadata.Index != 1000 || string(res.m.Snapshot.Data) != "snap-1000" {
		t.Fatalf("wrong MsgSnap delivered: %+v", res.m)
	}
	if opened.Load() != "snap-1000" {
		t.Fatalf("SnapshotSource opened %v", opened.Load())
	}
	if st := recv(t, n1.h.snapStatus, "snapshot report"); st != raft.SnapshotFinish {
		t.Fatalf("status %v, want SnapshotFinish", st)
	}
	if x := n1.tr.SnapshotTransfers(); len(x) != 0 {
		t.Fatalf("finished transfer still listed: %+v", x)
	}
	if st := n1.tr.Stats(); st.SnapshotsSent != 1 || n2.tr.Stats().SnapshotsReceived != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if n, sum := snapSendObserved(t, n1.tr); n != 1 || sum <= 0 {
		t.Fatalf("raftd_snapshot_send_seconds: %d observations, sum %v; want 1 transfer", n, sum)
	}
	if n, _ := snapSendObserved(t, n2.tr); n != 0 {
		t.Fatalf("the receiver observed %d snapshot sends", n)
	}
}

// snapSendObserved returns the count and sum of tr's
// raftd_snapshot_send_seconds, as scraped.
func snapSendObserved(t *testing.T, tr *Transport) (uint64, float64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tr.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "raftd_snapshot_send_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("raftd_snapshot_send_seconds not collected")
	return 0, 0
}

func TestSnapshotFailures(t *testing.T) {
	tests := []struct {
		name        string
		source      SnapshotSource
		receive     func(ctx context.Context, m raft.Message, body io.Reader) error
		wantRecvErr string // the receiver's body must fail with this
		to          uint64 // default 2
		faults      func(*Faults)
	}{
		{
			name: "sender read error breaks the stream",
			source: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) {
				return &patternReader{n: 8 << 20, failAt: 3 << 20}, nil
			}),
			wantRecvErr: "broke after",
		},
		{
			name:   "open fails",
			source: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return nil, errors.New("no such snapshot") }),
		},
		{
			name:   "no source",
			source: nil,
		},
		{
			name:   "unknown peer",
			source: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 100}, nil }),
			to:     5,
		},
		{
			name:   "partitioned",
			source: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 100}, nil }),
			faults: func(f *Faults) { f.Partition(2) },
		},
		{
			name:   "receiver refuses",
			source: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 100}, nil }),
			receive: func(ctx context.Context, m raft.Message, body io.Reader) error {
				return errors.New("disk full")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bn := newBufnet()
			recvErr := make(chan error, 1)
			h2 := newRecorder()
			h2.receive = tt.receive
			if h2.receive == nil {
				h2.receive = func(ctx context.Context, m raft.Message, body io.Reader) error {
					_, err := io.Copy(io.Discard, body)
					recvErr <- err
					return err
				}
			}
			f := NewFaults(1)
			if tt.faults != nil {
				tt.faults(f)
			}
			n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.Snapshots = tt.source; o.Faults = f })
			n2 := startNode(t, bn, 2, h2, nil)
			n1.tr.AddPeer(2, n2.addr)
			m := snapMsg()
			if tt.to != 0 {
				m.To = tt.to
			}
			n1.tr.Send([]raft.Message{m})
			if st := recv(t, n1.h.snapStatus, "snapshot report"); st != raft.SnapshotFailure {
				t.Fatalf("status %v, want SnapshotFailure", st)
			}
			if tt.wantRecvErr != "" {
				err := recv(t, recvErr, "receiver's result")
				if err == nil || !strings.Contains(err.Error(), tt.wantRecvErr) {
					t.Fatalf("receiver read error %v, want %q", err, tt.wantRecvErr)
				}
			}
			if n2.tr.Stats().SnapshotsReceived != 0 || n1.tr.Stats().SnapshotsFailed != 1 {
				t.Fatalf("stats: sender %+v receiver %+v", n1.tr.Stats(), n2.tr.Stats())
			}
		})
	}
}

// fakeSnapServer feeds chunks to a chunkReader.
type fakeSnapServer struct {
	raftv1.Raft_SendSnapshotServer
	chunks []*raftv1.SnapshotChunk
	err    error
}

func (f *fakeSnapServer) Recv() (*raftv1.SnapshotChunk, error) {
	if len(f.chunks) == 0 {
		return nil, f.err
	}
	c := f.chunks[0]
	f.chunks = f.chunks[1:]
	return c, nil
}

func TestChunkReaderVerifies(t *testing.T) {
	data := []byte("hello, snapshot")
	crc := func(b []byte) uint32 { var c uint32; return crc32Update(c, b) }
	tests := []struct {
		name    string
		chunks  []*raftv1.SnapshotChunk
		end     error
		wantErr string
	}{
		{"ok", []*raftv1.SnapshotChunk{{Data: data[:5]}, {Data: data[5:]}, {Done: true, TotalBytes: uint64(len(data)), Crc32C: crc(data)}}, io.EOF, ""},
		{"ok, data in last chunk", []*raftv1.SnapshotChunk{{Data: data, Done: true, TotalBytes: uint64(len(data)), Crc32C: crc(data)}}, io.EOF, ""},
		{"empty", []*raftv1.SnapshotChunk{{Done: true}}, io.EOF, ""},
		{"no last chunk", []*raftv1.SnapshotChunk{{Data: data}}, io.EOF, "without its last chunk"},
		{"bad crc", []*raftv1.SnapshotChunk{{Data: data}, {Done: true, TotalBytes: uint64(len(data)), Crc32C: 1}}, io.EOF, "corrupt"},
		{"bad length", []*raftv1.SnapshotChunk{{Data: data}, {Done: true, TotalBytes: 3, Crc32C: crc(data)}}, io.EOF, "corrupt"},
		{"message in data", []*raftv1.SnapshotChunk{{Message: &raftv1.Message{}}}, io.EOF, "message in a data chunk"},
		{"stream error", []*raftv1.SnapshotChunk{{Data: data}}, status.Error(codes.Canceled, "gone"), "broke after 15 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &chunkReader{srv: &fakeSnapServer{chunks: tt.chunks, err: tt.end}, from: 1, index: 5}
			got, err := io.ReadAll(r)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if tt.name != "empty" && !bytes.Equal(got, data) {
					t.Fatalf("got %q", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestClusterIDMismatchRejected(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), nil)
	n2 := startNode(t, bn, 2, newRecorder(), func(o *Options) { o.ClusterID = "other" })
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	recv(t, n1.h.unreachable, "unreachable report")
	deadline := time.Now().Add(waitTimeout)
	for !n1.log.contains(`cluster id mismatch: node 1 is in cluster "test", receiver node 2 is in cluster "other"`) {
		if time.Now().After(deadline) {
			t.Fatalf("rejection not logged; log: %q", n1.log.lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case m := <-n2.h.msgs:
		t.Fatalf("message from another cluster was processed: %+v", m)
	default:
	}

	// The exact status a raw caller sees, for each identity problem.
	cc, err := grpc.NewClient("passthrough:///node-2", grpc.WithContextDialer(bn.dial), grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, tc := range []struct {
		md   []string
		want string
	}{
		{[]string{mdClusterID, "test", mdFrom, "1", mdTo, "2"}, `cluster id mismatch`},
		{[]string{mdClusterID, "other", mdFrom, "1", mdTo, "3"}, `sent traffic for node 3 to node 2`},
		{[]string{mdClusterID, "other", mdFrom, "x", mdTo, "2"}, `bad raftd-from`},
		{nil, `no raftd-cluster-id metadata`},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), tc.md...)
		stream, err := raftv1.NewRaftClient(cc).Stream(ctx)
		if err == nil {
			_, _ = stream.Header()
			err = stream.RecvMsg(&raftv1.StreamResponse{})
		}
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("metadata %v: err %v, want FailedPrecondition %q", tc.md, err, tc.want)
		}
	}
}

func TestFaultsPartitionAndHeal(t *testing.T) {
	bn := newBufnet()
	f := NewFaults(1)
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.Faults = f })
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	hb := func(i uint64) []raft.Message {
		return []raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: i}}
	}
	f.Partition(2)
	n1.tr.Send(hb(1))
	f.Heal()
	n1.tr.Send(hb(2))
	if m := recv(t, n2.h.msgs, "heartbeat after heal"); m.Commit != 2 {
		t.Fatalf("got commit %d: a partitioned message was delivered", m.Commit)
	}
	f.SetLoss(2, 1)
	n1.tr.Send(hb(3))
	f.Heal(2)
	n1.tr.Send(hb(4))
	if m := recv(t, n2.h.msgs, "heartbeat after loss"); m.Commit != 4 {
		t.Fatalf("got commit %d: a lost message was delivered", m.Commit)
	}
	// Inbound: node 1 refuses node 2's stream while partitioned.
	f.Partition(2)
	n2.tr.AddPeer(1, n1.addr)
	n2.tr.Send([]raft.Message{{Type: raft.MsgHeartbeatResp, From: 2, To: 1}})
	recv(t, n2.h.unreachable, "node 2 sees node 1 unreachable")
	select {
	case m := <-n1.h.msgs:
		t.Fatalf("partitioned inbound message delivered: %+v", m)
	default:
	}
}

func TestBackoffDelay(t *testing.T) {
	base, maxD := 50*time.Millisecond, time.Second
	for _, tc := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{0, 0, 25 * time.Millisecond},
		{0, 0.999999, 49999975 * time.Nanosecond},
		{1, 0, 50 * time.Millisecond},
		{3, 0.5, 300 * time.Millisecond},
		{5, 0, 500 * time.Millisecond}, // 1.6s capped at 1s
		{63, 0, 500 * time.Millisecond},
		{1000, 1, time.Second},
	} {
		if got := backoffDelay(tc.attempt, base, maxD, tc.r); got != tc.want {
			t.Errorf("backoffDelay(%d, r=%v) = %v, want %v", tc.attempt, tc.r, got, tc.want)
		}
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		bn := newBufnet()
		var nodes []*node
		hold := make(chan struct{})
		for id := uint64(1); id <= 3; id++ {
			h := newRecorder()
			if id == 3 {
				// Node 3 holds snapshot transfers open until Close.
				h.receive = func(ctx context.Context, m raft.Message, body io.Reader) error {
					<-ctx.Done()
					return ctx.Err()
				}
			}
			n := startNode(t, bn, id, h, func(o *Options) {
				o.Snapshots = source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 4 << 20}, nil })
			})
			nodes = append(nodes, n)
		}
		for _, a := range nodes {
			for _, b := range nodes {
				a.tr.AddPeer(b.id, b.addr)
			}
			a.tr.AddPeer(9, "node-9") // never answers
		}
		for _, a := range nodes {
			for _, b := range nodes {
				if a != b {
					a.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: a.id, To: b.id}})
				}
			}
		}
		for _, n := range nodes {
			recv(t, n.h.msgs, "heartbeat")
			recv(t, n.h.msgs, "heartbeat")
		}
		snap := snapMsg()
		snap.To = 3
		nodes[0].tr.Send([]raft.Message{snap})
		close(hold)
		for _, n := range nodes {
			n.stop(t, bn)
			n.stop(t, bn)                                                           // idempotent
			n.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: n.id, To: 1}}) // no-op after Close
			n.tr.AddPeer(5, "node-5")
		}
	}()
	deadline := time.Now().Add(waitTimeout)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGeneratedClientAccepted checks that the receiver also serves a client
// that sends generated MessageBatch structs with the standard proto codec,
// as a peer in another language would.
func TestGeneratedClientAccepted(t *testing.T) {
	sendGenerated = true
	defer func() { sendGenerated = false }()
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), nil)
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	want := app(1, 2, 7, []byte("generated"))
	n1.tr.Send([]raft.Message{want})
	got := recv(t, n2.h.msgs, "message")
	if got.Index != 7 || string(got.Entries[0].Data) != "generated" {
		t.Fatalf("got %+v", got)
	}
}

// TestHungPeerTimesOut: a peer that accepts connections but never answers
// (a stopped process) is reported unreachable after DialTimeout, and Send
// keeps returning at once.
func TestHungPeerTimesOut(t *testing.T) {
	bn := newBufnet()
	lis := bn.listen("hung")
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	defer func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.DialTimeout = 100 * time.Millisecond })
	n1.tr.AddPeer(2, "hung")
	sendAll(t, n1.tr, []raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}}, 10000, 5*time.Second)
	recv(t, n1.h.unreachable, "unreachable report")
	deadline := time.Now().Add(waitTimeout)
	for !n1.log.contains("timed out connecting") {
		if time.Now().After(deadline) {
			t.Fatalf("no timeout logged: %q", n1.log.lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReceiverDropsInvalidMessages: messages that claim another sender or
// receiver, local messages and a MsgSnap on the message stream are dropped
// with a warning; the valid messages around them are delivered.
func TestReceiverDropsInvalidMessages(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), nil)
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	p := func() *peer { n1.tr.mu.RLock(); defer n1.tr.mu.RUnlock(); return n1.tr.peers[2] }()
	// Bypass Send's routing to put bad messages on node 1's stream to 2.
	for _, m := range []raft.Message{
		{Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: 1},
		{Type: raft.MsgHeartbeat, From: 3, To: 2},
		{Type: raft.MsgHeartbeat, From: 1, To: 3},
		{Type: raft.MsgHup, From: 1, To: 2},
		snapMsg(),
		{Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: 2},
	} {
		p.queue <- m
	}
	for want := uint64(1); want <= 2; want++ {
		if m := recv(t, n2.h.msgs, "valid heartbeat"); m.Commit != want {
			t.Fatalf("got %+v, want the heartbeat with commit %d", m, want)
		}
	}
	for _, s := range []string{"message from 3 on the stream of node 1", "message for 3 delivered to node 2", "local message MsgHup", "MsgSnap sent on the message stream peer=1"} {
		if !n2.log.contains(s) {
			t.Errorf("no warning %q", s)
		}
	}
}

// TestLoopbackTCP runs messages and a snapshot over real loopback TCP
// through Serve, with the default options.
func TestLoopbackTCP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2 := newRecorder()
	got := make(chan int64, 1)
	h2.receive = func(ctx context.Context, m raft.Message, body io.Reader) error {
		n, err := io.Copy(io.Discard, body)
		got <- n
		return err
	}
	tr2 := New(Options{ID: 2, ClusterID: "tcp", Handler: h2})
	served := make(chan error, 1)
	go func() { served <- tr2.Serve(lis) }()
	h1 := newRecorder()
	tr1 := New(Options{ID: 1, ClusterID: "tcp", Handler: h1,
		Snapshots: source(func(raft.SnapshotMetadata, []byte) (io.ReadCloser, error) { return &patternReader{n: 3<<20 + 5}, nil })})
	defer tr1.Close()
	tr1.AddPeer(2, lis.Addr().String())
	for i := range uint64(1000) {
		tr1.Send([]raft.Message{app(1, 2, i, []byte("tcp"))})
	}
	for i := range uint64(1000) {
		if m := recv(t, h2.msgs, "message over TCP"); m.Index != i {
			t.Fatalf("got index %d, want %d", m.Index, i)
		}
	}
	tr1.Send([]raft.Message{snapMsg()})
	if n := recv(t, got, "snapshot over TCP"); n != 3<<20+5 {
		t.Fatalf("snapshot body %d bytes", n)
	}
	if st := recv(t, h1.snapStatus, "snapshot report"); st != raft.SnapshotFinish {
		t.Fatalf("status %v", st)
	}
	if err := tr2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := tr2.Serve(lis); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
}

func TestFaultsSet(t *testing.T) {
	f := NewFaults(7)
	if err := f.Set("partition=3,4 loss=2:1 delay=5:50ms"); err != nil {
		t.Fatal(err)
	}
	if !f.isCut(3) || !f.isCut(4) || f.isCut(2) || !f.dropOut(2) || f.dropOut(5) || f.delayFor(5) != 50*time.Millisecond {
		t.Fatalf("faults not applied: %+v", f)
	}
	for _, bad := range []string{"partition", "partition=x", "loss=2", "loss=2:1.5", "delay=2:soon", "jam=2", "partition=0"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if !f.isCut(3) {
		t.Fatal("a failed Set changed the faults")
	}
	if err := f.Set(""); err != nil || f.isCut(3) || f.dropOut(2) {
		t.Fatalf("empty spec did not heal: %v", err)
	}
}

// TestOrderUnderFaults sends numbered messages while a seeded schedule
// partitions, heals, loses and restarts peers. Whatever arrives must arrive
// in order without duplicates, and delivery must resume once faults heal.
func TestOrderUnderFaults(t *testing.T) {
	bn := newBufnet()
	f := NewFaults(42)
	rng := newTestRand(42)
	n1 := startNode(t, bn, 1, newRecorder(), func(o *Options) { o.Faults = f; o.QueueMessages = 256 })
	var violations atomic.Int64
	monotonic := func(r *recorder) *recorder {
		var last atomic.Uint64
		r.process = func(ctx context.Context, m raft.Message) error {
			if prev := last.Swap(m.Index); m.Index <= prev {
				violations.Add(1)
			}
			select {
			case r.msgs <- m:
			default: // the test only needs the newest
				<-r.msgs
				r.msgs <- m
			}
			return nil
		}
		return r
	}
	peers := map[uint64]*node{}
	for id := uint64(2); id <= 3; id++ {
		peers[id] = startNode(t, bn, id, monotonic(newRecorder()), nil)
		n1.tr.AddPeer(id, peers[id].addr)
	}
	index := uint64(0)
	for round := range 200 {
		var msgs []raft.Message
		for range 20 {
			index++
			for id := uint64(2); id <= 3; id++ {
				msgs = append(msgs, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: id, Index: index})
			}
		}
		n1.tr.Send(msgs)
		if round%20 == 19 {
			id := uint64(2 + rng.IntN(2))
			switch rng.IntN(4) {
			case 0:
				f.Partition(id)
			case 1:
				f.SetLoss(id, 0.5)
			case 2:
				f.Heal()
			case 3:
				peers[id].stop(t, bn)
				peers[id] = startNode(t, bn, id, monotonic(newRecorder()), nil)
			}
		}
		time.Sleep(time.Millisecond) // pacing only; no assertion depends on it
	}
	f.Heal()
	deadline := time.Now().Add(waitTimeout)
	for id := uint64(2); id <= 3; id++ {
		final := index + 1
		for done := false; !done; {
			n1.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: id, Index: final}})
			select {
			case m := <-peers[id].h.msgs:
				done = m.Index >= index+1
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("delivery to %d did not resume after healing", id)
			}
			final++
		}
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d messages arrived out of order or twice", v)
	}
}
