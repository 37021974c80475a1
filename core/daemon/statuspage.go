package daemon

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"time"

	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// statusPageTimeout bounds one /status.json answer: the node's own status
// and the fan-out to the members (each bounded by the API server's
// StatusTimeout, 1 s by default, in parallel).
const statusPageTimeout = 5 * time.Second

// statusPageHTML is the status page: plain HTML with a small script that
// polls /status.json; no build step, no external assets.
//
//go:embed web/index.html
var statusPageHTML []byte

func statusPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(statusPageHTML)
}

// statusJSON answers what `raftd status` shows, from the same fan-out (the
// API server's Status: this node, and every member asked in parallel): the
// proto/api/v1 StatusResponse in protojson form, with the .proto field
// names and every field present (64-bit integers are strings, as protojson
// writes them). On failure it answers 503 with {"error": "..."}.
func (m *metricsServer) statusJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	a := m.api.Load()
	if a == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "starting: the client API is not serving yet (replaying the log)")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusPageTimeout)
	defer cancel()
	resp, err := (*a).Status(ctx, &apiv1.StatusRequest{})
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "status: "+firstLine(status.Convert(err).Message()))
		return
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "status: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
