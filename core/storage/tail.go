package storage

import "github.com/raftd/raftd/core/raft"

// Bounds of the tail cache: the entries most recently saved, kept in memory
// so that reads of them (committed entries handed to the state machine,
// appends to followers that keep up, terms) do not go to Pebble. A driver
// reads back almost every entry it saves, shortly after saving it.
const (
	tailMaxEntries = 8192
	tailMaxBytes   = 16 << 20
)

// tail is a copy of the last saved entries of the log, consecutive. Their
// Data is shared with the caller of Save, which does not modify it (raft's
// entries are immutable once appended). Guarded by Store.mu: changed under
// the exclusive lock, read under the shared one.
type tail struct {
	ents  []raft.Entry
	bytes int // sum of len(Data)
	// maxEntries and maxBytes bound the cache; 0 means tailMaxEntries and
	// tailMaxBytes (tests set smaller bounds).
	maxEntries, maxBytes int
}

func (t *tail) limits() (int, int) {
	n, b := t.maxEntries, t.maxBytes
	if n <= 0 {
		n = tailMaxEntries
	}
	if b <= 0 {
		b = tailMaxBytes
	}
	return n, b
}

func (t *tail) first() uint64 { return t.ents[0].Index }

// covers reports whether every entry in [lo, hi) is in the tail.
func (t *tail) covers(lo, hi uint64) bool {
	return len(t.ents) > 0 && lo >= t.first() && hi <= t.first()+uint64(len(t.ents))
}

// saved records ents, just written: they replace any cached entry at or
// after ents[0].Index (a conflicting suffix), and the cache restarts from
// them if they do not follow it.
func (t *tail) saved(ents []raft.Entry) {
	if len(ents) == 0 {
		return
	}
	lo := ents[0].Index
	if len(t.ents) > 0 && lo >= t.first() && lo <= t.first()+uint64(len(t.ents)) {
		t.dropFrom(int(lo - t.first()))
	} else {
		t.reset()
	}
	maxN, maxB := t.limits()
	if len(ents) > maxN {
		ents = ents[len(ents)-maxN:]
		t.reset()
	}
	for i := range ents {
		t.bytes += len(ents[i].Data)
	}
	t.ents = append(t.ents, ents...)
	// Drop from the front to stay within the bounds.
	k := 0
	for k < len(t.ents) && (len(t.ents)-k > maxN || t.bytes > maxB) {
		t.bytes -= len(t.ents[k].Data)
		k++
	}
	if k > 0 {
		t.dropBefore(k)
	}
}

// dropFrom removes the entries from position k on.
func (t *tail) dropFrom(k int) {
	for i := k; i < len(t.ents); i++ {
		t.bytes -= len(t.ents[i].Data)
	}
	clear(t.ents[k:])
	t.ents = t.ents[:k]
}

// dropBefore removes the entries before position k. The live entries are
// moved to the front when the dead ones take most of the array, so that
// the backing array does not grow without bound.
func (t *tail) dropBefore(k int) {
	if k >= len(t.ents) {
		t.reset()
		return
	}
	clear(t.ents[:k])
	t.ents = t.ents[k:]
	if len(t.ents) < cap(t.ents)/4 {
		t.ents = append([]raft.Entry(nil), t.ents...)
	}
}

// compacted drops the entries at or below index.
func (t *tail) compacted(index uint64) {
	if len(t.ents) == 0 || index < t.first() {
		return
	}
	k := int(min(index-t.first()+1, uint64(len(t.ents))))
	for i := range k {
		t.bytes -= len(t.ents[i].Data)
	}
	t.dropBefore(k)
}

func (t *tail) reset() {
	t.ents, t.bytes = nil, 0
}

// entries returns a copy of [lo, hi), which the tail covers, stopping
// before the total Entry.Size() would exceed maxBytes (at least one entry),
// as Store.Entries does.
func (t *tail) entries(lo, hi, maxBytes uint64) []raft.Entry {
	src := t.ents[lo-t.first() : hi-t.first()]
	n, size := 0, uint64(0)
	for n < len(src) {
		size += src[n].Size()
		if n > 0 && size > maxBytes {
			break
		}
		n++
	}
	return append([]raft.Entry(nil), src[:n]...)
}

// term returns the term of entry i if the tail holds it.
func (t *tail) term(i uint64) (uint64, bool) {
	if !t.covers(i, i+1) {
		return 0, false
	}
	return t.ents[i-t.first()].Term, true
}
