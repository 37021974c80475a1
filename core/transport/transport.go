package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// Handler receives inbound traffic and delivery outcomes. Its method set is
// that of core/node's Handler, so a *node.Node satisfies it. Every method
// must be safe for concurrent use; none is called from inside Send.
// Process and ReceiveSnapshot must return once ctx is cancelled (Close
// waits for them when the transport serves with Serve).
type Handler interface {
	// Process steps m into raft. It may block until the node accepted m;
	// while it blocks, the sending peer's stream is not read.
	Process(ctx context.Context, m raft.Message) error
	// ReportUnreachable tells raft that a message to id was dropped.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells raft the outcome of streaming a snapshot to id.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// ReceiveSnapshot consumes the whole streamed snapshot body for MsgSnap
	// m, stores it durably, then steps m. Only a Read that returns io.EOF
	// proves the body complete and its checksum correct: the handler must
	// read until then, and discard the body on any other error.
	ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error
}

// SnapshotSource opens the body of an outgoing MsgSnap from its metadata
// and descriptor (m.Snapshot.Data). Its method set is that of core/node's
// SnapshotSource. The transport closes the returned reader.
type SnapshotSource interface {
	OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error)
}

// MaxSnapshotChunkBytes is the largest snapshot data chunk the transport
// sends.
const MaxSnapshotChunkBytes = 1 << 20

// gRPC metadata keys identifying the caller.
const (
	mdClusterID = "raftd-cluster-id"
	mdFrom      = "raftd-from"
	mdTo        = "raftd-to"
	// mdAccepted is the receiver's header that accepts a message stream.
	mdAccepted = "raftd-accepted"
)

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("transport: closed")

// Options configures a Transport. Zero fields take the documented defaults.
// MaxConcurrentStreams bounds the streams of one connection to the peer
// server (ServerOptions).
const MaxConcurrentStreams = 256

// DefaultQueueBytes is the default Options.QueueBytes.
const DefaultQueueBytes = 32 << 20

type Options struct {
	// ID is this node's id. Required: non-zero.
	ID uint64
	// ClusterID identifies the cluster. Traffic between nodes whose
	// ClusterIDs differ is rejected. The default, "", matches only "".
	ClusterID string
	// Handler receives inbound messages and delivery reports. Required.
	Handler Handler
	// Snapshots opens outgoing snapshot bodies. If nil, every outgoing
	// MsgSnap is reported as SnapshotFailure.
	Snapshots SnapshotSource
	// QueueMessages bounds each peer's outbound queue in messages. The
	// default is 4096.
	QueueMessages int
	// QueueBytes bounds each peer's outbound queue in bytes (the entries
	// and snapshot metadata the queued messages carry): a message that
	// would take a non-empty queue beyond it is dropped like one for a full
	// queue (raft retransmits). The default is DefaultQueueBytes (32 MiB).
	QueueBytes int
	// MaxBatchBytes is the approximate size at which the sender stops
	// adding messages to one MessageBatch (one message is always sent, even
	// if larger). The default is 4 MiB.
	MaxBatchBytes int
	// MaxMessageBytes is the largest gRPC message sent or received,
	// inbound and outbound. It must exceed MaxBatchBytes, the largest
	// single raft message (MaxSizePerMsg plus one maximal entry) and the
	// snapshot chunk size. The default is 64 MiB. A single raft message
	// larger than this is dropped and logged as an error.
	MaxMessageBytes int
	// SnapshotChunkBytes is the size of snapshot data chunks. The default
	// and maximum is MaxSnapshotChunkBytes (1 MiB).
	SnapshotChunkBytes int
	// DialTimeout bounds connecting to a peer and waiting for it to accept
	// a stream. The default is 5s.
	DialTimeout time.Duration
	// BackoffBase and BackoffMax bound the delay between reconnection
	// attempts to a peer; the delay doubles per failed attempt, with
	// jitter. The defaults are 50ms and 1s.
	BackoffBase, BackoffMax time.Duration
	// KeepaliveTime is how long a connection may be idle before a ping
	// checks it; KeepaliveTimeout is how long the ping may take before the
	// connection is considered dead. The defaults are 10s and 5s. The
	// receiving gRPC server must permit these pings (ServerOptions does).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// DialOptions are appended to the transport's own dial options, so
	// they can override them (for example TLS credentials, or a context
	// dialer in tests). The default transport credentials are insecure.
	DialOptions []grpc.DialOption
	// PeerDialOptions, if set, returns dial options for the connections to
	// peer id, appended after DialOptions (per-peer TLS credentials that
	// check the peer's certificate names id, for example).
	PeerDialOptions func(id uint64) []grpc.DialOption
	// Authorize, if set, is asked for every inbound stream whose metadata
	// checks passed whether its caller (ctx: TLS state through
	// google.golang.org/grpc/peer) may speak for node from; an error
	// refuses the stream with PermissionDenied before any message of it is
	// read.
	Authorize func(ctx context.Context, from uint64) error
	// Faults, if set, injects network faults (tests only).
	Faults *Faults
	// Logger receives connection state changes and errors. Nil discards.
	Logger *slog.Logger
}

