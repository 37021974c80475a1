// Package server implements the raftd client API (proto/api/v1) on top of
// the local *node.Node.
//
// A Server answers Apply, Query, Status and the membership RPCs for one node
// on its api address (Register). Apply, linearizable Query and the
// membership and version changes received by a follower are forwarded to
// the leader's Forward service (proto/raft/v1 forward.proto, RegisterForward),
// which members serve on their raft address, not the client API: the peer
// port answers no client or admin RPC. The leader's answer, or its error, is
// relayed unchanged. A forwarded request is never forwarded again: a node
// that receives one and is not the leader refuses it with Unavailable, and
// the client retries. Forward callers identify as members (cluster id and
// node id metadata; with peer TLS, Config.AuthorizePeer checks their
// certificate).
//
// Errors are gRPC status codes with a one-line message. The node's outcome
// classes (core/node errors.go) become codes in one place, errors.go:
//
//	no leader, leader unreachable, node stopping       Unavailable, not applied
//	command over MaxEntryBytes, empty command          InvalidArgument, not applied
//	membership change or version refused, no snapshot  FailedPrecondition, not applied
//	deadline while waiting for commit                  DeadlineExceeded, outcome unknown
//	leadership lost or node stopped while waiting      Unavailable, outcome unknown
//
// Every refusal that is certain to have happened before the command entered
// the log carries the trailer OutcomeKey: OutcomeNotApplied, so that a client
// can tell "certainly not applied" (safe to retry anywhere) from "unknown".
package server
