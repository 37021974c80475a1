package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// Entry data layout (raft.EntryNormal). The node, not the FSM, owns it:
//
//	len(Data) == 0                     no-op (a new leader's empty entry)
//	kindCommand  uvarint(proposer) uvarint(request id) payload
//	kindVersion  uvarint(proposer) uvarint(request id) uvarint(version)
//	kindSkip     uvarint(proposer) uvarint(request id) uvarint(index)
//	kindSession  uvarint(proposer) uvarint(request id) uvarint(len) client
//	             uvarint(seq) uvarint(acked) payload
//
// proposer and request id route the result back to the waiting caller on
// the proposing node; every other replica ignores them. Only kindCommand
// and kindSession payloads reach StateMachine.Apply, a kindSession one at
// most once per (client, seq) (sessions.go): client, seq and acked are the
// client's RequestID, and every replica decides on them alike. A kindSkip
// entry (Node.Skip) names the index of a command that replicas whose apply
// is halted there skip; it changes nothing on the others.
//
// kindCheckpoint and kindVerdict are the digest checkpoints of
// checkpoint.go:
//
//	kindCheckpoint uvarint(proposer) uvarint(request id)
//	kindVerdict  uvarint(proposer) uvarint(request id) uvarint(checkpoint index)
//	             uvarint(len) digest (len 0: no majority)
const (
	kindCommand byte = 1
	kindVersion byte = 2
	kindSkip    byte = 3
	kindSession byte = 4
	// kindCheckpoint: every replica records the state machine's digest
	// at this index (checkpoint.go).
	kindCheckpoint byte = 5
	// kindVerdict: the leader's verdict on a checkpoint: the digest a
	// majority of voters reported, or none (no majority).
	kindVerdict byte = 6
)

// maxDigestBytes bounds a digest in a verdict entry.
const maxDigestBytes = 64

// envelopeOverhead bounds the bytes encodeEnvelope adds to a payload.
const envelopeOverhead = 1 + 2*binary.MaxVarintLen64

type envelope struct {
	kind     byte
	proposer uint64
	req      uint64
	payload  []byte // kindCommand, kindSession
	version  uint32 // kindVersion
	skip     uint64 // kindSkip: the index of the command to skip
	ckpt     uint64 // kindVerdict: the checkpoint's index
	digest   []byte // kindVerdict: the agreed digest (nil: no majority)
	// kindSession: the RequestID; client aliases the entry's data.
	client     []byte
	seq, acked uint64
}

// requestID is a kindSession envelope's RequestID (a copy).
func (e *envelope) requestID() RequestID {
	return RequestID{Client: string(e.client), Seq: e.seq, Acked: e.acked}
}

func encodeCommand(proposer, req uint64, payload []byte) []byte {
	b := make([]byte, 0, envelopeOverhead+len(payload))
	b = append(b, kindCommand)
	b = binary.AppendUvarint(b, proposer)
	b = binary.AppendUvarint(b, req)
	return append(b, payload...)
}

func encodeSession(proposer, req uint64, id RequestID, payload []byte) []byte {
	b := make([]byte, 0, envelopeOverhead+3*binary.MaxVarintLen64+len(id.Client)+len(payload))
	b = append(b, kindSession)
	b = binary.AppendUvarint(b, proposer)
	b = binary.AppendUvarint(b, req)
	b = binary.AppendUvarint(b, uint64(len(id.Client)))
	b = append(b, id.Client...)
	b = binary.AppendUvarint(b, id.Seq)
	b = binary.AppendUvarint(b, id.Acked)
	return append(b, payload...)
}

func encodeVersion(proposer, req uint64, version uint32) []byte {
	b := make([]byte, 0, envelopeOverhead+binary.MaxVarintLen32)
	b = append(b, kindVersion)
	b = binary.AppendUvarint(b, proposer)
	b = binary.AppendUvarint(b, req)
	return binary.AppendUvarint(b, uint64(version))
}

