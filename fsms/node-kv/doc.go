// Package nodekv holds the Go-side tests and benchmarks of the Node.js kv
// plugin in this directory (index.js, started through the
// raftd-fsm-node-kv wrapper). The plugin itself is JavaScript; this
// package has no non-test code. The tests launch it through plugin/host
// exactly as raftd does and compare it with the Go kv (fsms/kv) on the same
// command stream: results, snapshot bodies and digests must be identical.
//
// The tests skip when node is not installed or `npm ci` has not been run
// in this directory (`make node` does it).
package nodekv
