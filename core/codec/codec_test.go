package codec

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

func TestMessageRoundTrip(t *testing.T) {
	snap := &raft.Snapshot{
		Metadata: raft.SnapshotMetadata{Index: 90, Term: 4, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}},
		Data:     []byte("descriptor"),
	}
	tests := []struct {
		name string
		m    raft.Message
	}{
		{"zero", raft.Message{}},
		{"heartbeat", raft.Message{Type: raft.MsgHeartbeat, To: 2, From: 1, Term: 3, Commit: 7, Context: []byte("rctx")}},
		{"app", raft.Message{Type: raft.MsgApp, To: 2, From: 1, Term: 3, LogTerm: 2, Index: 10, Commit: 9, Entries: []raft.Entry{
			{Term: 3, Index: 11, Data: []byte("a")},
			{Term: 3, Index: 12, Type: raft.EntryConfChange, Data: []byte{0, 1, 2}},
			{Term: 3, Index: 13},
		}}},
		{"reject", raft.Message{Type: raft.MsgAppResp, To: 1, From: 3, Term: 3, LogTerm: 2, Index: 50, Reject: true, RejectHint: 41}},
		{"snap", raft.Message{Type: raft.MsgSnap, To: 3, From: 1, Term: 4, Snapshot: snap}},
		{"empty snapshot pointer", raft.Message{Type: raft.MsgSnap, To: 3, From: 1, Snapshot: &raft.Snapshot{}}},
		{"max values", raft.Message{Type: raft.MessageType(255), To: ^uint64(0), From: ^uint64(0), Term: ^uint64(0), Index: ^uint64(0),
			Entries: []raft.Entry{{Type: raft.EntryType(255), Term: ^uint64(0), Index: ^uint64(0)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := MarshalMessage(&tt.m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.m)
			}
		})
	}
}

func TestBatchRoundTrip(t *testing.T) {
	msgs := []raft.Message{
		{Type: raft.MsgVote, To: 2, From: 1, Term: 5, LogTerm: 4, Index: 20},
		{Type: raft.MsgApp, To: 2, From: 1, Entries: []raft.Entry{{Term: 1, Index: 1, Data: []byte("x")}}},
	}
	b, err := proto.Marshal(BatchToProto(msgs))
	if err != nil {
		t.Fatal(err)
	}
	var pb raftv1.MessageBatch
	if err := proto.Unmarshal(b, &pb); err != nil {
		t.Fatal(err)
	}
	prefix := []raft.Message{{Type: raft.MsgHeartbeat}}
	got, err := BatchFromProto(prefix, &pb)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]raft.Message{{Type: raft.MsgHeartbeat}}, msgs...); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := BatchFromProto(nil, &raftv1.MessageBatch{}); err != nil || len(got) != 0 {
		t.Fatalf("empty batch: %v %v", got, err)
	}
}

func TestNormalizesEmptyToNil(t *testing.T) {
	m := raft.Message{Entries: []raft.Entry{}, Context: []byte{}}
	got, err := MessageFromProto(MessageToProto(&m))
	if err != nil {
		t.Fatal(err)
	}
	if got.Entries != nil || got.Context != nil {
		t.Fatalf("empty slices not normalized to nil: %#v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		pm   *raftv1.Message
		want string
	}{
		{"message type", &raftv1.Message{Type: 256, From: 1, To: 2}, "type 256 out of range"},
		{"negative message type", &raftv1.Message{Type: -1}, "type -1 out of range"},
		{"entry type", &raftv1.Message{Type: raftv1.MessageType_MSG_APP, Entries: []*raftv1.Entry{{Index: 7, Type: 300}}}, "entry 7: type 300 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := MessageFromProto(tt.pm)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			_, err = BatchFromProto(nil, &raftv1.MessageBatch{Messages: []*raftv1.Message{{}, tt.pm}})
			if err == nil || !strings.Contains(err.Error(), "batch message 1") {
				t.Fatalf("batch err = %v", err)
			}
		})
	}
	if _, err := UnmarshalMessage([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded without error")
	}
}

func TestStorageHelpersRoundTrip(t *testing.T) {
	e := raft.Entry{Term: 2, Index: 9, Type: raft.EntryConfChange, Data: []byte("cc")}
	b, _ := MarshalEntry(e)
	if got, err := UnmarshalEntry(b); err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("entry: %+v %v", got, err)
	}
	hs := raft.HardState{Term: 3, Vote: 2, Commit: 1}
	b, _ = MarshalHardState(hs)
	if got, err := UnmarshalHardState(b); err != nil || got != hs {
		t.Fatalf("hard state: %+v %v", got, err)
	}
	cs := raft.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	b, _ = MarshalConfState(cs)
	if got, err := UnmarshalConfState(b); err != nil || !reflect.DeepEqual(got, cs) {
		t.Fatalf("conf state: %+v %v", got, err)
	}
	s := raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 5, Term: 1, ConfState: cs}, Data: []byte("d")}
	b, _ = MarshalSnapshot(s)
	if got, err := UnmarshalSnapshot(b); err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("snapshot: %+v %v", got, err)
	}
}

