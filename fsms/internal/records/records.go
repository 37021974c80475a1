package records

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/raftd/raftd/plugin/fsm"
)

// MaxRecordBytes bounds one record when decoding, so that a corrupt length
// cannot make the reader allocate gigabytes.
const MaxRecordBytes = 1 << 30

// Writer appends records to an underlying writer through a buffer.
type Writer struct {
	bw  *bufio.Writer
	hdr [4]byte
}

// NewWriter returns a Writer on w. Call Flush at the end.
func NewWriter(w io.Writer) *Writer { return &Writer{bw: bufio.NewWriterSize(w, 256<<10)} }

// Write appends one record.
func (w *Writer) Write(s string) error {
	binary.BigEndian.PutUint32(w.hdr[:], uint32(len(s)))
	if _, err := w.bw.Write(w.hdr[:]); err != nil {
		return err
	}
	_, err := w.bw.WriteString(s)
	return err
}

// Flush writes buffered data out.
func (w *Writer) Flush() error { return w.bw.Flush() }

// Reader decodes records.
type Reader struct {
	br  io.Reader
	off int64
}

// NewReader returns a Reader on r. A reader that already serves bytes from
// memory (an io.ByteReader: a bufio.Reader, bytes.Reader, or the plugin
// SDK's restore stream) is read directly; any other through a buffer.
func NewReader(r io.Reader) *Reader {
	if _, ok := r.(io.ByteReader); ok {
		return &Reader{br: r}
	}
	return &Reader{br: bufio.NewReaderSize(r, 256<<10)}
}

// Next returns the next record. It returns io.EOF at a clean end (between
// records) and an error wrapping fsm.ErrSnapshotCorrupt when the body ends
// inside a record or a length is absurd.
func (r *Reader) Next() (string, error) {
	var hdr [4]byte
	n, err := io.ReadFull(r.br, hdr[:])
	if err == io.EOF {
		return "", io.EOF
	}
	if err != nil {
		return "", r.corrupt(err, n)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > MaxRecordBytes {
		return "", fmt.Errorf("%w: record of %d bytes at offset %d", fsm.ErrSnapshotCorrupt, size, r.off)
	}
	buf := make([]byte, size)
	m, err := io.ReadFull(r.br, buf)
	if err != nil {
		return "", r.corrupt(err, 4+m)
	}
	r.off += 4 + int64(size)
	// NB: buf is this record's alone and never written again: the string
	// shares its memory instead of copying it (a state restored from a
	// snapshot is mostly these strings).
	return unsafe.String(unsafe.SliceData(buf), len(buf)), nil
}

// Next2 returns a pair of records; the first may end cleanly with io.EOF,
// the second must be present.
func (r *Reader) Next2() (string, string, error) {
	a, err := r.Next()
	if err != nil {
		return "", "", err
	}
	b, err := r.Next()
	if errors.Is(err, io.EOF) {
		return "", "", fmt.Errorf("%w: body ends after a key at offset %d", fsm.ErrSnapshotCorrupt, r.off)
	}
	return a, b, err
}

func (r *Reader) corrupt(err error, read int) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: body ends inside a record at offset %d", fsm.ErrSnapshotCorrupt, r.off+int64(read))
	}
	return err
}