func encodeSkip(proposer, req, index uint64) []byte {
	b := make([]byte, 0, envelopeOverhead+binary.MaxVarintLen64)
	b = append(b, kindSkip)
	b = binary.AppendUvarint(b, proposer)
	b = binary.AppendUvarint(b, req)
	return binary.AppendUvarint(b, index)
}

func encodeCheckpoint(proposer, req uint64) []byte {
	b := make([]byte, 0, envelopeOverhead)
	b = append(b, kindCheckpoint)
	b = binary.AppendUvarint(b, proposer)
	return binary.AppendUvarint(b, req)
}

func encodeVerdict(proposer, req, ckpt uint64, digest []byte) []byte {
	b := make([]byte, 0, envelopeOverhead+2*binary.MaxVarintLen64+len(digest))
	b = append(b, kindVerdict)
	b = binary.AppendUvarint(b, proposer)
	b = binary.AppendUvarint(b, req)
	b = binary.AppendUvarint(b, ckpt)
	b = binary.AppendUvarint(b, uint64(len(digest)))
	return append(b, digest...)
}

// decodeEnvelope parses non-empty entry data. The payload aliases data.
func decodeEnvelope(data []byte) (envelope, error) {
	var e envelope
	if len(data) == 0 {
		return e, errors.New("empty entry")
	}
	e.kind = data[0]
	rest := data[1:]
	var n int
	if e.proposer, n = binary.Uvarint(rest); n <= 0 {
		return e, errors.New("bad proposer id")
	}
	rest = rest[n:]
	if e.req, n = binary.Uvarint(rest); n <= 0 {
		return e, errors.New("bad request id")
	}
	rest = rest[n:]
	switch e.kind {
	case kindCommand:
		e.payload = rest
	case kindSession:
		cl, n := binary.Uvarint(rest)
		if n <= 0 || cl == 0 || cl > MaxClientIDBytes || cl > uint64(len(rest)-n) {
			return e, errors.New("bad request id client")
		}
		e.client = rest[n : n+int(cl) : n+int(cl)]
		rest = rest[n+int(cl):]
		if e.seq, n = binary.Uvarint(rest); n <= 0 || e.seq == 0 {
			return e, errors.New("bad request id seq")
		}
		rest = rest[n:]
		if e.acked, n = binary.Uvarint(rest); n <= 0 || e.acked > e.seq {
			return e, errors.New("bad request id acked")
		}
		e.payload = rest[n:]
	case kindVersion:
		v, n := binary.Uvarint(rest)
		if n <= 0 || n != len(rest) || v == 0 || v > 1<<32-1 {
			return e, errors.New("bad fsm version")
		}
		e.version = uint32(v)
	case kindSkip:
		v, n := binary.Uvarint(rest)
		if n <= 0 || n != len(rest) || v == 0 {
			return e, errors.New("bad skip index")
		}
		e.skip = v
	case kindCheckpoint:
		if len(rest) != 0 {
			return e, errors.New("bad checkpoint entry")
		}
	case kindVerdict:
		c, n := binary.Uvarint(rest)
		if n <= 0 || c == 0 {
			return e, errors.New("bad verdict checkpoint index")
		}
		rest = rest[n:]
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > maxDigestBytes || l != uint64(len(rest)-n) {
			return e, errors.New("bad verdict digest")
		}
		e.ckpt = c
		if l > 0 {
			e.digest = rest[n:]
		}
	default:
		return e, fmt.Errorf("unknown entry kind %d", e.kind)
	}
	return e, nil
}

// ccContext is the JSON carried in raft.ConfChange.Context.
type ccContext struct {
	RaftAddr string `json:"raft_addr,omitempty"`
	APIAddr  string `json:"api_addr,omitempty"`
	Proposer uint64 `json:"proposer,omitempty"`
	Req      uint64 `json:"req,omitempty"`
	// FSM is the cluster's FSM name, recorded in the first bootstrap entry
	// (index 1): a node that runs another FSM refuses to start or to apply
	// it.
	FSM string `json:"fsm,omitempty"`
}

func decodeCCContext(b []byte) (ccContext, error) {
	var c ccContext
	if len(b) == 0 {
		return c, nil
	}
	err := json.Unmarshal(b, &c)
	return c, err
}

