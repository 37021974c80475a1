package node

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
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

// logBuffer keeps what a node logs at info and above, for tests that check
// what an operator would read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
