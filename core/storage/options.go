package storage

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/raftd/raftd/core/raft"
)

// Options configures a Store. A nil *Options means all defaults.
type Options struct {
	// FS is the filesystem everything (Pebble files and snapshot files) is
	// written through. The default is the operating system's; tests use
	// vfs.NewMem() or an errorfs wrapper.
	FS vfs.FS
	// Logger receives the store's messages and Pebble's own. The default
	// discards them. Pebble never writes to stderr directly.
	Logger raft.Logger
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
		r.FS = vfs.Default
	}
	if r.Logger == nil {
		r.Logger = discardLogger{}
	}
	if r.CacheBytes <= 0 {
		r.CacheBytes = defaultCacheBytes
	}
	if r.KeepSnapshots <= 0 {
		r.KeepSnapshots = defaultKeepSnapshots
	}
	return r
}

type discardLogger struct{}

func (discardLogger) Debugf(string, ...any)   {}
func (discardLogger) Infof(string, ...any)    {}
func (discardLogger) Warningf(string, ...any) {}
func (discardLogger) Errorf(string, ...any)   {}

// pebbleFatal is the panic value raised when Pebble reports an error it
// cannot continue from (Pebble's Logger.Fatalf must not return). Write paths
// recover it and return it as an error; the store then refuses all further
// writes.
type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return "storage: pebble fatal error: " + f.msg }

// pebbleLogger routes Pebble's logging to a raft.Logger.
type pebbleLogger struct {
	log raft.Logger
	dir string
}

var _ pebble.Logger = pebbleLogger{}

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Infof("storage: pebble %s: %s", l.dir, fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Errorf("storage: pebble %s: %s", l.dir, fmt.Sprintf(format, args...))
}

// Fatalf logs and panics with a pebbleFatal. NB: Pebble calls it on the
// committing goroutine for WAL write failures (recovered by Store), and
// from background goroutines for failures it cannot surface otherwise, in
// which case the process dies, which is the intended fail-stop.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Errorf("storage: pebble %s: fatal: %s", l.dir, msg)
	panic(pebbleFatal{msg: msg})
}
