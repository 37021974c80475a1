package transport

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftd/raftd/core/raft"
)

func TestCollector(t *testing.T) {
	bn := newBufnet()
	n1 := startNode(t, bn, 1, newRecorder(), nil)
	n2 := startNode(t, bn, 2, newRecorder(), nil)
	n1.tr.AddPeer(2, n2.addr)
	n1.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	recv(t, n2.h.msgs, "heartbeat")
	gather := func(tr *Transport) map[string]float64 {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(tr.Collector())
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "/" + l.GetValue()
				}
				out[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		return out
	}
	if got := gather(n2.tr)["raftd_transport_messages_received_total"]; got != 1 {
		t.Fatalf("received_total %v, want 1", got)
	}
	m1 := gather(n1.tr)
	if m1["raftd_transport_messages_sent_total"] != 1 || m1["raftd_transport_peer_connected/2"] != 1 {
		t.Fatalf("sender metrics %v", m1)
	}
	if _, ok := m1["raftd_transport_snapshots_sent_total/failure"]; !ok {
		t.Fatalf("no snapshot failure counter: %v", m1)
	}
}
