package cli

import (
	"fmt"
	"strconv"
	"text/tabwriter"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := rpc(cmd.Context(), f, &list.ClientOptions, "members", apiv1.RaftdClient.Members, &apiv1.MembersRequest{})
			return printMembers(f, resp, err)
		},
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
			resp, err := rpc(cmd.Context(), f, &add.ClientOptions, "add member", apiv1.RaftdClient.AddMember,
				&apiv1.AddMemberRequest{Id: add.ID, RaftAddr: add.RaftAddr, Learner: add.Learner})
			return printMembers(f, resp, err)
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
			resp, err := rpc(cmd.Context(), f, &rm.ClientOptions, "remove member", apiv1.RaftdClient.RemoveMember, &apiv1.RemoveMemberRequest{Id: rm.ID})
			return printMembers(f, resp, err)
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

// printMembers prints the membership in resp, or returns err.
func printMembers(f *Factory, resp *apiv1.MembersResponse, err error) error {
	if err != nil {
		return err
	}
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
	return tw.Flush()
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
			resp, err := rpc(cmd.Context(), f, tr, "transfer leader", apiv1.RaftdClient.TransferLeader, &apiv1.TransferLeaderRequest{Id: id})
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
