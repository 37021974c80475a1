package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/server"
	"github.com/raftd/raftd/core/statemachine"
	"github.com/raftd/raftd/plugin/host"
)

// fsmSlot holds the node's state machine and, for a plugin, the host
// client behind it; a reload replaces both (ReloadFSM).
type fsmSlot struct {
	cfg Config
	log *slog.Logger
	n   *node.Node // set once the node exists

	reloadMu sync.Mutex // one reload at a time

	mu     sync.Mutex
	sm     *statemachine.StateMachine
	plug   *host.Client // nil for an FSM in process
	closed bool
}

// binarySHA256 is the running plugin binary's digest ("" in process).
func (s *fsmSlot) binarySHA256() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.plug == nil {
		return ""
	}
	return s.plug.BinarySHA256()
}

// close closes the current state machine; a reload that completes later
// closes what it switched to.
func (s *fsmSlot) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.sm.Close()
}

// errReloadBusy refuses a reload while another runs on the same node.
var errReloadBusy = errors.New("another fsm reload is in progress on this node")

// reload starts the plugin at path (checked against sum when set), has
// the node hand it the state and switch to it (node.ReplaceStateMachine),
// then stops the old plugin. On any error the old plugin keeps running and
// the new one is stopped; the error wraps node.ErrReload and
// node.ErrNotApplied.
func (s *fsmSlot) reload(ctx context.Context, path, sum string) (server.FSMReload, error) {
	refuse := func(err error) (server.FSMReload, error) {
		s.log.Warn("fsm reload refused; the running plugin stays", "path", path, "err", err)
		return server.FSMReload{}, node.NotApplied(fmt.Errorf("%w: %w", node.ErrReload, err))
	}
	if !s.reloadMu.TryLock() {
		return refuse(errReloadBusy)
	}
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	old, oldSum := s.plug, ""
	if old != nil {
		oldSum = old.BinarySHA256()
	}
	s.mu.Unlock()
	if old == nil {
		return refuse(errors.New("the node runs its FSM in process; there is no plugin to reload"))
	}
	if _, err := CheckPlugin(path, sum); err != nil {
		return refuse(err)
	}
	s.log.Info("fsm reload: starting the new plugin", "path", path, "running", old.Path())
	plug, err := host.Start(ctx, host.Config{Path: path, SHA256: sum, Logger: s.log,
		ApplyTimeout: s.cfg.PluginApplyTimeout, CallTimeout: s.cfg.PluginCallTimeout})
	if err != nil {
		return refuse(fmt.Errorf("fsm plugin %s: %s", path, firstLine(err.Error())))
	}
	sm := statemachine.New(plug)
	res, err := s.n.ReplaceStateMachine(ctx, sm)
	if err != nil {
		_ = sm.Close()
		s.log.Warn("fsm reload failed; the running plugin stays", "path", path, "err", err)
		return server.FSMReload{}, err
	}
	s.mu.Lock()
	prev := s.sm
	s.sm, s.plug = sm, plug
	closed := s.closed
	s.mu.Unlock()
	_ = prev.Close() // the node no longer uses it
	if closed {
		_ = sm.Close() // the daemon stopped meanwhile
	}
	s.log.Info("fsm reload: the new plugin runs", "path", path, "index", res.Index, "sha256", plug.BinarySHA256(), "old_sha256", oldSum)
	return server.FSMReload{ReloadResult: res, OldBinarySHA256: oldSum, BinarySHA256: plug.BinarySHA256()}, nil
}

// ReloadFSM replaces the node's FSM plugin by the executable at path
// (whose SHA-256 must be sha256 when set) without stopping the node: see
// node.ReplaceStateMachine. The old plugin keeps running on any error,
// which wraps node.ErrReload and node.ErrNotApplied. A node that runs its
// FSM in process has nothing to reload.
func (d *Daemon) ReloadFSM(ctx context.Context, path, sha256 string) (server.FSMReload, error) {
	return d.fsm.reload(ctx, path, sha256)
}
