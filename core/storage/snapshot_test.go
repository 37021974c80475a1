package storage

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// body returns n deterministic pseudo-random bytes.
func body(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func writeSnapshot(t *testing.T, s *Store, meta SnapshotMeta, data []byte) SnapshotMeta {
	t.Helper()
	w, err := s.CreateSnapshot(meta)
	if err != nil {
		t.Fatal(err)
	}
	// Write in uneven chunks, as a stream would.
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+off%70000)
		if _, err := w.Write(data[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	m, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readSnapshot(s *Store, index uint64) (SnapshotMeta, []byte, error) {
	m, rc, err := s.OpenSnapshot(index)
	if err != nil {
		return m, nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return m, b, err
}

func TestSnapshotFiles(t *testing.T) {
	s, opts := openMem(t)
	if _, ok := s.LatestSnapshot(); ok {
		t.Fatal("LatestSnapshot on an empty store")
	}
	// Snapshots of applied state are at or below the commit index.
	if err := s.Save(raft.HardState{Term: 3, Commit: 700}, entriesN(1, 700, 3, 4), true); err != nil {
		t.Fatal(err)
	}
	cs := raft.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{9}}
	data := body(1, 1<<20+123)
	meta := writeSnapshot(t, s, SnapshotMeta{Index: 100, Term: 3, ConfState: cs, FSMName: "kv", FSMVersion: 2}, data)
	if meta.Size != int64(len(data)) || meta.CRC32C != crc32.Checksum(data, crcTable) {
		t.Fatalf("Commit returned %+v", meta)
	}
	got, b, err := readSnapshot(s, 100)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read back: %d bytes, %v", len(b), err)
	}
	if got.FSMName != "kv" || got.FSMVersion != 2 || !got.ConfState.Equal(cs) || got.Term != 3 {
		t.Fatalf("metadata read back = %+v", got)
	}
	// The raft view reports the newest snapshot with its metadata as Data.
	snap, err := s.Snapshot()
	if err != nil || snap.Metadata.Index != 100 || snap.Metadata.Term != 3 || !snap.Metadata.ConfState.Equal(cs) {
		t.Fatalf("Snapshot() = %+v, %v", snap.Metadata, err)
	}
	if m, err := UnmarshalSnapshotMeta(snap.Data); err != nil || m.CRC32C != meta.CRC32C || m.Size != meta.Size || m.FSMName != "kv" {
		t.Fatalf("Snapshot().Data decodes to %+v, %v", m, err)
	}
	if _, c, _ := s.InitialState(); !c.Equal(cs) {
		t.Fatalf("InitialState conf state = %+v", c)
	}
	if _, _, err := s.OpenSnapshot(99); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("OpenSnapshot(99) = %v; want ErrNoSnapshot", err)
	}

	// Keep only the newest three; they survive a reopen.
	for i := uint64(2); i <= 5; i++ {
		writeSnapshot(t, s, SnapshotMeta{Index: 100 * i, Term: 3, FSMName: "kv", FSMVersion: 2}, body(i, int(i)*1000))
	}
	s = reopen(t, s, opts)
	var idx []uint64
	for _, m := range s.Snapshots() {
		idx = append(idx, m.Index)
	}
	if len(idx) != 3 || idx[0] != 300 || idx[2] != 500 {
		t.Fatalf("snapshots kept = %v; want [300 400 500]", idx)
	}
	if names, _ := opts.FS.List("/data/snapshots"); len(names) != 3 {
		t.Fatalf("snapshot dir holds %v", names)
	}
	if m, ok := s.LatestSnapshot(); !ok || m.Index != 500 {
		t.Fatalf("LatestSnapshot = %+v, %v", m, ok)
	}
	if err := s.VerifySnapshot(400); err != nil {
		t.Fatal(err)
	}
	// An empty body is a valid snapshot.
	writeSnapshot(t, s, SnapshotMeta{Index: 600, Term: 4}, nil)
	if _, b, err := readSnapshot(s, 600); err != nil || len(b) != 0 {
		t.Fatalf("empty snapshot: %d bytes, %v", len(b), err)
	}
}

func TestSnapshotAbortAndLeftovers(t *testing.T) {
	s, opts := openMem(t)
	w, err := s.CreateSnapshot(SnapshotMeta{Index: 7, Term: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if names, _ := opts.FS.List("/data/snapshots"); len(names) != 0 {
		t.Fatalf("after Abort the dir holds %v", names)
	}
	// A writer left behind by a crash is removed on open.
	w, _ = s.CreateSnapshot(SnapshotMeta{Index: 8, Term: 1})
	w.Write([]byte("crash"))
	s = reopen(t, s, opts)
	if names, _ := opts.FS.List("/data/snapshots"); len(names) != 0 {
		t.Fatalf("after reopen the dir holds %v", names)
	}
	if _, ok := s.LatestSnapshot(); ok {
		t.Fatal("an unfinished snapshot became visible")
	}
}

// TestSnapshotReceivedChecked: a body that does not match the metadata it
// was announced with is refused at Commit.
func TestSnapshotReceivedChecked(t *testing.T) {
	s, _ := openMem(t)
	data := body(3, 5000)
	src := writeSnapshot(t, s, SnapshotMeta{Index: 10, Term: 2}, data)
	want := src
	want.Index = 20
	bad := append([]byte(nil), data...)
	bad[4000] ^= 1
	w, _ := s.CreateSnapshot(want)
	w.Write(bad)
	if _, err := w.Commit(); err == nil || !strings.Contains(err.Error(), "expected 5000 bytes") {
		t.Fatalf("Commit of a damaged received body: %v", err)
	}
	if _, _, err := s.OpenSnapshot(20); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("refused snapshot is visible: %v", err)
	}
	writeSnapshot(t, s, want, data)
}

// TestSnapshotCorruptionDetected: a damaged body fails the read at the end;
// a damaged metadata record fails Open.
func TestSnapshotCorruptionDetected(t *testing.T) {
	s, opts := openMem(t)
	data := body(4, 300000)
	writeSnapshot(t, s, SnapshotMeta{Index: 42, Term: 2, FSMName: "counter"}, data)
	path := "/data/snapshots/" + snapFileName(42, 2)
	flip := func(off int64) {
		f, err := opts.FS.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x04
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	flip(123456)
	_, b, err := readSnapshot(s, 42)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Index != 42 || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("read of a damaged snapshot: %v", err)
	}
	if err := s.VerifySnapshot(42); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("VerifySnapshot: %v", err)
	}
	_ = b
	flip(123456) // repair
	if err := s.VerifySnapshot(42); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, _ := opts.FS.Stat(path)
	for _, off := range []int64{
		20,                         // inside the header record
		fi.Size() - 3,              // the trailer's magic
		fi.Size() - 15,             // the trailer's body length
		int64(len("RAFTDSN2")) + 1, // the header's length
	} {
		flip(off)
		if _, err := Open("/data", opts); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Open with a damaged snapshot header or trailer (byte %d of %d): %v", off, fi.Size(), err)
		}
		flip(off) // repair
	}
	s, err = Open("/data", opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestOldSnapshotFileRefused: a snapshot file of an earlier build (the
// node's "RAFTDSN1" header inside a body followed by a metadata record and
// trailer) makes Open fail with an error that names the file and says the
// format is old, not that the data is damaged.
func TestOldSnapshotFileRefused(t *testing.T) {
	s, opts := openMem(t)
	s.Close()
	old := []byte("RAFTDSN1\x00\x00\x00\x0f{\"index\":42}\nRFSNAP01....body....\x01meta\x00\x00\x00\x05\x00\x00\x00\x00RAFTDSN1")
	path := "/data/snapshots/" + snapFileName(42, 2)
	f, err := opts.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(old); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Open("/data", opts)
	if !errors.Is(err, snapshot.ErrOldFormat) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "format 1") {
		t.Fatalf("Open with an old-format snapshot file: %v", err)
	}
}

func TestSnapshotMetaRoundTrip(t *testing.T) {
	m := SnapshotMeta{Index: 1 << 40, Term: 7, ConfState: raft.ConfState{Voters: []uint64{1, 1 << 50}}, FSMName: "queue", FSMVersion: 3, Size: 1 << 33, CRC32C: 0xdeadbeef}
	got, err := UnmarshalSnapshotMeta(m.Marshal())
	if err != nil || got.Index != m.Index || got.Term != m.Term || got.FSMName != m.FSMName || got.FSMVersion != m.FSMVersion ||
		got.Size != m.Size || got.CRC32C != m.CRC32C || !got.ConfState.Equal(m.ConfState) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	enc := m.Marshal()
	for i := 0; i < len(enc); i++ {
		if _, err := UnmarshalSnapshotMeta(enc[:i]); err == nil {
			t.Fatalf("truncated encoding (%d of %d bytes) accepted", i, len(enc))
		}
	}
}

// TestReceivedSnapshotNotUsedBeforeInstall: a body received from a leader
// and committed as a file, above this node's commit index, is not reported
// by Snapshot/InitialState (a crash before ApplySnapshot must not make a
// restart restore state beyond the commit index), and the file a restart
// would use is never pruned.
func TestReceivedSnapshotNotUsedBeforeInstall(t *testing.T) {
	s, opts := openMem(t)
	if err := s.Save(raft.HardState{Term: 2, Commit: 150}, entriesN(1, 160, 2, 4), true); err != nil {
		t.Fatal(err)
	}
	cs := raft.ConfState{Voters: []uint64{1}}
	writeSnapshot(t, s, SnapshotMeta{Index: 100, Term: 2, ConfState: cs}, body(1, 100))
	for _, idx := range []uint64{200, 300, 400} {
		writeSnapshot(t, s, SnapshotMeta{Index: idx, Term: 2, ConfState: raft.ConfState{Voters: []uint64{1, 2}}}, body(idx, 100))
	}
	var kept []uint64
	for _, m := range s.Snapshots() {
		kept = append(kept, m.Index)
	}
	if len(kept) != 3 || kept[0] != 100 || kept[1] != 300 {
		t.Fatalf("kept %v; want [100 300 400] (100 is the one in use)", kept)
	}
	s = reopen(t, s, opts)
	snap, _ := s.Snapshot()
	if snap.Metadata.Index != 100 {
		t.Fatalf("Snapshot() index = %d; want 100 (400 is above the commit index)", snap.Metadata.Index)
	}
	if _, got, _ := s.InitialState(); !got.Equal(cs) {
		t.Fatalf("InitialState conf state = %+v; want %+v", got, cs)
	}
	// Installing it makes it the snapshot.
	if err := s.ApplySnapshot(raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 400, Term: 2, ConfState: raft.ConfState{Voters: []uint64{1, 2}}}}); err != nil {
		t.Fatal(err)
	}
	if snap, _ := s.Snapshot(); snap.Metadata.Index != 400 {
		t.Fatalf("Snapshot() index after install = %d; want 400", snap.Metadata.Index)
	}
}

