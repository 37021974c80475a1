// Package records reads and writes the length-prefixed records used by the
// bundled FSMs' canonical encodings: u32 big-endian length, then the bytes
// (docs/plugin-protocol.md section 7).
package records
