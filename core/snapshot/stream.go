package snapshot

import (
	"fmt"
	"hash/crc32"
	"io"
)

// Encode returns the stream of a snapshot with header h and the body read
// from body: the header part, the body as it is read (never held whole),
// then the trailer with the body's length and checksum, computed on the
// way. An error from body ends the stream with that error. h.Size and
// h.CRC32C are not used.
func Encode(h Header, body io.Reader) io.Reader {
	return &encoder{head: h.Append(nil), body: body}
}

type encoder struct {
	head []byte // unsent part of the header
	body io.Reader
	size int64
	crc  uint32
	tail []byte // unsent part of the trailer, once the body ended
	done bool   // body ended
}

func (e *encoder) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(e.head) > 0 {
		n := copy(p, e.head)
		e.head = e.head[n:]
		return n, nil
	}
	if !e.done {
		n, err := e.body.Read(p)
		e.crc = crc32.Update(e.crc, crcTable, p[:n])
		e.size += int64(n)
		switch {
		case err == io.EOF:
			e.done = true
			e.tail = AppendTrailer(nil, e.size, e.crc)
			if n > 0 {
				return n, nil
			}
		case err != nil:
			return n, err
		default:
			return n, nil
		}
	}
	if len(e.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, e.tail)
	e.tail = e.tail[n:]
	return n, nil
}

// Reader reads the body of a snapshot stream and checks it against the
// trailer: the Read that reaches the end returns io.EOF only if the length
// and checksum match, an error matching ErrCorrupt otherwise (or when the
// stream ends before a whole trailer). As for any checked stream, a
// consumer must discard everything it read when a Read returns another
// error than io.EOF. The body is never held whole: Reader keeps back at
// most one buffer (64 KiB plus the trailer).
type Reader struct {
	r      io.Reader
	buf    []byte
	lo, hi int // buf[lo:hi] is read from r and not yet returned
	eof    bool
	size   int64
	crc    uint32
	err    error // sticky: io.EOF after a verified end
}

// NewReader reads the header of the stream r and returns it with a Reader
// of the body.
func NewReader(r io.Reader) (Header, *Reader, error) {
	h, _, err := ReadHeader(r)
	if err != nil {
		return Header{}, nil, err
	}
	return h, &Reader{r: r, buf: make([]byte, 64<<10+TrailerBytes)}, nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		// Everything but the last TrailerBytes bytes seen is body.
		if avail := r.hi - r.lo - TrailerBytes; avail > 0 {
			n := copy(p, r.buf[r.lo:r.lo+avail])
			r.crc = crc32.Update(r.crc, crcTable, p[:n])
			r.size += int64(n)
			r.lo += n
			return n, nil
		}
		if r.eof {
			r.err = r.finish()
			return 0, r.err
		}
		if r.lo > 0 {
			r.hi = copy(r.buf, r.buf[r.lo:r.hi])
			r.lo = 0
		}
		n, err := r.r.Read(r.buf[r.hi:])
		r.hi += n
		switch {
		case err == io.EOF:
			r.eof = true
		case err != nil:
			r.err = err
			return 0, err
		}
	}
}

// finish checks the trailer, which is all that is left in buf.
func (r *Reader) finish() error {
	if r.hi-r.lo < TrailerBytes {
		return fmt.Errorf("%w: the stream ends %d bytes into the body, before its trailer", ErrCorrupt, r.size+int64(r.hi-r.lo))
	}
	size, crc, err := ParseTrailer(r.buf[r.lo:r.hi])
	if err != nil {
		return err
	}
	if size != r.size || crc != r.crc {
		return fmt.Errorf("%w: body of %d bytes with CRC32C %#08x, the trailer says %d bytes with CRC32C %#08x", ErrCorrupt, r.size, r.crc, size, crc)
	}
	return io.EOF
}

// Size returns the length of the body read so far (the whole body once
// Read returned io.EOF).
func (r *Reader) Size() int64 { return r.size }
