// Package snapshot is the one framing of a raftd snapshot, wherever its
// bytes are: a file in a data dir (core/storage), the stream a leader
// sends a follower and the file `raftd snapshot save` writes (core/node).
// A snapshot is one header, the body, and a trailer that checks the body:
//
//	magic "RAFTDSN2" | header length u32 | header | CRC32C(header) u32 |
//	body (any length) |
//	body length u64 | CRC32C(body) u32 | magic "RAFTDSN2"
//
// The body is the state machine's state, preceded by the node's own
// section when the header names one (Header.NodeSection: the client
// session table); the trailer checks both.
//
// All integers are big-endian; CRC32C is Castagnoli. The header names the
// last entry the state reflects (index, term), the membership and address
// book at that index, the FSM (name, active version and since when) and
// the body's format. docs/storage-format.md describes each field.
//
// The encoding is written in this package only: Header.Append and
// AppendTrailer (storage's file writer), Encode (a stream from a header and
// a body) and Marshal (a descriptor). It is read by ReadHeader and
// ParseTrailer (storage's files) and NewReader (a stream). A stream of
// format 1 (the nested headers of earlier builds) is refused with
// ErrOldFormat; there is no conversion.
package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/raftd/raftd/core/raft"
)

// Magic begins and ends every snapshot of this format.
const Magic = "RAFTDSN2"

// magicPrefix is shared by every format version; the digit after it is
// the version.
const magicPrefix = "RAFTDSN"

// TrailerBytes is the length of the trailer.
const TrailerBytes = 8 + 4 + len(Magic)

// MaxHeaderBytes bounds the header record (a large address book fits).
const MaxHeaderBytes = 16 << 20

// headerPrefixBytes is the magic and the length before the header record.
const headerPrefixBytes = len(Magic) + 4

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors. Every decoding error matches one of them (errors.Is).
var (
	// ErrOldFormat: the bytes are a snapshot of an earlier format of
	// raftd, which this build does not read.
	ErrOldFormat = errors.New("snapshot: old snapshot format")
	// ErrNotSnapshot: the bytes do not begin with a raftd snapshot magic.
	ErrNotSnapshot = errors.New("snapshot: not a raftd snapshot")
	// ErrCorrupt: a checksum does not match, a length is out of range, a
	// record does not decode or the stream ends early.
	ErrCorrupt = errors.New("snapshot: corrupt")
)

// Peer is a member's address book entry (core/node.Peer).
type Peer struct {
	ID       uint64
	RaftAddr string
	APIAddr  string
}

// Header describes a snapshot.
type Header struct {
	// Index and Term are those of the last log entry the state reflects.
	Index, Term uint64
	// ConfState is the membership as of Index.
	ConfState raft.ConfState
	// Peers is the address book as of Index, in ID order.
	Peers []Peer
	// FSMName names the state machine whose state the body is (e.g. "kv").
	// A node refuses to restore it into another.
	FSMName string
	// FSMVersion is the FSM version active at Index (1 until an
	// activation) and FSMVersionIndex the index of the entry that activated
	// it (0: the initial version).
	FSMVersion      uint32
	FSMVersionIndex uint64
	// FSMFormat names the encoding of the FSM's part of the body (e.g.
	// "raftd.kv.v1").
	FSMFormat string
	// NodeSection, when not 0, is the format of the node's section that
	// begins the body, before the FSM's part: NodeSectionSessions is the
	// client session table (core/node sessions.go). 0: no section, the
	// body is the FSM's alone (every snapshot of a node that never kept a
	// session). The header records a non-zero value after the peers; a
	// header without it reads as 0.
	NodeSection uint32
	// Size and CRC32C describe the body. They are in the trailer, not in
	// the header record: Append ignores them, ReadHeader leaves them zero,
	// and the readers of a body (NewReader, ParseTrailer, Unmarshal) fill
	// them in.
	Size   int64
	CRC32C uint32
}

