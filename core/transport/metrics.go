package transport

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector for the transport's counters
// (raftd_transport_*), per-peer stream state and snapshot transfer
// durations (raftd_snapshot_send_seconds). Register it with the
// caller's registry; it reads the live counters at every scrape.
func (t *Transport) Collector() prometheus.Collector { return collector{t} }

type collector struct{ t *Transport }

var (
	descMessagesSent     = prometheus.NewDesc("raftd_transport_messages_sent_total", "Raft messages written to peer streams.", nil, nil)
	descBatchesSent      = prometheus.NewDesc("raftd_transport_batches_sent_total", "Message batches written to peer streams.", nil, nil)
	descMessagesDropped  = prometheus.NewDesc("raftd_transport_messages_dropped_total", "Outbound raft messages dropped (queue full, peer down or unknown, too large).", nil, nil)
	descMessagesReceived = prometheus.NewDesc("raftd_transport_messages_received_total", "Inbound raft messages passed to the node.", nil, nil)
	descSnapshotsSent    = prometheus.NewDesc("raftd_transport_snapshots_sent_total", "Outbound snapshot transfers by result.", []string{"result"}, nil)
	descSnapshotsRecv    = prometheus.NewDesc("raftd_transport_snapshots_received_total", "Inbound snapshot transfers accepted by the node.", nil, nil)
	descPeerConnected    = prometheus.NewDesc("raftd_transport_peer_connected", "1 if the message stream to the peer is up.", []string{"peer"}, nil)
)

// newSnapSendHistogram is raftd_snapshot_send_seconds, the duration of
// outbound snapshot transfers that completed: open the body, stream it,
// and the follower's acknowledgement.
func newSnapSendHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "raftd_snapshot_send_seconds",
		Help:    "Duration of completed outbound snapshot transfers to followers (leader).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	})
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMessagesSent, descBatchesSent, descMessagesDropped,
		descMessagesReceived, descSnapshotsSent, descSnapshotsRecv, descPeerConnected} {
		ch <- d
	}
	c.t.snapSend.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.t.snapSend.Collect(ch)
	st := c.t.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descMessagesSent, st.MessagesSent)
	counter(descBatchesSent, st.BatchesSent)
	counter(descMessagesDropped, st.MessagesDropped)
	counter(descMessagesReceived, st.MessagesReceived)
	counter(descSnapshotsSent, st.SnapshotsSent, "finish")
	counter(descSnapshotsSent, st.SnapshotsFailed, "failure")
	counter(descSnapshotsRecv, st.SnapshotsReceived)
	c.t.mu.RLock()
	defer c.t.mu.RUnlock()
	for id, p := range c.t.peers {
		v := 0.0
		if p.connected.Load() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descPeerConnected, prometheus.GaugeValue, v, strconv.FormatUint(id, 10))
	}
}
