package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/pki"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultMaxEntryBytes is the default limit on an Apply command (1 MiB).
const DefaultMaxEntryBytes = node.DefaultMaxEntryBytes

// MaxMessageBytes is the largest request the API receives (the largest
// --max-entry-bytes plus room for the envelope). Answers (query results,
// for example a kv list) are not limited: clients should accept
// MaxResponseBytes.
const MaxMessageBytes = 32 << 20

// MaxResponseBytes is what clients should accept as the largest answer.
const MaxResponseBytes = math.MaxInt32

// MaxConcurrentStreams bounds the calls one client connection may have in
// progress on the API (further calls wait on the client side for a slot):
// with the receive limit it bounds what one connection can make the
// server hold, about MaxConcurrentStreams x (2 x maxEntryBytes + 64 KiB).
const MaxConcurrentStreams = 128

// Flow-control windows of API connections (both sides), fixed so that
// gRPC sends no bandwidth-delay PINGs (why: core/transport's windows).
// 1 MiB per call holds a default-sized command in one window; larger ones
// take window updates.
const (
	streamWindow = 1 << 20
	connWindow   = 8 << 20
)

// DialOptions returns the dial options of a connection to the API or to a
// peer port's Forward service: it accepts the largest answers, sends up
// to MaxMessageBytes, and uses the API's fixed windows.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}
}

// ServerOptions returns the gRPC server options the API needs: a request
// may be up to twice maxEntryBytes plus 64 KiB (at most MaxMessageBytes),
// so that a command somewhat over --max-entry-bytes still reaches the
// handler and gets its clear refusal, and a connection carries at most
// MaxConcurrentStreams calls at once.
func ServerOptions(maxEntryBytes int) []grpc.ServerOption {
	if maxEntryBytes <= 0 {
		maxEntryBytes = DefaultMaxEntryBytes
	}
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.MaxRecvMsgSize(min(2*maxEntryBytes+64<<10, MaxMessageBytes)),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
	}
}

// Config configures a Server.
type Config struct {
	// Node is the local node. Required.
	Node *node.Node
	// RaftAddr, APIAddr and ClusterID fill the matching NodeStatus fields.
	RaftAddr, APIAddr, ClusterID string
	// FSMSHA256, if set, returns the running plugin binary's digest (it
	// changes with a reload or a restart from a replaced file); nil for an
	// FSM in process.
	FSMSHA256 func() string
	// ReloadFSM, if set, replaces the node's FSM plugin (ReloadFSM); nil
	// refuses the call (an FSM in process).
	ReloadFSM func(ctx context.Context, path, sha256 string) (FSMReload, error)
	// MaxEntryBytes limits the size of an Apply command. The default is
	// DefaultMaxEntryBytes.
	MaxEntryBytes int
	// ForwardAddr resolves the gRPC address on which member id serves the
	// Forward service (RegisterForward); it is used for forwarding and for
	// status fan-out. The default is the member's Raft address in the
	// node's membership.
	ForwardAddr func(id uint64) (string, bool)
	// PeerDialOptions, if set, returns the dial options (TLS credentials)
	// of connections to member id's Forward service, appended to the
	// default ones (plaintext, message size limits).
	PeerDialOptions func(id uint64) []grpc.DialOption
	// AuthorizePeer, if set, is asked for every Forward call whether its
	// caller (ctx) may speak for member from; an error refuses the call
	// with PermissionDenied.
	AuthorizePeer func(ctx context.Context, from uint64) error
	// SnapshotNeedsClientCert refuses DownloadSnapshot (PermissionDenied)
	// to a caller without a verified TLS client certificate.
	SnapshotNeedsClientCert bool
	// StatusTimeout bounds each peer status call of the fan-out. The default
	// is 1 s.
	StatusTimeout time.Duration
}

// errClosed is returned for forwarding after Close.
var errClosed = errors.New("server: closed")

// Server implements apiv1.RaftdServer. It is safe for concurrent use.
type Server struct {
	apiv1.UnimplementedRaftdServer
	cfg Config

	mu       sync.Mutex
	conns    map[connKey]*grpc.ClientConn
	closed   bool
	draining bool
	inflight int
	idle     chan struct{} // closed when draining and inflight reaches 0

	refused refusals // Apply requests refused here, by reason
}

// enter admits a request that may write (Apply and the admin calls), or
// refuses it, not applied, while the server drains. The caller calls leave.
func (s *Server) enter(ctx context.Context, op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return notApplied(ctx, codes.Unavailable, "%s: node %d is shutting down; not applied, retry on another node", op, s.cfg.Node.ID())
	}
	s.inflight++
	return nil
}

