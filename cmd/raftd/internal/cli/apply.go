package cli

import (
	"context"
	"fmt"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// ApplyOptions configures `raftd apply`.
type ApplyOptions struct {
	ClientOptions
	Command string
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

Exit codes: 0 applied; 3 certainly not applied (no leader, too large,
invalid); 1 outcome unknown (timeout or connection lost after sending).`,
		Example: `  raftd apply --addr 127.0.0.1:8101 '{"op":"put","key":"a","value":"1"}'
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
	return cmd
}

func runApply(ctx context.Context, f *Factory, opts *ApplyOptions) error {
	if opts.Command == "" {
		return usageErrorf("apply: empty command")
	}
	resp, err := rpc(ctx, f, &opts.ClientOptions, "apply", apiv1.RaftdClient.Apply, &apiv1.ApplyRequest{Command: []byte(opts.Command)})
	if err != nil {
		return err
	}
	fmt.Fprintln(f.Out, string(resp.GetResult()))
	return nil
}
