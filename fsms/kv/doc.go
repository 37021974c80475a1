// Package kv is the bundled key-value FSM (name "kv", versions 1 and 2).
// Commands, results, snapshot format and digest are specified in
// docs/plugin-protocol.md; fsms/node-kv implements the same contract.
package kv
