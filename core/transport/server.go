package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/core/codec"
	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// server is the inbound side: the Raft gRPC service.
type server struct {
	raftv1.UnimplementedRaftServer
	t *Transport
}

// checkCaller validates the caller's metadata and returns its node id.
func (s *server) checkCaller(ctx context.Context) (uint64, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) (string, bool) {
		if v := md.Get(k); len(v) == 1 {
			return v[0], true
		}
		return "", false
	}
	cluster, ok := get(mdClusterID)
	if !ok {
		return 0, status.Errorf(codes.FailedPrecondition, "transport: caller sent no %s metadata; not a raftd peer?", mdClusterID)
	}
	fromS, _ := get(mdFrom)
	from, err := strconv.ParseUint(fromS, 10, 64)
	if err != nil || from == raft.None {
		return 0, status.Errorf(codes.FailedPrecondition, "transport: bad %s metadata %q", mdFrom, fromS)
	}
	if cluster != s.t.opts.ClusterID {
		return 0, status.Errorf(codes.FailedPrecondition,
			"transport: cluster id mismatch: node %d is in cluster %q, receiver node %d is in cluster %q",
			from, cluster, s.t.opts.ID, s.t.opts.ClusterID)
	}
	toS, _ := get(mdTo)
	if to, err := strconv.ParseUint(toS, 10, 64); err != nil || to != s.t.opts.ID {
		return 0, status.Errorf(codes.FailedPrecondition,
			"transport: node %d sent traffic for node %s to node %d (wrong peer address?)", from, toS, s.t.opts.ID)
	}
	if auth := s.t.opts.Authorize; auth != nil {
		if err := auth(ctx, from); err != nil {
			return 0, status.Errorf(codes.PermissionDenied, "transport: node %d refuses a caller claiming to be node %d: %v", s.t.opts.ID, from, err)
		}
	}
	if s.t.opts.Faults.isCut(from) {
		return 0, status.Errorf(codes.Unavailable, "transport: partitioned from node %d (fault injection)", from)
	}
	return from, nil
}

// checkMessage validates one inbound message from node from.
func (s *server) checkMessage(from uint64, m *raft.Message) error {
	switch {
	case m.From != from:
		return fmt.Errorf("transport: message from %d on the stream of node %d", m.From, from)
	case m.To != s.t.opts.ID:
		return fmt.Errorf("transport: message for %d delivered to node %d", m.To, s.t.opts.ID)
	case raft.IsLocalMsg(m.Type):
		return fmt.Errorf("transport: local message %s from node %d", m.Type, from)
	}
	return nil
}

// Stream receives a peer's batches and steps them in order.
func (s *server) Stream(srv raftv1.Raft_StreamServer) error {
	ctx := srv.Context()
	from, err := s.checkCaller(ctx)
	if err != nil {
		return err
	}
	// The header tells the sender its stream is accepted.
	if err := srv.SendHeader(metadata.Pairs(mdAccepted, "1")); err != nil {
		return err
	}
	log := s.t.opts.Logger
	// Our senders use the wire codec; any other gRPC client gets the
	// generated path.
	raw := false
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ct := md.Get("content-type")
		raw = len(ct) == 1 && ct[0] == "application/grpc+"+contentSubtype
	}
	var msgs []raft.Message
	for {
		var rb rawBatch
		var pb *raftv1.MessageBatch
		if raw {
			err = srv.RecvMsg(&rb)
		} else {
			pb, err = srv.Recv()
		}
		if errors.Is(err, io.EOF) {
			return srv.SendAndClose(&raftv1.StreamResponse{})
		}
		if err != nil {
			return err
		}
		if s.t.ctx.Err() != nil {
			return status.Error(codes.Unavailable, "transport: closed")
		}
		clear(msgs)
		if raw {
			msgs, err = codec.DecodeBatch(msgs[:0], rb.buf)
		} else {
			msgs, err = codec.BatchFromProto(msgs[:0], pb)
		}
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "transport: from node %d: %v", from, err)
		}
		if s.t.opts.Faults.isCut(from) {
			continue
		}
		for i := range msgs {
			m := &msgs[i]
			if err := s.checkMessage(from, m); err != nil {
				// One bad message does not cost the stream the rest.
				log.Warn("transport: dropped a bad message", "err", err)
				continue
			}
			if m.Type == raft.MsgSnap {
				log.Warn("transport: dropped a MsgSnap sent on the message stream", "peer", from)
				continue
			}
			s.t.stats.messagesReceived.Add(1)
			if err := s.t.opts.Handler.Process(ctx, *m); err != nil {
				if ctx.Err() != nil {
					return status.FromContextError(ctx.Err()).Err()
				}
				log.Debug("transport: process failed", "type", m.Type, "peer", from, "err", err)
			}
		}
	}
}

