// Package progress tells a user who waits how far a transfer has come, on
// standard error, without touching standard output (which stays clean for
// scripts).
//
// On a terminal a Meter redraws one line ("\r") at most every
// RedrawInterval. Elsewhere it is silent unless asked for (raftd's
// --progress flag), and then writes plain lines: one at every tenth of the
// total crossed (or every LineBytes when the total is unknown) and one at
// the end, so that logs and tests see the same lines on every run.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// RedrawInterval bounds how often a terminal line is redrawn.
const RedrawInterval = 100 * time.Millisecond

// LineBytes is the step of plain lines when the total is unknown.
const LineBytes = 16 << 20

// IsTerminal reports whether w is a character device (a terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Enabled decides whether to show progress on w: the explicit choice if
// the user made one (set), else whether w is a terminal.
func Enabled(w io.Writer, set, want bool) bool {
	if set {
		return want
	}
	return IsTerminal(w)
}

// FlagUsage is the usage of a command's --progress flag, whose value goes
// to Enabled.
const FlagUsage = "report progress on stderr (default: only when stderr is a terminal)"

// For returns the Meter of a command writing to w if on (Enabled), else a
// silent one that only counts.
func For(w io.Writer, on bool, what string) *Meter {
	if !on {
		return New(nil, false, what)
	}
	return New(w, IsTerminal(w), what)
}

// Meter counts bytes towards a total and reports them. It is safe for
// concurrent use.
type Meter struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	total int64 // <= 0: unknown
	n     int64
	start time.Time
	drawn time.Time // last terminal redraw
	step  int64     // last tenth (or LineBytes step) printed as a line
	ended bool
	now   func() time.Time
}

// New returns a Meter that writes to w, prefixing its lines with what
// ("snapshot save"). tty selects redrawn terminal lines over plain lines.
// With a nil w it only counts.
func New(w io.Writer, tty bool, what string) *Meter {
	return &Meter{w: w, tty: tty, what: what, total: -1, now: time.Now, start: time.Now()}
}

// N returns the number of bytes counted.
func (m *Meter) N() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// SetTotal sets the number of bytes expected (<= 0: unknown).
func (m *Meter) SetTotal(total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total = total
}

// Add counts n more bytes and reports them when due.
func (m *Meter) Add(n int) {
	if n <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n += int64(n)
	switch {
	case m.w == nil:
		return
	case m.tty:
		if now := m.now(); now.Sub(m.drawn) >= RedrawInterval {
			m.drawn = now
			fmt.Fprintf(m.w, "\r%s: %s\x1b[K", m.what, m.line())
		}
		return
	}
	var step int64
	if m.total > 0 {
		step = min(m.n, m.total) * 10 / m.total
	} else {
		step = m.n / LineBytes
	}
	if step > m.step {
		m.step = step
		fmt.Fprintf(m.w, "%s: %s\n", m.what, m.line())
	}
}

// Done prints the final state (unless the last line already showed it)
// and ends a terminal line.
func (m *Meter) Done() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended || m.w == nil {
		return
	}
	m.ended = true
	switch {
	case m.tty:
		fmt.Fprintf(m.w, "\r%s: %s\x1b[K\n", m.what, m.line())
	case m.total <= 0 || m.step < 10:
		fmt.Fprintf(m.w, "%s: %s\n", m.what, m.line())
	}
}

// Writer returns w counting what is written through it.
func (m *Meter) Writer(w io.Writer) io.Writer { return meterWriter{w, m} }

// Reader returns r counting what is read through it.
func (m *Meter) Reader(r io.Reader) io.Reader { return meterReader{r, m} }

type meterWriter struct {
	w io.Writer
	m *Meter
}

func (mw meterWriter) Write(p []byte) (int, error) {
	n, err := mw.w.Write(p)
	mw.m.Add(n)
	return n, err
}

type meterReader struct {
	r io.Reader
	m *Meter
}

func (mr meterReader) Read(p []byte) (int, error) {
	n, err := mr.r.Read(p)
	mr.m.Add(n)
	return n, err
}

// line is "3.0 MiB of 10.0 MiB (30%), 25.1 MiB/s".
func (m *Meter) line() string {
	s := Bytes(m.n)
	if m.total > 0 {
		s += fmt.Sprintf(" of %s (%d%%)", Bytes(m.total), min(m.n, m.total)*100/m.total)
	}
	if d := m.now().Sub(m.start); d > 0 {
		s += fmt.Sprintf(", %s/s", Bytes(int64(float64(m.n)/d.Seconds())))
	}
	return s
}

// Bytes formats n bytes for people: "512 B", "3.0 KiB", "12.5 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
