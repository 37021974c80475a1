package client_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/raftd/raftd/core/client"
	"github.com/raftd/raftd/core/daemon"
	"google.golang.org/grpc"
)

// TestBenchReport: Bench reports its progress a last time before it
// returns, with the counts of its result; the summary agrees.
func TestBenchReport(t *testing.T) {
	d := start(t, daemon.Config{ID: 1})
	cc, err := client.Dial(d.APIAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var reports []client.BenchProgress
	res := client.Bench(context.Background(), []*grpc.ClientConn{cc}, client.BenchConfig{Clients: 2, Duration: 200 * time.Millisecond,
		KeySize: 8, ValueSize: 8, Seed: 1, Timeout: 5 * time.Second,
		Every: time.Hour, Report: func(p client.BenchProgress) { reports = append(reports, p) }})
	if res.Ops == 0 || res.Errors != 0 || len(reports) != 1 {
		t.Fatalf("result %+v, %d reports", res, len(reports))
	}
	last := reports[0]
	if last.Ops != int64(res.Ops) || last.Errors != 0 || last.Elapsed != 200*time.Millisecond || last.Duration != 200*time.Millisecond {
		t.Fatalf("last report %+v, result %+v", last, res)
	}
	s := res.Summary()
	if s.Ops != res.Ops || s.OpsPerSecond <= 0 || s.P50Millis <= 0 || s.P99Millis < s.P50Millis || s.MaxMillis < s.P99Millis || s.FirstError != "" {
		t.Fatalf("summary %+v of %+v", s, res)
	}
}

// TestBenchGet: gets of preloaded keys are answered and counted; without
// the keys, every get is an error (a get must find its key).
func TestBenchGet(t *testing.T) {
	d := start(t, daemon.Config{ID: 1})
	cc, err := client.Dial(d.APIAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	conns := []*grpc.ClientConn{cc}
	cfg := client.BenchConfig{Op: client.BenchGet, Clients: 2, Duration: 200 * time.Millisecond, Keys: 20,
		KeySize: 8, ValueSize: 8, Seed: 1, Timeout: 5 * time.Second}
	res := client.Bench(context.Background(), conns, cfg)
	if res.Ops != 0 || res.Errors == 0 || res.FirstErr == nil || !strings.Contains(res.FirstErr.Error(), `{"found":false`) {
		t.Fatalf("gets before the preload: %+v", res)
	}
	if err := client.BenchPreload(context.Background(), conns, cfg); err != nil {
		t.Fatal(err)
	}
	res = client.Bench(context.Background(), conns, cfg)
	if res.Ops == 0 || res.Errors != 0 || len(res.Latencies) != res.Ops || !slices.IsSorted(res.Latencies) || res.Max != res.Latencies[res.Ops-1] {
		t.Fatalf("gets after the preload: %+v", res)
	}
}

func TestBenchPercentile(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1) // 1..100 ms
	}
	for _, tc := range []struct {
		vals []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{ms(7)}, 0.5, ms(7)},
		{[]time.Duration{ms(7)}, 0.999, ms(7)},
		{[]time.Duration{ms(1), ms(2)}, 0.5, ms(1)},
		{[]time.Duration{ms(1), ms(2)}, 0.51, ms(2)},
		{hundred, 0.50, ms(50)},
		{hundred, 0.99, ms(99)},
		{hundred, 0.999, ms(100)},
		{hundred, 1, ms(100)},
		{hundred, 0.001, ms(1)},
	} {
		if got := (client.BenchResult{Latencies: tc.vals}).Percentile(tc.p); got != tc.want {
			t.Errorf("Percentile(%d values, %v) = %v, want %v", len(tc.vals), tc.p, got, tc.want)
		}
	}
}

func TestBenchKey(t *testing.T) {
	if k := client.BenchKey(42, 16); len(k) != 16 || k != "k000000000000042" {
		t.Errorf("BenchKey(42, 16) = %q", k)
	}
}