func (s *Server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.draining && s.inflight == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Drain refuses new requests (Unavailable, not applied) and waits until the
// requests in flight have finished or ctx ends. Call it before stopping the
// node, so that requests forwarded by other nodes are not cut off.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.inflight == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = time.Second
	}
	if cfg.ForwardAddr == nil {
		cfg.ForwardAddr = func(id uint64) (string, bool) { return memberRaftAddr(cfg.Node, id) }
	}
	return &Server{cfg: cfg, conns: map[connKey]*grpc.ClientConn{}}
}

// Register registers the service on r.
func (s *Server) Register(r grpc.ServiceRegistrar) { apiv1.RegisterRaftdServer(r, s) }

// Close closes the connections used for forwarding.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.conns = nil
	return errors.Join(errs...)
}

// Apply implements apiv1.RaftdServer.
func (s *Server) Apply(ctx context.Context, req *apiv1.ApplyRequest) (*apiv1.ApplyResponse, error) {
	if len(req.GetCommand()) == 0 {
		s.refused.add(refusedInvalid)
		return nil, notApplied(ctx, codes.InvalidArgument, "apply: empty command")
	}
	if n := len(req.GetCommand()); n > s.cfg.MaxEntryBytes {
		s.refused.add(refusedTooLarge)
		return nil, notApplied(ctx, codes.InvalidArgument, "apply: command is %d bytes, over the limit of %d bytes (--max-entry-bytes)", n, s.cfg.MaxEntryBytes)
	}
	if err := s.enter(ctx, "apply"); err != nil {
		s.refused.add(refusedDraining)
		return nil, err
	}
	defer s.leave()
	n := s.cfg.Node
	if lead := n.Leader(); lead != n.ID() {
		return s.forwardApply(ctx, lead, req)
	}
	// NB: should leadership move after the check above, raft forwards the
	// proposal to the new leader or refuses it (not applied).
	var id node.RequestID
	if rid := req.GetRequestId(); rid != nil {
		if len(rid.GetClient()) == 0 {
			return nil, notApplied(ctx, codes.InvalidArgument, "apply: request id without a client")
		}
		id = node.RequestID{Client: string(rid.GetClient()), Seq: rid.GetSeq(), Acked: rid.GetAcked()}
	}
	r, err := n.ProposeWithID(ctx, id, req.GetCommand())
	if err != nil {
		return nil, toStatus(ctx, "apply", err)
	}
	return &apiv1.ApplyResponse{Result: r.Value, Index: r.Index, Term: r.Term, Duplicate: r.Duplicate}, nil
}

// Query implements apiv1.RaftdServer.
func (s *Server) Query(ctx context.Context, req *apiv1.QueryRequest) (*apiv1.QueryResponse, error) {
	if len(req.GetQuery()) > s.cfg.MaxEntryBytes {
		return nil, notApplied(ctx, codes.InvalidArgument, "query: %d bytes, over the limit of %d bytes", len(req.GetQuery()), s.cfg.MaxEntryBytes)
	}
	var lin bool
	switch req.GetConsistency() {
	case apiv1.Consistency_CONSISTENCY_UNSPECIFIED, apiv1.Consistency_CONSISTENCY_LINEARIZABLE:
		lin = true
	case apiv1.Consistency_CONSISTENCY_STALE:
	default:
		return nil, notApplied(ctx, codes.InvalidArgument, "query: unknown consistency %d", req.GetConsistency())
	}
	if err := s.enter(ctx, "query"); err != nil {
		return nil, err
	}
	defer s.leave()
	n := s.cfg.Node
	if lin {
		if lead := n.Leader(); lead != n.ID() {
			return s.forwardQuery(ctx, lead, req)
		}
	}
	var res []byte
	var err error
	if lin {
		res, err = n.Read(ctx, req.GetQuery())
	} else {
		res, err = n.StaleRead(ctx, req.GetQuery())
	}
	if err != nil {
		return nil, toStatus(ctx, "query", err)
	}
	return &apiv1.QueryResponse{Result: res, AppliedIndex: n.Applied()}, nil
}

