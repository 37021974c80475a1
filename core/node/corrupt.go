package node

import (
	"errors"
	"fmt"
	"io"

	"github.com/raftd/raftd/core/raft"
	"github.com/raftd/raftd/core/snapshot"
)

// Damaged stored data (DESIGN "Durability and bad input"): a Storage error
// matching ErrCorrupt fail-stops the node wherever the node, or the
// transport through SnapshotSource, reads it. Retrying cannot help (the
// same bytes are read again) and the data must never be served, installed
// or sent, so a leader whose own snapshot body fails its checksum stops
// instead of offering it to a follower again and again; the other members
// elect a leader whose storage is sound.

// failIfCorrupt fail-stops the node with err, prefixed by what was being
// read, if err reports damaged stored data. It reports whether it did.
// Safe from any goroutine.
func (n *Node) failIfCorrupt(err error, what string) bool {
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return false
	}
	n.fatal(fmt.Errorf("node: %s: %w", what, err))
	return true
}

// corruptWatch wraps a snapshot body opened from this node's Storage. It
// remembers the first read error that matches ErrCorrupt and, if onCorrupt
// is set, passes it on once (the error is still returned to the reader).
type corruptWatch struct {
	rc        io.ReadCloser
	onCorrupt func(error)
	err       error // first ErrCorrupt read error; reading goroutine only
}

func (w *corruptWatch) Read(p []byte) (int, error) {
	k, err := w.rc.Read(p)
	if err != nil && w.err == nil && errors.Is(err, ErrCorrupt) {
		w.err = err
		if w.onCorrupt != nil {
			w.onCorrupt(err)
		}
	}
	return k, err
}

func (w *corruptWatch) Close() error { return w.rc.Close() }

// Size is the length of the stream read, or -1 if unknown.
func (w *corruptWatch) Size() int64 {
	if s, ok := w.rc.(interface{ Size() int64 }); ok {
		return s.Size()
	}
	return -1
}

// or returns the damaged-data error w saw, if any, else err.
func (w *corruptWatch) or(err error) error {
	if w.err != nil {
		return w.err
	}
	return err
}

// openWatched opens the body of a snapshot of this node's own Storage for a
// reader outside the node (a follower, through the transport, or an export)
// and fail-stops the node if the body is found damaged, on open or on any
// read. what names the read in the error.
func (n *Node) openWatched(snapIndex uint64, open func() (io.ReadCloser, error), what string) (io.ReadCloser, error) {
	desc := fmt.Sprintf("snapshot at index %d (%s)", snapIndex, what)
	rc, err := open()
	if err != nil {
		n.failIfCorrupt(err, desc)
		return nil, err
	}
	return &corruptWatch{rc: rc, onCorrupt: func(err error) { n.failIfCorrupt(err, desc) }}, nil
}

// openStream opens snap from this node's Storage as a snapshot stream
// (core/snapshot: header, body, trailer) for a reader outside the node,
// watched like openWatched.
func (n *Node) openStream(snap raft.Snapshot, what string) (io.ReadCloser, error) {
	return n.openWatched(snap.Metadata.Index, func() (io.ReadCloser, error) {
		h, body, err := n.st.OpenSnapshot(snap)
		if err != nil {
			return nil, err
		}
		size := int64(-1)
		if h.Size > 0 {
			size = int64(len(h.Append(nil))) + h.Size + int64(snapshot.TrailerBytes)
		}
		return encodedSnapshot{Reader: snapshot.Encode(h, body), body: body, size: size}, nil
	}, what)
}

// encodedSnapshot is a stored snapshot's stream; Close closes its body.
type encodedSnapshot struct {
	io.Reader
	body io.Closer
	size int64 // the stream's length, -1 if unknown
}

func (e encodedSnapshot) Close() error { return e.body.Close() }
func (e encodedSnapshot) Size() int64  { return e.size }
