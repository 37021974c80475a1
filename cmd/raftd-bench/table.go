package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/raftd/raftd/core/client"
)

// result is what one step (one op at one concurrency) measured over its
// window.
type result struct {
	Op     string  `json:"op"`
	Conc   int     `json:"conc"`
	Ops    int     `json:"ops"`
	OpsSec float64 `json:"ops_per_second"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
	P999   float64 `json:"p999_ms"`
	Max    float64 `json:"max_ms"`
	Errors int     `json:"errors"`
	CPU    cpuUse  `json:"cpu_cores"`
	// FirstErr is the first failed request's error, if one failed.
	FirstErr string `json:"first_error,omitempty"`
}

// summarize turns what client.Bench measured in a step into a result.
func summarize(op string, conc int, res client.BenchResult) result {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r := result{Op: op, Conc: conc, Ops: res.Ops, Errors: res.Errors,
		P50: ms(res.Percentile(0.50)), P99: ms(res.Percentile(0.99)), P999: ms(res.Percentile(0.999)), Max: ms(res.Max)}
	if res.Elapsed > 0 {
		r.OpsSec = float64(res.Ops) / res.Elapsed.Seconds()
	}
	if res.FirstErr != nil {
		r.FirstErr = res.FirstErr.Error()
	}
	return r
}

// tableHeader and tableRow are the columns of the printed table.
const (
	tableHeader = "%-4s %5s %8s %8s %8s %8s %8s %5s %5s %5s %5s %5s\n"
	tableRow    = "%-4s %5d %8.0f %8.3f %8.3f %8.3f %8.3f %5d %5.2f %5.2f %5.2f %5.2f\n"
)

// writeTable prints rs as the table `make bench-cluster` shows: latency in
// milliseconds, CPU in cores over the window.
func writeTable(w io.Writer, rs []result) {
	fmt.Fprintf(w, tableHeader, "op", "conc", "ops/s", "p50", "p99", "p99.9", "max", "err", "srv", "lg", "kern", "oth")
	for _, r := range rs {
		fmt.Fprintf(w, tableRow, r.Op, r.Conc, r.OpsSec, r.P50, r.P99, r.P999, r.Max, r.Errors, r.CPU.Srv, r.CPU.LG, r.CPU.Kern, r.CPU.Oth)
	}
}

// tsvHeader names the columns of writeTSV.
const tsvHeader = "op\tconc\tops\tops_per_s\tp50_ms\tp99_ms\tp999_ms\tmax_ms\terrors\tcpu_srv\tcpu_lg\tcpu_kern\tcpu_oth"

// writeTSV prints rs one tab-separated line each, with a header line.
func writeTSV(w io.Writer, rs []result) {
	fmt.Fprintln(w, tsvHeader)
	for _, r := range rs {
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%.2f\t%.2f\t%.2f\t%.2f\n",
			r.Op, r.Conc, r.Ops, r.OpsSec, r.P50, r.P99, r.P999, r.Max, r.Errors, r.CPU.Srv, r.CPU.LG, r.CPU.Kern, r.CPU.Oth)
	}
}

// parseConc parses a comma-separated list of positive concurrency levels.
func parseConc(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad concurrency %q: want positive integers, comma-separated", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseOps parses a comma-separated list of ops, each put or get.
func parseOps(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		op := strings.TrimSpace(f)
		if op != "put" && op != "get" {
			return nil, fmt.Errorf("bad op %q: want put or get, comma-separated", f)
		}
		out = append(out, op)
	}
	return out, nil
}
