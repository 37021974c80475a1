package server

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc/codes"
)

// FSMReload is the outcome of Config.ReloadFSM: the node's switch and the
// two plugin binaries' digests.
type FSMReload struct {
	node.ReloadResult
	OldBinarySHA256, BinarySHA256 string
}

// ReloadFSM implements apiv1.RaftdServer. It is never forwarded: it
// replaces the plugin of the node that answers, which keeps its Raft role.
func (s *Server) ReloadFSM(ctx context.Context, req *apiv1.ReloadFSMRequest) (*apiv1.ReloadFSMResponse, error) {
	if req.GetPath() == "" {
		return nil, notApplied(ctx, codes.InvalidArgument, "fsm reload: the plugin path is required")
	}
	if h := req.GetSha256(); h != "" {
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
			return nil, notApplied(ctx, codes.InvalidArgument, "fsm reload: sha256 %q is not 64 hex digits", h)
		}
	}
	if s.cfg.ReloadFSM == nil {
		return nil, notApplied(ctx, codes.FailedPrecondition, "fsm reload: node %d runs its FSM in process; there is no plugin to reload", s.cfg.Node.ID())
	}
	if err := s.enter(ctx, "fsm reload"); err != nil {
		return nil, err
	}
	defer s.leave()
	r, err := s.cfg.ReloadFSM(ctx, req.GetPath(), req.GetSha256())
	if err != nil {
		return nil, toStatus(ctx, "fsm reload", err)
	}
	st, err := s.cfg.Node.Status(ctx)
	if err != nil {
		return nil, toStatus(ctx, "fsm reload", err)
	}
	f := nodeStatus(st, s.cfg).GetFsm()
	f.BinarySha256 = r.BinarySHA256
	return &apiv1.ReloadFSMResponse{
		NodeId: s.cfg.Node.ID(), Index: r.Index, SnapshotIndex: r.SnapshotIndex, Mirrored: uint64(r.Mirrored),
		StateBytes: r.Bytes, Digest: r.Digest, Fsm: f, OldBinarySha256: r.OldBinarySHA256,
		DurationMicros: r.Duration.Microseconds(), StallMicros: r.Stall.Microseconds(),
	}, nil
}

// checkActivation says why version v may not be activated, given every
// member's status (self answers for the active version): a member that is
// unreachable or whose plugin does not support v; a version below the
// active one unless allowDowngrade and every member's plugin declares it
// safe (downgrade_safe_to in [1, v]).
func checkActivation(nodes []*apiv1.NodeStatus, self uint64, v uint32, allowDowngrade bool) error {
	var active uint32
	for _, ns := range nodes {
		if ns.GetId() == self {
			active = ns.GetFsm().GetVersion()
		}
	}
	for _, ns := range nodes {
		if ns.GetError() != "" {
			return fmt.Errorf("node %d is unreachable, cannot confirm it supports version %d: %s", ns.GetId(), v, ns.GetError())
		}
		if f := ns.GetFsm(); v < f.GetMinVersion() || v > f.GetMaxVersion() {
			return fmt.Errorf("node %d's plugin %s supports versions [%d, %d], not %d", ns.GetId(), f.GetName(), f.GetMinVersion(), f.GetMaxVersion(), v)
		}
	}
	if v >= active {
		return nil
	}
	if !allowDowngrade {
		return fmt.Errorf("version %d is below the active version %d; a downgrade needs --allow-downgrade, and every plugin must declare it safe", v, active)
	}
	for _, ns := range nodes {
		if to := ns.GetFsm().GetDowngradeSafeTo(); to == 0 || to > v {
			return fmt.Errorf("node %d's plugin %s does not declare a downgrade from %d to %d safe (downgrade_safe_to %d)", ns.GetId(), ns.GetFsm().GetName(), active, v, to)
		}
	}
	return nil
}