// NodeSectionSessions is the NodeSection of a body that begins with the
// client session table of core/node, version 1.
const NodeSectionSessions = 1

// Append appends the header part of h's stream (magic, length, record,
// checksum) to b.
func (h Header) Append(b []byte) []byte {
	rec := h.record()
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(rec, crcTable))
}

// record encodes the header fields:
//
//	index u64 | term u64 | uvarint fsm version | uvarint fsm version index |
//	uvarint len | fsm name | uvarint len | fsm format |
//	conf state | uvarint peers | per peer: uvarint id | uvarint len | raft addr | uvarint len | api addr |
//	[uvarint node section]
//
// The node section is written only when it is not 0, so that a header
// without one is what builds before it wrote (and read). A conf state is uvarint count, then each voter id (uvarint), then the
// learners the same way.
func (h Header) record() []byte {
	b := make([]byte, 0, 64+len(h.FSMName)+len(h.FSMFormat)+10*(len(h.ConfState.Voters)+len(h.ConfState.Learners))+40*len(h.Peers))
	b = binary.BigEndian.AppendUint64(b, h.Index)
	b = binary.BigEndian.AppendUint64(b, h.Term)
	b = binary.AppendUvarint(b, uint64(h.FSMVersion))
	b = binary.AppendUvarint(b, h.FSMVersionIndex)
	b = appendString(b, h.FSMName)
	b = appendString(b, h.FSMFormat)
	b = appendIDs(b, h.ConfState.Voters)
	b = appendIDs(b, h.ConfState.Learners)
	b = binary.AppendUvarint(b, uint64(len(h.Peers)))
	for _, p := range h.Peers {
		b = binary.AppendUvarint(b, p.ID)
		b = appendString(b, p.RaftAddr)
		b = appendString(b, p.APIAddr)
	}
	if h.NodeSection != 0 {
		b = binary.AppendUvarint(b, uint64(h.NodeSection))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendIDs(b []byte, ids []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

// AppendTrailer appends the trailer of a body of size bytes with checksum
// crc to b.
func AppendTrailer(b []byte, size int64, crc uint32) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint32(b, crc)
	return append(b, Magic...)
}

// ParseTrailer decodes a trailer (TrailerBytes long).
func ParseTrailer(b []byte) (size int64, crc uint32, err error) {
	if len(b) != TrailerBytes {
		return 0, 0, fmt.Errorf("%w: trailer of %d bytes, want %d", ErrCorrupt, len(b), TrailerBytes)
	}
	if string(b[12:]) != Magic {
		return 0, 0, fmt.Errorf("%w: bad trailer magic %q (the snapshot ends early or is damaged)", ErrCorrupt, b[12:])
	}
	n := binary.BigEndian.Uint64(b)
	if n > 1<<62 {
		return 0, 0, fmt.Errorf("%w: body length %d out of range", ErrCorrupt, n)
	}
	return int64(n), binary.BigEndian.Uint32(b[8:]), nil
}

// checkMagic reports what the first bytes of a stream say.
func checkMagic(m []byte) error {
	switch {
	case string(m) == Magic:
		return nil
	case string(m) == magicPrefix+"1":
		return fmt.Errorf("%w: format 1 (written by an earlier raftd, with nested node and plugin headers); this build reads format 2 only and does not convert: take a new snapshot with this build", ErrOldFormat)
	case len(m) == len(Magic) && string(m[:len(magicPrefix)]) == magicPrefix:
		return fmt.Errorf("%w: unknown format %q; this build reads format 2 (%q)", ErrNotSnapshot, m, Magic)
	}
	return fmt.Errorf("%w: bad magic %q", ErrNotSnapshot, m)
}

// ReadHeader reads the header part of a stream from r, which is then at the
// body, and returns the header (Size and CRC32C zero) and the number of
// bytes read.
func ReadHeader(r io.Reader) (Header, int64, error) {
	var pre [headerPrefixBytes]byte
	if n, err := io.ReadFull(r, pre[:]); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			if n >= len(Magic) {
				if merr := checkMagic(pre[:len(Magic)]); merr != nil {
					return Header{}, 0, merr
				}
			}
			return Header{}, 0, fmt.Errorf("%w: %d bytes, shorter than a header", ErrCorrupt, n)
		}
		return Header{}, 0, err
	}
	if err := checkMagic(pre[:len(Magic)]); err != nil {
		return Header{}, 0, err
	}
	n := binary.BigEndian.Uint32(pre[len(Magic):])
	if n > MaxHeaderBytes {
		return Header{}, 0, fmt.Errorf("%w: header length %d exceeds %d", ErrCorrupt, n, MaxHeaderBytes)
	}
	rec := make([]byte, n+4)
	if _, err := io.ReadFull(r, rec); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return Header{}, 0, fmt.Errorf("%w: header ends early", ErrCorrupt)
		}
		return Header{}, 0, err
	}
	want := binary.BigEndian.Uint32(rec[n:])
	if got := crc32.Checksum(rec[:n], crcTable); got != want {
		return Header{}, 0, fmt.Errorf("%w: header checksum %#08x, stored %#08x", ErrCorrupt, got, want)
	}
	h, err := parseRecord(rec[:n])
	if err != nil {
		return Header{}, 0, err
	}
	return h, int64(headerPrefixBytes) + int64(n) + 4, nil
}

