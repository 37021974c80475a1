package storage

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/raftd/raftd/core/raft"
)

// TestTailMatchesLog drives the tail cache with random saves (appends and
// conflicting suffixes), compactions and snapshot resets under small
// bounds, and checks after every step that whatever it answers is exactly
// the log's content: it may forget entries, never misreport one.
func TestTailMatchesLog(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		tl := tail{maxEntries: 1 + rng.IntN(40), maxBytes: 1 + rng.IntN(400)}
		var log []raft.Entry // log[i].Index == first+i
		first, term := uint64(1), uint64(1)
		for step := range 2000 {
			switch r := rng.IntN(10); {
			case r < 6: // save: append, or overwrite a suffix
				lo := first + uint64(len(log))
				if len(log) > 0 && rng.IntN(3) == 0 {
					lo = first + uint64(rng.IntN(len(log)))
					term++
				}
				n := 1 + rng.IntN(30)
				ents := make([]raft.Entry, n)
				for i := range ents {
					ents[i] = raft.Entry{Index: lo + uint64(i), Term: term, Data: []byte(fmt.Sprintf("%d-%d-%s", seed, step, make([]byte, rng.IntN(20))))}
				}
				log = append(log[:lo-first], ents...)
				tl.saved(ents)
			case r < 8: // compact a prefix
				if len(log) > 0 {
					k := rng.IntN(len(log))
					idx := first + uint64(k)
					log = log[k+1:]
					first = idx + 1
					tl.compacted(idx)
				}
			case r < 9: // snapshot: the log restarts after it
				first += uint64(len(log)) + uint64(rng.IntN(5))
				log = nil
				tl.reset()
			default: // nothing
			}
			checkTail(t, &tl, log, first, seed, step)
		}
	}
}

func checkTail(t *testing.T, tl *tail, log []raft.Entry, first, seed uint64, step int) {
	t.Helper()
	maxN, maxB := tl.limits()
	if len(tl.ents) > maxN || tl.bytes > maxB {
		t.Fatalf("seed %d step %d: tail holds %d entries, %d bytes; bounds %d, %d", seed, step, len(tl.ents), tl.bytes, maxN, maxB)
	}
	sum := 0
	for i, e := range tl.ents {
		sum += len(e.Data)
		if i > 0 && e.Index != tl.ents[i-1].Index+1 {
			t.Fatalf("seed %d step %d: tail not consecutive at %d", seed, step, e.Index)
		}
	}
	if sum != tl.bytes {
		t.Fatalf("seed %d step %d: tail counts %d bytes, holds %d", seed, step, tl.bytes, sum)
	}
	last := first + uint64(len(log)) // one past the end
	for lo := first - 1; lo <= last+1; lo++ {
		if term, ok := tl.term(lo); ok {
			if lo < first || lo >= last || log[lo-first].Term != term {
				t.Fatalf("seed %d step %d: tail term(%d) = %d, log has [%d,%d)", seed, step, lo, term, first, last)
			}
		}
		for hi := lo; hi <= last+1; hi++ {
			if !tl.covers(lo, hi) || lo == hi {
				continue
			}
			if lo < first || hi > last {
				t.Fatalf("seed %d step %d: tail covers [%d,%d), log has [%d,%d)", seed, step, lo, hi, first, last)
			}
			got := tl.entries(lo, hi, ^uint64(0))
			want := log[lo-first : hi-first]
			if !slices.EqualFunc(got, want, func(a, b raft.Entry) bool {
				return a.Index == b.Index && a.Term == b.Term && string(a.Data) == string(b.Data)
			}) {
				t.Fatalf("seed %d step %d: tail entries [%d,%d) differ from the log", seed, step, lo, hi)
			}
		}
	}
}
