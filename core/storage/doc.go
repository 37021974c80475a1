// Package storage is the durable state of one raftd node: the Raft log and
// hard state in Pebble (github.com/cockroachdb/pebble/v2), and snapshot
// files. The on-disk format is described in docs/storage-format.md.
//
// A Store implements raft.LogReader for the core and offers the write side
// the driver uses after each Ready (core/raft doc.go):
//
//	// BEFORE sending rd.Messages:
//	if !rd.Snapshot.IsEmpty() {
//		err = store.ApplySnapshot(rd.Snapshot) // synced
//	}
//	err = store.Save(rd.HardState, rd.Entries, rd.MustSync) // one batch, <= 1 fsync
//	// ... send, apply, Advance.
//	// After taking a snapshot at applied index i:
//	err = store.Compact(i - trailing)
//
// Save is safe for concurrent callers and concurrent synced Saves share
// fsyncs; SaveAsync splits a Save into "applied and ordered" and "durable"
// for callers that order their writes under a lock of their own.
//
// Every stored record carries a CRC32C that reads verify; damaged data is
// reported as a *CorruptionError (errors.Is(err, ErrCorrupt)) and is never
// returned as if it were good. Write errors are returned once and make the
// store refuse further writes: the driver must stop (fail-stop).
//
// Snapshot files live in <data-dir>/snapshots, each one snapshot stream in
// the core/snapshot framing (header, body, trailer): CreateSnapshot writes
// the header and returns a streaming writer of the body whose Commit adds
// the trailer and makes the file durable atomically, and OpenSnapshot
// returns the header and a reader of the body that verifies the checksum
// at the end. A
// file counts as the node's snapshot (Snapshot, InitialState) once the
// saved commit index reaches its index, or when it is installed with
// ApplySnapshot.
package storage
