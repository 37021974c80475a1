package node

import (
	"log/slog"
	"os"
)

// testLogger is the harness nodes' logger: silent unless RAFTD_NODE_LOG is
// set, then every level to stderr (go test -run X with RAFTD_NODE_LOG=1 to
// see what the nodes did).
var testLogger = func() *slog.Logger {
	if os.Getenv("RAFTD_NODE_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}()
