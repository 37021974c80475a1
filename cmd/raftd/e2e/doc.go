// Package e2e runs real raftd processes on loopback: clusters of `raftd run`
// with the bundled plugins, crash and stop faults, linearizability checks of
// client histories (porcupine), and the CLI's error paths.
//
// The binaries come from $RAFTD_BIN (set by `make test`) or are built into a
// temporary directory by TestMain. Every process is started on random free
// 127.0.0.1 ports and killed by PID when its test ends. Long variants run
// only with RAFTD_SOAK=1.
package e2e
