package codec

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// maxUint8 bounds the enum values that fit the core's uint8 type fields.
const maxUint8 = 1<<8 - 1

// EntryToProto returns the wire form of e. The result aliases e.Data.
func EntryToProto(e raft.Entry) *raftv1.Entry {
	pe := &raftv1.Entry{}
	fillEntry(pe, &e)
	return pe
}

func fillEntry(pe *raftv1.Entry, e *raft.Entry) {
	pe.Term = e.Term
	pe.Index = e.Index
	pe.Type = raftv1.EntryType(e.Type)
	pe.Data = e.Data
}

// EntryFromProto returns the core form of pe. The result aliases pe.Data.
// A nil pe decodes to the zero Entry.
func EntryFromProto(pe *raftv1.Entry) (raft.Entry, error) {
	var e raft.Entry
	if err := decodeEntry(&e, pe); err != nil {
		return raft.Entry{}, err
	}
	return e, nil
}

func decodeEntry(e *raft.Entry, pe *raftv1.Entry) error {
	t := pe.GetType()
	if t < 0 || t > maxUint8 {
		return fmt.Errorf("codec: entry %d: type %d out of range", pe.GetIndex(), int32(t))
	}
	e.Term = pe.GetTerm()
	e.Index = pe.GetIndex()
	e.Type = raft.EntryType(t)
	e.Data = nonEmpty(pe.GetData())
	return nil
}

// EntriesToProto returns the wire form of ents using two allocations in all
// (one backing array, one pointer slice), not one per entry. The results
// alias the entries' Data. It returns nil for an empty ents.
func EntriesToProto(ents []raft.Entry) []*raftv1.Entry {
	if len(ents) == 0 {
		return nil
	}
	backing := make([]raftv1.Entry, len(ents))
	out := make([]*raftv1.Entry, len(ents))
	for i := range ents {
		fillEntry(&backing[i], &ents[i])
		out[i] = &backing[i]
	}
	return out
}

