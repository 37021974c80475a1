package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/raftd/raftd/core/buildinfo"
)

// buildInfoCollector is raftd_build_info{version,commit,goversion} 1: which
// binary the node runs, for dashboards that compare versions across a
// rolling upgrade.
func buildInfoCollector() prometheus.Collector {
	in := buildinfo.Get()
	commit := in.Commit
	if in.Modified {
		commit += "+modified"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "raftd_build_info",
		Help:        "Always 1; labels name the raftd version, VCS commit and Go version.",
		ConstLabels: prometheus.Labels{"version": in.Version, "commit": commit, "goversion": in.GoVersion},
	})
	g.Set(1)
	return g
}