func parseRecord(b []byte) (Header, error) {
	d := decoder{b: b}
	var h Header
	h.Index = d.fixed64()
	h.Term = d.fixed64()
	v := d.uvarint()
	h.FSMVersionIndex = d.uvarint()
	h.FSMName = d.string()
	h.FSMFormat = d.string()
	h.ConfState.Voters = d.ids()
	h.ConfState.Learners = d.ids()
	np := d.uvarint()
	if d.err == nil && np > uint64(len(d.b)) {
		d.fail("peer count %d overruns the record", np)
	}
	for i := uint64(0); d.err == nil && i < np; i++ {
		h.Peers = append(h.Peers, Peer{ID: d.uvarint(), RaftAddr: d.string(), APIAddr: d.string()})
	}
	var ns uint64
	if d.err == nil && len(d.b) != 0 {
		if ns = d.uvarint(); d.err == nil && (ns == 0 || ns > 1<<32-1) {
			d.fail("node section %d out of range", ns)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && v > 1<<32-1 {
		d.fail("fsm version %d out of range", v)
	}
	if d.err != nil {
		return Header{}, fmt.Errorf("%w: header: %w", ErrCorrupt, d.err)
	}
	h.FSMVersion = uint32(v)
	h.NodeSection = uint32(ns)
	return h, nil
}

// decoder reads a header record; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) fixed64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail("record ends early")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes overruns the record", n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) ids() []uint64 {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("id count %d overruns the record", n)
		return nil
	}
	ids := make([]uint64, 0, n)
	for range n {
		ids = append(ids, d.uvarint())
	}
	return ids
}

// Marshal encodes h as a descriptor: its stream without the body (the
// header part, then the trailer with h.Size and h.CRC32C). core/storage
// hands it out as a stored snapshot's raft.Snapshot.Data.
func (h Header) Marshal() []byte {
	return AppendTrailer(h.Append(nil), h.Size, h.CRC32C)
}

// Unmarshal decodes the output of Marshal.
func Unmarshal(b []byte) (Header, error) {
	r := &byteReader{b: b}
	h, _, err := ReadHeader(r)
	if err != nil {
		return Header{}, err
	}
	if h.Size, h.CRC32C, err = ParseTrailer(r.b); err != nil {
		return Header{}, err
	}
	return h, nil
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// Clone returns a deep copy of h.
func (h Header) Clone() Header {
	c := h
	c.ConfState = raft.ConfState{Voters: slices.Clone(h.ConfState.Voters), Learners: slices.Clone(h.ConfState.Learners)}
	c.Peers = slices.Clone(h.Peers)
	return c
}
