// Package conformance checks that an FSM plugin is deterministic and speaks
// the protocol (docs/plugin-protocol.md): it runs two instances (of one
// plugin, or of two implementations of the same FSM), feeds both the same
// command stream, and compares every result and the digests at
// checkpoints. It also checks snapshot -> restore into a fresh instance,
// Info after a restart, and that malformed input is answered rather than
// crashing the plugin. `raftd fsm test` is a thin wrapper around Run.
package conformance