// leaderConn returns a ready connection to the leader lead, or a
// not-applied status error when there is none.
func (s *Server) leaderConn(ctx context.Context, op string, lead uint64) (*grpc.ClientConn, error) {
	if lead == 0 {
		return nil, notApplied(ctx, codes.Unavailable, "%s: no leader (election in progress or no quorum); not applied, retry", op)
	}
	if isForwarded(ctx) {
		return nil, notApplied(ctx, codes.Unavailable, "%s: node %d is not the leader any more (leader is %d); not applied, retry", op, s.cfg.Node.ID(), lead)
	}
	addr, ok := s.cfg.ForwardAddr(lead)
	if !ok {
		return nil, notApplied(ctx, codes.Unavailable, "%s: leader %d has no known address; not applied", op, lead)
	}
	cc, err := s.conn(lead, addr)
	if err != nil {
		return nil, notApplied(ctx, codes.Unavailable, "%s: leader %d at %s: %v", op, lead, addr, err)
	}
	if err := waitReady(ctx, cc); err != nil {
		return nil, notApplied(ctx, codes.Unavailable, "%s: leader %d at %s unreachable; not applied", op, lead, addr)
	}
	return cc, nil
}

// relay copies the leader's outcome trailer to our response and returns err.
func relay(ctx context.Context, trailer metadata.MD, err error) error {
	if err != nil && IsNotApplied(trailer) {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(OutcomeKey, OutcomeNotApplied))
	}
	return err
}

func (s *Server) forwardApply(ctx context.Context, lead uint64, req *apiv1.ApplyRequest) (*apiv1.ApplyResponse, error) {
	cc, err := s.leaderConn(ctx, "apply", lead)
	if err != nil {
		if lead == 0 {
			s.refused.add(refusedNoLeader)
		} else {
			s.refused.add(refusedLeaderUnreachable)
		}
		return nil, err
	}
	var tr metadata.MD
	resp, err := raftv1.NewForwardClient(cc).Apply(s.forwardContext(ctx), req, grpc.Trailer(&tr))
	return resp, relay(ctx, tr, err)
}

func (s *Server) forwardQuery(ctx context.Context, lead uint64, req *apiv1.QueryRequest) (*apiv1.QueryResponse, error) {
	cc, err := s.leaderConn(ctx, "query", lead)
	if err != nil {
		return nil, err
	}
	var tr metadata.MD
	resp, err := raftv1.NewForwardClient(cc).Query(s.forwardContext(ctx), req, grpc.Trailer(&tr))
	return resp, relay(ctx, tr, err)
}

// connectTimeout bounds connecting to the leader before a forwarded request
// is refused (not applied).
const connectTimeout = time.Second

// waitReady waits until cc is connected; it fails at once when the last
// attempt failed (the leader is down), and after connectTimeout.
func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			return errors.New("connection refused or failed")
		case connectivity.Shutdown:
			return errors.New("connection closed")
		}
		if !cc.WaitForStateChange(ctx, st) {
			return fmt.Errorf("no connection within %s: %w", connectTimeout, ctx.Err())
		}
	}
}

// conn returns the connection to the Forward service of member id at
// addr.
func (s *Server) conn(id uint64, addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	key := connKey{id, addr}
	if c, ok := s.conns[key]; ok {
		return c, nil
	}
	opts := append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if s.cfg.PeerDialOptions != nil {
		opts = append(opts, s.cfg.PeerDialOptions(id)...)
	}
	c, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, err
	}
	s.conns[key] = c
	return c, nil
}

// connKey names a connection: the member and its address (the
// credentials may depend on both).
type connKey struct {
	id   uint64
	addr string
}

// localStatus is the node's own status with the server's fields filled in.
func (s *Server) localStatus(ctx context.Context) (*apiv1.NodeStatus, error) {
	st, err := s.cfg.Node.Status(ctx)
	if err != nil {
		return nil, toStatus(ctx, "status", err)
	}
	return nodeStatus(st, s.cfg), nil
}

