package conformance

import (
	"strings"
	"testing"

	"github.com/raftd/raftd/plugin/fsm"
)

func TestCommonVersions(t *testing.T) {
	kv := func(lo, hi uint32) fsm.Info { return fsm.Info{Name: "kv", MinVersion: lo, MaxVersion: hi} }
	for _, tc := range []struct {
		a, b   fsm.Info
		lo, hi uint32
		err    string
	}{
		{a: kv(1, 2), b: kv(1, 2), lo: 1, hi: 2},
		{a: kv(1, 2), b: kv(1, 1), lo: 1, hi: 1},
		{a: kv(1, 3), b: kv(2, 5), lo: 2, hi: 3},
		{a: kv(2, 3), b: kv(1, 2), lo: 2, hi: 2},
		{a: kv(1, 1), b: kv(2, 3), err: `no version in common: A "kv" 1..1, B "kv" 2..3`},
		{a: kv(1, 2), b: fsm.Info{Name: "counter", MinVersion: 1, MaxVersion: 2}, err: "info differs"},
	} {
		lo, hi, err := commonVersions(tc.a, tc.b)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v vs %v: err = %v, want %q", tc.a, tc.b, err, tc.err)
			}
			continue
		}
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("%v vs %v: %d..%d, %v; want %d..%d", tc.a, tc.b, lo, hi, err, tc.lo, tc.hi)
		}
	}
}
