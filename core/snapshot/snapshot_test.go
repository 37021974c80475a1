package snapshot

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/raftd/raftd/core/raft"
)

func fullHeader() Header {
	return Header{
		Index: 1<<40 + 3, Term: 77,
		ConfState: raft.ConfState{Voters: []uint64{1, 2, 1 << 50}, Learners: []uint64{9}},
		Peers: []Peer{{ID: 1, RaftAddr: "10.0.0.1:7000", APIAddr: "10.0.0.1:8000"}, {ID: 2, RaftAddr: "b:1"},
			{ID: 1 << 50, RaftAddr: "c:1", APIAddr: "c:2"}, {ID: 9, RaftAddr: "d:1"}},
		FSMName: "kv", FSMVersion: 2, FSMVersionIndex: 1 << 33, FSMFormat: "raftd.kv.v1",
	}
}

func body(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func encode(t testing.TB, h Header, b []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(Encode(h, bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decode reads a whole stream; it returns the header (with the body's size
// and checksum) and body, or the first error.
func decode(stream io.Reader) (Header, []byte, error) {
	h, r, err := NewReader(stream)
	if err != nil {
		return Header{}, nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return h, nil, err
	}
	h.Size, h.CRC32C = r.Size(), crc32.Checksum(b, crcTable)
	return h, b, nil
}

// TestRoundTrip: every header field and the body survive a stream and a
// descriptor, for bodies from empty to several reader buffers, read in
// any chunking.
func TestRoundTrip(t *testing.T) {
	withSessions := fullHeader()
	withSessions.NodeSection = NodeSectionSessions
	for _, h := range []Header{{Index: 1, Term: 1, FSMName: "c", FSMVersion: 1}, fullHeader(), withSessions} {
		for _, n := range []int{0, 1, TrailerBytes - 1, TrailerBytes, TrailerBytes + 1, 64 << 10, 300<<10 + 17} {
			b := body(n)
			stream := encode(t, h, b)
			for _, wrap := range []func(io.Reader) io.Reader{
				func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader, iotest.DataErrReader,
			} {
				got, gotBody, err := decode(wrap(bytes.NewReader(stream)))
				if err != nil {
					t.Fatalf("body %d: %v", n, err)
				}
				want := h
				want.Size, want.CRC32C = int64(n), crc32.Checksum(b, crcTable)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("header\n got %+v\nwant %+v", got, want)
				}
				if !bytes.Equal(gotBody, b) {
					t.Fatalf("body of %d bytes differs", n)
				}
			}
			// The descriptor is the stream without its body.
			want := h
			want.Size, want.CRC32C = int64(n), crc32.Checksum(b, crcTable)
			desc := want.Marshal()
			if hl := len(stream) - n - TrailerBytes; !bytes.Equal(desc, append(stream[:hl:hl], stream[len(stream)-TrailerBytes:]...)) {
				t.Fatal("descriptor is not the stream's header and trailer")
			}
			got, err := Unmarshal(desc)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("descriptor: %+v, %v", got, err)
			}
		}
	}
}

// TestNodeSectionField: a header without a node section is recorded as
// before the field existed (builds that do not know it read it), one with
// a section ends with it, and a record that ends with an explicit 0, or a
// value beyond 32 bits, is refused.
func TestNodeSectionField(t *testing.T) {
	plain := fullHeader().record()
	h := fullHeader()
	h.NodeSection = NodeSectionSessions
	with := h.record()
	if !bytes.Equal(with[:len(plain)], plain) || !bytes.Equal(with[len(plain):], []byte{NodeSectionSessions}) {
		t.Fatalf("record with a node section is %x, want the plain record %x then 01", with, plain)
	}
	got, err := parseRecord(with)
	if err != nil || got.NodeSection != NodeSectionSessions {
		t.Fatalf("parse: %+v, %v", got, err)
	}
	for _, tail := range [][]byte{{0}, {0x80, 0x80, 0x80, 0x80, 0x10}, {1, 1}} {
		if _, err := parseRecord(append(bytes.Clone(plain), tail...)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record ending %x: err %v, want ErrCorrupt", tail, err)
		}
	}
}

// TestDamageDetected: a stream cut anywhere, or with any single byte
// flipped, is refused with ErrCorrupt (ErrNotSnapshot for a damaged magic)
// and never read as a whole snapshot.
func TestDamageDetected(t *testing.T) {
	h, b := fullHeader(), body(3000)
	stream := encode(t, h, b)
	for cut := 0; cut < len(stream); cut++ {
		_, _, err := decode(bytes.NewReader(stream[:cut]))
		if !errors.Is(err, ErrCorrupt) && !(cut < len(Magic) && errors.Is(err, ErrNotSnapshot)) {
			t.Fatalf("stream cut at %d of %d: err %v", cut, len(stream), err)
		}
	}
	for i := range stream {
		bad := bytes.Clone(stream)
		bad[i] ^= 0x01
		_, _, err := decode(bytes.NewReader(bad))
		if !errors.Is(err, ErrCorrupt) && !(i < len(Magic) && (errors.Is(err, ErrNotSnapshot) || errors.Is(err, ErrOldFormat))) {
			t.Fatalf("byte %d of %d flipped: err %v", i, len(stream), err)
		}
	}
	// Extra bytes after the trailer shift it: refused too.
	if _, _, err := decode(bytes.NewReader(append(bytes.Clone(stream), 0))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// TestOldFormatRefused: a format-1 snapshot (a node header "RAFTDSN1"
// inside, as written by earlier builds) is refused with ErrOldFormat and a
// message that says so.
func TestOldFormatRefused(t *testing.T) {
	old := append([]byte("RAFTDSN1\x00\x00\x00\x02{}"), "RFSNAP01..."...)
	for _, r := range []io.Reader{bytes.NewReader(old), bytes.NewReader(old[:8])} {
		_, _, err := decode(r)
		if !errors.Is(err, ErrOldFormat) || !strings.Contains(err.Error(), "format 1") {
			t.Fatalf("old snapshot: %v", err)
		}
	}
	for _, junk := range []string{"RAFTDSN9xxxxxxxxxxxx", "hello, world, not a snapshot", "{\"index\":1}"} {
		if _, _, err := decode(strings.NewReader(junk)); !errors.Is(err, ErrNotSnapshot) {
			t.Fatalf("%q: %v", junk, err)
		}
	}
}

// TestEncodeBodyError: an error reading the body ends the stream with it
// (no trailer is made up for a partial body).
func TestEncodeBodyError(t *testing.T) {
	boom := errors.New("disk read failed")
	r := Encode(fullHeader(), io.MultiReader(bytes.NewReader(body(100)), iotest.ErrReader(boom)))
	if _, err := io.ReadAll(r); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
}

// FuzzUnmarshal: arbitrary bytes never make the decoder panic, and what
// decodes re-encodes to a descriptor that decodes to the same header.
func FuzzUnmarshal(f *testing.F) {
	h := fullHeader()
	h.Size, h.CRC32C = 123, 456
	f.Add(h.Marshal())
	f.Add(Header{Index: 1}.Marshal())
	f.Add([]byte("RAFTDSN1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotSnapshot) && !errors.Is(err, ErrOldFormat) {
				t.Fatalf("error %v matches no class", err)
			}
			return
		}
		h2, err := Unmarshal(h.Marshal())
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip: %+v -> %+v, %v", h, h2, err)
		}
	})
}
