package storage

import (
	"errors"
	"strings"
	"testing"

	"github.com/raftd/raftd/core/raft"
)

// With Options.CheckLogLater, Open returns before scanning the whole log;
// LogChecked then reports every damage Open would have reported (a
// flipped bit below and beyond the commit index, a gap, a term going
// down), naming the dir and the index, and damage to the last entry, which
// Open reads to find the log's end, fails Open itself. An undamaged log
// passes, and the store then reads and writes as usual.
func TestCheckLogLater(t *testing.T) {
	later := func(o *Options) *Options {
		c := *o
		c.CheckLogLater = true
		return &c
	}
	flip := func(i uint64) func(t *testing.T, s *Store) {
		return func(t *testing.T, s *Store) { corruptEntry(t, s, i) }
	}
	for _, tc := range []struct {
		name      string
		damage    func(t *testing.T, s *Store)
		index     uint64
		detail    string
		atOpen    bool // Open itself fails
		undamaged bool
	}{
		{name: "undamaged", undamaged: true},
		{name: "bit flip, committed", damage: flip(3), index: 3, detail: "checksum mismatch"},
		{name: "bit flip, beyond commit", damage: flip(8), index: 8, detail: "checksum mismatch"},
		{name: "bit flip, last entry", damage: flip(10), index: 10, detail: "checksum mismatch", atOpen: true},
		{name: "gap", damage: func(t *testing.T, s *Store) {
			if err := s.db.Delete(logKey(4), nil); err != nil {
				t.Fatal(err)
			}
		}, index: 4, detail: "entry 4 is missing"},
		{name: "term goes down", damage: func(t *testing.T, s *Store) {
			e := entriesN(9, 9, 1, 32)[0]
			v := make([]byte, entryValueLen(&e))
			putEntryValue(v, logKey(9), &e)
			if err := s.db.Set(logKey(9), v, nil); err != nil {
				t.Fatal(err)
			}
		}, index: 9, detail: "term 1 is below the previous entry's term 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, opts := openMem(t)
			if err := s.Save(raft.HardState{Term: 2, Commit: 6}, append(entriesN(1, 7, 1, 32), entriesN(8, 10, 2, 32)...), true); err != nil {
				t.Fatal(err)
			}
			if tc.damage != nil {
				tc.damage(t, s)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The check Open makes at once says the same.
			s1, openErr := Open("/data", opts)
			if openErr == nil {
				s1.Close()
			}
			s2, err := Open("/data", later(opts))
			if tc.atOpen {
				wantCorruption(t, err, tc.index)
				wantCorruption(t, openErr, tc.index)
				return
			}
			if err != nil {
				t.Fatalf("Open with CheckLogLater: %v", err)
			}
			defer s2.Close()
			err = s2.LogChecked()
			if tc.undamaged {
				if err != nil || openErr != nil {
					t.Fatalf("undamaged log: LogChecked = %v, Open = %v", err, openErr)
				}
				if last, _ := s2.LastIndex(); last != 10 {
					t.Fatalf("last index %d, want 10", last)
				}
				if tm, err := s2.Term(10); err != nil || tm != 2 {
					t.Fatalf("Term(10) = %d, %v", tm, err)
				}
				if err := s2.Save(raft.HardState{Term: 2, Commit: 11}, entriesN(11, 11, 2, 32), true); err != nil {
					t.Fatal(err)
				}
				if es, err := s2.Entries(1, 12, ^uint64(0)); err != nil || len(es) != 11 {
					t.Fatalf("Entries = %d, %v", len(es), err)
				}
				return
			}
			wantCorruption(t, err, tc.index)
			wantCorruption(t, openErr, tc.index)
			if err.Error() != openErr.Error() || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("LogChecked: %q\nOpen:       %q\nwant the same error, saying %q", err, openErr, tc.detail)
			}
			if again := s2.LogChecked(); again != err {
				t.Fatalf("LogChecked again = %v, want the same verdict %v", again, err)
			}
		})
	}
}

// Close during the check stops it; LogChecked then returns ErrClosed or,
// if the check had finished, its verdict.
func TestCheckLogLaterClose(t *testing.T) {
	s, opts := openMem(t)
	for lo := uint64(1); lo <= 20000; lo += 1000 {
		if err := s.Save(raft.HardState{Term: 1, Commit: lo + 999}, entriesN(lo, lo+999, 1, 64), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o := *opts
	o.CheckLogLater = true
	s2, err := Open("/data", &o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s2.LogChecked(); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("LogChecked after Close = %v, want nil or ErrClosed", err)
	}
}
