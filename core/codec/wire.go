package codec

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/raftd/raftd/core/raft"
)

// This file encodes and decodes raftd.raft.v1.MessageBatch directly between
// raft.Message values and protobuf wire bytes, without building the
// generated proto structs. It exists for the transport's hot path: the
// generated decoder allocates every Entry and every entry's data
// separately; DecodeBatch allocates one []raft.Entry per message and
// aliases all byte fields into the input buffer. The bytes are exactly the
// protobuf encoding of the schema in proto/raft/v1/raft.proto, and the
// tests hold both paths to the same results.

// Field numbers of raft.proto.
const (
	fBatchMessages = 1

	fMsgType       = 1
	fMsgTo         = 2
	fMsgFrom       = 3
	fMsgTerm       = 4
	fMsgLogTerm    = 5
	fMsgIndex      = 6
	fMsgEntries    = 7
	fMsgCommit     = 8
	fMsgSnapshot   = 9
	fMsgReject     = 10
	fMsgRejectHint = 11
	fMsgContext    = 12

	fEntryTerm  = 1
	fEntryIndex = 2
	fEntryType  = 3
	fEntryData  = 4

	fSnapMetadata = 1
	fSnapData     = 2

	fMetaIndex     = 1
	fMetaTerm      = 2
	fMetaConfState = 3

	fConfVoters   = 1
	fConfLearners = 2
)

var errTruncated = errors.New("codec: truncated or malformed protobuf")

// BatchSize returns the encoded size of msgs as a MessageBatch.
func BatchSize(msgs []raft.Message) int {
	n := 0
	for i := range msgs {
		n += sizeField(fBatchMessages, messageSize(&msgs[i]))
	}
	return n
}

// AppendBatch appends the MessageBatch encoding of msgs to b and returns
// the extended slice. With b == nil it allocates exactly once.
func AppendBatch(b []byte, msgs []raft.Message) []byte {
	if b == nil {
		b = make([]byte, 0, BatchSize(msgs))
	}
	for i := range msgs {
		m := &msgs[i]
		b = protowire.AppendTag(b, fBatchMessages, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(messageSize(m)))
		b = appendMessage(b, m)
	}
	return b
}

func sizeField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeUint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeBytes(num protowire.Number, v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return sizeField(num, len(v))
}

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func entrySize(e *raft.Entry) int {
	return sizeUint(fEntryTerm, e.Term) + sizeUint(fEntryIndex, e.Index) +
		sizeUint(fEntryType, uint64(e.Type)) + sizeBytes(fEntryData, e.Data)
}

func packedSize(vs []uint64) int {
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(v)
	}
	return n
}

func confStateSize(cs *raft.ConfState) int {
	n := 0
	if len(cs.Voters) > 0 {
		n += sizeField(fConfVoters, packedSize(cs.Voters))
	}
	if len(cs.Learners) > 0 {
		n += sizeField(fConfLearners, packedSize(cs.Learners))
	}
	return n
}

func metadataSize(md *raft.SnapshotMetadata) int {
	return sizeUint(fMetaIndex, md.Index) + sizeUint(fMetaTerm, md.Term) +
		sizeField(fMetaConfState, confStateSize(&md.ConfState))
}

func snapshotSize(s *raft.Snapshot) int {
	return sizeField(fSnapMetadata, metadataSize(&s.Metadata)) + sizeBytes(fSnapData, s.Data)
}

func messageSize(m *raft.Message) int {
	n := sizeUint(fMsgType, uint64(m.Type)) + sizeUint(fMsgTo, m.To) + sizeUint(fMsgFrom, m.From) +
		sizeUint(fMsgTerm, m.Term) + sizeUint(fMsgLogTerm, m.LogTerm) + sizeUint(fMsgIndex, m.Index) +
		sizeUint(fMsgCommit, m.Commit) + sizeUint(fMsgRejectHint, m.RejectHint) +
		sizeBytes(fMsgContext, m.Context)
	for i := range m.Entries {
		n += sizeField(fMsgEntries, entrySize(&m.Entries[i]))
	}
	if m.Snapshot != nil {
		n += sizeField(fMsgSnapshot, snapshotSize(m.Snapshot))
	}
	if m.Reject {
		n += sizeUint(fMsgReject, 1)
	}
	return n
}

func appendPacked(b []byte, num protowire.Number, vs []uint64) []byte {
	if len(vs) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(packedSize(vs)))
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return b
}

