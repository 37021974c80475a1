package storage

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options configures a Store. A nil *Options means all defaults.
type Options struct {
	// FS is the filesystem everything (Pebble files and snapshot files) is
	// written through. The default is the operating system's, on which the
	// store creates directories 0700 and files 0600; tests use vfs.NewMem()
	// or an errorfs wrapper.
	FS vfs.FS
	// Logger receives the store's messages and Pebble's own. The default
	// discards them. Pebble never writes to stderr directly.
	Logger *slog.Logger
	// ClusterID and NodeID identify the owner of the data dir. On first use
	// they are stamped into it; later opens with a different non-zero value
	// are refused. Zero values are not checked (tools that only read).
	ClusterID string
	NodeID    uint64
	// DisableSync skips every fsync (Save with sync=true included). The zero
	// value is durable; only tests and benchmarks of other layers set it.
	DisableSync bool
	// MustExist refuses to open a data dir that does not exist yet. The
	// default creates it (and its parents).
	MustExist bool
	// CacheBytes is the size of Pebble's block cache. The default is 32 MiB.
	CacheBytes int64
	// KeepSnapshots is how many snapshot files are kept; older ones are
	// removed when a new one is committed. The default is 3; the minimum 1.
	KeepSnapshots int
	// CheckLogLater makes Open return before it has verified the whole log.
	// Open still reads and verifies the records and the last entry (the
	// log's end), checks the structure and the snapshot files; the scan of
	// every entry, of the log as it stood at Open, runs on a goroutine of
	// its own. LogChecked waits for it and returns what Open would have
	// returned: nothing may act on the log (start Raft) before LogChecked
	// returns nil. It lets a restart restore its state machine from a
	// snapshot file while the log is checked.
	CheckLogLater bool
}

const (
	defaultCacheBytes    = 32 << 20
	defaultKeepSnapshots = 3
)

// withDefaults returns a copy of o (nil allowed) with defaults filled in.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.FS == nil {
		r.FS = privateFS{vfs.Default}
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.CacheBytes <= 0 {
		r.CacheBytes = defaultCacheBytes
	}
	if r.KeepSnapshots <= 0 {
		r.KeepSnapshots = defaultKeepSnapshots
	}
	return r
}

// pebbleFatal is the panic value raised when Pebble reports an error it
// cannot continue from (Pebble's Logger.Fatalf must not return). Write paths
// recover it and return it as an error; the store then refuses all further
// writes.
type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return "storage: pebble fatal error: " + f.msg }

// pebbleLogger routes Pebble's logging to the store's logger, with the
// attribute dir=<data dir>.
type pebbleLogger struct {
	log *slog.Logger
	dir string
}

var _ pebble.Logger = pebbleLogger{}

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Info("storage: pebble: "+strings.TrimSpace(fmt.Sprintf(format, args...)), "dir", l.dir)
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("storage: pebble: "+strings.TrimSpace(fmt.Sprintf(format, args...)), "dir", l.dir)
}

// Fatalf logs and panics with a pebbleFatal. NB: Pebble calls it on the
// committing goroutine for WAL write failures (recovered by Store), and
// from background goroutines for failures it cannot surface otherwise, in
// which case the process dies, which is the intended fail-stop.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("storage: pebble fatal error: "+msg, "dir", l.dir)
	panic(pebbleFatal{msg: msg})
}
