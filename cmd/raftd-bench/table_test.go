package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/client"
)

func TestSummarize(t *testing.T) {
	var lats []time.Duration
	for i := 1; i <= 1000; i++ {
		lats = append(lats, time.Duration(i)*time.Microsecond)
	}
	r := summarize("put", 64, client.BenchResult{Ops: 1000, Errors: 3, Elapsed: 2 * time.Second, Max: lats[999], Latencies: lats})
	want := result{Op: "put", Conc: 64, Ops: 1000, OpsSec: 500, P50: 0.5, P99: 0.99, P999: 0.999, Max: 1, Errors: 3}
	if r != want {
		t.Errorf("summarize = %+v\nwant        %+v", r, want)
	}
	r = summarize("get", 1, client.BenchResult{Errors: 2, Elapsed: time.Second, FirstErr: errors.New("boom")})
	if r.Ops != 0 || r.OpsSec != 0 || r.P50 != 0 || r.Max != 0 || r.Errors != 2 || r.FirstErr != "boom" {
		t.Errorf("summarize of no successes = %+v", r)
	}
}

func TestWriteTable(t *testing.T) {
	rs := []result{
		{Op: "put", Conc: 1, OpsSec: 605.4, P50: 1.5234, P99: 3.01, P999: 5.1, Max: 9.8, CPU: cpuUse{Srv: 1.214, LG: 0.4, Kern: 0.05, Oth: 0.01}},
		{Op: "get", Conc: 256, OpsSec: 12345.6, P50: 20, P99: 41.25, P999: 60, Max: 123.456, Errors: 7, CPU: cpuUse{Srv: 1.37, LG: 0.55, Kern: 0.02}},
	}
	var b bytes.Buffer
	writeTable(&b, rs)
	want := `op    conc    ops/s      p50      p99    p99.9      max   err   srv    lg  kern   oth
put      1      605    1.523    3.010    5.100    9.800     0  1.21  0.40  0.05  0.01
get    256    12346   20.000   41.250   60.000  123.456     7  1.37  0.55  0.02  0.00
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeTSV(&b, rs)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 || lines[0] != tsvHeader {
		t.Fatalf("tsv = %q", b.String())
	}
	if want := "get\t256\t0\t12346\t20.000\t41.250\t60.000\t123.456\t7\t1.37\t0.55\t0.02\t0.00"; lines[2] != want {
		t.Errorf("tsv row = %q, want %q", lines[2], want)
	}
	for _, l := range lines {
		if n, want := strings.Count(l, "\t"), strings.Count(tsvHeader, "\t"); n != want {
			t.Errorf("tsv line %q has %d tabs, want %d", l, n, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseConc("1, 64,256")
	if err != nil || len(c) != 3 || c[0] != 1 || c[1] != 64 || c[2] != 256 {
		t.Errorf("parseConc = %v, %v", c, err)
	}
	for _, bad := range []string{"", "0", "1,,2", "-1", "x"} {
		if _, err := parseConc(bad); err == nil {
			t.Errorf("parseConc(%q) accepted", bad)
		}
	}
	o, err := parseOps("put,get")
	if err != nil || len(o) != 2 || o[0] != "put" || o[1] != "get" {
		t.Errorf("parseOps = %v, %v", o, err)
	}
	for _, bad := range []string{"", "put,del", "PUT"} {
		if _, err := parseOps(bad); err == nil {
			t.Errorf("parseOps(%q) accepted", bad)
		}
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{{"-conc", "0"}, {"-ops", "scan"}, {"-keys", "0"}, {"-key-size", "3"}, {"-duration", "0s"}, {"extra"}, {"-nosuchflag"}} {
		var out, errb bytes.Buffer
		if code := runMain(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 && args[0] != "-nosuchflag" {
			t.Errorf("%v: want a one-line error, got %q", args, errb.String())
		}
	}
}