// EntriesFromProto returns the core form of pes in one allocation. The
// results alias the proto entries' Data. It returns nil for an empty pes.
func EntriesFromProto(pes []*raftv1.Entry) ([]raft.Entry, error) {
	if len(pes) == 0 {
		return nil, nil
	}
	out := make([]raft.Entry, len(pes))
	for i, pe := range pes {
		if err := decodeEntry(&out[i], pe); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// HardStateToProto returns the wire form of hs.
func HardStateToProto(hs raft.HardState) *raftv1.HardState {
	return &raftv1.HardState{Term: hs.Term, Vote: hs.Vote, Commit: hs.Commit}
}

// HardStateFromProto returns the core form of phs (zero for nil).
func HardStateFromProto(phs *raftv1.HardState) raft.HardState {
	return raft.HardState{Term: phs.GetTerm(), Vote: phs.GetVote(), Commit: phs.GetCommit()}
}

// ConfStateToProto returns the wire form of cs. The result aliases cs's
// slices.
func ConfStateToProto(cs raft.ConfState) *raftv1.ConfState {
	return &raftv1.ConfState{Voters: cs.Voters, Learners: cs.Learners}
}

// ConfStateFromProto returns the core form of pcs (zero for nil). The
// result aliases pcs's slices.
func ConfStateFromProto(pcs *raftv1.ConfState) raft.ConfState {
	return raft.ConfState{Voters: nonEmpty(pcs.GetVoters()), Learners: nonEmpty(pcs.GetLearners())}
}

// SnapshotMetadataToProto returns the wire form of md.
func SnapshotMetadataToProto(md raft.SnapshotMetadata) *raftv1.SnapshotMetadata {
	return &raftv1.SnapshotMetadata{Index: md.Index, Term: md.Term, ConfState: ConfStateToProto(md.ConfState)}
}

// SnapshotMetadataFromProto returns the core form of pmd (zero for nil).
func SnapshotMetadataFromProto(pmd *raftv1.SnapshotMetadata) raft.SnapshotMetadata {
	return raft.SnapshotMetadata{
		Index:     pmd.GetIndex(),
		Term:      pmd.GetTerm(),
		ConfState: ConfStateFromProto(pmd.GetConfState()),
	}
}

// SnapshotToProto returns the wire form of s. The result aliases s.Data.
func SnapshotToProto(s raft.Snapshot) *raftv1.Snapshot {
	return &raftv1.Snapshot{Metadata: SnapshotMetadataToProto(s.Metadata), Data: s.Data}
}

// SnapshotFromProto returns the core form of ps (zero for nil). The result
// aliases ps.Data.
func SnapshotFromProto(ps *raftv1.Snapshot) raft.Snapshot {
	return raft.Snapshot{Metadata: SnapshotMetadataFromProto(ps.GetMetadata()), Data: nonEmpty(ps.GetData())}
}

// MessageToProto returns the wire form of m. The result aliases m's byte
// slices.
func MessageToProto(m *raft.Message) *raftv1.Message {
	pm := &raftv1.Message{}
	fillMessage(pm, m)
	return pm
}

func fillMessage(pm *raftv1.Message, m *raft.Message) {
	pm.Type = raftv1.MessageType(m.Type)
	pm.To = m.To
	pm.From = m.From
	pm.Term = m.Term
	pm.LogTerm = m.LogTerm
	pm.Index = m.Index
	pm.Entries = EntriesToProto(m.Entries)
	pm.Commit = m.Commit
	if m.Snapshot != nil {
		pm.Snapshot = SnapshotToProto(*m.Snapshot)
	}
	pm.Reject = m.Reject
	pm.RejectHint = m.RejectHint
	pm.Context = m.Context
}

// MessageFromProto returns the core form of pm. The result aliases pm's
// byte slices. A nil pm decodes to the zero Message.
func MessageFromProto(pm *raftv1.Message) (raft.Message, error) {
	var m raft.Message
	if err := decodeMessage(&m, pm); err != nil {
		return raft.Message{}, err
	}
	return m, nil
}

func decodeMessage(m *raft.Message, pm *raftv1.Message) error {
	t := pm.GetType()
	if t < 0 || t > maxUint8 {
		return fmt.Errorf("codec: message from %d to %d: type %d out of range", pm.GetFrom(), pm.GetTo(), int32(t))
	}
	ents, err := EntriesFromProto(pm.GetEntries())
	if err != nil {
		return fmt.Errorf("codec: %s from %d to %d: %w", raft.MessageType(t), pm.GetFrom(), pm.GetTo(), err)
	}
	*m = raft.Message{
		Type:       raft.MessageType(t),
		To:         pm.GetTo(),
		From:       pm.GetFrom(),
		Term:       pm.GetTerm(),
		LogTerm:    pm.GetLogTerm(),
		Index:      pm.GetIndex(),
		Entries:    ents,
		Commit:     pm.GetCommit(),
		Reject:     pm.GetReject(),
		RejectHint: pm.GetRejectHint(),
		Context:    nonEmpty(pm.GetContext()),
	}
	if ps := pm.GetSnapshot(); ps != nil {
		s := SnapshotFromProto(ps)
		m.Snapshot = &s
	}
	return nil
}

// BatchToProto returns the wire form of msgs as one batch, allocating the
// proto messages in one backing array. The result aliases the messages'
// byte slices.
func BatchToProto(msgs []raft.Message) *raftv1.MessageBatch {
	b := &raftv1.MessageBatch{}
	if len(msgs) == 0 {
		return b
	}
	backing := make([]raftv1.Message, len(msgs))
	b.Messages = make([]*raftv1.Message, len(msgs))
	for i := range msgs {
		fillMessage(&backing[i], &msgs[i])
		b.Messages[i] = &backing[i]
	}
	return b
}

// BatchFromProto appends the core form of b's messages to dst and returns
// the extended slice. On error it returns dst unchanged and the error. The
// results alias b's byte slices.
func BatchFromProto(dst []raft.Message, b *raftv1.MessageBatch) ([]raft.Message, error) {
	pms := b.GetMessages()
	n := len(dst)
	dst = append(dst, make([]raft.Message, len(pms))...)
	for i, pm := range pms {
		if err := decodeMessage(&dst[n+i], pm); err != nil {
			return dst[:n], fmt.Errorf("codec: batch message %d: %w", i, err)
		}
	}
	return dst, nil
}

// nonEmpty maps an empty slice to nil, the normal form after decoding.
func nonEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// MarshalEntry encodes e to bytes (for storage).
func MarshalEntry(e raft.Entry) ([]byte, error) { return proto.Marshal(EntryToProto(e)) }

// UnmarshalEntry decodes an entry written by MarshalEntry. The result does
// not alias b.
func UnmarshalEntry(b []byte) (raft.Entry, error) {
	var pe raftv1.Entry
	if err := proto.Unmarshal(b, &pe); err != nil {
		return raft.Entry{}, fmt.Errorf("codec: entry: %w", err)
	}
	return EntryFromProto(&pe)
}

// MarshalHardState encodes hs to bytes (for storage).
func MarshalHardState(hs raft.HardState) ([]byte, error) { return proto.Marshal(HardStateToProto(hs)) }

// UnmarshalHardState decodes a hard state written by MarshalHardState.
func UnmarshalHardState(b []byte) (raft.HardState, error) {
	var phs raftv1.HardState
	if err := proto.Unmarshal(b, &phs); err != nil {
		return raft.HardState{}, fmt.Errorf("codec: hard state: %w", err)
	}
	return HardStateFromProto(&phs), nil
}

// MarshalSnapshot encodes s (metadata and descriptor) to bytes.
func MarshalSnapshot(s raft.Snapshot) ([]byte, error) { return proto.Marshal(SnapshotToProto(s)) }

// UnmarshalSnapshot decodes a snapshot written by MarshalSnapshot. The
// result does not alias b.
func UnmarshalSnapshot(b []byte) (raft.Snapshot, error) {
	var ps raftv1.Snapshot
	if err := proto.Unmarshal(b, &ps); err != nil {
		return raft.Snapshot{}, fmt.Errorf("codec: snapshot: %w", err)
	}
	return SnapshotFromProto(&ps), nil
}

// MarshalConfState encodes cs to bytes.
func MarshalConfState(cs raft.ConfState) ([]byte, error) { return proto.Marshal(ConfStateToProto(cs)) }

// UnmarshalConfState decodes a conf state written by MarshalConfState.
func UnmarshalConfState(b []byte) (raft.ConfState, error) {
	var pcs raftv1.ConfState
	if err := proto.Unmarshal(b, &pcs); err != nil {
		return raft.ConfState{}, fmt.Errorf("codec: conf state: %w", err)
	}
	return ConfStateFromProto(&pcs), nil
}

// MarshalMessage encodes m to bytes.
func MarshalMessage(m *raft.Message) ([]byte, error) { return proto.Marshal(MessageToProto(m)) }

// UnmarshalMessage decodes a message written by MarshalMessage. The result
// does not alias b.
func UnmarshalMessage(b []byte) (raft.Message, error) {
	var pm raftv1.Message
	if err := proto.Unmarshal(b, &pm); err != nil {
		return raft.Message{}, fmt.Errorf("codec: message: %w", err)
	}
	return MessageFromProto(&pm)
}
