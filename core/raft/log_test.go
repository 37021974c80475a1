package raft

import (
	"errors"
	"testing"
)

func newTestLog(storageTerms []uint64, unstableTerms ...uint64) *raftLog {
	s := newStorageWith(storageTerms...)
	l, err := newLog(s, discardLogger{}, noLimit)
	if err != nil {
		panic(err)
	}
	next := uint64(len(storageTerms)) + 1
	var ents []Entry
	for i, t := range unstableTerms {
		ents = append(ents, Entry{Index: next + uint64(i), Term: t})
	}
	l.append(ents...)
	return l
}

func TestUnstableTruncateAndAppend(t *testing.T) {
	tests := []struct {
		name      string
		ents      []Entry
		woffset   uint64
		wterms    []uint64
		wprogress uint64
	}{
		{"append", []Entry{{Index: 8, Term: 2}}, 5, []uint64{1, 1, 2, 2}, 7},
		{"replace all", []Entry{{Index: 5, Term: 3}}, 5, []uint64{3}, 5},
		{"replace before offset", []Entry{{Index: 4, Term: 3}}, 4, []uint64{3}, 4},
		{"truncate middle", []Entry{{Index: 6, Term: 3}}, 5, []uint64{1, 3}, 6},
	}
	for _, tt := range tests {
		u := unstable{offset: 5, entries: []Entry{{Index: 5, Term: 1}, {Index: 6, Term: 1}, {Index: 7, Term: 2}}}
		u.offsetInProgress = 7 // entries 5 and 6 handed out
		old := u.entries
		u.truncateAndAppend(tt.ents)
		var terms []uint64
		for _, e := range u.entries {
			terms = append(terms, e.Term)
		}
		if u.offset != tt.woffset || len(terms) != len(tt.wterms) || u.offsetInProgress != tt.wprogress {
			t.Fatalf("%s: offset=%d terms=%v inProgress=%d; want %d %v %d", tt.name, u.offset, terms, u.offsetInProgress, tt.woffset, tt.wterms, tt.wprogress)
		}
		for i := range terms {
			if terms[i] != tt.wterms[i] {
				t.Fatalf("%s: terms %v, want %v", tt.name, terms, tt.wterms)
			}
		}
		if old[1].Term != 1 {
			t.Fatalf("%s: truncation overwrote a slice that may be in flight", tt.name)
		}
	}
}

func TestUnstableStableTo(t *testing.T) {
	u := unstable{offset: 5, offsetInProgress: 7, entries: []Entry{{Index: 5, Term: 1}, {Index: 6, Term: 1}, {Index: 7, Term: 2}}}
	u.stableTo(6, 2) // wrong term: entry 6 was replaced meanwhile
	if u.offset != 5 {
		t.Fatalf("stableTo with a stale term moved offset to %d", u.offset)
	}
	u.stableTo(6, 1)
	if u.offset != 7 || len(u.entries) != 1 || u.offsetInProgress != 7 {
		t.Fatalf("offset=%d len=%d inProgress=%d", u.offset, len(u.entries), u.offsetInProgress)
	}
	u.stableTo(9, 2) // beyond the log: ignored
	if u.offset != 7 {
		t.Fatalf("stableTo beyond the log moved offset")
	}
}

func TestLogSliceAcrossStorageAndUnstable(t *testing.T) {
	l := newTestLog([]uint64{1, 1, 2}, 2, 3)
	ents, err := l.slice(2, 6, noLimit)
	if err != nil || len(ents) != 4 {
		t.Fatalf("slice = %d entries, %v", len(ents), err)
	}
	for i, e := range ents {
		if e.Index != uint64(2+i) {
			t.Fatalf("entry %d index %d", i, e.Index)
		}
	}
	one := (&Entry{}).Size()
	if ents, _ := l.slice(2, 6, 2*(one+2)+one); len(ents) != 3 { // storage entries carry 2 data bytes
		t.Fatalf("limited slice = %d entries, want 3", len(ents))
	}
	if _, err := l.slice(1, 7, noLimit); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("slice beyond the log: %v", err)
	}
	if tm, _ := l.term(5); tm != 3 {
		t.Fatalf("term(5) = %d", tm)
	}
	if l.lastIndex() != 5 || l.lastTerm() != 3 {
		t.Fatalf("last %d/%d", l.lastIndex(), l.lastTerm())
	}
}

func TestLogFindConflictAndIsUpToDate(t *testing.T) {
	l := newTestLog([]uint64{1, 2, 3})
	tests := []struct {
		ents []Entry
		want uint64
	}{
		{nil, 0},
		{[]Entry{{Index: 1, Term: 1}, {Index: 2, Term: 2}}, 0},
		{[]Entry{{Index: 2, Term: 2}, {Index: 3, Term: 3}, {Index: 4, Term: 4}}, 4},
		{[]Entry{{Index: 2, Term: 1}}, 2},
	}
	for i, tt := range tests {
		if got := l.findConflict(tt.ents); got != tt.want {
			t.Errorf("#%d: findConflict = %d, want %d", i, got, tt.want)
		}
	}
	for _, tt := range []struct {
		idx, term uint64
		want      bool
	}{{3, 3, true}, {2, 3, false}, {1, 4, true}, {9, 2, false}} {
		if got := l.isUpToDate(tt.idx, tt.term); got != tt.want {
			t.Errorf("isUpToDate(%d, %d) = %v", tt.idx, tt.term, got)
		}
	}
}

func TestInflights(t *testing.T) {
	in := newInflights(3, 100)
	in.add(1, 10)
	in.add(2, 10)
	if in.full() {
		t.Fatal("full at 2/3")
	}
	in.add(3, 10)
	if !in.full() {
		t.Fatal("not full at 3/3")
	}
	in.freeLE(2)
	if in.count != 1 || in.bytes != 10 || in.full() {
		t.Fatalf("after freeLE(2): count=%d bytes=%d", in.count, in.bytes)
	}
	in.add(4, 95)
	if !in.full() {
		t.Fatal("not full by bytes")
	}
	in.freeLE(10)
	if in.count != 0 || in.bytes != 0 {
		t.Fatalf("after freeing all: count=%d bytes=%d", in.count, in.bytes)
	}
}