// Status implements apiv1.RaftdServer. Without req.Local it asks every
// member for its local status in parallel; a member that does not answer
// within StatusTimeout is listed with Error set.
func (s *Server) Status(ctx context.Context, req *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	self, err := s.localStatus(ctx)
	if err != nil {
		return nil, err
	}
	nodes := []*apiv1.NodeStatus{self}
	if !req.GetLocal() {
		members, err := s.members(ctx)
		if err != nil {
			return nil, toStatus(ctx, "status", err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, m := range members {
			if m.GetId() == self.GetId() {
				continue
			}
			wg.Add(1)
			go func(m *apiv1.Member) {
				defer wg.Done()
				ns := s.peerStatus(ctx, m)
				mu.Lock()
				nodes = append(nodes, ns)
				mu.Unlock()
			}(m)
		}
		wg.Wait()
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetId() < nodes[j].GetId() })
	resp := &apiv1.StatusResponse{Nodes: nodes}
	// The cluster's leader and term: the highest term any node reports,
	// with the leader known at that term.
	for _, n := range nodes {
		if n.GetError() != "" {
			continue
		}
		if n.GetTerm() > resp.Term || (n.GetTerm() == resp.Term && resp.Leader == 0) {
			if n.GetTerm() > resp.Term {
				resp.Leader = 0
			}
			resp.Term = n.GetTerm()
			if n.GetLeader() != 0 {
				resp.Leader = n.GetLeader()
			}
		}
	}
	return resp, nil
}

func (s *Server) peerStatus(ctx context.Context, m *apiv1.Member) *apiv1.NodeStatus {
	fail := func(err error) *apiv1.NodeStatus {
		msg := err.Error()
		if st, ok := status.FromError(err); ok {
			msg = st.Message()
		}
		return &apiv1.NodeStatus{Id: m.GetId(), RaftAddr: m.GetRaftAddr(), ApiAddr: m.GetApiAddr(), Error: msg}
	}
	addr, ok := s.cfg.ForwardAddr(m.GetId())
	if !ok {
		return fail(fmt.Errorf("no address known for node %d", m.GetId()))
	}
	cc, err := s.conn(m.GetId(), addr)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatusTimeout)
	defer cancel()
	// A peer that is down fails to connect at once; say so briefly rather
	// than with the dialer's message.
	if err := waitReady(ctx, cc); err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("unreachable at %s: no answer within %s", addr, s.cfg.StatusTimeout))
		}
		return fail(fmt.Errorf("unreachable at %s: %v", addr, err))
	}
	resp, err := raftv1.NewForwardClient(cc).Status(s.forwardContext(ctx), &apiv1.StatusRequest{Local: true})
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("unreachable at %s: no answer within %s", addr, s.cfg.StatusTimeout))
		}
		return fail(fmt.Errorf("unreachable at %s: %s", addr, status.Convert(err).Message()))
	}
	for _, ns := range resp.GetNodes() {
		if ns.GetId() == m.GetId() {
			if ns.RaftAddr == "" {
				ns.RaftAddr = m.GetRaftAddr()
			}
			return ns
		}
	}
	return fail(fmt.Errorf("node at %s did not report node %d", addr, m.GetId()))
}

// Members implements apiv1.RaftdServer.
func (s *Server) Members(ctx context.Context, _ *apiv1.MembersRequest) (*apiv1.MembersResponse, error) {
	ms, err := s.members(ctx)
	if err != nil {
		return nil, toStatus(ctx, "members", err)
	}
	return &apiv1.MembersResponse{Leader: s.cfg.Node.Leader(), Members: ms}, nil
}

// members is the node's membership in API form, ordered by id.
func (s *Server) members(ctx context.Context) ([]*apiv1.Member, error) {
	ms, err := s.cfg.Node.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*apiv1.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, &apiv1.Member{Id: m.ID, RaftAddr: m.RaftAddr, ApiAddr: m.APIAddr, Learner: m.Learner})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out, nil
}

// onLeader runs f locally when this node leads, else returns a connection
// to the leader for forwarding.
func (s *Server) onLeader(ctx context.Context, op string) (*grpc.ClientConn, bool, error) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return nil, false, notApplied(ctx, codes.Unavailable, "%s: node %d is shutting down; not applied, retry on another node", op, s.cfg.Node.ID())
	}
	n := s.cfg.Node
	if lead := n.Leader(); lead == n.ID() {
		return nil, true, nil
	} else {
		cc, err := s.leaderConn(ctx, op, lead)
		return cc, false, err
	}
}

// AddMember implements apiv1.RaftdServer.
func (s *Server) AddMember(ctx context.Context, req *apiv1.AddMemberRequest) (*apiv1.MembersResponse, error) {
	if req.GetId() == 0 {
		return nil, notApplied(ctx, codes.InvalidArgument, "add member: node id must be a positive integer")
	}
	if req.GetRaftAddr() == "" {
		return nil, notApplied(ctx, codes.InvalidArgument, "add member: raft address of node %d is required", req.GetId())
	}
	cc, local, err := s.onLeader(ctx, "add member")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).AddMember(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	if err := s.addMember(ctx, req); err != nil {
		return nil, toStatus(ctx, "add member", err)
	}
	return s.Members(ctx, &apiv1.MembersRequest{})
}

// RemoveMember implements apiv1.RaftdServer.
func (s *Server) RemoveMember(ctx context.Context, req *apiv1.RemoveMemberRequest) (*apiv1.MembersResponse, error) {
	if req.GetId() == 0 {
		return nil, notApplied(ctx, codes.InvalidArgument, "remove member: node id must be a positive integer")
	}
	cc, local, err := s.onLeader(ctx, "remove member")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).RemoveMember(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	if err := s.cfg.Node.RemoveMember(ctx, req.GetId()); err != nil {
		return nil, toStatus(ctx, "remove member", err)
	}
	return s.Members(ctx, &apiv1.MembersRequest{})
}

