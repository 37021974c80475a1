// Package client is the Go client of a raftd cluster: it applies commands
// exactly once and runs queries, against any of the cluster's nodes.
//
//	c, err := client.New(client.Config{Endpoints: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}})
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.Apply(ctx, []byte(`{"op":"add","delta":1}`))
//
// # Exactly once
//
// A Client is one client session of the cluster (Raft thesis §6.3): it
// names itself with 16 random bytes and numbers its commands. Apply sends
// each command with that request identity and retries it, with the same
// identity, until it gets an answer or ctx ends: after a refusal (no
// leader yet, node stopping, overloaded), a lost connection, a timeout, a
// leader change or a killed node. The cluster keeps the identities it
// applied in its replicated state and applies each at most once, so a
// retry whose first attempt was applied after all returns the first
// application's result (Result.Duplicate) instead of applying again. The
// cluster keeps a session's results until the session acknowledges them
// (every later command does) or it is idle for long, or too many other
// sessions are newer (docs/operations.md, "Exactly-once commands").
//
// Apply gives up at once, not applied, when in its first round over the
// endpoints none can be connected to (a wrong address, a cluster that is
// down); once a node was reached it retries until ctx ends.
//
// ApplyWithID sends a caller-chosen identity instead (for example one that
// a process records before sending, to retry after its own restart); the
// CLI's `raftd apply --request-id ID` uses it.
//
// # Outcomes
//
// Every error of Apply tells what became of the command (errors.Is):
// ErrNotApplied (certainly not applied: no attempt can have reached the
// log, or the command was refused as invalid) or ErrOutcomeUnknown (ctx
// ended while an attempt might have been applied, or the cluster no
// longer keeps the identity: ErrSessionExpired). *Error carries the
// details: the last answer's gRPC code and node, the request identity,
// the attempts made.
//
// # Nodes and the leader
//
// The Client keeps one connection per endpoint. It sends to the node it
// believes leads (from the Members answer of any node; followers forward
// anyway) and moves to the next endpoint when one fails.
//
// # This package and core/client
//
// core/client is the thin caller the raftd CLI uses for its one-shot
// admin commands (any RPC, a fresh connection per call); this package is
// the long-lived client for applications, with sessions, kept connections
// and leader tracking. `raftd apply` uses this package. It takes the
// API's message size limits and not-applied mark from core/server.
package client
