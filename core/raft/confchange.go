package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// confChangeEncodingVersion is the first byte of an encoded ConfChange.
const confChangeEncodingVersion = 1

// maxConfChangeContextBytes bounds the Context accepted by Unmarshal so a
// corrupt length cannot make it allocate without limit.
const maxConfChangeContextBytes = 1 << 20

// Marshal encodes cc as: version byte (1), type byte, uvarint NodeID,
// uvarint len(Context), Context. The encoding is stable: it is stored in
// the replicated log.
func (cc ConfChange) Marshal() []byte {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+len(cc.Context))
	b = append(b, confChangeEncodingVersion, byte(cc.Type))
	b = binary.AppendUvarint(b, cc.NodeID)
	b = binary.AppendUvarint(b, uint64(len(cc.Context)))
	return append(b, cc.Context...)
}

// Unmarshal decodes data produced by Marshal into cc. It returns an error,
// and leaves cc unchanged, if data is truncated, has trailing bytes, an
// unknown version or an unknown change type. cc.Context does not alias data.
func (cc *ConfChange) Unmarshal(data []byte) error {
	if len(data) < 2 {
		return errors.New("raft: conf change: truncated header")
	}
	if data[0] != confChangeEncodingVersion {
		return fmt.Errorf("raft: conf change: unknown encoding version %d", data[0])
	}
	t := ConfChangeType(data[1])
	if t > ConfChangeAddLearner {
		return fmt.Errorf("raft: conf change: unknown type %d", data[1])
	}
	rest := data[2:]
	id, n := binary.Uvarint(rest)
	if n <= 0 {
		return errors.New("raft: conf change: bad node id")
	}
	rest = rest[n:]
	l, n := binary.Uvarint(rest)
	if n <= 0 {
		return errors.New("raft: conf change: bad context length")
	}
	rest = rest[n:]
	if l > maxConfChangeContextBytes || l != uint64(len(rest)) {
		return fmt.Errorf("raft: conf change: context length %d does not match the %d bytes left", l, len(rest))
	}
	var ctx []byte
	if l > 0 {
		ctx = append([]byte(nil), rest...)
	}
	*cc = ConfChange{Type: t, NodeID: id, Context: ctx}
	return nil
}
