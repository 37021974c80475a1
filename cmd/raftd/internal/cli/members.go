package cli

import (
	"fmt"
	"strconv"

	"github.com/raftd/raftd/cmd/raftd/internal/view"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"github.com/spf13/cobra"
)

// MembersOptions configures the `raftd members` commands.
type MembersOptions struct {
	ClientOptions
	Learner bool
	JSON    bool
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
			return printMembers(f, resp, err, list.JSON)
		},
	}
	// `raftd members` alone lists.
	for _, c := range []*cobra.Command{listCmd, cmd} {
		addClientFlags(c, &list.ClientOptions)
		addJSONFlag(c, &list.JSON, `{"leader":1,"members":[{"id":1,"raft_addr":"…","learner":false},…]}`)
	}
	cmd.RunE = listCmd.RunE

	add := &MembersOptions{}
	addCmd := &cobra.Command{
		Use:   "add ID RAFT_ADDR",
		Short: "Add a voter (or a learner with --learner; a learner added again without --learner is promoted)",
		Long: `Add makes node ID, reachable at RAFT_ADDR (its --raft-addr), a member.

Start the new node first, on an empty data dir, with --join (wait to be
added instead of bootstrapping a cluster of its own) and the cluster's id
(--cluster-id, the cluster_id of raftd status --json; or the --peers the
cluster was first started with, from which that id is derived). --peers
also tells it where the members are, to answer the leader before it has
the membership from the log. Then add it as a learner, wait until its
applied index has caught up with the leader's (raftd status), and add it
again without --learner to make it a voter. One change at a time: a second
one while the first is in flight is refused (exit 3).`,
		Example: `  # on the new node's machine
  raftd run --fsm ./bin/raftd-fsm-kv --id 4 --data-dir /var/lib/raftd/n4 \
    --raft-addr 127.0.0.1:7401 --api-addr 127.0.0.1:8401 --join \
    --cluster-id 048c2e4e65b0ed44 --peers 1=127.0.0.1:7101,2=127.0.0.1:7201,3=127.0.0.1:7301
  # from anywhere
  raftd members add 4 127.0.0.1:7401 --learner
  raftd status                      # until node 4's APPLIED reaches the leader's
  raftd members add 4 127.0.0.1:7401`,
		Args: exactArgs(2, "ID and RAFT_ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			resp, err := rpc(cmd.Context(), f, &add.ClientOptions, "add member", apiv1.RaftdClient.AddMember,
				&apiv1.AddMemberRequest{Id: id, RaftAddr: args[1], Learner: add.Learner})
			return printMembers(f, resp, err, add.JSON)
		},
	}
	addClientFlags(addCmd, &add.ClientOptions)
	addCmd.Flags().BoolVar(&add.Learner, "learner", false, "add as a non-voting learner")
	addJSONFlag(addCmd, &add.JSON, "the membership after the change, as members --json")

	rm := &MembersOptions{}
	rmCmd := &cobra.Command{
		Use: "remove ID", Short: "Remove a member", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			resp, err := rpc(cmd.Context(), f, &rm.ClientOptions, "remove member", apiv1.RaftdClient.RemoveMember, &apiv1.RemoveMemberRequest{Id: id})
			return printMembers(f, resp, err, rm.JSON)
		},
	}
	addClientFlags(rmCmd, &rm.ClientOptions)
	addJSONFlag(rmCmd, &rm.JSON, "the membership after the change, as members --json")
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
func printMembers(f *Factory, resp *apiv1.MembersResponse, err error, asJSON bool) error {
	if err != nil {
		return err
	}
	return view.Members(f.Out, resp, asJSON)
}

// NewCmdLeader returns `raftd leader [transfer ID]`.
func NewCmdLeader(f *Factory) *cobra.Command {
	show := &StatusOptions{}
	cmd := &cobra.Command{
		Use:   "leader",
		Short: "Print the leader's id and addresses; `leader transfer ID` hands leadership over",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := fetchStatus(cmd.Context(), f, &show.ClientOptions)
			if err != nil {
				return err
			}
			if resp.GetLeader() == 0 {
				return withCode(ExitFailure, fmt.Errorf("leader: no leader at term %d", resp.GetTerm()))
			}
			return view.Leader(f.Out, resp, show.JSON)
		},
	}
	addClientFlags(cmd, &show.ClientOptions)
	addJSONFlag(cmd, &show.JSON, `{"id":1,"raft_addr":"…","api_addr":"…","term":3}; exit 1 when there is no leader`)
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
