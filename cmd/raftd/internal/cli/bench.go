package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/raftd/raftd/cmd/raftd/internal/progress"
	"github.com/raftd/raftd/cmd/raftd/internal/view"
	"github.com/raftd/raftd/core/client"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// BenchOptions configures `raftd bench`.
type BenchOptions struct {
	ClientOptions
	// Op is "put" or "get".
	Op string
	// Keys is the number of distinct keys (0: a random key per put).
	Keys      int
	Clients   int
	Duration  time.Duration
	ValueSize int
	KeySize   int
	// Conns is the number of gRPC connections the clients share.
	Conns int
	Seed  uint64
	// JSON prints bench.Summary; Progress reports progress on stderr.
	JSON, Progress bool
}

// NewCmdBench returns `raftd bench`: kv puts from concurrent clients.
func NewCmdBench(f *Factory, runF func(*BenchOptions) error) *cobra.Command {
	opts := &BenchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a kv cluster with concurrent puts or gets and print ops/s, p50, p99",
		Long: `Bench sends kv requests to the leader (found through status) from
--clients concurrent clients, each waiting for its request to be answered
before sending the next, for --duration. With --op put (the default) they
are {"op":"put"} commands with random values, under random keys or, with
--keys N, keys drawn from N. With --op get they are linearizable
{"op":"get"} queries of keys drawn from --keys (default 1000), which bench
puts first. It prints throughput and latency percentiles of the answered
requests that started and ended within --duration (--json: {"ops","errors",
"elapsed_seconds","ops_per_second","p50_ms","p99_ms","max_ms"}). A put
that does not answer {"ok":true}, or a get that does not find its key,
counts as an error. The cluster must run the kv FSM.`,
		Example: `  raftd bench --addr 127.0.0.1:8101 --clients 64 --duration 10s --value-size 128 --key-size 16
  raftd bench --addr 127.0.0.1:8101 --op get --keys 10000 --clients 64`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Progress = progress.Enabled(f.ErrOut, cmd.Flags().Changed("progress"), opts.Progress)
			if runF != nil {
				return runF(opts)
			}
			return runBench(cmd.Context(), f, opts)
		},
	}
	addClientFlags(cmd, &opts.ClientOptions)
	cmd.Flags().StringVar(&opts.Op, "op", "put", "put or get (linearizable)")
	cmd.Flags().IntVar(&opts.Keys, "keys", 0, "distinct keys to draw from (put: 0 = a new random key each time; get: default 1000)")
	cmd.Flags().IntVar(&opts.Clients, "clients", 64, "concurrent clients")
	cmd.Flags().DurationVar(&opts.Duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&opts.ValueSize, "value-size", 128, "value size in bytes")
	cmd.Flags().IntVar(&opts.KeySize, "key-size", 16, "key size in bytes")
	cmd.Flags().IntVar(&opts.Conns, "conns", 4, "gRPC connections shared by the clients")
	cmd.Flags().Uint64Var(&opts.Seed, "seed", 1, "seed for keys and values")
	addJSONFlag(cmd, &opts.JSON, `{"ops":…,"errors":…,"elapsed_seconds":…,"ops_per_second":…,"p50_ms":…,"p99_ms":…,"max_ms":…}`)
	cmd.Flags().BoolVar(&opts.Progress, "progress", false, progress.FlagUsage)
	return cmd
}

func runBench(ctx context.Context, f *Factory, o *BenchOptions) error {
	if o.Clients <= 0 || o.Duration <= 0 || o.ValueSize < 0 || o.KeySize <= 0 || o.Conns <= 0 || o.Keys < 0 {
		return usageErrorf("bench: --clients, --duration, --key-size and --conns must be positive, --keys not negative")
	}
	switch o.Op {
	case client.BenchPut:
	case client.BenchGet:
		if o.Keys == 0 {
			o.Keys = 1000
		}
	default:
		return usageErrorf("bench: --op %q: want put or get", o.Op)
	}
	c, err := o.client(f)
	if err != nil {
		return err
	}
	// Puts go to the leader's API address, so that they are not forwarded.
	st, err := fetchStatus(ctx, f, &o.ClientOptions)
	if err != nil {
		return err
	}
	target, err := client.LeaderAPIAddr(st)
	if err != nil {
		target = c.Addrs[0]
	}
	conns := make([]*grpc.ClientConn, o.Conns)
	for i := range conns {
		cc, err := client.Dial(target, c.TLS)
		if err != nil {
			return withCode(ExitFailure, err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	fmt.Fprintf(f.ErrOut, "bench: %ss from %d clients, %s, %d B values, %d B keys, against %s (leader %d)\n",
		o.Op, o.Clients, o.Duration, o.ValueSize, o.KeySize, target, st.GetLeader())
	bo := client.BenchConfig{Op: o.Op, Clients: o.Clients, Duration: o.Duration, Keys: o.Keys, Timeout: o.Timeout, KeySize: o.KeySize, ValueSize: o.ValueSize, Seed: o.Seed}
	if o.Op == client.BenchGet {
		fmt.Fprintf(f.ErrOut, "bench: putting the %d keys the gets read\n", o.Keys)
		if err := client.BenchPreload(ctx, conns, bo); err != nil {
			return withCode(ExitFailure, err)
		}
	}
	if o.Progress {
		// A terminal gets one line redrawn, anything else a line a second.
		pre, post := "", "\n"
		if progress.IsTerminal(f.ErrOut) {
			pre, post = "\r", "\x1b[K"
		}
		bo.Every, bo.Report = time.Second, func(p client.BenchProgress) { fmt.Fprintf(f.ErrOut, "%sbench: %s%s", pre, p, post) }
		defer func() {
			if pre != "" {
				fmt.Fprintln(f.ErrOut)
			}
		}()
	}
	res := client.Bench(ctx, conns, bo)
	if res.Ops == 0 {
		return withCode(ExitFailure, fmt.Errorf("bench: no %s succeeded: %v", o.Op, res.FirstErr))
	}
	if res.FirstErr != nil {
		fmt.Fprintf(f.ErrOut, "bench: first error: %v\n", res.FirstErr)
	}
	if o.JSON {
		return view.JSON(f.Out, res.Summary())
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	fmt.Fprintf(f.Out, "ops: %d in %.2fs, errors: %d\nthroughput: %.0f ops/s\nlatency: p50 %s  p99 %s  max %s\n",
		res.Ops, res.Elapsed.Seconds(), res.Errors, float64(res.Ops)/res.Elapsed.Seconds(), r(res.P50), r(res.P99), r(res.Max))
	return nil
}