// TransferLeader implements apiv1.RaftdServer.
func (s *Server) TransferLeader(ctx context.Context, req *apiv1.TransferLeaderRequest) (*apiv1.TransferLeaderResponse, error) {
	if req.GetId() == 0 {
		return nil, notApplied(ctx, codes.InvalidArgument, "transfer leader: node id must be a positive integer")
	}
	cc, local, err := s.onLeader(ctx, "transfer leader")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).TransferLeader(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	if err := s.cfg.Node.TransferLeader(ctx, req.GetId()); err != nil {
		return nil, toStatus(ctx, "transfer leader", err)
	}
	return &apiv1.TransferLeaderResponse{Leader: s.cfg.Node.Leader()}, nil
}

// ActivateFSMVersion implements apiv1.RaftdServer.
func (s *Server) ActivateFSMVersion(ctx context.Context, req *apiv1.ActivateFSMVersionRequest) (*apiv1.ActivateFSMVersionResponse, error) {
	if req.GetVersion() == 0 {
		return nil, notApplied(ctx, codes.InvalidArgument, "fsm activate: version must be a positive integer")
	}
	cc, local, err := s.onLeader(ctx, "fsm activate")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).ActivateFSMVersion(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	// DESIGN "Rolling FSM upgrades": refused while any member lacks it,
	// and a downgrade unless asked for and declared safe (fsm.go).
	st, err := s.Status(ctx, &apiv1.StatusRequest{})
	if err != nil {
		return nil, err
	}
	v := req.GetVersion()
	if err := checkActivation(st.GetNodes(), s.cfg.Node.ID(), v, req.GetAllowDowngrade()); err != nil {
		return nil, notApplied(ctx, codes.FailedPrecondition, "fsm activate: %v", err)
	}
	idx, err := s.cfg.Node.ActivateFSMVersion(ctx, v)
	if err != nil {
		return nil, toStatus(ctx, "fsm activate", err)
	}
	return &apiv1.ActivateFSMVersionResponse{Index: idx}, nil
}

// SkipFSMCommand implements apiv1.RaftdServer.
func (s *Server) SkipFSMCommand(ctx context.Context, req *apiv1.SkipFSMCommandRequest) (*apiv1.SkipFSMCommandResponse, error) {
	if req.GetIndex() == 0 {
		return nil, notApplied(ctx, codes.InvalidArgument, "fsm skip: index must be a positive integer")
	}
	cc, local, err := s.onLeader(ctx, "fsm skip")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).SkipFSMCommand(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	res, err := s.cfg.Node.Skip(ctx, req.GetIndex())
	if err != nil {
		return nil, toStatus(ctx, "fsm skip", err)
	}
	return &apiv1.SkipFSMCommandResponse{SkipIndex: res.Index, Skipped: res.Skipped}, nil
}

// snapshotChunkBytes bounds one DownloadSnapshot data chunk.
const snapshotChunkBytes = 1 << 20

// DownloadSnapshot implements apiv1.RaftdServer.
func (s *Server) DownloadSnapshot(req *apiv1.DownloadSnapshotRequest, stream grpc.ServerStreamingServer[apiv1.SnapshotChunk]) error {
	ctx := stream.Context()
	if s.cfg.SnapshotNeedsClientCert && !pki.VerifiedClient(ctx) {
		return notApplied(ctx, codes.PermissionDenied, "snapshot: node %d serves snapshots only to clients with a certificate from its trusted CA (--trusted-ca-file); pass --cert and --key", s.cfg.Node.ID())
	}
	meta, rc, err := s.cfg.Node.ExportSnapshot(ctx, req.GetTakeNew())
	if errors.Is(err, node.ErrNoSnapshot) && !req.GetTakeNew() {
		return notApplied(ctx, codes.FailedPrecondition, "snapshot: node %d has no snapshot yet (use --new to take one)", s.cfg.Node.ID())
	}
	if err != nil {
		return toStatus(ctx, "snapshot", err)
	}
	defer rc.Close()
	size := int64(-1)
	if sz, ok := rc.(interface{ Size() int64 }); ok {
		size = sz.Size()
	}
	hdr := &apiv1.SnapshotHeader{Index: meta.Index, Term: meta.Term, Size: size,
		Voters: meta.ConfState.Voters, Learners: meta.ConfState.Learners}
	if err := stream.Send(&apiv1.SnapshotChunk{Header: hdr}); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunkBytes)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&apiv1.SnapshotChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "snapshot: read: %v", err)
		}
	}
}
