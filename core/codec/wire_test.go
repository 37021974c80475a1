package codec

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// protoDecodeBatch is the reference decoder: generated code plus
// BatchFromProto.
func protoDecodeBatch(b []byte) ([]raft.Message, error) {
	var pb raftv1.MessageBatch
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, err
	}
	return BatchFromProto(nil, &pb)
}

func TestWireMatchesGenerated(t *testing.T) {
	msgs := []raft.Message{
		{},
		{Type: raft.MsgApp, To: 2, From: 1, Term: 3, LogTerm: 2, Index: 10, Commit: 9, Entries: []raft.Entry{
			{Term: 3, Index: 11, Data: []byte("a")},
			{Term: 3, Index: 12, Type: raft.EntryConfChange, Data: []byte{0, 1, 2}},
			{Term: 3, Index: 13, Type: raft.EntryType(255)},
		}},
		{Type: raft.MsgAppResp, To: 1, From: 3, Reject: true, RejectHint: 41, Context: []byte("c")},
		{Type: raft.MsgSnap, To: 3, From: 1, Snapshot: &raft.Snapshot{}},
		{Type: raft.MsgSnap, To: 3, From: 1, Snapshot: &raft.Snapshot{
			Metadata: raft.SnapshotMetadata{Index: 90, Term: 4, ConfState: raft.ConfState{Voters: []uint64{1, 300, 1 << 40}, Learners: []uint64{4}}},
			Data:     []byte("descriptor"),
		}},
		{Type: raft.MessageType(255), To: ^uint64(0)},
	}
	wire := AppendBatch(nil, msgs)
	if len(wire) != BatchSize(msgs) || cap(wire) != len(wire) {
		t.Fatalf("AppendBatch: len %d cap %d, BatchSize %d", len(wire), cap(wire), BatchSize(msgs))
	}
	gen, err := proto.Marshal(BatchToProto(msgs))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"wire": wire, "generated": gen} {
		got, err := DecodeBatch(nil, b)
		if err != nil || !reflect.DeepEqual(got, msgs) {
			t.Fatalf("DecodeBatch(%s): %v\n got %+v\nwant %+v", name, err, got, msgs)
		}
		ref, err := protoDecodeBatch(b)
		if err != nil || !reflect.DeepEqual(ref, msgs) {
			t.Fatalf("generated decode of %s: %v\n got %+v\nwant %+v", name, err, ref, msgs)
		}
	}
	// Unpacked repeated fields, unknown fields and repeated snapshot
	// fields decode as the generated code does.
	odd := &raftv1.Message{Snapshot: &raftv1.Snapshot{Metadata: &raftv1.SnapshotMetadata{Index: 1, ConfState: &raftv1.ConfState{Voters: []uint64{1}}}}}
	b1, _ := proto.Marshal(&raftv1.MessageBatch{Messages: []*raftv1.Message{odd}})
	odd2 := &raftv1.Message{Type: raftv1.MessageType_MSG_SNAP, Snapshot: &raftv1.Snapshot{Data: []byte("d"), Metadata: &raftv1.SnapshotMetadata{Term: 2, ConfState: &raftv1.ConfState{Voters: []uint64{2}}}}}
	b2, _ := proto.Marshal(odd2)
	// Concatenating two encodings of one message merges them.
	merged := append(append([]byte{0x0a}, byte(len(b1)-2+len(b2))), append(b1[2:], b2...)...)
	merged = append(merged, 0x15, 1, 2, 3, 4) // unknown fixed32 field 2
	ref, err := protoDecodeBatch(merged)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(nil, merged)
	if err != nil || !reflect.DeepEqual(got, ref) {
		t.Fatalf("merge semantics differ: %v\n got %+v\nwant %+v", err, got, ref)
	}
	if v := got[0].Snapshot.Metadata.ConfState.Voters; !reflect.DeepEqual(v, []uint64{1, 2}) {
		t.Fatalf("merged voters %v", v)
	}
}

