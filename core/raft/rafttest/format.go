package rafttest

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/raftd/raftd/core/raft"
)

// FormatEntry renders an entry as term/index followed by its contents:
// normal entries show their data quoted (empty entries show nothing), conf
// changes show the decoded change.
func FormatEntry(e raft.Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d", e.Term, e.Index)
	switch e.Type {
	case raft.EntryConfChange:
		var cc raft.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			fmt.Fprintf(&b, " conf-change(undecodable: %v)", err)
		} else {
			fmt.Fprintf(&b, " %s %d", cc.Type, cc.NodeID)
		}
	default:
		if len(e.Data) > 0 {
			b.WriteByte(' ')
			b.WriteString(strconv.Quote(string(e.Data)))
		}
	}
	return b.String()
}

// FormatEntries renders entries separated by ", ".
func FormatEntries(ents []raft.Entry) string {
	parts := make([]string, len(ents))
	for i, e := range ents {
		parts[i] = FormatEntry(e)
	}
	return strings.Join(parts, ", ")
}

// FormatMessage renders a message on one line, showing only the fields
// that matter for its type (see raft.Message).
func FormatMessage(m raft.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d->%d %s Term:%d", m.From, m.To, m.Type, m.Term)
	switch m.Type {
	case raft.MsgApp:
		fmt.Fprintf(&b, " Log:%d/%d Commit:%d", m.LogTerm, m.Index, m.Commit)
		if len(m.Entries) > 0 {
			fmt.Fprintf(&b, " Entries:[%s]", FormatEntries(m.Entries))
		}
	case raft.MsgAppResp:
		if m.Reject {
			fmt.Fprintf(&b, " Rejected Index:%d Hint:%d/%d", m.Index, m.LogTerm, m.RejectHint)
		} else {
			fmt.Fprintf(&b, " Index:%d", m.Index)
		}
	case raft.MsgVote, raft.MsgPreVote:
		fmt.Fprintf(&b, " Log:%d/%d", m.LogTerm, m.Index)
		if len(m.Context) > 0 {
			fmt.Fprintf(&b, " Context:%q", m.Context)
		}
	case raft.MsgVoteResp, raft.MsgPreVoteResp:
		if m.Reject {
			b.WriteString(" Rejected")
		} else {
			b.WriteString(" Granted")
		}
	case raft.MsgHeartbeat:
		fmt.Fprintf(&b, " Commit:%d", m.Commit)
		formatReadRound(&b, m.Context)
	case raft.MsgHeartbeatResp:
		formatReadRound(&b, m.Context)
	case raft.MsgSnap:
		if m.Snapshot != nil {
			md := m.Snapshot.Metadata
			fmt.Fprintf(&b, " Snapshot:%d/%d %s", md.Term, md.Index, FormatConfState(md.ConfState))
		}
	case raft.MsgProp:
		fmt.Fprintf(&b, " Entries:[%s]", FormatEntries(m.Entries))
	case raft.MsgReadIndex, raft.MsgReadIndexResp:
		if m.Type == raft.MsgReadIndexResp {
			fmt.Fprintf(&b, " Index:%d", m.Index)
		}
		if len(m.Entries) > 0 {
			fmt.Fprintf(&b, " Context:%q", m.Entries[0].Data)
		}
		if len(m.Context) > 0 {
			fmt.Fprintf(&b, " Context:%q", m.Context)
		}
	default:
		if m.Index != 0 || m.LogTerm != 0 {
			fmt.Fprintf(&b, " Log:%d/%d", m.LogTerm, m.Index)
		}
		if m.Reject {
			b.WriteString(" Rejected")
		}
	}
	return b.String()
}

// FormatConfState renders a configuration as voters=(..) learners=(..).
func FormatConfState(cs raft.ConfState) string {
	s := "voters=(" + joinIDs(cs.Voters) + ")"
	if len(cs.Learners) > 0 {
		s += " learners=(" + joinIDs(cs.Learners) + ")"
	}
	return s
}

func joinIDs(ids []uint64) string {
	sorted := append([]uint64(nil), ids...)
	sortIDs(sorted)
	parts := make([]string, len(sorted))
	for i, id := range sorted {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, " ")
}

// formatReadRound renders a heartbeat's Context: the leader's read round
// (8 bytes, big-endian), or anything else quoted.
func formatReadRound(b *strings.Builder, ctx []byte) {
	switch {
	case len(ctx) == 8:
		fmt.Fprintf(b, " ReadRound:%d", binary.BigEndian.Uint64(ctx))
	case len(ctx) > 0:
		fmt.Fprintf(b, " Context:%q", ctx)
	}
}
