// Package view renders the client API's answers for people (tables) and
// for scripts (one JSON object per command, whose shapes are a contract:
// DESIGN "status --json", docs/operations.md).
package view

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
)

// JSON writes v as one line of JSON.
func JSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// Dash is s, or "-" for an empty s (a table cell).
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// FirstLine returns s up to its first line break.
func FirstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// OneLine joins the lines of s with single spaces.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
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
		DowngradeTo    uint32 `json:"downgrade_safe_to,omitempty"`
		Build          string `json:"build,omitempty"`
	}
	haltJSON struct {
		Index      uint64 `json:"index"`
		Reason     string `json:"reason"`
		Checkpoint uint64 `json:"checkpoint,omitempty"`
	}
	checkpointJSON struct {
		Index  uint64 `json:"index"`
		Digest string `json:"digest"`
	}
	followerJSON struct {
		ID         uint64 `json:"id"`
		MatchIndex uint64 `json:"match_index"`
		NextIndex  uint64 `json:"next_index"`
		State      string `json:"state,omitempty"`
		Learner    bool   `json:"learner,omitempty"`
	}
	nodeJSON struct {
		ID            uint64          `json:"id"`
		RaftAddr      string          `json:"raft_addr"`
		APIAddr       string          `json:"api_addr"`
		Role          string          `json:"role"`
		Term          uint64          `json:"term"`
		Leader        uint64          `json:"leader"`
		CommitIndex   uint64          `json:"commit_index"`
		AppliedIndex  uint64          `json:"applied_index"`
		LastIndex     uint64          `json:"last_index"`
		SnapshotIndex uint64          `json:"snapshot_index"`
		FSM           fsmJSON         `json:"fsm"`
		ClusterID     string          `json:"cluster_id,omitempty"`
		Followers     []followerJSON  `json:"followers,omitempty"`
		Halted        *haltJSON       `json:"halted,omitempty"`
		Checkpoint    *checkpointJSON `json:"checkpoint,omitempty"`
	}
	nodeErrJSON struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		APIAddr  string `json:"api_addr"`
		Error    string `json:"error"`
	}
)

// StatusJSON writes resp as the one object of `raftd status --json`.
func StatusJSON(w io.Writer, resp *apiv1.StatusResponse) error {
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
				DowngradeTo: n.GetFsm().GetDowngradeSafeTo(), Build: n.GetFsm().GetBuild(),
			},
		}
		if h := n.GetHalted(); h != nil {
			nj.Halted = &haltJSON{Index: h.GetIndex(), Reason: h.GetReason(), Checkpoint: h.GetCheckpoint()}
		}
		if c := n.GetCheckpoint(); c != nil {
			nj.Checkpoint = &checkpointJSON{Index: c.GetIndex(), Digest: hex.EncodeToString(c.GetDigest())}
		}
		for _, p := range n.GetFollowers() {
			nj.Followers = append(nj.Followers, followerJSON{ID: p.GetId(), MatchIndex: p.GetMatchIndex(), NextIndex: p.GetNextIndex(), State: p.GetState(), Learner: p.GetLearner()})
		}
		out.Nodes = append(out.Nodes, nj)
	}
	return JSON(w, out)
}

// StatusTable writes resp as `raftd status` shows it: a table of the
// members, then notes (unreachable and halted nodes, snapshot transfers).
func StatusTable(w io.Writer, resp *apiv1.StatusResponse) error {
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
			fmt.Fprintf(tw, "%d\t%s\t%s\tunreachable\t-\t-\t-\t-\t-\t-\t-\t-\n", n.GetId(), Dash(n.GetRaftAddr()), Dash(n.GetApiAddr()))
			notes = append(notes, fmt.Sprintf("node %d: %s", n.GetId(), OneLine(n.GetError())))
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
			n.GetId(), Dash(n.GetRaftAddr()), Dash(n.GetApiAddr()), n.GetRole(), n.GetTerm(), n.GetLeader(),
			n.GetCommitIndex(), n.GetAppliedIndex(), n.GetLastIndex(), n.GetSnapshotIndex(), fsm, m)
	}
	err := tw.Flush()
	for _, note := range notes {
		fmt.Fprintln(w, note)
	}
	for _, n := range resp.GetNodes() {
		if h := n.GetHalted(); h != nil && h.GetCheckpoint() != 0 {
			fmt.Fprintf(w, "node %d: apply HALTED at index %d: %s\n  (its state diverged: rebuild the node, docs/operations.md \"Divergence\")\n", n.GetId(), h.GetIndex(), OneLine(h.GetReason()))
		} else if h != nil {
			fmt.Fprintf(w, "node %d: apply HALTED at index %d: %s\n  (raftd fsm skip %d skips that command on every node halted there)\n", n.GetId(), h.GetIndex(), OneLine(h.GetReason()), h.GetIndex())
		}
	}
	checkpointLine(w, resp)
	for _, n := range resp.GetNodes() {
		for _, p := range n.GetFollowers() {
			if strings.EqualFold(p.GetState(), "snapshot") {
				fmt.Fprintf(w, "node %d is receiving a snapshot from the leader\n", p.GetId())
			}
		}
	}
	return err
}

