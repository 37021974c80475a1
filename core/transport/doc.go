// Package transport is the gRPC peer transport of a raftd node: it carries
// the core's messages between nodes (proto/raft/v1, service Raft).
//
// Outbound, every peer has one long-lived client stream (Raft.Stream) fed by
// one goroutine from a bounded queue. Send only enqueues: it never blocks.
// A message whose queue is full, or whose peer is unknown or down, is
// dropped and the peer is reported through Handler.ReportUnreachable; Raft
// retransmits (Raft §5.3: "the leader retries AppendEntries indefinitely").
// The goroutine drains whatever is queued into one MessageBatch per send, so
// many small messages cost one stream write. A broken stream is re-opened
// with exponential backoff and jitter.
//
// A MsgSnap never travels on the message stream. For each one the transport
// starts a goroutine that opens the snapshot body through the
// SnapshotSource, sends the MsgSnap and then the body in chunks of at most
// 1 MiB on a dedicated connection (Raft.SendSnapshot), and finally reports
// the outcome with Handler.ReportSnapshot. A large transfer therefore never
// delays heartbeats or appends to the same peer.
//
// Inbound, the Raft service decodes each batch and calls Handler.Process
// for every message, in the order the sender emitted them. An inbound
// snapshot transfer calls Handler.ReceiveSnapshot with a reader over the
// incoming chunks; the reader verifies the byte count and CRC-32C that the
// sender appends, and fails with an error if the stream breaks or the
// checksum does not match.
//
// Every call carries the sender's cluster id and node ids in gRPC metadata.
// A node rejects traffic from another cluster, or addressed to another node
// id, with a FailedPrecondition status whose message names both sides; the
// sending node logs it. With Options.Authorize set (peer TLS with member
// ids pinned to certificates, core/pki), a caller whose certificate does
// not name the node id it claims is refused with PermissionDenied before
// any of its messages is decoded. TLS itself is given by the caller:
// credentials on the gRPC server it registers the service on, and dial
// options (Options.DialOptions, Options.PeerDialOptions per peer).
//
// Handler methods are never called from inside Send, so a Handler may take
// the same locks or channels as the goroutine that calls Send. Unreachable
// reports are coalesced per peer and delivered by one goroutine.
//
// Ordering and loss: messages to one peer are delivered in the order they
// were passed to Send, or not at all. A message may be lost (queue full,
// stream broken, peer restarted), never duplicated or reordered. Raft
// tolerates loss; the transport reports it so that the leader probes again
// instead of waiting.
//
// Wiring, in the composition root:
//
//	tr := transport.New(transport.Options{
//		ID: id, ClusterID: cluster,
//		Handler:   n, // the node: Process, ReportUnreachable, ReportSnapshot, ReceiveSnapshot
//		Snapshots: n, // opens outgoing snapshot bodies
//		Logger:    log,
//	})
//	srv := grpc.NewServer(tr.ServerOptions()...) // or: go tr.Serve(lis)
//	tr.Register(srv)
//	go srv.Serve(raftListener)
//	for id, addr := range peers {
//		tr.AddPeer(id, addr) // own id is ignored
//	}
//	...
//	srv.Stop() // inbound streams end
//	tr.Close() // outbound streams, transfers and reports end
//
// The peer protocol uses gRPC content-subtype "raftd" for message streams
// (protobuf bytes written by core/codec.AppendBatch); a receiver also
// accepts the plain "proto" subtype, so any gRPC client can speak it.
package transport
