package transport

import (
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// contentSubtype selects wireCodec for the message stream: the sender asks
// for it with grpc.CallContentSubtype, and the gRPC server picks the codec
// registered under the request's content-subtype.
const contentSubtype = "raftd"

// sendGenerated makes senders use the generated proto structs and codec
// instead of the wire codec. Tests and benchmarks set it to compare the
// two; receivers accept both.
var sendGenerated = false

// rawBatch carries an already encoded MessageBatch (see codec.AppendBatch
// and codec.DecodeBatch) through gRPC without the generated structs.
type rawBatch struct{ buf []byte }

// wireCodec passes rawBatch bytes through untouched and handles every other
// message as the standard proto codec does, so the same call can carry
// rawBatch requests and a generated response.
type wireCodec struct{ proto encoding.CodecV2 }

func (wireCodec) Name() string { return contentSubtype }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if rb, ok := v.(*rawBatch); ok {
		return mem.BufferSlice{mem.SliceBuffer(rb.buf)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal copies a rawBatch's bytes out of gRPC's pooled buffers once, so
// decoded messages may alias them.
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if rb, ok := v.(*rawBatch); ok {
		rb.buf = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func init() {
	encoding.RegisterCodecV2(wireCodec{proto: encoding.GetCodecV2(protocodec.Name)})
}
