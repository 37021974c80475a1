package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

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
A node whose apply is halted (its state machine keeps failing on one
command) also has "halted":{"index":N,"reason":"…"}; raftd fsm skip N
resumes it.`,
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
		return writeStatusJSON(f.Out, resp)
	}
	writeStatusTable(f.Out, resp)
	return nil
}

// The JSON shapes of `status --json`: a contract (DESIGN "status --json").
type (
	statusJSON struct {
		Leader uint64 `json:"leader"`
		Term   uint64 `json:"term"`
		Nodes  []any  `json:"nodes"`
	}
	fsmJSON struct {
		Name           string `json:"name"`
		Version        uint32 `json:"version"`
		MinVersion     uint32 `json:"min_version,omitempty"`
		MaxVersion     uint32 `json:"max_version,omitempty"`
		ActivatedIndex uint64 `json:"activated_index,omitempty"`
		BinarySHA256   string `json:"binary_sha256,omitempty"`
	}
	haltJSON struct {
		Index  uint64 `json:"index"`
		Reason string `json:"reason"`
	}
	followerJSON struct {
		ID         uint64 `json:"id"`
		MatchIndex uint64 `json:"match_index"`
		NextIndex  uint64 `json:"next_index"`
		State      string `json:"state,omitempty"`
		Learner    bool   `json:"learner,omitempty"`
	}
	nodeJSON struct {
		ID            uint64         `json:"id"`
		RaftAddr      string         `json:"raft_addr"`
		APIAddr       string         `json:"api_addr"`
		Role          string         `json:"role"`
		Term          uint64         `json:"term"`
		Leader        uint64         `json:"leader"`
		CommitIndex   uint64         `json:"commit_index"`
		AppliedIndex  uint64         `json:"applied_index"`
		LastIndex     uint64         `json:"last_index"`
		SnapshotIndex uint64         `json:"snapshot_index"`
		FSM           fsmJSON        `json:"fsm"`
		ClusterID     string         `json:"cluster_id,omitempty"`
		Followers     []followerJSON `json:"followers,omitempty"`
		Halted        *haltJSON      `json:"halted,omitempty"`
	}
	nodeErrJSON struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		APIAddr  string `json:"api_addr"`
		Error    string `json:"error"`
	}
)

func writeStatusJSON(w io.Writer, resp *apiv1.StatusResponse) error {
	out := statusJSON{Leader: resp.GetLeader(), Term: resp.GetTerm(), Nodes: []any{}}
	for _, n := range resp.GetNodes() {
		if n.GetError() != "" {
			out.Nodes = append(out.Nodes, nodeErrJSON{ID: n.GetId(), RaftAddr: n.GetRaftAddr(), APIAddr: n.GetApiAddr(), Error: n.GetError()})
			continue
		}
		nj := nodeJSON{
			ID: n.GetId(), RaftAddr: n.GetRaftAddr(), APIAddr: n.GetApiAddr(), Role: n.GetRole(),
			Term: n.GetTerm(), Leader: n.GetLeader(), CommitIndex: n.GetCommitIndex(),
			AppliedIndex: n.GetAppliedIndex(), LastIndex: n.GetLastIndex(), SnapshotIndex: n.GetSnapshotIndex(),
			ClusterID: n.GetClusterId(),
			FSM: fsmJSON{
				Name: n.GetFsm().GetName(), Version: n.GetFsm().GetVersion(),
				MinVersion: n.GetFsm().GetMinVersion(), MaxVersion: n.GetFsm().GetMaxVersion(),
				ActivatedIndex: n.GetFsm().GetActivatedIndex(), BinarySHA256: n.GetFsm().GetBinarySha256(),
			},
		}
		if h := n.GetHalted(); h != nil {
			nj.Halted = &haltJSON{Index: h.GetIndex(), Reason: h.GetReason()}
		}
		for _, p := range n.GetFollowers() {
			nj.Followers = append(nj.Followers, followerJSON{ID: p.GetId(), MatchIndex: p.GetMatchIndex(), NextIndex: p.GetNextIndex(), State: p.GetState(), Learner: p.GetLearner()})
		}
		out.Nodes = append(out.Nodes, nj)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func writeStatusTable(w io.Writer, resp *apiv1.StatusResponse) {
	leader := "none"
	if resp.GetLeader() != 0 {
		leader = strconv.FormatUint(resp.GetLeader(), 10)
	}
	fmt.Fprintf(w, "leader %s, term %d\n\n", leader, resp.GetTerm())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDR\tAPI ADDR\tROLE\tTERM\tLEADER\tCOMMIT\tAPPLIED\tLAST\tSNAPSHOT\tFSM\tMATCH")
	var match map[uint64]uint64
	for _, n := range resp.GetNodes() {
		if n.GetRole() == "leader" {
			match = map[uint64]uint64{n.GetId(): n.GetLastIndex()}
			for _, p := range n.GetFollowers() {
				match[p.GetId()] = p.GetMatchIndex()
			}
		}
	}
	var notes []string
	for _, n := range resp.GetNodes() {
		if n.GetError() != "" {
			fmt.Fprintf(tw, "%d\t%s\t%s\tunreachable\t-\t-\t-\t-\t-\t-\t-\t-\n", n.GetId(), dash(n.GetRaftAddr()), dash(n.GetApiAddr()))
			notes = append(notes, fmt.Sprintf("node %d: %s", n.GetId(), oneLine(n.GetError())))
			continue
		}
		fsm := "-"
		if n.GetFsm().GetName() != "" {
			fsm = fmt.Sprintf("%s v%d", n.GetFsm().GetName(), n.GetFsm().GetVersion())
		}
		m := "-"
		if v, ok := match[n.GetId()]; ok {
			m = strconv.FormatUint(v, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			n.GetId(), dash(n.GetRaftAddr()), dash(n.GetApiAddr()), n.GetRole(), n.GetTerm(), n.GetLeader(),
			n.GetCommitIndex(), n.GetAppliedIndex(), n.GetLastIndex(), n.GetSnapshotIndex(), fsm, m)
	}
	tw.Flush()
	for _, note := range notes {
		fmt.Fprintln(w, note)
	}
	for _, n := range resp.GetNodes() {
		if h := n.GetHalted(); h != nil {
			fmt.Fprintf(w, "node %d: apply HALTED at index %d: %s\n  (raftd fsm skip %d skips that command on every node halted there)\n", n.GetId(), h.GetIndex(), oneLine(h.GetReason()), h.GetIndex())
		}
	}
	for _, n := range resp.GetNodes() {
		for _, p := range n.GetFollowers() {
			if strings.EqualFold(p.GetState(), "snapshot") {
				fmt.Fprintf(w, "node %d is receiving a snapshot from the leader\n", p.GetId())
			}
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
