package cli

import (
	"context"
	"fmt"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// QueryOptions configures `raftd query`.
type QueryOptions struct {
	ClientOptions
	Query string
	// Consistency is "linearizable" (default) or "stale".
	Consistency string
}

// NewCmdQuery returns `raftd query QUERY`.
func NewCmdQuery(f *Factory, runF func(*QueryOptions) error) *cobra.Command {
	opts := &QueryOptions{}
	cmd := &cobra.Command{
		Use:   "query QUERY",
		Short: "Run a read-only query against the FSM and print the result",
		Long: `Query runs QUERY against the FSM without writing to the log.

--consistency linearizable (the default) reflects every write acknowledged
before the query started (ReadIndex through the leader); --consistency stale
reads the answering node's local state, which may lag.`,
		Example: `  raftd query --addr 127.0.0.1:8201 '{"op":"get","key":"a"}'
  raftd query --consistency stale '{"op":"list","prefix":""}'`,
		Args: exactArgs(1, "one QUERY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := argOrStdin(f, args[0])
			if err != nil {
				return err
			}
			opts.Query = v
			if runF != nil {
				return runF(opts)
			}
			return runQuery(cmd.Context(), f, opts)
		},
	}
	addClientFlags(cmd, &opts.ClientOptions)
	cmd.Flags().StringVar(&opts.Consistency, "consistency", "linearizable", "linearizable or stale")
	return cmd
}

func parseConsistency(s string) (apiv1.Consistency, error) {
	switch s {
	case "linearizable", "":
		return apiv1.Consistency_CONSISTENCY_LINEARIZABLE, nil
	case "stale":
		return apiv1.Consistency_CONSISTENCY_STALE, nil
	}
	return 0, usageErrorf("--consistency: %q is not linearizable or stale", s)
}

func runQuery(ctx context.Context, f *Factory, opts *QueryOptions) error {
	c, err := parseConsistency(opts.Consistency)
	if err != nil {
		return err
	}
	resp, err := rpc(ctx, f, &opts.ClientOptions, "query", apiv1.RaftdClient.Query, &apiv1.QueryRequest{Query: []byte(opts.Query), Consistency: c})
	if err != nil {
		return err
	}
	fmt.Fprintln(f.Out, string(resp.GetResult()))
	return nil
}