// clusterMeta is the node-level state that rides along with the FSM state:
// the address book, the membership and the active FSM version, as of one
// applied index. It is stored in every snapshot header.
type clusterMeta struct {
	peers        map[uint64]Peer
	conf         raft.ConfState
	version      uint32 // active FSM version; 1 until an activation entry
	versionIndex uint64 // index of the activation entry (0: initial)
}

func newClusterMeta() clusterMeta {
	return clusterMeta{peers: map[uint64]Peer{}, version: 1}
}

func (m clusterMeta) clone() clusterMeta {
	c := m
	c.peers = make(map[uint64]Peer, len(m.peers))
	for k, v := range m.peers {
		c.peers[k] = v
	}
	c.conf = raft.ConfState{Voters: slices.Clone(m.conf.Voters), Learners: slices.Clone(m.conf.Learners)}
	return c
}

// applyConfChange updates the address book for cc (the membership itself
// comes from raft's ApplyConfChange).
func (m *clusterMeta) applyConfChange(cc raft.ConfChange, ctx ccContext) {
	switch cc.Type {
	case raft.ConfChangeAddNode, raft.ConfChangeAddLearner:
		p := m.peers[cc.NodeID]
		p.ID = cc.NodeID
		if ctx.RaftAddr != "" {
			p.RaftAddr = ctx.RaftAddr
		}
		if ctx.APIAddr != "" {
			p.APIAddr = ctx.APIAddr
		}
		m.peers[cc.NodeID] = p
	case raft.ConfChangeRemoveNode:
		delete(m.peers, cc.NodeID)
	}
}

// nextConfState computes the membership after cc, mirroring the core's
// single-change rules. Used only where raft's own answer is not at hand
// (replaying the log into a restarted state machine).
func nextConfState(cs raft.ConfState, cc raft.ConfChange) raft.ConfState {
	del := func(s []uint64, id uint64) []uint64 {
		return slices.DeleteFunc(slices.Clone(s), func(x uint64) bool { return x == id })
	}
	out := raft.ConfState{Voters: del(cs.Voters, cc.NodeID), Learners: del(cs.Learners, cc.NodeID)}
	switch cc.Type {
	case raft.ConfChangeAddNode:
		out.Voters = append(out.Voters, cc.NodeID)
	case raft.ConfChangeAddLearner:
		out.Learners = append(out.Learners, cc.NodeID)
	}
	slices.Sort(out.Voters)
	slices.Sort(out.Learners)
	return out
}

// SnapshotHeader is the one header of a snapshot (core/snapshot): index
// and term, membership and address book, FSM name, version and body
// format. The node builds it at its applied index (headerFromMeta); Storage
// stores it with the body; Restore receives it.
type SnapshotHeader = snapshot.Header

func headerFromMeta(idx, term uint64, m clusterMeta, fsmName, format string) SnapshotHeader {
	h := SnapshotHeader{
		Index: idx, Term: term,
		ConfState: raft.ConfState{Voters: slices.Clone(m.conf.Voters), Learners: slices.Clone(m.conf.Learners)},
		FSMName:   fsmName, FSMVersion: m.version, FSMVersionIndex: m.versionIndex, FSMFormat: format,
	}
	for _, p := range m.peers {
		h.Peers = append(h.Peers, snapshot.Peer(p))
	}
	slices.SortFunc(h.Peers, func(a, b snapshot.Peer) int { return cmpU64(a.ID, b.ID) })
	return h
}

// metaFromHeader is the cluster state a snapshot header records.
func metaFromHeader(h SnapshotHeader) clusterMeta {
	m := newClusterMeta()
	for _, p := range h.Peers {
		m.peers[p.ID] = Peer(p)
	}
	m.conf = raft.ConfState{Voters: slices.Clone(h.ConfState.Voters), Learners: slices.Clone(h.ConfState.Learners)}
	m.version = h.FSMVersion
	if m.version == 0 {
		m.version = 1
	}
	m.versionIndex = h.FSMVersionIndex
	return m
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
