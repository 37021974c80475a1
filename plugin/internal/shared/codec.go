package shared

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"

	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// ServerOptions are the gRPC server options of a plugin served with
// GRPCPlugin{RawChunks: true}: the proto codec, except that the chunks of
// a Restore stream are decoded without copying their data (rawChunk). The
// wire format is the same.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(chunkCodec{encoding.GetCodecV2(proto.Name)}),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow)}
}

// DialOptions returns the host's dial options for a plugin connection.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgBytes), grpc.MaxCallSendMsgSize(MaxMsgBytes)),
	}
}

// Flow-control windows of the host-plugin connection (both sides), fixed
// so that gRPC sends no bandwidth-delay PING and ACK around every Apply or
// Query (as on the peer connections, core/transport). 4 MiB keeps a few
// 1 MiB snapshot chunks in flight.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// chunkCodec is the proto codec, but decodes a *rawChunk itself.
type chunkCodec struct{ encoding.CodecV2 }

func (c chunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if rc, ok := v.(*rawChunk); ok {
		return rc.unmarshal(data)
	}
	return c.CodecV2.Unmarshal(data, v)
}

// rawChunk is a SnapshotChunk (header = 1, data = 2) decoded by chunkCodec:
// its data stays in the buffers gRPC received it in (taking a reference to
// them), and is read from there, once, into the FSM's own memory. A 1 GiB
// restore thus copies the body once less, and does not allocate (and
// fault in) 1 GiB of chunk messages that are garbage at once.
type rawChunk struct {
	header *fsmv1.SnapshotHeader
	// data is the chunk's data: body when the data field ends the message
	// (the usual encoding), else copied into buf.
	body *mem.Reader // nil, or positioned at the data, which is all that remains
	buf  []byte
	n    int // data bytes
}

var errChunkEncoding = errors.New("restore: malformed SnapshotChunk")

// release frees the buffers of the previous chunk's data.
func (rc *rawChunk) release() {
	if rc.body != nil {
		rc.body.Close()
		rc.body = nil
	}
	rc.header, rc.buf, rc.n = nil, rc.buf[:0], 0
}

func (rc *rawChunk) unmarshal(data mem.BufferSlice) error {
	rc.release()
	r := data.Reader()
	keep := false
	defer func() {
		if !keep {
			r.Close()
		}
	}()
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return errChunkEncoding
		}
		num, typ := protowire.DecodeTag(tag)
		switch typ {
		case protowire.VarintType:
			if _, err := binary.ReadUvarint(r); err != nil {
				return errChunkEncoding
			}
		case protowire.Fixed32Type, protowire.Fixed64Type:
			k := 4
			if typ == protowire.Fixed64Type {
				k = 8
			}
			if err := skip(r, k); err != nil {
				return err
			}
		case protowire.BytesType:
			l, err := binary.ReadUvarint(r)
			if err != nil || l > uint64(r.Remaining()) {
				return errChunkEncoding
			}
			n := int(l)
			switch num {
			case 1:
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil {
					return errChunkEncoding
				}
				h := &fsmv1.SnapshotHeader{}
				if err := protobuf.Unmarshal(b, h); err != nil {
					return fmt.Errorf("restore: chunk header: %w", err)
				}
				rc.header = h
			case 2:
				if n > ChunkBytes {
					// Checked again by the reader; this only avoids the copy.
					rc.buf, rc.n = rc.buf[:0], n
					return skip(r, n)
				}
				if n == r.Remaining() {
					rc.body, rc.buf, rc.n, keep = r, rc.buf[:0], n, true
					return nil
				}
				if cap(rc.buf) < n {
					rc.buf = make([]byte, n)
				}
				rc.buf = rc.buf[:n]
				if _, err := io.ReadFull(r, rc.buf); err != nil {
					return errChunkEncoding
				}
				rc.n = n
			default:
				if err := skip(r, n); err != nil {
					return err
				}
			}
		default:
			return errChunkEncoding
		}
	}
	return nil
}

func skip(r *mem.Reader, n int) error {
	if n > r.Remaining() {
		return errChunkEncoding
	}
	_, err := io.CopyN(io.Discard, r, int64(n))
	return err
}

// read copies the chunk's data into p, and reports how much.
func (rc *rawChunk) read(p []byte) int {
	if rc.body != nil {
		k, _ := rc.body.Read(p[:min(len(p), rc.n)])
		rc.n -= k
		if rc.n == 0 {
			rc.body.Close()
			rc.body = nil
		}
		return k
	}
	k := copy(p, rc.buf)
	rc.buf, rc.n = rc.buf[k:], rc.n-k
	return k
}
