package cli

import (
	"context"

	"github.com/raftd/raftd/cmd/raftd/internal/view"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// StatusOptions configures `raftd status`.
type StatusOptions struct {
	ClientOptions
	JSON bool
}

// NewCmdStatus returns `raftd status`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node of the cluster: role, term, indexes, FSM",
		Long: `Status asks one node (the first of --addr that answers) for the status of
every member. Unreachable members are listed with an error.

--json prints one object:
  {"leader":1,"term":3,"nodes":[{"id":1,"raft_addr":"…","api_addr":"…",
   "role":"leader","term":3,"leader":1,"commit_index":120,"applied_index":120,
   "last_index":120,"snapshot_index":0,"fsm":{"name":"kv","version":1},
   "followers":[{"id":2,"match_index":120,…}]}, {"id":3,…,"error":"…"}]}
"halted":{"index":N,"reason":"…"} while a node's apply is halted (raftd fsm skip N resumes it; with
"checkpoint":C the node's state diverged at that digest checkpoint instead: rebuild it);
"checkpoint":{"index":C,"digest":"…"} is the last digest checkpoint a node agreed with.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runStatus(cmd.Context(), f, opts)
		},
	}
	addClientFlags(cmd, &opts.ClientOptions)
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print one JSON object")
	return cmd
}

// fetchStatus returns the cluster status from the first node that answers.
func fetchStatus(ctx context.Context, f *Factory, o *ClientOptions) (*apiv1.StatusResponse, error) {
	return rpc(ctx, f, o, "status", apiv1.RaftdClient.Status, &apiv1.StatusRequest{})
}

func runStatus(ctx context.Context, f *Factory, opts *StatusOptions) error {
	resp, err := fetchStatus(ctx, f, &opts.ClientOptions)
	if err != nil {
		return err
	}
	if opts.JSON {
		return view.StatusJSON(f.Out, resp)
	}
	return view.StatusTable(f.Out, resp)
}
