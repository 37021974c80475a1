package client_test

import (
	"context"
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
