package cli

import (
	"io"
	"sync"
)

// gateWriter holds log output back until the node has started: a failed
// start then prints only its one-line error. It is safe for concurrent use.
type gateWriter struct {
	mu   sync.Mutex
	out  io.Writer
	buf  []byte
	open bool
	drop bool
}

const gateMaxBytes = 1 << 20

func newGate(out io.Writer) *gateWriter { return &gateWriter{out: out} }

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.open:
		return g.out.Write(p)
	case g.drop:
		return len(p), nil
	}
	if len(g.buf)+len(p) <= gateMaxBytes {
		g.buf = append(g.buf, p...)
	}
	return len(p), nil
}

// Open writes what was held back and passes later output through.
func (g *gateWriter) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		_, _ = g.out.Write(g.buf)
		g.buf, g.open = nil, true
	}
}

// Discard drops what was held back and everything later.
func (g *gateWriter) Discard() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf, g.drop = nil, true
}
