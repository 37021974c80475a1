package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Digest checkpoints (core/node checkpoint.go): VerifyFSM runs one on the
// leader, and the leader's node asks the other members for their digests
// through CheckpointDigest, over the peer port's Forward service.

var _ node.CheckpointPeers = (*Server)(nil)

// VerifyFSM implements apiv1.RaftdServer.
func (s *Server) VerifyFSM(ctx context.Context, req *apiv1.VerifyFSMRequest) (*apiv1.VerifyFSMResponse, error) {
	cc, local, err := s.onLeader(ctx, "fsm verify")
	if err != nil {
		return nil, err
	}
	if !local {
		var tr metadata.MD
		resp, err := raftv1.NewForwardClient(cc).VerifyFSM(s.forwardContext(ctx), req, grpc.Trailer(&tr))
		return resp, relay(ctx, tr, err)
	}
	if err := s.enter(ctx, "fsm verify"); err != nil {
		return nil, err
	}
	defer s.leave()
	rep, err := s.cfg.Node.Verify(ctx)
	if err != nil {
		return nil, toStatus(ctx, "fsm verify", err)
	}
	resp := &apiv1.VerifyFSMResponse{CheckpointIndex: rep.Index, VerdictIndex: rep.VerdictIndex,
		AgreedDigest: rep.Agreed, NoMajority: rep.NoMajority}
	for _, m := range rep.Members {
		nd := &apiv1.NodeDigest{Id: m.ID, Learner: m.Learner, Digest: m.Digest}
		if m.Err != nil {
			nd.Error = errMessage(m.Err)
		}
		resp.Nodes = append(resp.Nodes, nd)
	}
	return resp, nil
}

// CheckpointDigest implements node.CheckpointPeers: it asks member id,
// through its Forward service, for its digest at the checkpoint at index.
func (s *Server) CheckpointDigest(ctx context.Context, id, index uint64) ([]byte, error) {
	addr, ok := s.cfg.ForwardAddr(id)
	if !ok {
		return nil, fmt.Errorf("no address known for node %d", id)
	}
	cc, err := s.conn(id, addr)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, cc); err != nil {
		return nil, fmt.Errorf("unreachable at %s: %v", addr, err)
	}
	resp, err := raftv1.NewForwardClient(cc).CheckpointDigest(s.forwardContext(ctx), &raftv1.CheckpointDigestRequest{Index: index})
	if err != nil {
		return nil, errors.New(errMessage(err))
	}
	return resp.GetDigest(), nil
}

// errMessage is an error's message, a status error's without its code.
func errMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

func (f *forwardServer) VerifyFSM(ctx context.Context, req *apiv1.VerifyFSMRequest) (*apiv1.VerifyFSMResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	return f.s.VerifyFSM(ctx, req)
}

func (f *forwardServer) CheckpointDigest(ctx context.Context, req *raftv1.CheckpointDigestRequest) (*raftv1.CheckpointDigestResponse, error) {
	ctx, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	d, err := f.s.cfg.Node.CheckpointDigest(ctx, req.GetIndex())
	if err != nil {
		return nil, toStatus(ctx, "checkpoint digest", err)
	}
	return &raftv1.CheckpointDigestResponse{Index: req.GetIndex(), Digest: d}, nil
}
