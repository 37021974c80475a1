package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	rclient "github.com/raftd/raftd/client"
	"github.com/spf13/cobra"
)

// ApplyOptions configures `raftd apply`.
type ApplyOptions struct {
	ClientOptions
	Command string
	// RequestID is --request-id; empty: a random one per invocation.
	RequestID string
}

// NewCmdApply returns `raftd apply COMMAND`. runF, if set, replaces the
// command's action (tests).
func NewCmdApply(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	opts := &ApplyOptions{}
	cmd := &cobra.Command{
		Use:   "apply COMMAND",
		Short: "Apply a command through the log and print the FSM's result",
		Long: `Apply sends COMMAND to the cluster; it is committed through the log and
applied on every replica. The FSM's result is printed on stdout.

The command carries a request id (--request-id, or a random one): apply
retries it through the --addr nodes until --timeout, and the cluster
applies one id at most once, so a retry after a lost answer or a leader
change gets the first result instead of applying again. Run apply again
with the same --request-id after an unknown outcome to learn it safely.

Exit codes: 0 applied; 3 certainly not applied (no leader, too large,
invalid); 1 outcome unknown (timeout or connection lost after sending;
the message names the request id to retry with).`,
		Example: `  raftd apply --addr 127.0.0.1:8101 '{"op":"put","key":"a","value":"1"}'
  raftd apply --request-id order-1234 '{"op":"add","delta":1}'   # at most once
  raftd apply - < command.json     # COMMAND "-" reads it from stdin`,
		Args: exactArgs(1, "one COMMAND"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := argOrStdin(f, args[0])
			if err != nil {
				return err
			}
			opts.Command = v
			if runF != nil {
				return runF(opts)
			}
			return runApply(cmd.Context(), f, opts)
		},
	}
	addClientFlags(cmd, &opts.ClientOptions)
	cmd.Flags().StringVar(&opts.RequestID, "request-id", "", "apply at most once per ID (1 to 64 bytes); a retry gets the first result (default: random)")
	return cmd
}

func runApply(ctx context.Context, f *Factory, opts *ApplyOptions) error {
	if opts.Command == "" {
		return usageErrorf("apply: empty command")
	}
	id := opts.RequestID
	if len(id) > rclient.MaxClientIDBytes {
		return usageErrorf("--request-id: %d bytes, at most %d", len(id), rclient.MaxClientIDBytes)
	}
	if id == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	cc, err := opts.client(f)
	if err != nil {
		return err
	}
	c, err := rclient.New(rclient.Config{Endpoints: cc.Addrs, TLS: cc.TLS})
	if err != nil {
		return withCode(ExitFailure, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	res, err := c.ApplyWithID(ctx, rclient.RequestID{Client: []byte(id), Seq: 1}, []byte(opts.Command))
	switch {
	case errors.Is(err, rclient.ErrNotApplied):
		return withCode(ExitNotApplied, err)
	case err != nil:
		return withCode(ExitFailure, fmt.Errorf("%w; retry with --request-id %s to apply it at most once", err, id))
	case res.Duplicate:
		fmt.Fprintf(f.ErrOut, "apply: request id %s was applied before, at index %d; its result:\n", id, res.Index)
	}
	fmt.Fprintln(f.Out, string(res.Value))
	return nil
}
