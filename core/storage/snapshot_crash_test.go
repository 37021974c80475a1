package storage

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// The snapshot file protocol is: write the body, metadata and trailer to a
// temporary file, fsync it, rename it to its final name, fsync the
// directory. TestSnapshotCrashClone takes a power-loss image of the
// filesystem (pebble's crashable MemFS keeps what was synced plus a random
// part of the rest) before every filesystem operation on the snapshot
// directory, and checks that each image opens cleanly with every committed
// snapshot intact.

// snapCrashBody is the body of the snapshot at index in the crash tests.
// Some bodies are larger than the writer's buffer, so a commit takes
// several writes.
func snapCrashBody(index uint64) []byte {
	n := int(index*104729) % (600 << 10)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(index*131) ^ byte(i*7) ^ byte(i>>9)
	}
	return b
}

// snapCrashImage is a crash image and what had happened when it was taken.
type snapCrashImage struct {
	fs        *vfs.MemFS
	op        string   // the operation the crash came before
	committed []uint64 // snapshots whose Commit had returned, in order
	inflight  uint64   // the snapshot being written or committed (0: none)
}

// syncDropFS is a deliberately broken filesystem: it skips file or
// directory fsyncs under the snapshot directory. The crash check must catch
// it (the check can fail).
type syncDropFS struct {
	vfs.FS
	dropFile, dropDir bool
}

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error { return nil }

func isSnapPath(p string) bool { return strings.Contains(p, "/"+snapDirName) }

func (fs syncDropFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err == nil && fs.dropFile && isSnapPath(name) {
		f = noSyncFile{f}
	}
	return f, err
}

func (fs syncDropFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	if err == nil && fs.dropDir && isSnapPath(name) {
		f = noSyncFile{f}
	}
	return f, err
}

// runSnapshotCrashes writes snapshots through a store on a crashable MemFS
// and returns an image taken before every operation on the snapshot
// directory, plus one after the last commit.
func runSnapshotCrashes(t *testing.T, seed uint64, dropFile, dropDir bool) []snapCrashImage {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	base := vfs.NewCrashableMem()
	var images []snapCrashImage
	var committed []uint64
	var inflight uint64
	take := func(op string) {
		pct := 0
		if rng.IntN(2) == 0 {
			pct = rng.IntN(101)
		}
		images = append(images, snapCrashImage{
			fs:        base.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng}),
			op:        op,
			committed: append([]uint64(nil), committed...),
			inflight:  inflight,
		})
	}
	armed := false
	// NB: the injector runs on the goroutine doing the operation; the
	// snapshot operations all run on this test's goroutine.
	cloner := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if armed && isSnapPath(op.Path) {
			take(fmt.Sprintf("op kind %d on %s", op.Kind, op.Path))
		}
		return nil
	})
	fs := errorfs.Wrap(syncDropFS{FS: base, dropFile: dropFile, dropDir: dropDir}, cloner)
	s, err := Open("/data", &Options{FS: fs, Logger: newTestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	armed = true
	index := uint64(0)
	for i := 0; i < 10; i++ {
		index += 1 + uint64(rng.IntN(50))
		inflight = index
		w, err := s.CreateSnapshot(SnapshotMeta{Index: index, Term: 1 + index/40, FSMName: "kv", FSMVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		body := snapCrashBody(index)
		for off := 0; off < len(body); {
			n := min(len(body)-off, 1+rng.IntN(200<<10))
			if _, err := w.Write(body[off : off+n]); err != nil {
				t.Fatal(err)
			}
			off += n
		}
		if rng.IntN(5) == 0 {
			// An abandoned write: the process dies or gives up before Commit.
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			inflight = 0
			continue
		}
		if _, err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		committed = append(committed, index)
		inflight = 0
	}
	take("after the last commit")
	armed = false
	return images
}

// checkSnapshotImage opens a crash image and returns what is wrong with it:
// it must open, hold no temporary file afterwards, list the newest
// committed snapshots (the store keeps Options.KeepSnapshots of them) and
// list nothing but committed (or in-flight) snapshots, each with its exact
// body.
func checkSnapshotImage(t *testing.T, img snapCrashImage) []string {
	var bad []string
	s, err := Open("/data", &Options{FS: img.fs, Logger: newTestLogger(t)})
	if err != nil {
		return []string{fmt.Sprintf("open: %v", err)}
	}
	defer s.Close()
	names, err := img.fs.List("/data/" + snapDirName)
	if err != nil {
		return []string{fmt.Sprintf("list: %v", err)}
	}
	for _, n := range names {
		if strings.HasSuffix(n, snapTmpSuffix) {
			bad = append(bad, fmt.Sprintf("temporary file %s left after open", n))
		}
	}
	listed := map[uint64]bool{}
	for _, m := range s.Snapshots() {
		listed[m.Index] = true
		known := m.Index == img.inflight
		for _, c := range img.committed {
			known = known || c == m.Index
		}
		if !known {
			bad = append(bad, fmt.Sprintf("snapshot %d listed but never written", m.Index))
			continue
		}
		_, rc, err := s.OpenSnapshot(m.Index)
		if err != nil {
			bad = append(bad, fmt.Sprintf("open snapshot %d: %v", m.Index, err))
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			bad = append(bad, fmt.Sprintf("read snapshot %d: %v", m.Index, err))
		} else if !bytes.Equal(got, snapCrashBody(m.Index)) {
			bad = append(bad, fmt.Sprintf("snapshot %d: body differs (%d bytes, want %d)", m.Index, len(got), len(snapCrashBody(m.Index))))
		}
	}
	keep := img.committed[max(0, len(img.committed)-defaultKeepSnapshots):]
	for _, c := range keep {
		if !listed[c] {
			bad = append(bad, fmt.Sprintf("committed snapshot %d is missing", c))
		}
	}
	return bad
}

// TestSnapshotCrashClone: a power loss at any point of writing and
// committing snapshot files loses no committed snapshot, exposes no partial
// one and leaves no temporary file after the next open.
func TestSnapshotCrashClone(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		images := runSnapshotCrashes(t, seed, false, false)
		if len(images) < 50 {
			t.Fatalf("seed %d: only %d crash points", seed, len(images))
		}
		for i, img := range images {
			if bad := checkSnapshotImage(t, img); len(bad) > 0 {
				t.Fatalf("seed %d, crash %d (before %s; committed %v, in flight %d):\n%s",
					seed, i, img.op, img.committed, img.inflight, strings.Join(bad, "\n"))
			}
		}
		t.Logf("seed %d: %d crash points checked", seed, len(images))
	}
}

// TestSnapshotCrashCloneCatchesMissingSyncs: the check above fails when the
// file fsync or the directory fsync of the protocol is skipped, so it would
// catch a commit path that loses either.
func TestSnapshotCrashCloneCatchesMissingSyncs(t *testing.T) {
	for _, tc := range []struct {
		name              string
		dropFile, dropDir bool
	}{
		{"file fsync skipped", true, false},
		{"directory fsync skipped", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			images := runSnapshotCrashes(t, 1, tc.dropFile, tc.dropDir)
			caught := 0
			var first string
			for _, img := range images {
				if bad := checkSnapshotImage(t, img); len(bad) > 0 {
					if caught == 0 {
						first = fmt.Sprintf("before %s: %s", img.op, bad[0])
					}
					caught++
				}
			}
			if caught == 0 {
				t.Fatalf("%d crash images of a store whose %s all passed the check", len(images), tc.name)
			}
			t.Logf("%d of %d crash images fail the check; first: %s", caught, len(images), first)
		})
	}
}
