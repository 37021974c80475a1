package server

import (
	"context"

	"github.com/raftd/raftd/core/node"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc/codes"
)

// nodeStatus is the API form of the node's own status.
func nodeStatus(st node.Status, cfg Config) *apiv1.NodeStatus {
	ns := &apiv1.NodeStatus{
		Id: st.ID, RaftAddr: cfg.RaftAddr, ApiAddr: cfg.APIAddr, Role: st.Role, Term: st.Term, Leader: st.Lead,
		CommitIndex: st.Commit, AppliedIndex: st.Applied, LastIndex: st.LastIndex, SnapshotIndex: st.SnapshotIndex,
		ClusterId: cfg.ClusterID,
		Fsm: &apiv1.FSMStatus{Name: st.FSM.Name, Version: max(st.FSMVersion, 1), MinVersion: st.FSM.MinVersion,
			MaxVersion: st.FSM.MaxVersion, ActivatedIndex: st.FSMVersionIndex, DowngradeSafeTo: st.FSM.DowngradeSafeTo, Build: st.FSM.Build},
	}
	if cfg.FSMSHA256 != nil {
		ns.Fsm.BinarySha256 = cfg.FSMSHA256()
	}
	if h := st.Halted; h != nil {
		ns.Halted = &apiv1.Halt{Index: h.Index, Reason: h.Reason, Checkpoint: h.Checkpoint}
	}
	if c := st.Checkpoint; c != nil {
		ns.Checkpoint = &apiv1.Checkpoint{Index: c.Index, Digest: c.Digest}
	}
	sending := map[uint64]bool{}
	for _, id := range st.SendingSnapshot {
		sending[id] = true
	}
	for _, m := range st.Members {
		if m.ID == st.ID {
			continue
		}
		if p, ok := st.Progress[m.ID]; ok {
			state := p.State
			if sending[m.ID] {
				state = "snapshot"
			}
			ns.Followers = append(ns.Followers, &apiv1.FollowerProgress{Id: m.ID, MatchIndex: p.Match, NextIndex: p.Next, State: state, Learner: p.Learner})
		}
	}
	return ns
}

// memberRaftAddr is member id's Raft address in n's membership.
func memberRaftAddr(n *node.Node, id uint64) (string, bool) {
	ms, err := n.Members(context.Background())
	if err != nil {
		return "", false
	}
	for _, m := range ms {
		if m.ID == id && m.RaftAddr != "" {
			return m.RaftAddr, true
		}
	}
	return "", false
}

// addMember adds req's node as a learner (req.Learner), promotes it if it
// is a learner already, or adds it as a voter; a voter is refused.
func (s *Server) addMember(ctx context.Context, req *apiv1.AddMemberRequest) error {
	n := s.cfg.Node
	p := node.Peer{ID: req.GetId(), RaftAddr: req.GetRaftAddr()}
	if req.GetLearner() {
		return n.AddLearner(ctx, p)
	}
	ms, err := n.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.ID == p.ID && m.Learner {
			return n.Promote(ctx, p.ID)
		}
		if m.ID == p.ID {
			return notApplied(ctx, codes.FailedPrecondition, "add member: node %d is already a voter", p.ID)
		}
	}
	return n.AddMember(ctx, p)
}
