package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/raftd/raftd/core/raft"
)

// Key layout (see docs/storage-format.md). Every key starts with a one-byte
// prefix so that a range scan over one prefix never touches another:
//
//	'l' + index (8 bytes, big-endian)   one log entry; big-endian so that
//	                                    Pebble's bytewise order is index order
//	'm' + name                          one metadata record
const (
	logPrefix  = 'l'
	metaPrefix = 'm'
	logKeyLen  = 9
)

var (
	keyStamp     = []byte("mstamp")
	keyHardState = []byte("mhardstate")
	keyTrunc     = []byte("mtrunc")
	keySnapshot  = []byte("msnapshot")

	// logKeyMin and logKeyEnd bound every log key: [logKeyMin, logKeyEnd).
	logKeyMin = []byte{logPrefix}
	logKeyEnd = []byte{logPrefix + 1}
)

// crcTable is the Castagnoli polynomial (CRC32C), hardware-accelerated on
// amd64 and arm64.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// logKey returns the key of the entry at index.
func logKey(index uint64) []byte {
	k := make([]byte, logKeyLen)
	putLogKey(k, index)
	return k
}

func putLogKey(k []byte, index uint64) {
	k[0] = logPrefix
	binary.BigEndian.PutUint64(k[1:], index)
}

// parseLogKey returns the index encoded in a log key.
func parseLogKey(k []byte) (uint64, bool) {
	if len(k) != logKeyLen || k[0] != logPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// Every value is: CRC32C (4 bytes, big-endian) | payload. The CRC covers the
// key followed by the payload, so a value stored under the wrong key is
// caught as well as a damaged one.
const crcLen = 4

// recordCRC is the checksum of a value's payload stored under key.
func recordCRC(key, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, crcTable, key), crcTable, payload)
}

// sealRecord returns crc | payload for key.
func sealRecord(key, payload []byte) []byte {
	v := make([]byte, crcLen+len(payload))
	copy(v[crcLen:], payload)
	binary.BigEndian.PutUint32(v, recordCRC(key, payload))
	return v
}

// checksumError describes a value whose stored checksum does not match.
type checksumError struct {
	stored, computed uint32
}

// openRecord verifies v under key and returns its payload (aliasing v).
func openRecord(key, v []byte) ([]byte, *checksumError) {
	if len(v) < crcLen {
		return nil, &checksumError{stored: 0, computed: recordCRC(key, nil)}
	}
	stored := binary.BigEndian.Uint32(v)
	payload := v[crcLen:]
	if c := recordCRC(key, payload); c != stored {
		return nil, &checksumError{stored: stored, computed: c}
	}
	return payload, nil
}

// Entry payload: type (1 byte) | term (8 bytes, big-endian) | data.
const entryHeaderLen = 1 + 8

// entryValueLen is the stored value size of e.
func entryValueLen(e *raft.Entry) int { return crcLen + entryHeaderLen + len(e.Data) }

// putEntryValue encodes e, stored under key, into v (len entryValueLen(e)).
func putEntryValue(v, key []byte, e *raft.Entry) {
	p := v[crcLen:]
	p[0] = byte(e.Type)
	binary.BigEndian.PutUint64(p[1:], e.Term)
	copy(p[entryHeaderLen:], e.Data)
	binary.BigEndian.PutUint32(v, recordCRC(key, p))
}

// decodeEntryPayload parses a verified entry payload. Data aliases payload.
func decodeEntryPayload(index uint64, payload []byte) (raft.Entry, error) {
	if len(payload) < entryHeaderLen {
		return raft.Entry{}, fmt.Errorf("entry payload is %d bytes, want at least %d", len(payload), entryHeaderLen)
	}
	t := raft.EntryType(payload[0])
	if t != raft.EntryNormal && t != raft.EntryConfChange {
		return raft.Entry{}, fmt.Errorf("unknown entry type %d", payload[0])
	}
	return raft.Entry{
		Index: index,
		Term:  binary.BigEndian.Uint64(payload[1:]),
		Type:  t,
		Data:  payload[entryHeaderLen:],
	}, nil
}

// HardState payload: term | vote | commit, each 8 bytes big-endian.
func encodeHardState(hs raft.HardState) []byte {
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], hs.Term)
	binary.BigEndian.PutUint64(p[8:], hs.Vote)
	binary.BigEndian.PutUint64(p[16:], hs.Commit)
	return sealRecord(keyHardState, p)
}

func decodeHardState(p []byte) (raft.HardState, error) {
	if len(p) != 24 {
		return raft.HardState{}, fmt.Errorf("hard state payload is %d bytes, want 24", len(p))
	}
	return raft.HardState{
		Term:   binary.BigEndian.Uint64(p[0:]),
		Vote:   binary.BigEndian.Uint64(p[8:]),
		Commit: binary.BigEndian.Uint64(p[16:]),
	}, nil
}