// SendSnapshot receives one snapshot transfer and hands it to the handler.
func (s *server) SendSnapshot(srv raftv1.Raft_SendSnapshotServer) error {
	ctx := srv.Context()
	from, err := s.checkCaller(ctx)
	if err != nil {
		return err
	}
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	if first.GetMessage() == nil {
		return status.Errorf(codes.InvalidArgument, "transport: snapshot from node %d: first chunk carries no message", from)
	}
	m, err := codec.MessageFromProto(first.GetMessage())
	if err == nil {
		err = s.checkMessage(from, &m)
	}
	if err == nil && (m.Type != raft.MsgSnap || m.Snapshot == nil) {
		err = fmt.Errorf("transport: snapshot stream from node %d opened with %s", from, m.Type)
	}
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if s.t.ctx.Err() != nil {
		return status.Error(codes.Unavailable, "transport: closed")
	}
	r := &chunkReader{srv: srv, from: from, index: m.Snapshot.Metadata.Index}
	if err := r.add(first); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.t.opts.Handler.ReceiveSnapshot(ctx, m, r); err != nil {
		return status.Errorf(codes.Aborted, "transport: node %d: receive snapshot at index %d from node %d: %v",
			s.t.opts.ID, m.Snapshot.Metadata.Index, from, err)
	}
	s.t.stats.snapshotsReceived.Add(1)
	return srv.SendAndClose(&raftv1.SnapshotResponse{})
}

// castagnoli is the CRC-32C table shared by sender and receiver.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkReader is an io.Reader over the data of an inbound snapshot stream.
// It returns io.EOF only after the sender's last chunk arrived and the byte
// count and CRC-32C matched; any other end is an error.
type chunkReader struct {
	srv   raftv1.Raft_SendSnapshotServer
	from  uint64
	index uint64
	buf   []byte
	n     uint64
	crc   uint32
	err   error // sticky; io.EOF after a verified last chunk
}

// add accepts one chunk.
func (r *chunkReader) add(c *raftv1.SnapshotChunk) error {
	r.buf = c.GetData()
	r.n += uint64(len(r.buf))
	r.crc = crc32.Update(r.crc, castagnoli, r.buf)
	if !c.GetDone() {
		return nil
	}
	if c.GetTotalBytes() != r.n || c.GetCrc32C() != r.crc {
		r.buf = nil
		return fmt.Errorf("transport: snapshot at index %d from node %d is corrupt: got %d bytes crc32c %08x, sender sent %d bytes crc32c %08x",
			r.index, r.from, r.n, r.crc, c.GetTotalBytes(), c.GetCrc32C())
	}
	r.err = io.EOF
	return nil
}

// Read implements io.Reader.
func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		c, err := r.srv.Recv()
		switch {
		case errors.Is(err, io.EOF):
			r.err = fmt.Errorf("transport: snapshot at index %d from node %d ended after %d bytes without its last chunk: %w",
				r.index, r.from, r.n, io.ErrUnexpectedEOF)
		case err != nil:
			r.err = fmt.Errorf("transport: snapshot at index %d from node %d broke after %d bytes: %w", r.index, r.from, r.n, err)
		case c.GetMessage() != nil:
			r.err = fmt.Errorf("transport: snapshot at index %d from node %d: message in a data chunk", r.index, r.from)
		default:
			if err := r.add(c); err != nil {
				r.err = err
			}
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