func (o *Options) withDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.QueueMessages, 4096)
	def(&o.QueueBytes, DefaultQueueBytes)
	def(&o.MaxBatchBytes, 4<<20)
	def(&o.MaxMessageBytes, 64<<20)
	def(&o.SnapshotChunkBytes, MaxSnapshotChunkBytes)
	o.SnapshotChunkBytes = min(o.SnapshotChunkBytes, MaxSnapshotChunkBytes)
	defDur(&o.DialTimeout, 5*time.Second)
	defDur(&o.BackoffBase, 50*time.Millisecond)
	defDur(&o.BackoffMax, time.Second)
	o.BackoffMax = max(o.BackoffMax, o.BackoffBase)
	defDur(&o.KeepaliveTime, 10*time.Second)
	defDur(&o.KeepaliveTimeout, 5*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are cumulative counters of a Transport.
type Stats struct {
	// MessagesSent counts messages written to a peer stream.
	MessagesSent uint64
	// BatchesSent counts MessageBatch writes.
	BatchesSent uint64
	// MessagesDropped counts outbound messages dropped (queue full, peer
	// unknown or down, message too large).
	MessagesDropped uint64
	// MessagesReceived counts inbound messages passed to Handler.Process.
	MessagesReceived uint64
	// SnapshotsSent and SnapshotsFailed count outbound transfers by outcome.
	SnapshotsSent, SnapshotsFailed uint64
	// SnapshotsReceived counts inbound transfers the handler accepted.
	SnapshotsReceived uint64
}

type counters struct {
	messagesSent, batchesSent, messagesDropped, messagesReceived atomic.Uint64
	snapshotsSent, snapshotsFailed, snapshotsReceived            atomic.Uint64
}

// Transport implements core/node's Transport over gRPC. All methods are
// safe for concurrent use.
type Transport struct {
	opts     Options
	dialOpts []grpc.DialOption
	// ctx is cancelled by Close; every goroutine of the transport watches it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  counters
	// snapSend observes completed outbound snapshot transfers (seconds).
	snapSend prometheus.Histogram

	mu     sync.RWMutex
	closed bool
	peers  map[uint64]*peer
	srv    *grpc.Server // set by Serve

	xferMu sync.Mutex
	xfers  map[*transfer]struct{}

	// Unreachable reports are coalesced per peer and delivered by one
	// goroutine, so Send never calls into the Handler.
	unreachMu  sync.Mutex
	unreach    map[uint64]struct{}
	unreachSig chan struct{}
}

// New returns a Transport that is ready to Send and to be served with Serve
// or Register. It panics if opts.ID is zero or opts.Handler is nil: both
// are programming errors of the caller.
func New(opts Options) *Transport {
	if opts.ID == raft.None {
		panic("transport: Options.ID must be non-zero")
	}
	if opts.Handler == nil {
		panic("transport: Options.Handler must be set")
	}
	opts.withDefaults()
	t := &Transport{
		opts:       opts,
		peers:      make(map[uint64]*peer),
		unreach:    make(map[uint64]struct{}),
		xfers:      make(map[*transfer]struct{}),
		unreachSig: make(chan struct{}, 1),
		snapSend:   newSnapSendHistogram(),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(opts.MaxMessageBytes),
		),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  opts.BackoffBase,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   opts.BackoffMax,
			},
			MinConnectTimeout: opts.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                opts.KeepaliveTime,
			Timeout:             opts.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}, opts.DialOptions...)
	t.wg.Add(1)
	go t.reportLoop()
	return t
}

