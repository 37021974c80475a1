package storage

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/raftd/raftd/core/raft"
)

// TestPrivatePermissions: on the operating system's file system, with a
// permissive umask, every directory the store creates is 0700 and every
// file 0600: Pebble's files (log, manifest, lock), the stamp and the
// snapshots.
func TestPrivatePermissions(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data", "n1")
	s, err := Open(dir, &Options{ClusterID: "c", NodeID: 1, DisableSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(raft.HardState{Term: 1, Commit: 50}, entriesN(1, 50, 1, 100), true); err != nil {
		t.Fatal(err)
	}
	writeSnapshot(t, s, SnapshotMeta{Index: 20, Term: 1, ConfState: raft.ConfState{Voters: []uint64{1}}, FSMName: "kv", FSMVersion: 1}, body(2, 4096))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			files++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("only %d files under %s", files, dir)
	}
}