func appendMessage(b []byte, m *raft.Message) []byte {
	b = appendUint(b, fMsgType, uint64(m.Type))
	b = appendUint(b, fMsgTo, m.To)
	b = appendUint(b, fMsgFrom, m.From)
	b = appendUint(b, fMsgTerm, m.Term)
	b = appendUint(b, fMsgLogTerm, m.LogTerm)
	b = appendUint(b, fMsgIndex, m.Index)
	for i := range m.Entries {
		e := &m.Entries[i]
		b = protowire.AppendTag(b, fMsgEntries, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(e)))
		b = appendUint(b, fEntryTerm, e.Term)
		b = appendUint(b, fEntryIndex, e.Index)
		b = appendUint(b, fEntryType, uint64(e.Type))
		b = appendBytes(b, fEntryData, e.Data)
	}
	b = appendUint(b, fMsgCommit, m.Commit)
	if s := m.Snapshot; s != nil {
		b = protowire.AppendTag(b, fMsgSnapshot, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(snapshotSize(s)))
		md := &s.Metadata
		b = protowire.AppendTag(b, fSnapMetadata, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(metadataSize(md)))
		b = appendUint(b, fMetaIndex, md.Index)
		b = appendUint(b, fMetaTerm, md.Term)
		b = protowire.AppendTag(b, fMetaConfState, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(confStateSize(&md.ConfState)))
		b = appendPacked(b, fConfVoters, md.ConfState.Voters)
		b = appendPacked(b, fConfLearners, md.ConfState.Learners)
		b = appendBytes(b, fSnapData, s.Data)
	}
	if m.Reject {
		b = appendUint(b, fMsgReject, 1)
	}
	b = appendUint(b, fMsgRejectHint, m.RejectHint)
	b = appendBytes(b, fMsgContext, m.Context)
	return b
}

// field is one decoded protobuf field: its number, wire type, and either
// its varint value or its length-delimited payload.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	buf []byte
}

// uvarint decodes a varint, with an inlinable fast path for one byte.
func uvarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// next consumes one field from b. Fields of other wire types (fixed32,
// fixed64, groups) are skipped over and returned with typ set, so callers
// ignore them as unknown fields, as the generated code does. A bytes
// field's payload is capped at its length, so appending to it can never
// overwrite the rest of the buffer.
func next(b []byte) (field, []byte, error) {
	tag, n := uvarint(b)
	if n < 0 || tag>>3 < uint64(protowire.MinValidNumber) || tag>>3 > math.MaxInt32 {
		return field{}, nil, errTruncated
	}
	b = b[n:]
	f := field{num: protowire.Number(tag >> 3), typ: protowire.Type(tag & 7)}
	switch f.typ {
	case protowire.VarintType:
		f.v, n = uvarint(b)
	case protowire.BytesType:
		var l uint64
		l, n = uvarint(b)
		if n < 0 || l > uint64(len(b)-n) {
			return field{}, nil, errTruncated
		}
		end := n + int(l)
		f.buf = b[n:end:end]
		n = end
	default:
		n = protowire.ConsumeFieldValue(f.num, f.typ, b)
	}
	if n < 0 {
		return field{}, nil, errTruncated
	}
	return f, b[n:], nil
}

// DecodeBatch decodes a MessageBatch encoding and appends its messages to
// dst. The messages alias buf (entry data, context, snapshot data), which
// the caller must therefore not modify or reuse. It never panics; on error
// it returns dst unchanged. Empty slices decode to nil, as in
// BatchFromProto.
func DecodeBatch(dst []raft.Message, buf []byte) ([]raft.Message, error) {
	n0 := len(dst)
	for i := 0; len(buf) > 0; {
		f, rest, err := next(buf)
		if err != nil {
			return dst[:n0], fmt.Errorf("codec: batch: %w", err)
		}
		buf = rest
		if f.num != fBatchMessages || f.typ != protowire.BytesType {
			continue
		}
		dst = append(dst, raft.Message{})
		if err := decodeMessageWire(&dst[len(dst)-1], f.buf); err != nil {
			return dst[:n0], fmt.Errorf("codec: batch message %d: %w", i, err)
		}
		i++
	}
	return dst, nil
}

// Single-byte tags of the hot fields: (field number << 3) | wire type.
const (
	tagMsgEntries = fMsgEntries<<3 | 2
	tagEntryTerm  = fEntryTerm<<3 | 0
	tagEntryIndex = fEntryIndex<<3 | 0
	tagEntryType  = fEntryType<<3 | 0
	tagEntryData  = fEntryData<<3 | 2
)

// countEntries counts the entry fields of an encoded message.
func countEntries(b []byte) int {
	n := 0
	for len(b) > 0 {
		if b[0] == tagMsgEntries {
			// Fast path: skip the entry without decoding it.
			l, k := uvarint(b[1:])
			if k < 0 || l > uint64(len(b)-1-k) {
				return n
			}
			n++
			b = b[1+k+int(l):]
			continue
		}
		f, rest, err := next(b)
		if err != nil {
			return n
		}
		if f.num == fMsgEntries && f.typ == protowire.BytesType {
			n++
		}
		b = rest
	}
	return n
}