// ServerOptions returns the gRPC server options the Raft service needs:
// message size limits matching MaxMessageBytes, a keepalive policy that
// admits the transport's pings, and server-side keepalive pings. A caller that builds its own *grpc.Server
// for Register must include them, or peers will be disconnected for
// pinging too often.
func (t *Transport) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.MaxRecvMsgSize(t.opts.MaxMessageBytes),
		grpc.MaxSendMsgSize(t.opts.MaxMessageBytes),
		// One Raft stream per peer, its snapshot transfers and the client
		// calls a member forwards: far below this; it bounds what one
		// connection can make this node hold.
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             min(t.opts.KeepaliveTime, 5*time.Second),
			PermitWithoutStream: true,
		}),
		// Pings from this side find senders that vanished without closing
		// their connection, so their inbound streams end.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    t.opts.KeepaliveTime,
			Timeout: t.opts.KeepaliveTimeout,
		}),
	}
}

// Register registers the Raft peer service on s, which the caller owns
// (build it with ServerOptions). The caller must stop s to end inbound
// streams; after Close, inbound messages are discarded.
func (t *Transport) Register(s grpc.ServiceRegistrar) {
	raftv1.RegisterRaftServer(s, &server{t: t})
}

// Serve serves the Raft peer service on lis with a gRPC server of the
// transport's own, until Close. It returns nil after Close, ErrClosed if
// called after Close, or the listener's error.
func (t *Transport) Serve(lis net.Listener) error {
	// Stop (in Close) waits for handlers, so no inbound call outlives Close.
	s := grpc.NewServer(append(t.ServerOptions(), grpc.WaitForHandlers(true))...)
	t.Register(s)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = lis.Close()
		return ErrClosed
	}
	if t.srv != nil {
		t.mu.Unlock()
		return errors.New("transport: Serve called twice")
	}
	t.srv = s
	t.mu.Unlock()
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("transport: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// AddPeer starts (or, if addr changed, restarts) the stream to peer id at
// addr ("host:port", or any gRPC target with a scheme). Adding this node's
// own id, or a peer that exists with the same address, is a no-op.
func (t *Transport) AddPeer(id uint64, addr string) {
	if id == t.opts.ID || id == raft.None {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if old := t.peers[id]; old != nil {
		if old.addr == addr {
			return
		}
		old.cancel()
	}
	p, err := newPeer(t, id, addr)
	if err != nil {
		// Only a malformed target gets here; every send to id is reported
		// unreachable until AddPeer is called with a good address.
		t.opts.Logger.Error("transport: bad peer address", "peer", id, "addr", addr, "err", err)
		delete(t.peers, id)
		return
	}
	t.peers[id] = p
	t.wg.Add(1)
	go p.run()
}

// RemovePeer stops the stream to id and any snapshot transfer to it. It
// does not wait for them to finish.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.peers[id]; p != nil {
		p.cancel()
		delete(t.peers, id)
	}
}

