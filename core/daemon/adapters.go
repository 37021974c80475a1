package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/server"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/host"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// pluginSM adapts a plugin/host client to node.StateMachine. A plugin that
// crashed or hung (host.ErrBroken) is reported as node.ErrStateMachineCrashed
// so the node restarts, restores and replays it.
type pluginSM struct {
	c *host.Client
}

var (
	_ node.StateMachine    = pluginSM{}
	_ node.Restarter       = pluginSM{}
	_ node.SnapshotStarter = pluginSM{}
)

func crashed(err error) error {
	if err != nil && errors.Is(err, host.ErrBroken) {
		return fmt.Errorf("%w: %w", node.ErrStateMachineCrashed, err)
	}
	return err
}

func (p pluginSM) Info(ctx context.Context) (node.FSMInfo, error) {
	i, err := p.c.Info(ctx)
	if err != nil {
		return node.FSMInfo{}, crashed(err)
	}
	return node.FSMInfo{Name: i.Name, MinVersion: i.MinVersion, MaxVersion: i.MaxVersion, Applied: i.AppliedIndex}, nil
}

func (p pluginSM) Apply(ctx context.Context, cmds []node.Command) ([][]byte, error) {
	es := make([]fsm.Entry, len(cmds))
	for i, c := range cmds {
		es[i] = fsm.Entry{Index: c.Index, Term: c.Term, Data: c.Data, Version: c.Version}
	}
	res, err := p.c.Apply(ctx, es)
	return res, crashed(err)
}

func (p pluginSM) Query(ctx context.Context, q []byte) ([]byte, error) {
	res, err := p.c.Query(ctx, q)
	return res, crashed(err)
}

func (p pluginSM) Snapshot(ctx context.Context, w io.Writer) error {
	return crashed(p.c.Snapshot(ctx, w))
}

// StartSnapshot implements node.SnapshotStarter. The plugin captures its
// state when it answers the Snapshot call with its header (under its lock,
// at its applied index), and the host writes the envelope header to w only
// after receiving that header; so the first write to w marks the capture.
// StartSnapshot returns then, and the body streams into w in the background
// while the node keeps applying. wait returns the outcome of the whole
// stream; cancelling ctx ends it promptly.
func (p pluginSM) StartSnapshot(ctx context.Context, w io.Writer) (func() error, error) {
	cw := &captureWriter{w: w, captured: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- crashed(p.c.Snapshot(ctx, cw)) }()
	select {
	case <-cw.captured:
		return func() error { return <-done }, nil
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return func() error { return nil }, nil
	}
}

// captureWriter closes captured at the first write.
type captureWriter struct {
	w        io.Writer
	once     sync.Once
	captured chan struct{}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.once.Do(func() { close(c.captured) })
	return c.w.Write(b)
}

func (p pluginSM) Restore(ctx context.Context, r io.Reader) error {
	return crashed(p.c.Restore(ctx, r))
}

func (p pluginSM) Digest(ctx context.Context) ([]byte, error) {
	d, err := p.c.Digest(ctx)
	return d, crashed(err)
}

func (p pluginSM) Restart(ctx context.Context) error { return p.c.Restart(ctx) }

func (p pluginSM) Close() error { return p.c.Close() }

// lateHandler lets the transport exist before the node it delivers to:
// until set, inbound messages are dropped (Raft retransmits).
type lateHandler struct {
	n atomic.Pointer[node.Node]
}

var errNotStarted = errors.New("raftd: node not started yet")

func (h *lateHandler) Process(ctx context.Context, m raft.Message) error {
	if n := h.n.Load(); n != nil {
		return n.Process(ctx, m)
	}
	return errNotStarted
}

func (h *lateHandler) ReportUnreachable(id uint64) {
	if n := h.n.Load(); n != nil {
		n.ReportUnreachable(id)
	}
}

func (h *lateHandler) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	if n := h.n.Load(); n != nil {
		n.ReportSnapshot(id, st)
	}
}

func (h *lateHandler) ReceiveSnapshot(ctx context.Context, m raft.Message, body io.Reader) error {
	if n := h.n.Load(); n != nil {
		return n.ReceiveSnapshot(ctx, m, body)
	}
	return errNotStarted
}

func (h *lateHandler) OpenSnapshot(meta raft.SnapshotMetadata, data []byte) (io.ReadCloser, error) {
	if n := h.n.Load(); n != nil {
		return n.OpenSnapshot(meta, data)
	}
	return nil, errNotStarted
}

// apiNode adapts *node.Node to server.Node.
type apiNode struct {
	n         *node.Node
	raftAddr  string
	apiAddr   string
	clusterID string
	fsmSHA256 string
}

var (
	_ server.Node             = (*apiNode)(nil)
	_ server.VersionActivator = (*apiNode)(nil)
	_ server.SnapshotOpener   = (*apiNode)(nil)
)

