package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/raftd/raftd/core/client"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
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

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[r.IntN(len(alnum))]
	}
	return string(b)
}

// BenchResult is what a bench run measured.
type BenchResult struct {
	Ops      int
	Errors   int
	Elapsed  time.Duration
	P50, P99 time.Duration
	Max      time.Duration
	FirstErr error
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
	res := benchRun(ctx, conns, o)
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

func benchRun(ctx context.Context, conns []*grpc.ClientConn, o *BenchOptions) BenchResult {
	// Clients stop sending at end; requests in flight then finish under
	// their own timeout, so that none is cut off and counted as an error.
	end := time.Now().Add(o.Duration)
	var (
		mu       sync.Mutex
		lats     []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for c := 0; c < o.Clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(o.Seed, uint64(c)))
			cl := apiv1.NewRaftdClient(conns[c%len(conns)])
			var mine []time.Duration
			var myErrs int
			var myFirst error
			for ctx.Err() == nil && time.Now().Before(end) {
				cmd, _ := json.Marshal(map[string]string{"op": "put", "key": randString(r, o.KeySize), "value": randString(r, o.ValueSize)})
				t0 := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, o.Timeout)
				_, err := cl.Apply(rctx, &apiv1.ApplyRequest{Command: cmd})
				rcancel()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					myErrs++
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	res := BenchResult{Ops: len(lats), Errors: errs, Elapsed: time.Since(start), FirstErr: firstErr}
	if len(lats) > 0 {
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		res.P50 = lats[len(lats)*50/100]
		res.P99 = lats[min(len(lats)-1, len(lats)*99/100)]
		res.Max = lats[len(lats)-1]
	}
	return res
}
