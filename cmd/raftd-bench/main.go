// Command raftd-bench measures a local 3-node raftd cluster and prints one
// table row per op and concurrency: throughput, latency percentiles,
// errors, and the CPU used by the nodes with their plugins, by itself,
// by the kernel and by every other process.
//
// It starts three `raftd run` processes with the kv plugin (fsync on, the
// defaults) on free loopback ports, with their data in a temporary
// directory, and stops them, by pid, when it ends. The load is closed loop:
// each of N clients sends its next request when its previous one is
// answered, one command per unary gRPC call of the client API, to the
// leader, over min(N, 8) connections. Keys are 16 B, drawn uniformly from
// 10,000; values are 128 B. The puts run first; then every key is written
// once; then the linearizable gets run. Each step has a warm-up, then a
// measured window: only requests that start and finish inside it count.
//
//	raftd-bench                               # put,get at 1, 64, 256 clients
//	raftd-bench -conc 1,64 -duration 5s -ops put
//
// `make bench-cluster` runs it; docs/benchmarks.md shows its output.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/raftd/raftd/core/client"
	"google.golang.org/grpc"
)

// config is what a run measures.
type config struct {
	BinDir    string
	Ops       []string
	Conc      []int
	Warmup    time.Duration
	Duration  time.Duration
	Work      workload
	NodeFlags []string
	// Keep keeps the data directory and the nodes' logs.
	Keep bool
	// StateMB is extra state put before the steps, in MiB.
	StateMB int
	// Log receives progress lines.
	Log io.Writer
}

// maxConns bounds the connections the clients share.
const maxConns = 8

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("raftd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	self, _ := os.Executable()
	bin := fs.String("bin", filepath.Dir(self), "directory with raftd and raftd-fsm-kv")
	ops := fs.String("ops", "put,get", "ops to run, in order: put, get")
	conc := fs.String("conc", "1,64,256", "concurrency levels (clients)")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up per step, not measured")
	duration := fs.Duration("duration", 10*time.Second, "measured window per step")
	keys := fs.Int("keys", 10000, "distinct keys")
	keySize := fs.Int("key-size", 16, "key bytes (at least 6)")
	valueSize := fs.Int("value-size", 128, "value bytes")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of one request")
	nodeFlags := fs.String("node-flags", "", "extra `raftd run` flags, space-separated")
	tsv := fs.String("tsv", "", "also write the results as tab-separated lines to this file")
	asJSON := fs.Bool("json", false, "print the results as JSON instead of a table")
	keep := fs.Bool("keep", false, "keep the data directory and the nodes' logs")
	stateMB := fs.Int("state-mb", 0, "before the steps, put this many MiB of extra state (512 KiB values under keys the steps do not use)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := config{BinDir: *bin, Warmup: *warmup, Duration: *duration, NodeFlags: strings.Fields(*nodeFlags), Keep: *keep, Log: stderr, StateMB: *stateMB,
		Work: workload{Keys: *keys, KeySize: *keySize, ValueSize: *valueSize, Timeout: *timeout}}
	var err error
	if cfg.Ops, err = parseOps(*ops); err == nil {
		cfg.Conc, err = parseConc(*conc)
	}
	if err == nil && (fs.NArg() > 0 || *keys < 1 || *keySize < 6 || *valueSize < 0 || *duration <= 0 || *warmup < 0 || *timeout <= 0 || *stateMB < 0) {
		err = errors.New("no arguments; -keys and -duration must be positive, -key-size at least 6, -state-mb not negative")
	}
	if err != nil {
		fmt.Fprintln(stderr, "raftd-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	before := loadAvg()
	rs, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "raftd-bench:", err)
		return 1
	}
	if *tsv != "" {
		f, err := os.Create(*tsv)
		if err == nil {
			writeTSV(f, rs)
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintln(stderr, "raftd-bench:", err)
			return 1
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rs)
	} else {
		fmt.Fprintf(stdout, "raftd 3 nodes (kv plugin, fsync on) on %d cores; closed loop, %d B keys of %d, %d B values; %s warm-up + %s measured per step\n",
			runtime.NumCPU(), cfg.Work.KeySize, cfg.Work.Keys, cfg.Work.ValueSize, cfg.Warmup, cfg.Duration)
		if cfg.StateMB > 0 {
			fmt.Fprintf(stdout, "extra state: %d MiB put before the steps\n", cfg.StateMB)
		}
		fmt.Fprintf(stdout, "load average before: %s, after: %s\n", before, loadAvg())
		fmt.Fprintln(stdout, "latency in ms; cpu in cores over the window: srv = raftd nodes + plugins, lg = this load generator, kern = kernel threads, oth = other processes (disturbance)")
		writeTable(stdout, rs)
	}
	for _, r := range rs {
		if r.Errors > 0 {
			fmt.Fprintf(stderr, "raftd-bench: %s at %d clients: %d errors, first: %s\n", r.Op, r.Conc, r.Errors, r.FirstErr)
		}
	}
	return 0
}