// nodeErr maps node errors onto the server's error classes.
func nodeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, node.ErrConfChangeInProgress), errors.Is(err, node.ErrUnsupportedVersion), errors.Is(err, node.ErrNotReady):
		return fmt.Errorf("%w: %w", server.ErrRejected, err)
	case errors.Is(err, node.ErrOutcomeUnknown):
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: %w", server.ErrLeadershipLost, err)
	case errors.Is(err, node.ErrStopped):
		return fmt.Errorf("%w: %w", server.ErrStopped, err)
	}
	return err
}

func (a *apiNode) ID() uint64     { return a.n.ID() }
func (a *apiNode) Leader() uint64 { return a.n.Leader() }

func (a *apiNode) Propose(ctx context.Context, cmd []byte) ([]byte, uint64, uint64, error) {
	r, err := a.n.ProposeEntry(ctx, cmd)
	if err != nil {
		return nil, 0, 0, nodeErr(err)
	}
	return r.Value, r.Index, r.Term, nil
}

func (a *apiNode) Query(ctx context.Context, q []byte, linearizable bool) ([]byte, uint64, error) {
	var res []byte
	var err error
	if linearizable {
		res, err = a.n.Read(ctx, q)
	} else {
		res, err = a.n.StaleRead(ctx, q)
	}
	if err != nil {
		return nil, 0, nodeErr(err)
	}
	return res, a.n.Applied(), nil
}

func (a *apiNode) Status(ctx context.Context) (*apiv1.NodeStatus, error) {
	st, err := a.n.Status(ctx)
	if err != nil {
		return nil, nodeErr(err)
	}
	ns := &apiv1.NodeStatus{
		Id: st.ID, RaftAddr: a.raftAddr, ApiAddr: a.apiAddr, Role: st.Role, Term: st.Term, Leader: st.Lead,
		CommitIndex: st.Commit, AppliedIndex: st.Applied, LastIndex: st.LastIndex, SnapshotIndex: st.SnapshotIndex,
		ClusterId: a.clusterID,
		Fsm: &apiv1.FSMStatus{Name: st.FSM.Name, Version: max(st.FSMVersion, 1), MinVersion: st.FSM.MinVersion,
			MaxVersion: st.FSM.MaxVersion, ActivatedIndex: st.FSMVersionIndex, BinarySha256: a.fsmSHA256},
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
	return ns, nil
}

func (a *apiNode) Members(ctx context.Context) ([]*apiv1.Member, error) {
	ms, err := a.n.Members(ctx)
	if err != nil {
		return nil, nodeErr(err)
	}
	out := make([]*apiv1.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, &apiv1.Member{Id: m.ID, RaftAddr: m.RaftAddr, ApiAddr: m.APIAddr, Learner: m.Learner})
	}
	return out, nil
}

func (a *apiNode) AddMember(ctx context.Context, id uint64, raftAddr string, learner bool) error {
	p := node.Peer{ID: id, RaftAddr: raftAddr}
	if learner {
		return nodeErr(a.n.AddLearner(ctx, p))
	}
	ms, err := a.n.Members(ctx)
	if err != nil {
		return nodeErr(err)
	}
	for _, m := range ms {
		if m.ID == id && m.Learner {
			return nodeErr(a.n.Promote(ctx, id))
		}
		if m.ID == id {
			return fmt.Errorf("%w: node %d is already a voter", server.ErrRejected, id)
		}
	}
	return nodeErr(a.n.AddMember(ctx, p))
}

func (a *apiNode) RemoveMember(ctx context.Context, id uint64) error {
	return nodeErr(a.n.RemoveMember(ctx, id))
}

func (a *apiNode) TransferLeader(ctx context.Context, id uint64) error {
	return nodeErr(a.n.TransferLeader(ctx, id))
}

func (a *apiNode) ActivateFSMVersion(ctx context.Context, v uint32) (uint64, error) {
	idx, err := a.n.ActivateFSMVersion(ctx, v)
	return idx, nodeErr(err)
}

func (a *apiNode) OpenSnapshot(ctx context.Context, takeNew bool) (*apiv1.SnapshotHeader, io.ReadCloser, error) {
	meta, rc, err := a.n.ExportSnapshot(ctx, takeNew)
	if err != nil {
		if !takeNew && strings.Contains(err.Error(), "no snapshot yet") {
			return nil, nil, fmt.Errorf("%w: node %d has no snapshot yet (use --new to take one)", server.ErrRejected, a.n.ID())
		}
		return nil, nil, nodeErr(err)
	}
	return &apiv1.SnapshotHeader{Index: meta.Index, Term: meta.Term, Size: -1,
		Voters: meta.ConfState.Voters, Learners: meta.ConfState.Learners}, rc, nil
}