func TestDecodeBatchAllocs(t *testing.T) {
	ents := make([]raft.Entry, 64)
	for i := range ents {
		ents[i] = raft.Entry{Term: 1, Index: uint64(i + 1), Data: make([]byte, 128)}
	}
	msgs := []raft.Message{{Type: raft.MsgApp, Entries: ents}, {Type: raft.MsgHeartbeat}}
	wire := AppendBatch(nil, msgs)
	dst := make([]raft.Message, 0, 4)
	// One []raft.Entry for the MsgApp; nothing per entry.
	if n := testing.AllocsPerRun(100, func() { _, _ = DecodeBatch(dst[:0], wire) }); n > 1 {
		t.Fatalf("DecodeBatch: %v allocations, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { AppendBatch(nil, msgs) }); n > 1 {
		t.Fatalf("AppendBatch: %v allocations, want 1", n)
	}
	got, _ := DecodeBatch(nil, wire)
	if indexOf(wire, got[0].Entries[5].Data) < 0 {
		t.Fatal("entry data not aliased into the buffer")
	}
}

// indexOf returns the offset of sub's first byte inside b (sub must alias b).
func indexOf(b, sub []byte) int {
	for i := range b {
		if &b[i] == &sub[0] {
			return i
		}
	}
	return -1
}

func TestDecodeBatchRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"truncated":       AppendBatch(nil, []raft.Message{{Type: raft.MsgApp, Context: []byte("xyz")}})[:4],
		"bad type":        mustMarshal(t, &raftv1.MessageBatch{Messages: []*raftv1.Message{{Type: 999}}}),
		"bad entry type":  mustMarshal(t, &raftv1.MessageBatch{Messages: []*raftv1.Message{{Entries: []*raftv1.Entry{{Type: -3}}}}}),
		"field number 0":  {0x02, 0x00},
		"end group alone": {0x0c},
	} {
		dst := []raft.Message{{Type: raft.MsgHeartbeat}}
		got, err := DecodeBatch(dst, b)
		if err == nil || len(got) != 1 {
			t.Errorf("%s: err %v, %d messages", name, err, len(got))
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeBatch holds the hand-written decoder to the generated one on
// arbitrary input: whatever the generated code accepts, DecodeBatch accepts
// with the same result; and it never panics.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, []raft.Message{{Type: raft.MsgApp, Entries: []raft.Entry{{Index: 1, Data: []byte("x")}},
		Snapshot: &raft.Snapshot{Metadata: raft.SnapshotMetadata{ConfState: raft.ConfState{Voters: []uint64{1, 2}}}}}}))
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x0a, 0x03, 0x08, 0x80, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeBatch(nil, b)
		ref, refErr := protoDecodeBatch(b)
		if refErr == nil {
			if err != nil {
				t.Fatalf("generated code accepts, DecodeBatch fails: %v", err)
			}
			if !reflect.DeepEqual(got, ref) {
				t.Fatalf("decoders differ:\n got %+v\nwant %+v", got, ref)
			}
		}
		if err == nil {
			// Re-encoding what was decoded is stable.
			again, err := DecodeBatch(nil, AppendBatch(nil, got))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("re-encode: %v\n got %+v\nwant %+v", err, again, got)
			}
		}
	})
}

func TestDecodedBytesCapped(t *testing.T) {
	wire := AppendBatch(nil, []raft.Message{{Type: raft.MsgApp, Context: []byte("ctx"), Entries: []raft.Entry{{Data: []byte("ab")}, {Data: []byte("cd")}}}})
	got, err := DecodeBatch(nil, wire)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got[0].Entries[0].Data, 'X', 'X', 'X', 'X')
	_ = append(got[0].Context, 'Y', 'Y', 'Y', 'Y')
	if got[0].Entries[1].Data[0] != 'c' || string(got[0].Context) != "ctx" {
		t.Fatal("appending to a decoded slice overwrote the buffer")
	}
	if cap(got[0].Entries[0].Data) != 2 {
		t.Fatalf("cap %d, want 2", cap(got[0].Entries[0].Data))
	}
}