// Members writes the membership in resp: a table, or with asJSON
// {"leader":1,"members":[{"id":1,"raft_addr":"…","learner":false},…]}.
func Members(w io.Writer, resp *apiv1.MembersResponse, asJSON bool) error {
	if asJSON {
		type member struct {
			ID       uint64 `json:"id"`
			RaftAddr string `json:"raft_addr"`
			Learner  bool   `json:"learner"`
		}
		out := struct {
			Leader  uint64   `json:"leader"`
			Members []member `json:"members"`
		}{Leader: resp.GetLeader(), Members: []member{}}
		for _, m := range resp.GetMembers() {
			out.Members = append(out.Members, member{m.GetId(), m.GetRaftAddr(), m.GetLearner()})
		}
		return JSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDR\tKIND\tLEADER")
	for _, m := range resp.GetMembers() {
		kind, lead := "voter", ""
		if m.GetLearner() {
			kind = "learner"
		}
		if m.GetId() == resp.GetLeader() {
			lead = "*"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.GetId(), m.GetRaftAddr(), kind, lead)
	}
	return tw.Flush()
}

// FSMTable writes the plugin of every node in resp (`raftd fsm status`).
// A BUILD column follows when some node's plugin reports a build (one run
// by an interpreter, whose binary is only its launcher).
func FSMTable(w io.Writer, resp *apiv1.StatusResponse) error {
	builds := false
	for _, n := range resp.GetNodes() {
		builds = builds || n.GetFsm().GetBuild() != ""
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "ID\tFSM\tSUPPORTS\tACTIVE\tACTIVATED AT\tBINARY SHA256")
	if builds {
		fmt.Fprint(tw, "\tBUILD")
	}
	fmt.Fprintln(tw)
	for _, n := range resp.GetNodes() {
		if n.GetError() != "" {
			fmt.Fprintf(tw, "%d\tunreachable: %s\n", n.GetId(), OneLine(n.GetError()))
			continue
		}
		x := n.GetFsm()
		fmt.Fprintf(tw, "%d\t%s\t[%d, %d]\t%d\t%d\t%s", n.GetId(), Dash(x.GetName()), x.GetMinVersion(), x.GetMaxVersion(), x.GetVersion(), x.GetActivatedIndex(), Dash(x.GetBinarySha256()))
		if builds {
			fmt.Fprintf(tw, "\t%s", Dash(x.GetBuild()))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// ReloadTimeout is `raftd fsm reload`'s default --timeout: handing over a
// large state takes a while, and the node gives up when the caller does.
const ReloadTimeout = 5 * time.Minute

// Reload renders the answer of `raftd fsm reload`.
func Reload(w io.Writer, r *apiv1.ReloadFSMResponse) {
	x := r.GetFsm()
	fmt.Fprintf(w, "node %d: fsm %s [%d, %d] (sha256 %s, was %s) took over at index %d\n",
		r.GetNodeId(), x.GetName(), x.GetMinVersion(), x.GetMaxVersion(), Dash(x.GetBinarySha256()), Dash(r.GetOldBinarySha256()), r.GetIndex())
	fmt.Fprintf(w, "state: %d bytes at index %d (digest %x), then %d commands; took %s, apply paused %s\n",
		r.GetStateBytes(), r.GetSnapshotIndex(), r.GetDigest(), r.GetMirrored(),
		time.Duration(r.GetDurationMicros())*time.Microsecond, time.Duration(r.GetStallMicros())*time.Microsecond)
}

// checkpointLine writes the latest checkpoint the nodes agreed on, with
// the nodes that report it.
func checkpointLine(w io.Writer, resp *apiv1.StatusResponse) {
	var best *apiv1.Checkpoint
	var ids []string
	for _, n := range resp.GetNodes() {
		c := n.GetCheckpoint()
		switch {
		case c == nil:
		case best == nil || c.GetIndex() > best.GetIndex():
			best, ids = c, []string{strconv.FormatUint(n.GetId(), 10)}
		case c.GetIndex() == best.GetIndex():
			ids = append(ids, strconv.FormatUint(n.GetId(), 10))
		}
	}
	if best != nil {
		fmt.Fprintf(w, "last agreed checkpoint: index %d, digest %s (nodes %s)\n", best.GetIndex(), digestPrefix(best.GetDigest()), strings.Join(ids, ", "))
	}
}

// digestPrefix is the first 12 hex digits of a digest.
func digestPrefix(d []byte) string {
	s := hex.EncodeToString(d)
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return Dash(s)
}

// VerifyJSONShape is the shape of `raftd fsm verify --json`.
const VerifyJSONShape = `{"checkpoint_index":…,"verdict_index":…,"agreed_digest":"…","no_majority":false,"nodes":[{"id":…,"index":…,"digest":"…"}],"differ":[…]}`

// Verify writes the answer of `raftd fsm verify`: a table, or with asJSON
//
//	{"checkpoint_index":N,"verdict_index":M,"agreed_digest":"hex",
//	 "no_majority":false,"nodes":[{"id":1,"index":N,"digest":"hex"},
//	 {"id":3,"index":N,"error":"…"}],"differ":[3]}
//
// verdict_index is 0 (and agreed_digest absent) when too few nodes
// answered to decide; differ lists the nodes whose digest is not the
// agreed one (or that gave none).
func Verify(w io.Writer, resp *apiv1.VerifyFSMResponse, differ []uint64, asJSON bool) error {
	type nodeJSON struct {
		ID      uint64 `json:"id"`
		Learner bool   `json:"learner,omitempty"`
		Index   uint64 `json:"index"`
		Digest  string `json:"digest,omitempty"`
		Error   string `json:"error,omitempty"`
	}
	agreed := hex.EncodeToString(resp.GetAgreedDigest())
	if asJSON {
		out := struct {
			Checkpoint uint64     `json:"checkpoint_index"`
			Verdict    uint64     `json:"verdict_index"`
			Agreed     string     `json:"agreed_digest,omitempty"`
			NoMajority bool       `json:"no_majority"`
			Nodes      []nodeJSON `json:"nodes"`
			Differ     []uint64   `json:"differ"`
		}{resp.GetCheckpointIndex(), resp.GetVerdictIndex(), agreed, resp.GetNoMajority(), []nodeJSON{}, append([]uint64{}, differ...)}
		for _, n := range resp.GetNodes() {
			out.Nodes = append(out.Nodes, nodeJSON{n.GetId(), n.GetLearner(), resp.GetCheckpointIndex(), hex.EncodeToString(n.GetDigest()), n.GetError()})
		}
		return JSON(w, out)
	}
	switch {
	case resp.GetVerdictIndex() == 0:
		fmt.Fprintf(w, "checkpoint at index %d: undecided (too few nodes answered); nothing halted\n", resp.GetCheckpointIndex())
	case resp.GetNoMajority():
		fmt.Fprintf(w, "checkpoint at index %d: NO digest has a majority; every node halts at the verdict, index %d\n", resp.GetCheckpointIndex(), resp.GetVerdictIndex())
	default:
		fmt.Fprintf(w, "checkpoint at index %d: agreed digest %s (verdict at index %d)\n", resp.GetCheckpointIndex(), agreed, resp.GetVerdictIndex())
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tINDEX\tDIGEST\t")
	for _, n := range resp.GetNodes() {
		d, note := hex.EncodeToString(n.GetDigest()), "agrees"
		switch {
		case n.GetError() != "":
			d, note = "-", "no digest: "+OneLine(n.GetError())
		case resp.GetVerdictIndex() != 0 && slices.Contains(differ, n.GetId()):
			note = fmt.Sprintf("DIFFERS: halts at index %d", resp.GetVerdictIndex())
		case slices.Contains(differ, n.GetId()):
			note = "differs"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", n.GetId(), resp.GetCheckpointIndex(), d, note)
	}
	return tw.Flush()
}

// Leader writes the leader of resp (`raftd leader`): "ID raft=… api=…
// term=…", or with asJSON {"id":1,"raft_addr":"…","api_addr":"…","term":3}.
func Leader(w io.Writer, resp *apiv1.StatusResponse, asJSON bool) error {
	out := struct {
		ID       uint64 `json:"id"`
		RaftAddr string `json:"raft_addr"`
		APIAddr  string `json:"api_addr"`
		Term     uint64 `json:"term"`
	}{ID: resp.GetLeader(), Term: resp.GetTerm()}
	for _, n := range resp.GetNodes() {
		if n.GetId() == out.ID {
			out.RaftAddr, out.APIAddr = n.GetRaftAddr(), n.GetApiAddr()
		}
	}
	if asJSON {
		return JSON(w, out)
	}
	_, err := fmt.Fprintf(w, "%d raft=%s api=%s term=%d\n", out.ID, Dash(out.RaftAddr), Dash(out.APIAddr), out.Term)
	return err
}