// Send queues msgs for their peers and returns without blocking. Messages
// to an unknown peer, or to a peer whose queue is full, are dropped and
// reported unreachable (asynchronously, never from inside Send). A MsgSnap
// starts a snapshot transfer on its own goroutine. Send retains the
// messages' byte slices until they are written: the caller must not modify
// them (the core never does).
func (t *Transport) Send(msgs []raft.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	for i := range msgs {
		m := &msgs[i]
		if m.To == t.opts.ID || m.To == raft.None {
			continue
		}
		p := t.peers[m.To]
		if m.Type == raft.MsgSnap {
			// Every MsgSnap gets a ReportSnapshot, or the leader would
			// wait for this one forever (the fault injector's partition is
			// checked by the transfer itself).
			t.startSnapshot(p, *m)
			continue
		}
		if t.opts.Faults.dropOut(m.To) {
			continue
		}
		if p == nil {
			t.stats.messagesDropped.Add(1)
			t.reportUnreachable(m.To)
			continue
		}
		n := int64(estimateSize(m))
		if q := p.queuedBytes.Load(); q > 0 && q+n > int64(t.opts.QueueBytes) {
			t.stats.messagesDropped.Add(1)
			t.reportUnreachable(m.To)
			continue
		}
		p.queuedBytes.Add(n)
		select {
		case p.queue <- *m:
		default:
			p.queuedBytes.Add(-n)
			t.stats.messagesDropped.Add(1)
			t.reportUnreachable(m.To)
		}
	}
}

// Stats returns the transport's counters.
func (t *Transport) Stats() Stats {
	return Stats{
		MessagesSent:      t.stats.messagesSent.Load(),
		BatchesSent:       t.stats.batchesSent.Load(),
		MessagesDropped:   t.stats.messagesDropped.Load(),
		MessagesReceived:  t.stats.messagesReceived.Load(),
		SnapshotsSent:     t.stats.snapshotsSent.Load(),
		SnapshotsFailed:   t.stats.snapshotsFailed.Load(),
		SnapshotsReceived: t.stats.snapshotsReceived.Load(),
	}
}

// Connected reports whether the message stream to peer id is up.
func (t *Transport) Connected(id uint64) bool {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	return p != nil && p.connected.Load()
}

// Close stops every peer stream and snapshot transfer, stops the server
// started by Serve (waiting for its inbound calls, which end when their
// context is cancelled), and waits for the transport's goroutines to exit.
// After Close returns, the transport makes no outbound report
// (ReportUnreachable, ReportSnapshot) and, with Serve, no inbound call
// (Process, ReceiveSnapshot). With Register, inbound calls end when the
// caller stops its server; stop it before Close. Close is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	srv := t.srv
	t.peers = nil
	t.mu.Unlock()
	t.cancel()
	if srv != nil {
		srv.Stop()
	}
	t.wg.Wait()
	return nil
}

// reportUnreachable records that id was unreachable; reportLoop tells the
// handler. Never blocks.
func (t *Transport) reportUnreachable(id uint64) {
	t.unreachMu.Lock()
	t.unreach[id] = struct{}{}
	t.unreachMu.Unlock()
	select {
	case t.unreachSig <- struct{}{}:
	default:
	}
}

func (t *Transport) reportLoop() {
	defer t.wg.Done()
	var ids []uint64
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.unreachSig:
		}
		t.unreachMu.Lock()
		ids = ids[:0]
		for id := range t.unreach {
			ids = append(ids, id)
		}
		clear(t.unreach)
		t.unreachMu.Unlock()
		slices.Sort(ids)
		for _, id := range ids {
			if t.ctx.Err() != nil {
				return
			}
			t.opts.Handler.ReportUnreachable(id)
		}
	}
}

// backoffDelay is the wait before reconnection attempt number attempt
// (0-based): base doubled per attempt, capped at maxDelay, then jittered
// uniformly into [d/2, d) by r in [0, 1).
func backoffDelay(attempt int, base, maxDelay time.Duration, r float64) time.Duration {
	d := maxDelay
	if attempt < 30 {
		if b := base << attempt; b > 0 && b < maxDelay {
			d = b
		}
	}
	return d/2 + time.Duration(r*float64(d/2))
}

func jitter() float64 { return rand.Float64() }

// target turns a peer address into a gRPC target. Plain "host:port" is
// dialled as is (no resolver), so tests can use in-memory dialers.
func target(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return "passthrough:///" + addr
}

// Flow-control windows of peer connections (both sides), fixed. A fixed
// window turns off gRPC's bandwidth-delay probing, which otherwise sends an
// HTTP/2 PING, and its peer an ACK, for about every message received one
// at a time: at low load as many write syscalls as the Raft messages
// themselves. 4 MiB per stream keeps a snapshot transfer at 80 MB/s over a
// 50 ms round trip.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)