// truncState records the last index removed from the log (by Compact or
// ApplySnapshot) and its term: FirstIndex is Index+1 and Term(Index) answers
// Term. Payload: index | term, each 8 bytes big-endian.
type truncState struct {
	Index, Term uint64
}

func encodeTrunc(ts truncState) []byte {
	p := make([]byte, 16)
	binary.BigEndian.PutUint64(p[0:], ts.Index)
	binary.BigEndian.PutUint64(p[8:], ts.Term)
	return sealRecord(keyTrunc, p)
}

func decodeTrunc(p []byte) (truncState, error) {
	if len(p) != 16 {
		return truncState{}, fmt.Errorf("truncation record payload is %d bytes, want 16", len(p))
	}
	return truncState{Index: binary.BigEndian.Uint64(p[0:]), Term: binary.BigEndian.Uint64(p[8:])}, nil
}

// Applied snapshot payload: index | term | confstate | uvarint len(data) | data.
func encodeSnapshotRecord(s raft.Snapshot) []byte {
	p := make([]byte, 16, 16+8*(len(s.Metadata.ConfState.Voters)+len(s.Metadata.ConfState.Learners)+3)+len(s.Data))
	binary.BigEndian.PutUint64(p[0:], s.Metadata.Index)
	binary.BigEndian.PutUint64(p[8:], s.Metadata.Term)
	p = appendConfState(p, s.Metadata.ConfState)
	p = binary.AppendUvarint(p, uint64(len(s.Data)))
	p = append(p, s.Data...)
	return sealRecord(keySnapshot, p)
}

func decodeSnapshotRecord(p []byte) (raft.Snapshot, error) {
	var s raft.Snapshot
	if len(p) < 16 {
		return s, errors.New("snapshot record is truncated")
	}
	s.Metadata.Index = binary.BigEndian.Uint64(p[0:])
	s.Metadata.Term = binary.BigEndian.Uint64(p[8:])
	d := decoder{b: p[16:]}
	s.Metadata.ConfState = d.confState()
	n := d.uvarint()
	data := d.bytes(n)
	if d.err != nil {
		return raft.Snapshot{}, fmt.Errorf("snapshot record: %w", d.err)
	}
	if len(d.b) != 0 {
		return raft.Snapshot{}, fmt.Errorf("snapshot record: %d trailing bytes", len(d.b))
	}
	if len(data) > 0 {
		s.Data = append([]byte(nil), data...)
	}
	return s, nil
}

// appendConfState appends uvarint count + uvarint ids for voters, then
// learners.
func appendConfState(p []byte, cs raft.ConfState) []byte {
	p = binary.AppendUvarint(p, uint64(len(cs.Voters)))
	for _, id := range cs.Voters {
		p = binary.AppendUvarint(p, id)
	}
	p = binary.AppendUvarint(p, uint64(len(cs.Learners)))
	for _, id := range cs.Learners {
		p = binary.AppendUvarint(p, id)
	}
	return p
}

// decoder reads varint-framed fields; the first failure sticks in err.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = errors.New("truncated")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) fixed64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errors.New("truncated")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("field of %d bytes overruns record (%d left)", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) ids() []uint64 {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) { // each id takes at least one byte
		d.err = fmt.Errorf("member count %d overruns record", n)
		return nil
	}
	if n == 0 {
		return nil
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = d.uvarint()
	}
	return ids
}

func (d *decoder) confState() raft.ConfState {
	return raft.ConfState{Voters: d.ids(), Learners: d.ids()}
}

// Stamp payload: format version (uvarint) | node id (uvarint) |
// uvarint len(cluster id) | cluster id.
const formatVersion = 1

type stamp struct {
	Format    uint64
	ClusterID string
	NodeID    uint64
}

func encodeStamp(s stamp) []byte {
	p := binary.AppendUvarint(nil, s.Format)
	p = binary.AppendUvarint(p, s.NodeID)
	p = binary.AppendUvarint(p, uint64(len(s.ClusterID)))
	p = append(p, s.ClusterID...)
	return sealRecord(keyStamp, p)
}

func decodeStamp(p []byte) (stamp, error) {
	d := decoder{b: p}
	var s stamp
	s.Format = d.uvarint()
	s.NodeID = d.uvarint()
	s.ClusterID = string(d.bytes(d.uvarint()))
	if d.err != nil {
		return stamp{}, fmt.Errorf("stamp record: %w", d.err)
	}
	return s, nil
}
