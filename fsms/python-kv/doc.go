// Package pythonkv holds the Go-side tests and benchmarks of the Python kv
// plugin in this directory (raftd-fsm-python-kv, the pykv package next to
// it). The plugin itself is Python; this package has no non-test code. The
// tests launch it through plugin/host exactly as raftd does and compare it
// with the Go kv (fsms/kv) on the same command streams: results, snapshot
// bodies and digests must be identical. They also run the conformance
// checker (raftd fsm test --fsm2) of the Python kv against the Go kv.
//
// The plugin runs on /usr/bin/python3 with Debian's python3-grpcio and
// python3-protobuf. Without them the tests skip, except in CI (CI set),
// where they fail.
package pythonkv
