package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/raftd/raftd/core/client"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// BenchOptions configures `raftd bench`.
type BenchOptions struct {
	ClientOptions
	Clients   int
	Duration  time.Duration
	ValueSize int
	KeySize   int
	// Conns is the number of gRPC connections the clients share.
	Conns int
	Seed  uint64
}

// NewCmdBench returns `raftd bench`: kv puts from concurrent clients.
func NewCmdBench(f *Factory, runF func(*BenchOptions) error) *cobra.Command {
	opts := &BenchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a kv cluster with concurrent puts and print ops/s, p50, p99",
		Long: `Bench sends {"op":"put"} commands with random keys and values to the
leader (found through status) from --clients concurrent clients, each
waiting for its put to be acknowledged before sending the next, for
--duration. It prints throughput and latency percentiles of acknowledged
puts. The cluster must run the kv FSM.`,
		Example: `  raftd bench --addr 127.0.0.1:8101 --clients 64 --duration 10s --value-size 128 --key-size 16`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runBench(cmd.Context(), f, opts)
		},
	}
	addClientFlags(cmd, &opts.ClientOptions)
	cmd.Flags().IntVar(&opts.Clients, "clients", 64, "concurrent clients")
	cmd.Flags().DurationVar(&opts.Duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&opts.ValueSize, "value-size", 128, "value size in bytes")
	cmd.Flags().IntVar(&opts.KeySize, "key-size", 16, "key size in bytes")
	cmd.Flags().IntVar(&opts.Conns, "conns", 4, "gRPC connections shared by the clients")
	cmd.Flags().Uint64Var(&opts.Seed, "seed", 1, "seed for keys and values")
	return cmd
}

func runBench(ctx context.Context, f *Factory, o *BenchOptions) error {
	if o.Clients <= 0 || o.Duration <= 0 || o.ValueSize < 0 || o.KeySize <= 0 || o.Conns <= 0 {
		return usageErrorf("bench: --clients, --duration, --key-size and --conns must be positive")
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
	target, err := leaderAPIAddr(st)
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
	fmt.Fprintf(f.ErrOut, "bench: %d clients, %s, %d B values, %d B keys, against %s (leader %d)\n",
		o.Clients, o.Duration, o.ValueSize, o.KeySize, target, st.GetLeader())
	res := client.Bench(ctx, conns, client.BenchConfig{Clients: o.Clients, Duration: o.Duration,
		KeySize: o.KeySize, ValueSize: o.ValueSize, Seed: o.Seed, Timeout: o.Timeout})
	if res.Ops == 0 {
		if res.FirstErr != nil {
			return withCode(ExitFailure, fmt.Errorf("bench: no put succeeded: %v", res.FirstErr))
		}
		return withCode(ExitFailure, fmt.Errorf("bench: no put succeeded"))
	}
	fmt.Fprintf(f.Out, "ops: %d in %.2fs, errors: %d\n", res.Ops, res.Elapsed.Seconds(), res.Errors)
	fmt.Fprintf(f.Out, "throughput: %.0f ops/s\n", float64(res.Ops)/res.Elapsed.Seconds())
	fmt.Fprintf(f.Out, "latency: p50 %s  p99 %s  max %s\n", res.P50.Round(10*time.Microsecond), res.P99.Round(10*time.Microsecond), res.Max.Round(10*time.Microsecond))
	if res.FirstErr != nil {
		fmt.Fprintf(f.ErrOut, "bench: first error: %v\n", res.FirstErr)
	}
	return nil
}
