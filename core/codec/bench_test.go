package codec

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// benchBatch is 16 MsgApps of 64 entries of 128 B each.
func benchBatch() []raft.Message {
	msgs := make([]raft.Message, 16)
	for i := range msgs {
		ents := make([]raft.Entry, 64)
		for j := range ents {
			ents[j] = raft.Entry{Term: 7, Index: uint64(100000 + i*64 + j), Data: make([]byte, 128)}
		}
		msgs[i] = raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 7, LogTerm: 7, Index: uint64(99999 + i*64), Commit: 99000, Entries: ents}
	}
	return msgs
}

func BenchmarkEncodeBatch(b *testing.B) {
	msgs := benchBatch()
	b.Run("wire", func(b *testing.B) {
		b.SetBytes(int64(BatchSize(msgs)))
		b.ReportAllocs()
		for b.Loop() {
			AppendBatch(nil, msgs)
		}
	})
	b.Run("generated", func(b *testing.B) {
		b.SetBytes(int64(BatchSize(msgs)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(BatchToProto(msgs)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	wire := AppendBatch(nil, benchBatch())
	b.Run("wire", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		dst := make([]raft.Message, 0, 16)
		for b.Loop() {
			if _, err := DecodeBatch(dst[:0], wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("generated", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		dst := make([]raft.Message, 0, 16)
		for b.Loop() {
			var pb raftv1.MessageBatch
			if err := proto.Unmarshal(wire, &pb); err != nil {
				b.Fatal(err)
			}
			if _, err := BatchFromProto(dst[:0], &pb); err != nil {
				b.Fatal(err)
			}
		}
	})
}
