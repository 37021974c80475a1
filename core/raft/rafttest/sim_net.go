package rafttest

// The simulated network: in-flight messages, partitions, loss,
// duplication and delivery.

import (
	"slices"

	"github.com/raftd/raftd/core/raft"
)

func (s *Sim) send(m raft.Message) {
	// A real network serializes at send time: copy what the engine might
	// reuse.
	if len(m.Entries) > 0 {
		m.Entries = slices.Clone(m.Entries)
	}
	if m.Snapshot != nil {
		sn := *m.Snapshot
		sn.Metadata.ConfState = cloneConf(sn.Metadata.ConfState)
		m.Snapshot = &sn
	}
	s.net = append(s.net, m)
	if len(s.net) > maxInFlightMsgs {
		s.dropAt(0, "network full")
	}
}

func (s *Sim) partitioned(a, b uint64) bool {
	return (s.group != nil && s.group[a] != s.group[b]) || s.oneWay[[2]uint64{a, b}]
}

func (s *Sim) dropAt(i int, why string) {
	m := s.net[i]
	s.net = slices.Delete(s.net, i, i+1)
	s.stats.MsgsDropped++
	s.tracef("drop (%s) %s", why, FormatMessage(m))
	s.reportDropped(m)
}

// reportDropped plays the transport: a lost snapshot is reported as failed
// and, sometimes, the peer as unreachable.
func (s *Sim) reportDropped(m raft.Message) {
	from := s.nodes[m.From]
	if from == nil || from.rn == nil {
		return
	}
	if m.Type == raft.MsgSnap {
		from.rn.ReportSnapshot(m.To, raft.SnapshotFailure)
	} else if s.rng.IntN(4) == 0 {
		from.rn.ReportUnreachable(m.To)
	}
}

func (s *Sim) dropRandom() {
	if len(s.net) > 0 {
		s.dropAt(s.rng.IntN(len(s.net)), "random")
	}
}

func (s *Sim) deliverRandom() error {
	if len(s.net) == 0 {
		return nil
	}
	// Mostly FIFO, sometimes any message (reordering).
	i := 0
	if s.rng.IntN(3) == 0 {
		i = s.rng.IntN(len(s.net))
	}
	m := s.net[i]
	s.net = slices.Delete(s.net, i, i+1)
	return s.deliver(m, true)
}

func (s *Sim) duplicateRandom() error {
	if len(s.net) == 0 {
		return nil
	}
	m := s.net[s.rng.IntN(len(s.net))]
	if !s.mayRedeliver(m) {
		return nil
	}
	m.Entries = slices.Clone(m.Entries)
	s.stats.MsgsDuped++
	s.tracef("duplicate:")
	return s.deliver(m, false)
}

// deliver steps m into its recipient. report says whether the sender's
// driver learns the outcome of a snapshot (a duplicate is not reported).
func (s *Sim) deliver(m raft.Message, report bool) error {
	return s.deliverMsg(m, report, false)
}

// deliverMsg is deliver; late messages were sent before the partition
// that now separates their ends, and cross it.
func (s *Sim) deliverMsg(m raft.Message, report, late bool) error {
	to := s.nodes[m.To]
	if to == nil || to.rn == nil || (!late && s.partitioned(m.From, m.To)) {
		s.stats.MsgsDropped++
		s.tracef("lost %s", FormatMessage(m))
		if report {
			s.reportDropped(m)
		}
		return nil
	}
	s.stats.MsgsDelivered++
	s.tracef("deliver %s", FormatMessage(m))
	switch {
	case m.Type == raft.MsgAppResp && m.Reject:
		s.stats.AppRejects++
	case m.Type == raft.MsgTimeoutNow:
		s.stats.TimeoutNows++
		if s.prof.leaseReads && s.group == nil && s.oneWay == nil && s.rng.IntN(2) == 0 {
			// The old leader is cut off just as its transfer target takes
			// over: it hears nothing of the new term, and its lease may
			// look valid.
			s.group = map[uint64]int{m.From: 1}
			s.stats.Partitions++
			s.tracef("partition: isolate %d as %d takes over", m.From, m.To)
			s.holdInFlight()
		}
	}
	if len(s.history) < 64 {
		s.history = append(s.history, m)
	} else {
		s.history[s.rng.IntN(64)] = m
	}
	if err := to.rn.Step(m); err != nil {
		s.tracef("  step error: %v", err)
	}
	if err := s.checkCommitDurable(to); err != nil {
		return err
	}
	if m.Type == raft.MsgSnap {
		s.stats.SnapsSent++
		if from := s.nodes[m.From]; report && from != nil && from.rn != nil {
			from.rn.ReportSnapshot(m.To, raft.SnapshotFinish)
		}
	}
	return s.maybeReady(to)
}

// mayRedeliver reports whether the network may deliver m a second time.
// With reused read contexts, a read request or answer delivered twice
// would answer a later read that reuses its context: a driver that reuses
// contexts cannot tell them apart, whatever the core does, so those two
// are delivered at most once (as a transport over one connection does).
func (s *Sim) mayRedeliver(m raft.Message) bool {
	return !s.prof.reuseReadCtx || (m.Type != raft.MsgReadIndex && m.Type != raft.MsgReadIndexResp)
}

// holdInFlight runs when a partition starts: with lease reads, each
// message already on the wire across it may still arrive (it was sent
// before the cut), late and in any order; the others are lost at delivery
// as usual.
func (s *Sim) holdInFlight() {
	if !s.prof.leaseReads {
		return
	}
	keep := s.net[:0]
	for _, m := range s.net {
		if s.partitioned(m.From, m.To) && s.rng.IntN(2) == 0 {
			s.late = append(s.late, m)
			continue
		}
		keep = append(keep, m)
	}
	s.net = keep
}

// deliverLate delivers one message held across a partition.
func (s *Sim) deliverLate() error {
	if len(s.late) == 0 {
		return nil
	}
	i := s.rng.IntN(len(s.late))
	m := s.late[i]
	s.late = slices.Delete(s.late, i, i+1)
	s.tracef("late:")
	return s.deliverMsg(m, true, true)
}

// heal ends any partition; messages held across it rejoin the network.
func (s *Sim) heal() {
	s.group, s.oneWay = nil, nil
	s.net = append(s.net, s.late...)
	s.late = nil
}
