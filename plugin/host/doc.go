// Package host launches, supervises and talks to an FSM plugin process
// (docs/plugin-protocol.md). A Client owns at most one plugin process at a
// time; when the process crashes, hangs or breaks the protocol, every call
// returns a *BrokenError (errors.Is(err, ErrBroken)) until the owner calls
// Restart, then restores a snapshot and replays the log (the node's job).
//
// Lifecycle:
//
//	c, err := host.Start(ctx, host.Config{Path: "./bin/raftd-fsm-kv", SHA256: sum, Logger: log})
//	info, _ := c.Info(ctx)            // name, versions, applied index
//	res, err := c.Apply(ctx, entries) // one result per entry, in order
//	if errors.Is(err, host.ErrBroken) {
//		_ = c.Restart(ctx) // then Restore + replay
//	}
//	defer c.Close() // graceful Shutdown, SIGKILL after 2 s; no process left
//
// Deadlines: Info, Query and Digest have Config.CallTimeout; Snapshot and
// Restore have Config.SnapshotTimeout; a call that misses its deadline
// breaks the process (ReasonTimeout). Apply has no deadline, but a watchdog
// breaks the process when no Apply request completes within
// Config.ApplyTimeout (ReasonHung).
//
// Client's methods mirror core/node's StateMachine, so the adapter in
// cmd/raftd converts types only:
//
//	func (a adapter) Apply(ctx context.Context, cmds []node.Command) ([][]byte, error) {
//		es := make([]fsm.Entry, len(cmds))
//		for i, c := range cmds {
//			es[i] = fsm.Entry{Index: c.Index, Term: c.Term, Data: c.Data, Version: c.Version}
//		}
//		res, err := a.c.Apply(ctx, es)
//		if errors.Is(err, host.ErrBroken) {
//			err = fmt.Errorf("%w: %w", node.ErrStateMachineCrashed, err)
//		}
//		return res, err
//	}
//
// Snapshot writes, and Restore reads, an envelope (a small header with
// index, term, version and format, then the plugin's body) so that the
// node can store one opaque stream; ReadEnvelopeHeader inspects a stored
// one without a plugin. Neither direction holds the body in memory: it is
// copied in chunks of at most 1 MiB.
package host
