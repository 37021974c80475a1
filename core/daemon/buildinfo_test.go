package daemon

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/raftd/raftd/core/buildinfo"
)

// TestMetricsBuildInfo checks raftd_build_info: 1, labelled with this
// binary's version, commit and Go version.
func TestMetricsBuildInfo(t *testing.T) {
	_, base := startMetrics(t, newFakeMetricsNode())
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", code, body)
	}
	in := buildinfo.Get()
	commit := in.Commit
	if in.Modified {
		commit += "+modified"
	}
	key := fmt.Sprintf(`raftd_build_info{commit=%q,goversion=%q,version=%q}`, commit, in.GoVersion, in.Version)
	if v, ok := parseMetrics(t, body)[key]; !ok || v != 1 {
		t.Fatalf("%s = %v (present %v), want 1 in:\n%s", key, v, ok, body)
	}
}