func TestEntriesToProtoAllocs(t *testing.T) {
	ents := make([]raft.Entry, 64)
	for i := range ents {
		ents[i] = raft.Entry{Term: 1, Index: uint64(i + 1), Data: make([]byte, 128)}
	}
	if n := testing.AllocsPerRun(100, func() { EntriesToProto(ents) }); n > 2 {
		t.Fatalf("EntriesToProto: %v allocations for 64 entries, want <= 2", n)
	}
	pes := EntriesToProto(ents)
	if n := testing.AllocsPerRun(100, func() { _, _ = EntriesFromProto(pes) }); n > 1 {
		t.Fatalf("EntriesFromProto: %v allocations for 64 entries, want <= 1", n)
	}
	got, _ := EntriesFromProto(pes)
	if &got[3].Data[0] != &ents[3].Data[0] {
		t.Fatal("entry data was copied, want aliased")
	}
}

// messageFromBytes builds an arbitrary message deterministically from b.
func messageFromBytes(b []byte) raft.Message {
	r := reader{b: b}
	m := raft.Message{
		Type: raft.MessageType(r.u8()), To: r.u64(), From: r.u64(), Term: r.u64(),
		LogTerm: r.u64(), Index: r.u64(), Commit: r.u64(), Reject: r.u8()&1 == 1,
		RejectHint: r.u64(), Context: r.bytes(),
	}
	for n := r.u8() % 8; n > 0; n-- {
		m.Entries = append(m.Entries, raft.Entry{Term: r.u64(), Index: r.u64(), Type: raft.EntryType(r.u8()), Data: r.bytes()})
	}
	if r.u8()&1 == 1 {
		s := &raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: r.u64(), Term: r.u64()}, Data: r.bytes()}
		for n := r.u8() % 4; n > 0; n-- {
			s.Metadata.ConfState.Voters = append(s.Metadata.ConfState.Voters, r.u64())
		}
		for n := r.u8() % 4; n > 0; n-- {
			s.Metadata.ConfState.Learners = append(s.Metadata.ConfState.Learners, r.u64())
		}
		m.Snapshot = s
	}
	return m
}

type reader struct{ b []byte }

func (r *reader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	var buf [8]byte
	n := copy(buf[:], r.b)
	r.b = r.b[n:]
	return binary.LittleEndian.Uint64(buf[:])
}

func (r *reader) bytes() []byte {
	n := int(r.u8() % 32)
	n = min(n, len(r.b))
	out := r.b[:n:n]
	r.b = r.b[n:]
	if n == 0 {
		return nil
	}
	return out
}

// FuzzMessageRoundTrip checks two things for arbitrary input: decoding it as
// a wire message never panics, and whatever decodes re-encodes to an equal
// message; and a message built from the input survives encode/decode as the
// identity.
func FuzzMessageRoundTrip(f *testing.F) {
	seed := raft.Message{Type: raft.MsgApp, To: 2, From: 1, Term: 3, Entries: []raft.Entry{{Term: 3, Index: 4, Data: []byte("x")}},
		Snapshot: &raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 1, ConfState: raft.ConfState{Voters: []uint64{1}}}}}
	b, _ := MarshalMessage(&seed)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x80, 0x02})
	f.Add([]byte("\x03\x02\x00\x00\x00\x00\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Garbage in: must not panic; anything accepted must round-trip.
		if m, err := UnmarshalMessage(data); err == nil {
			b, err := MarshalMessage(&m)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			m2, err := UnmarshalMessage(b)
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("decode/encode/decode not stable:\n%+v\n%+v", m, m2)
			}
		}
		// Structured: encode/decode is the identity.
		m := messageFromBytes(data)
		b, err := MarshalMessage(&m)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		got, err := UnmarshalMessage(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		// And through a batch.
		var pb raftv1.MessageBatch
		bb, _ := proto.Marshal(BatchToProto([]raft.Message{m, m}))
		if err := proto.Unmarshal(bb, &pb); err != nil {
			t.Fatal(err)
		}
		ms, err := BatchFromProto(nil, &pb)
		if err != nil || len(ms) != 2 || !reflect.DeepEqual(ms[1], m) {
			t.Fatalf("batch round trip: %v %+v", err, ms)
		}
		// The hand-written wire codec agrees with the generated one both ways.
		wire := AppendBatch(nil, []raft.Message{m})
		if ms, err := DecodeBatch(nil, wire); err != nil || len(ms) != 1 || !reflect.DeepEqual(ms[0], m) {
			t.Fatalf("wire round trip: %v %+v", err, ms)
		}
		if ms, err := DecodeBatch(nil, bb); err != nil || len(ms) != 2 || !reflect.DeepEqual(ms[1], m) {
			t.Fatalf("wire decode of generated encoding: %v %+v", err, ms)
		}
		if ms, err := protoDecodeBatch(wire); err != nil || len(ms) != 1 || !reflect.DeepEqual(ms[0], m) {
			t.Fatalf("generated decode of wire encoding: %v %+v", err, ms)
		}
	})
}
