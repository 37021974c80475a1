package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// DefaultAddr is the client API address client commands use by default.
const DefaultAddr = "127.0.0.1:7000"

// ClientOptions are the flags shared by every client command.
type ClientOptions struct {
	// Addrs is the comma-separated --addr list (or $RAFTD_ADDR).
	Addrs string
	// Timeout bounds the whole command.
	Timeout time.Duration
}

func addClientFlags(cmd *cobra.Command, o *ClientOptions) {
	cmd.Flags().StringVar(&o.Addrs, "addr", "", "client API address(es), comma-separated, tried in turn (default $RAFTD_ADDR or "+DefaultAddr+")")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Second, "give up after this long")
}

// addrList resolves the address list: --addr, then $RAFTD_ADDR, then the
// default.
func (o *ClientOptions) addrList(f *Factory) ([]string, error) {
	s := o.Addrs
	if s == "" && f.Getenv != nil {
		s = f.Getenv("RAFTD_ADDR")
	}
	if s == "" {
		s = DefaultAddr
	}
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, ":") {
			return nil, usageErrorf("--addr: %q is not host:port", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, usageErrorf("--addr: no address given")
	}
	if o.Timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive")
	}
	return out, nil
}

// dial returns a client connection to addr; it connects lazily.
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxResponseBytes), grpc.MaxCallSendMsgSize(server.MaxMessageBytes)))
}

// waitReady waits until cc is connected, it fails (transient failure), or
// ctx ends.
func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	cc.Connect()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			return errors.New("connection refused or unreachable")
		case connectivity.Shutdown:
			return errors.New("connection closed")
		}
		if !cc.WaitForStateChange(ctx, st) {
			return errors.New("no connection within the timeout")
		}
	}
}

// callFunc makes one RPC on cc; it must pass the trailer option through.
type callFunc func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) error

// retryBackoff is the pause before trying the address list again after
// every address refused with "not applied" (for example during an election).
const retryBackoff = 100 * time.Millisecond

// connectTimeout bounds connecting to one address before the next is tried.
const connectTimeout = time.Second

// call runs fn against the addresses in turn until one answers, following
// the exit-code contract:
//   - an address that cannot be connected to is skipped;
//   - a not-applied Unavailable refusal (no leader) moves on to the next
//     address, and the list is retried until the timeout;
//   - any other not-applied refusal exits 3 at once;
//   - any error after the request was sent exits 1 (outcome unknown).
//
// If no address could be reached at all, it exits 3.
func (o *ClientOptions) call(ctx context.Context, f *Factory, op string, fn callFunc) error {
	addrs, err := o.addrList(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var lastRefusal error
	for {
		var unreachable []string
		for _, a := range addrs {
			cc, err := dial(a)
			if err != nil {
				return usageErrorf("--addr %s: %v", a, err)
			}
			// A node that accepts TCP but does not answer (stopped, hung)
			// must not eat the whole timeout: bound each connect.
			cctx, ccancel := context.WithTimeout(ctx, connectTimeout)
			err = waitReady(cctx, cc)
			ccancel()
			if err != nil {
				cc.Close()
				unreachable = append(unreachable, a)
				if ctx.Err() != nil {
					break
				}
				continue
			}
			var tr metadata.MD
			err = fn(ctx, apiv1.NewRaftdClient(cc), &tr)
			cc.Close()
			if err == nil {
				return nil
			}
			exit, next := exitFor(op, a, o.Timeout, err, tr)
			if !next {
				return exit
			}
			lastRefusal = exit
		}
		if lastRefusal == nil {
			if ctx.Err() != nil && len(unreachable) < len(addrs) {
				return withCode(ExitNotApplied, fmt.Errorf("%s: no node reachable within %s", op, o.Timeout))
			}
			return withCode(ExitNotApplied, fmt.Errorf("%s: cannot reach %s (is raftd running?)", op, strings.Join(unreachable, ", ")))
		}
		select {
		case <-ctx.Done():
			return lastRefusal
		case <-time.After(retryBackoff):
		}
	}
}