// FuzzSnapshotMeta: arbitrary bytes never make the decoder panic, and what
// it accepts re-encodes to the same bytes.
func FuzzSnapshotMeta(f *testing.F) {
	f.Add(SnapshotMeta{Index: 5, Term: 2, FSMName: "kv", FSMVersion: 1, Size: 10, CRC32C: 3,
		ConfState: raft.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}}.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalSnapshotMeta(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Marshal(), b) {
			// Non-minimal varints decode but re-encode differently; the
			// decoded value must still round-trip.
			m2, err := UnmarshalSnapshotMeta(m.Marshal())
			if err != nil || m2.Index != m.Index || m2.Size != m.Size || m2.FSMName != m.FSMName || !m2.ConfState.Equal(m.ConfState) {
				t.Fatalf("round trip of %+v failed: %+v, %v", m, m2, err)
			}
		}
	})
}

// FuzzRecords: damaged stored values are rejected by the checksum or the
// decoders, never a panic.
func FuzzRecords(f *testing.F) {
	f.Add(encodeHardState(raft.HardState{Term: 1, Commit: 2}), uint8(0))
	f.Add(encodeSnapshotRecord(raft.Snapshot{Metadata: raft.SnapshotMetadata{Index: 3, ConfState: raft.ConfState{Voters: []uint64{1}}}, Data: []byte("x")}), uint8(1))
	f.Add(encodeStamp(stamp{Format: 1, ClusterID: "c", NodeID: 1}), uint8(2))
	f.Fuzz(func(t *testing.T, v []byte, kind uint8) {
		keys := [][]byte{keyHardState, keySnapshot, keyStamp, keyTrunc, logKey(7)}
		key := keys[int(kind)%len(keys)]
		// Decode the payload both with and without the checksum gate.
		for _, p := range [][]byte{v, func() []byte { p, _ := openRecord(key, v); return p }()} {
			_, _ = decodeHardState(p)
			_, _ = decodeSnapshotRecord(p)
			_, _ = decodeStamp(p)
			_, _ = decodeTrunc(p)
			_, _ = decodeEntryPayload(7, p)
		}
	})
}
