package server

import (
	"context"
	"strconv"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata identifying the caller of the Forward service; the same keys as
// on the Raft service (core/transport).
const (
	mdClusterID = "raftd-cluster-id"
	mdFrom      = "raftd-from"
)

// RegisterForward registers the node-to-node Forward service
// (proto/raft/v1 forward.proto) on r: the server the peer port (the raft
// address) runs. Only members call it; clients use Register's service on
// the api address.
func (s *Server) RegisterForward(r grpc.ServiceRegistrar) {
	raftv1.RegisterForwardServer(r, &forwardServer{s: s})
}

// forwardedCtx marks a context as serving a forwarded request.
type forwardedCtx struct{}

func isForwarded(ctx context.Context) bool { return ctx.Value(forwardedCtx{}) != nil }

// forwardContext is ctx with the metadata that identifies this node to
// the Forward service of another member.
func (s *Server) forwardContext(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx,
		mdClusterID, s.cfg.ClusterID, mdFrom, strconv.FormatUint(s.cfg.Node.ID(), 10))
}

// forwardServer is the Forward service: each call checks its caller, then
// runs the client API's handler as a forwarded request.
type forwardServer struct {
	raftv1.UnimplementedForwardServer
	s *Server
}

// enter checks that the caller is a member of this cluster (and, through
// Config.AuthorizePeer, that its certificate says so) and returns the
// context to serve the request with.
func (f *forwardServer) enter(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) == 1 {
			return v[0]
		}
		return ""
	}
	s := f.s
	from, err := strconv.ParseUint(get(mdFrom), 10, 64)
	if err != nil || from == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "forward: caller sent no valid %s metadata; clients use the api address", mdFrom)
	}
	if c := get(mdClusterID); c != s.cfg.ClusterID {
		return nil, status.Errorf(codes.PermissionDenied, "forward: node %d is in cluster %q, not %q", from, c, s.cfg.ClusterID)
	}
	if auth := s.cfg.AuthorizePeer; auth != nil {
		if err := auth(ctx, from); err != nil {
			return nil, status.Errorf(codes.PermissionDenied, "forward: node %d refuses a caller claiming to be node %d: %v", s.cfg.Node.ID(), from, err)
		}
	}
	return context.WithValue(ctx, forwardedCtx{}, from), nil
}

func (f *forwardServer) Apply(ctx context.Context, req *apiv1.ApplyRequest) (*apiv1.ApplyResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.Apply(ctx, req)
}

func (f *forwardServer) Query(ctx context.Context, req *apiv1.QueryRequest) (*apiv1.QueryResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.Query(ctx, req)
}

func (f *forwardServer) Status(ctx context.Context, _ *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.Status(ctx, &apiv1.StatusRequest{Local: true})
}

func (f *forwardServer) AddMember(ctx context.Context, req *apiv1.AddMemberRequest) (*apiv1.MembersResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.AddMember(ctx, req)
}

func (f *forwardServer) RemoveMember(ctx context.Context, req *apiv1.RemoveMemberRequest) (*apiv1.MembersResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.RemoveMember(ctx, req)
}

func (f *forwardServer) TransferLeader(ctx context.Context, req *apiv1.TransferLeaderRequest) (*apiv1.TransferLeaderResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.TransferLeader(ctx, req)
}

func (f *forwardServer) ActivateFSMVersion(ctx context.Context, req *apiv1.ActivateFSMVersionRequest) (*apiv1.ActivateFSMVersionResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.ActivateFSMVersion(ctx, req)
}

func (f *forwardServer) SkipFSMCommand(ctx context.Context, req *apiv1.SkipFSMCommandRequest) (*apiv1.SkipFSMCommandResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.SkipFSMCommand(ctx, req)
}
