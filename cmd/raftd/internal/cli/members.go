package cli

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// MembersOptions configures the `raftd members` commands.
type MembersOptions struct {
	ClientOptions
	ID       uint64
	RaftAddr string
	Learner  bool
}

// NewCmdMembers returns `raftd members [list|add|remove]`.
func NewCmdMembers(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List or change the cluster membership",
		Args:  noArgs,
	}
	list := &MembersOptions{}
	listCmd := &cobra.Command{
		Use: "list", Short: "List the members", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMembersList(cmd.Context(), f, list) },
	}
	addClientFlags(listCmd, &list.ClientOptions)
	// `raftd members` alone lists.
	addClientFlags(cmd, &list.ClientOptions)
	cmd.RunE = listCmd.RunE

	add := &MembersOptions{}
	addCmd := &cobra.Command{
		Use:   "add ID RAFT_ADDR",
		Short: "Add a voter (or a learner with --learner; a learner added again without --learner is promoted)",
		Example: `  raftd members add 4 127.0.0.1:7401 --learner
  raftd run --fsm ./bin/raftd-fsm-kv --id 4 --raft-addr 127.0.0.1:7401 --api-addr 127.0.0.1:8401 --join`,
		Args: exactArgs(2, "ID and RAFT_ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			add.ID, add.RaftAddr = id, args[1]
			return runMembersChange(cmd.Context(), f, add, "add member", func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) (*apiv1.MembersResponse, error) {
				return c.AddMember(ctx, &apiv1.AddMemberRequest{Id: add.ID, RaftAddr: add.RaftAddr, Learner: add.Learner}, grpc.Trailer(tr))
			})
		},
	}
	addClientFlags(addCmd, &add.ClientOptions)
	addCmd.Flags().BoolVar(&add.Learner, "learner", false, "add as a non-voting learner")

	rm := &MembersOptions{}
	rmCmd := &cobra.Command{
		Use: "remove ID", Short: "Remove a member", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			rm.ID = id
			return runMembersChange(cmd.Context(), f, rm, "remove member", func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) (*apiv1.MembersResponse, error) {
				return c.RemoveMember(ctx, &apiv1.RemoveMemberRequest{Id: rm.ID}, grpc.Trailer(tr))
			})
		},
	}
	addClientFlags(rmCmd, &rm.ClientOptions)
	cmd.AddCommand(listCmd, addCmd, rmCmd)
	return cmd
}

func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usageErrorf("node id %q is not a positive integer", s)
	}
	return id, nil
}

func runMembersList(ctx context.Context, f *Factory, o *MembersOptions) error {
	var resp *apiv1.MembersResponse
	err := o.call(ctx, f, "members", func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) error {
		var err error
		resp, err = c.Members(ctx, &apiv1.MembersRequest{}, grpc.Trailer(tr))
		return err
	})
	if err != nil {
		return err
	}
	printMembers(f, resp)
	return nil
}

func runMembersChange(ctx context.Context, f *Factory, o *MembersOptions, op string,
	fn func(context.Context, apiv1.RaftdClient, *metadata.MD) (*apiv1.MembersResponse, error)) error {
	var resp *apiv1.MembersResponse
	err := o.call(ctx, f, op, func(ctx context.Context, c apiv1.RaftdClient, tr *metadata.MD) error {
		var err error
		resp, err = fn(ctx, c, tr)
		return err
	})
	if err != nil {
		return err
	}
	printMembers(f, resp)
	return nil
}

func printMembers(f *Factory, resp *apiv1.MembersResponse) {
	tw := tabwriter.NewWriter(f.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDR\tKIND\tLEADER")
	for _, m := range resp.GetMembers() {
		kind := "voter"
		if m.GetLearner() {
			kind = "learner"
		}
		lead := ""
		if m.GetId() == resp.GetLeader() {
			lead = "*"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.GetId(), m.GetRaftAddr(), kind, lead)
	}
	tw.Flush()
}

// NewCmdLeader returns `raftd leader [transfer ID]`.
func NewCmdLeader(f *Factory) *cobra.Command {
	show := &ClientOptions{}
	cmd := &cobra.Command{
		Use:   "leader",
		Short: "Print the leader's id and addresses; `leader transfer ID` hands leadership over",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := fetchStatus(cmd.Context(), f, show)
			if err != nil {
				return err
			}
			if resp.GetLeader() == 0 {
				return withCode(ExitFailure, fmt.Errorf("leader: no leader at term %d", resp.GetTerm()))
			}
			for _, n := range resp.GetNodes() {
				if n.GetId() == resp.GetLeader() {
					fmt.Fprintf(f.Out, "%d raft=%s api=%s term=%d\n", n.GetId(), n.GetRaftAddr(), n.GetApiAddr(), resp.GetTerm())
					return nil
				}
			}
			fmt.Fprintf(f.Out, "%d term=%d\n", resp.GetLeader(), resp.GetTerm())
			return nil
		},
	}
	addClientFlags(cmd, show)
	tr := &ClientOptions{}
	transfer := &cobra.Command{
		Use: "transfer ID", Short: "Transfer leadership to voter ID", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			var resp *apiv1.TransferLeaderResponse
			err = tr.call(cmd.Context(), f, "transfer leader", func(ctx context.Context, c apiv1.RaftdClient, md *metadata.MD) error {
				var err error
				resp, err = c.TransferLeader(ctx, &apiv1.TransferLeaderRequest{Id: id}, grpc.Trailer(md))
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(f.Out, "leader is now %d\n", resp.GetLeader())
			return nil
		},
	}
	addClientFlags(transfer, tr)
	cmd.AddCommand(transfer)
	return cmd
}