func decodeMessageWire(m *raft.Message, b []byte) error {
	var typ int32
	if k := countEntries(b); k > 0 {
		m.Entries = make([]raft.Entry, 0, k)
	}
	for len(b) > 0 {
		f, rest, err := next(b)
		if err != nil {
			return err
		}
		b = rest
		if f.typ == protowire.VarintType {
			switch f.num {
			case fMsgType:
				typ = int32(f.v)
			case fMsgTo:
				m.To = f.v
			case fMsgFrom:
				m.From = f.v
			case fMsgTerm:
				m.Term = f.v
			case fMsgLogTerm:
				m.LogTerm = f.v
			case fMsgIndex:
				m.Index = f.v
			case fMsgCommit:
				m.Commit = f.v
			case fMsgReject:
				m.Reject = f.v != 0
			case fMsgRejectHint:
				m.RejectHint = f.v
			}
			continue
		}
		if f.typ != protowire.BytesType {
			continue
		}
		switch f.num {
		case fMsgEntries:
			m.Entries = append(m.Entries, raft.Entry{})
			if err := decodeEntryWire(&m.Entries[len(m.Entries)-1], f.buf); err != nil {
				return err
			}
		case fMsgSnapshot:
			// A repeated occurrence merges into the first (protobuf rules).
			if m.Snapshot == nil {
				m.Snapshot = &raft.Snapshot{}
			}
			if err := decodeSnapshotWire(m.Snapshot, f.buf); err != nil {
				return err
			}
		case fMsgContext:
			m.Context = nonEmpty(f.buf)
		}
	}
	if typ < 0 || typ > maxUint8 {
		return fmt.Errorf("codec: message from %d to %d: type %d out of range", m.From, m.To, typ)
	}
	m.Type = raft.MessageType(typ)
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	return nil
}

func decodeEntryWire(e *raft.Entry, b []byte) error {
	var typ int32
	for len(b) > 0 {
		// Fast path for the fields the encoder writes, with one-byte tags.
		if t := b[0]; t == tagEntryTerm || t == tagEntryIndex || t == tagEntryType || t == tagEntryData {
			v, k := uvarint(b[1:])
			if k < 0 {
				return errTruncated
			}
			b = b[1+k:]
			switch t {
			case tagEntryTerm:
				e.Term = v
			case tagEntryIndex:
				e.Index = v
			case tagEntryType:
				typ = int32(v)
			default:
				if v > uint64(len(b)) {
					return errTruncated
				}
				e.Data = nonEmpty(b[:v:v])
				b = b[v:]
			}
			continue
		}
		f, rest, err := next(b)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case f.typ == protowire.VarintType && f.num == fEntryTerm:
			e.Term = f.v
		case f.typ == protowire.VarintType && f.num == fEntryIndex:
			e.Index = f.v
		case f.typ == protowire.VarintType && f.num == fEntryType:
			typ = int32(f.v)
		case f.typ == protowire.BytesType && f.num == fEntryData:
			e.Data = nonEmpty(f.buf)
		}
	}
	if typ < 0 || typ > maxUint8 {
		return fmt.Errorf("codec: entry %d: type %d out of range", e.Index, typ)
	}
	e.Type = raft.EntryType(typ)
	return nil
}

func decodeSnapshotWire(s *raft.Snapshot, b []byte) error {
	for len(b) > 0 {
		f, rest, err := next(b)
		if err != nil {
			return err
		}
		b = rest
		if f.typ != protowire.BytesType {
			continue
		}
		switch f.num {
		case fSnapMetadata:
			if err := decodeMetadataWire(&s.Metadata, f.buf); err != nil {
				return err
			}
		case fSnapData:
			s.Data = nonEmpty(f.buf)
		}
	}
	return nil
}

func decodeMetadataWire(md *raft.SnapshotMetadata, b []byte) error {
	for len(b) > 0 {
		f, rest, err := next(b)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case f.typ == protowire.VarintType && f.num == fMetaIndex:
			md.Index = f.v
		case f.typ == protowire.VarintType && f.num == fMetaTerm:
			md.Term = f.v
		case f.typ == protowire.BytesType && f.num == fMetaConfState:
			if err := decodeConfStateWire(&md.ConfState, f.buf); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeConfStateWire(cs *raft.ConfState, b []byte) error {
	for len(b) > 0 {
		f, rest, err := next(b)
		if err != nil {
			return err
		}
		b = rest
		var list *[]uint64
		switch f.num {
		case fConfVoters:
			list = &cs.Voters
		case fConfLearners:
			list = &cs.Learners
		default:
			continue
		}
		switch f.typ {
		case protowire.VarintType: // unpacked element
			*list = append(*list, f.v)
		case protowire.BytesType: // packed run
			for p := f.buf; len(p) > 0; {
				v, n := uvarint(p)
				if n < 0 {
					return errTruncated
				}
				*list = append(*list, v)
				p = p[n:]
			}
		}
	}
	return nil
}
