// Package host launches, supervises and talks to an FSM plugin process
// (docs/plugin-protocol.md). A Client owns at most one plugin process at a
// time and implements fsm.FSM (with fsm.BatchApplier and fsm.Restarter),
// so the node runs a plugin through the same adapter (core/statemachine)
// as an FSM compiled into its own process. When the process crashes, hangs
// or breaks the protocol, every call returns a *BrokenError
// (errors.Is(err, ErrBroken) and errors.Is(err, fsm.ErrCrashed)) until the
// owner calls Restart, then restores a snapshot and replays the log (the
// node's job).
//
// Lifecycle:
//
//	c, err := host.Start(ctx, host.Config{Path: "./bin/raftd-fsm-kv", SHA256: sum, Logger: log})
//	info, _ := c.Info(ctx)                 // name, versions, applied index
//	res, err := c.ApplyBatch(ctx, entries) // one result per entry, in order
//	if errors.Is(err, host.ErrBroken) {
//		_ = c.Restart(ctx) // then Restore + replay
//	}
//	defer c.Close() // graceful Shutdown, SIGKILL after 2 s; no process left
//
// Deadlines: Info, Query and Digest have Config.CallTimeout; a snapshot
// stream (Snapshot to the end of its WriteTo) and Restore have
// Config.SnapshotTimeout; a call that misses its deadline breaks the
// process (ReasonTimeout). Apply has no deadline, but a watchdog breaks the
// process when no Apply request completes within Config.ApplyTimeout
// (ReasonHung).
//
// Snapshot returns once the plugin has captured its state and sent the
// header; the body streams in the Snapshot's WriteTo while applies go on.
// Neither direction holds the body in memory: it is copied in chunks of at
// most 1 MiB. The bytes are the plugin's body only: the node frames them
// (docs/storage-format.md).
//
// Logging: Config.Logger (log/slog) receives the host's messages and every
// line the plugin writes to stderr, with the attribute plugin=Config.Name;
// go-plugin's hclog output is adapted into it.
package host
