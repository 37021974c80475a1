package progress

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// fake returns a Meter on a clock that moves 1 s per reading.
func fake(w io.Writer, tty bool) *Meter {
	m := New(w, tty, "snapshot save")
	t := time.Unix(1000, 0)
	m.start = t
	m.now = func() time.Time { t = t.Add(time.Second); return t }
	return m
}

func TestLinesKnownTotal(t *testing.T) {
	var buf bytes.Buffer
	m := fake(&buf, false)
	m.SetTotal(5 << 20)
	w := m.Writer(io.Discard)
	for range 10 {
		w.Write(make([]byte, 512<<10))
	}
	m.Done()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 10 {
		t.Fatalf("got %d lines, want one per tenth:\n%s", len(lines), buf.String())
	}
	for i, l := range lines {
		want := fmt.Sprintf("snapshot save: %s of 5.0 MiB (%d%%), ", Bytes(int64(i+1)*512<<10), (i+1)*10)
		if !strings.HasPrefix(l, want) || !strings.HasSuffix(l, "/s") {
			t.Errorf("line %d: %q, want prefix %q", i, l, want)
		}
	}
}

func TestLinesBigChunksAndUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	m := fake(&buf, false)
	m.SetTotal(100)
	m.Add(35) // crosses 10, 20, 30%: one line
	m.Add(65)
	m.Done()
	if got := strings.Count(buf.String(), "\n"); got != 2 || !strings.Contains(buf.String(), "35 B of 100 B (35%)") || !strings.Contains(buf.String(), "100 B of 100 B (100%)") {
		t.Fatalf("known total:\n%s", buf.String())
	}
	buf.Reset()
	m = fake(&buf, false)
	r := m.Reader(bytes.NewReader(make([]byte, LineBytes+5)))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	m.Done()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "snapshot save: 16.0 MiB, ") || strings.Contains(buf.String(), "%") {
		t.Fatalf("unknown total:\n%s", buf.String())
	}
}

func TestTerminalRedraw(t *testing.T) {
	var buf bytes.Buffer
	m := fake(&buf, true) // every reading is 1 s later: every Add redraws
	m.SetTotal(4)
	m.Add(1)
	m.Add(3)
	m.Done()
	m.Done()
	out := buf.String()
	if strings.Count(out, "\r") != 3 || strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "(100%), 0 B/s\x1b[K\n") {
		t.Fatalf("terminal output %q", out)
	}
}

func TestSilentMeterAndEnabled(t *testing.T) {
	m := New(nil, false, "x")
	m.SetTotal(3)
	m.Add(3)
	if _, err := m.Writer(io.Discard).Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	m.Done()
	if m.N() != 6 {
		t.Fatalf("counted %d bytes, want 6", m.N())
	}
	var buf bytes.Buffer
	For(&buf, false, "x").Add(5)
	if buf.Len() != 0 {
		t.Fatalf("For(off) wrote %q", buf.String())
	}
	on := For(&buf, true, "x")
	on.SetTotal(5)
	on.Add(5)
	if !strings.HasPrefix(buf.String(), "x: 5 B of 5 B (100%)") {
		t.Fatalf("For(on) on a buffer wrote %q, want a plain line", buf.String())
	}
	buf.Reset()
	if Enabled(&buf, false, true) || !Enabled(&buf, true, true) || Enabled(&buf, true, false) {
		t.Fatal("Enabled: a buffer is not a terminal; an explicit choice wins")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