// run starts a cluster, measures every step of cfg, stops the cluster and
// returns the results in order.
func run(ctx context.Context, cfg config) (rs []result, err error) {
	c, err := startCluster(cfg.BinDir, 3, cfg.NodeFlags)
	defer func() {
		keep := cfg.Keep || err != nil
		c.stop(keep)
		if keep {
			fmt.Fprintf(cfg.Log, "raftd-bench: data and logs kept in %s\n", c.dir)
		}
	}()
	if err != nil {
		return nil, err
	}
	leader, err := c.leader(ctx, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if s, err := sampleCPU("/proc"); err == nil {
		c.notePlugins(s)
	}
	fmt.Fprintf(cfg.Log, "raftd-bench: leader %s, nodes %v, plugins %v, data %s\n", leader, c.nodePIDs(), c.pluginPIDs(), c.dir)
	if cfg.StateMB > 0 {
		t0 := time.Now()
		if err := withConns(leader, 4, func(cs []*grpc.ClientConn) error { return loadState(ctx, cs, cfg.StateMB, cfg.Work.Timeout) }); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "raftd-bench: state: %d MiB put in %s\n", cfg.StateMB, time.Since(t0).Round(time.Millisecond))
	}
	preloaded := false
	for _, op := range cfg.Ops {
		if op == client.BenchGet && !preloaded {
			bc := cfg.Work.bench(op, 64, 0, 0)
			if err := withConns(leader, maxConns, func(cs []*grpc.ClientConn) error { return client.BenchPreload(ctx, cs, bc) }); err != nil {
				return nil, err
			}
			preloaded = true
		}
		for _, n := range cfg.Conc {
			r, err := c.step(ctx, leader, cfg, op, n)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(cfg.Log, "raftd-bench: %s x%d: %.0f ops/s, p50 %.3f ms, p99 %.3f ms, %d errors\n", op, n, r.OpsSec, r.P50, r.P99, r.Errors)
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// step measures op at conc clients.
func (c *cluster) step(ctx context.Context, leader string, cfg config, op string, conc int) (result, error) {
	var r result
	err := withConns(leader, min(conc, maxConns), func(cs []*grpc.ClientConn) error {
		start := time.Now()
		win := window{From: start.Add(cfg.Warmup), To: start.Add(cfg.Warmup + cfg.Duration)}
		cpu := make(chan cpuUse, 1)
		cpuErr := make(chan error, 1)
		go func() {
			cpuErr <- c.measureCPU(ctx, win, cpu)
		}()
		res := client.Bench(ctx, cs, cfg.Work.bench(op, conc, cfg.Warmup, cfg.Duration))
		if err := <-cpuErr; err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.exited(); err != nil {
			return err
		}
		r = summarize(op, conc, res)
		r.CPU = <-cpu
		return nil
	})
	return r, err
}

// window is when a step measures: requests that start at or after From and
// finish at or before To count; the others only load the cluster.
type window struct{ From, To time.Time }

// measureCPU samples /proc at the start and the end of win and sends the
// CPU used in between.
func (c *cluster) measureCPU(ctx context.Context, win window, out chan<- cpuUse) error {
	sleepUntil := func(t time.Time) error {
		select {
		case <-time.After(time.Until(t)):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleepUntil(win.From); err != nil {
		return err
	}
	a, err := sampleCPU("/proc")
	if err != nil {
		return err
	}
	c.notePlugins(a)
	if err := sleepUntil(win.To); err != nil {
		return err
	}
	b, err := sampleCPU("/proc")
	if err != nil {
		return err
	}
	c.notePlugins(b)
	out <- cpuBetween(a, b, os.Getpid(), c.nodePIDs())
	return nil
}

// withConns runs fn with n connections to addr, and closes them.
func withConns(addr string, n int, fn func([]*grpc.ClientConn) error) error {
	cs, err := dialN(addr, n)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	return fn(cs)
}

// randomValue returns n random lower-case letters.
func randomValue(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(rand.IntN(26))
	}
	return string(b)
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
