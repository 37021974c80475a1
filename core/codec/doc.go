// Package codec converts between the core's Raft types (core/raft) and their
// wire form (proto/raft/v1), for the transport and for storage.
//
// Conversions are zero-copy for byte slices: an encoded value aliases the
// Data and Context slices of its input, and a decoded value aliases those of
// the proto message it came from. Neither side may modify a slice after
// handing it over; the core already treats entry data as immutable once
// proposed.
//
// Round trips are the identity up to one normalization: the wire cannot
// tell a nil slice from an empty one, so decoding yields nil for every
// empty slice (Entries, Data, Context, Voters, Learners).
//
// For the transport's hot path, AppendBatch and DecodeBatch encode and
// decode a MessageBatch directly between raft.Message values and protobuf
// wire bytes, without the generated structs: one allocation per batch to
// encode, one []raft.Entry per message to decode, entry data aliased into
// the received buffer. Their bytes are the protobuf encoding of the same
// schema; a fuzz test holds DecodeBatch to the generated decoder.
//
// Decoding never panics on any input. A value that cannot be represented in
// the core's types (a message or entry type above 255) is rejected with an
// error that names the field.
package codec
