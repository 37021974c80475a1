package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Step is one element of a command stream: an Apply entry (Query false) or
// a query.
type Step struct {
	Query bool
	Data  []byte
	// Version, for an Apply step read from a commands file, is the
	// version set by the last "@version N" line (0: let the driver choose).
	Version uint32
}

// Generator produces a command stream.
type Generator interface {
	// Next returns the next step; ok is false at the end of the stream.
	Next() (s Step, ok bool)
}

// NewGenerator returns the built-in random generator for a bundled FSM name
// (counter, kv, queue), seeded, or false for other names.
func NewGenerator(name string, seed int64) (Generator, bool) {
	r := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	switch name {
	case "counter":
		return &counterGen{r: r}, true
	case "kv":
		return &kvGen{r: r}, true
	case "queue":
		return &queueGen{r: r}, true
	}
	return nil, false
}

// malformed are inputs every FSM must answer with a result, not a crash.
var malformed = [][]byte{
	nil,
	[]byte(`{`),
	[]byte(`[]`),
	[]byte(`null`),
	[]byte(`"put"`),
	[]byte(`42`),
	[]byte(`{"op":1}`),
	[]byte(`{"op":null}`),
	[]byte(`{"op":"nope"}`),
	[]byte(`{"OP":"put","key":"a","value":"b"}`),
	[]byte(`{"op":"put","key":1,"value":"x"}`),
	[]byte(`{"op":"put","key":"a","value":null}`),
	[]byte(`{"op":"put","key":"a"}`),
	[]byte(`{"op":"put","key":"a","value":"b"} trailing`),
	[]byte("\xff\xfe{}"),
	[]byte(`{"op":"add","delta":"1"}`),
	[]byte(`{"op":"add","delta":1.5}`),
	[]byte(`{"op":"add","delta":1e400}`),
	[]byte(`{"op":"push","item":["x"]}`),
	[]byte(`{"op":"cas","key":"a","new":"b"}`),
	[]byte(`{"op":"incr","key":"a","delta":true}`),
	[]byte(`{"op":"get"}`),
	[]byte(`{"op":"list","limit":-1}`),
	[]byte(`{"op":"list","limit":2.5}`),
	[]byte(`{"op":"list","prefix":7}`),
}

func pickMalformed(r *rand.Rand) []byte {
	if r.IntN(4) == 0 {
		b := make([]byte, 1+r.IntN(40))
		for i := range b {
			b[i] = byte(0x20 + r.IntN(0x5f)) // printable ASCII, almost never valid JSON
		}
		b[0] = '{'
		return b
	}
	return malformed[r.IntN(len(malformed))]
}

func mustJSON(v map[string]any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only plain strings and numbers are encoded
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

var specialStrings = []string{
	"", "a\"b", "back\\slash", "tab\tnl\nend", "\x01\x1f", "é", "日本語", "\u2028\u2029", "<&>", "/", "emoji 😀", "\x7f",
}

func randString(r *rand.Rand) string {
	if r.IntN(5) == 0 {
		return specialStrings[r.IntN(len(specialStrings))]
	}
	n := r.IntN(12)
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghij0123456789"[r.IntN(20)]
	}
	return string(b)
}

type counterGen struct{ r *rand.Rand }

func (g *counterGen) Next() (Step, bool) {
	r := g.r
	switch x := r.IntN(100); {
	case x < 5:
		return Step{Data: pickMalformed(r)}, true
	case x < 15:
		return Step{Query: true, Data: []byte(`{"op":"get"}`)}, true
	case x < 17:
		d := int64(1<<53 - 1)
		if r.IntN(2) == 0 {
			d = -d
		}
		return Step{Data: mustJSON(map[string]any{"op": "add", "delta": d})}, true
	default:
		return Step{Data: mustJSON(map[string]any{"op": "add", "delta": r.IntN(2001) - 1000})}, true
	}
}

type queueGen struct{ r *rand.Rand }

func (g *queueGen) Next() (Step, bool) {
	r := g.r
	switch x := r.IntN(100); {
	case x < 4:
		return Step{Data: pickMalformed(r)}, true
	case x < 10:
		return Step{Query: true, Data: []byte(`{"op":"peek"}`)}, true
	case x < 15:
		return Step{Query: true, Data: []byte(`{"op":"len"}`)}, true
	case x < 17:
		return Step{Query: true, Data: []byte(`{"op":"pop"}`)}, true // not a query op
	case x < 55:
		return Step{Data: []byte(`{"op":"pop"}`)}, true
	default:
		return Step{Data: mustJSON(map[string]any{"op": "push", "item": randString(r)})}, true
	}
}

type kvGen struct{ r *rand.Rand }

var kvValues = []string{"", "1", "-7", "0", "42", "007", "1.5", "-0", "9007199254740991", "x", "y", "hello", "日本", "a\"b"}

func (g *kvGen) key() string {
	if g.r.IntN(8) == 0 {
		return specialStrings[g.r.IntN(len(specialStrings))]
	}
	return "k" + strconv.Itoa(g.r.IntN(64))
}

func (g *kvGen) value() string {
	if g.r.IntN(2) == 0 {
		return kvValues[g.r.IntN(len(kvValues))]
	}
	return randString(g.r)
}

func (g *kvGen) Next() (Step, bool) {
	r := g.r
	switch x := r.IntN(100); {
	case x < 4:
		return Step{Data: pickMalformed(r)}, true
	case x < 12:
		return Step{Query: true, Data: mustJSON(map[string]any{"op": "get", "key": g.key()})}, true
	case x < 18:
		q := map[string]any{"op": "list"}
		if r.IntN(4) != 0 {
			q["prefix"] = []string{"", "k", "k1", "k2", "日", "a", "zz"}[r.IntN(7)]
		}
		if r.IntN(3) != 0 {
			q["limit"] = r.IntN(6)
		}
		return Step{Query: true, Data: mustJSON(q)}, true
	case x < 50:
		return Step{Data: mustJSON(map[string]any{"op": "put", "key": g.key(), "value": g.value()})}, true
	case x < 60:
		return Step{Data: mustJSON(map[string]any{"op": "delete", "key": g.key()})}, true
	case x < 75:
		var old any = g.value()
		if r.IntN(3) == 0 {
			old = nil
		}
		return Step{Data: mustJSON(map[string]any{"op": "cas", "key": g.key(), "old": old, "new": g.value()})}, true
	default:
		var delta any = r.IntN(201) - 100
		switch r.IntN(20) {
		case 0:
			delta = int64(1<<53 - 1)
		case 1:
			delta = 2.5
		case 2:
			delta = "3"
		}
		return Step{Data: mustJSON(map[string]any{"op": "incr", "key": g.key(), "delta": delta})}, true
	}
}

// fileGen reads a commands file: one step per line. A line is an Apply
// command; "?" followed by a query makes a query; "@version N" sets the
// version of the following commands; blank lines and lines starting with
// "#" are skipped.
type fileGen struct {
	sc      *bufio.Scanner
	line    int
	version uint32
	err     error
}

// NewFileGenerator reads steps from r in the commands-file format.
func NewFileGenerator(r io.Reader) Generator {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return &fileGen{sc: sc}
}

func (g *fileGen) Next() (Step, bool) {
	for g.sc.Scan() {
		g.line++
		line := g.sc.Text()
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "@version "):
			v, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "@version ")), 10, 32)
			if err != nil || v == 0 {
				g.err = fmt.Errorf("conformance: commands line %d: bad version %q", g.line, line)
				return Step{}, false
			}
			g.version = uint32(v)
			continue
		case strings.HasPrefix(line, "?"):
			return Step{Query: true, Data: []byte(line[1:])}, true
		default:
			return Step{Data: []byte(line), Version: g.version}, true
		}
	}
	if err := g.sc.Err(); err != nil && g.err == nil {
		g.err = fmt.Errorf("conformance: commands file: %w", err)
	}
	return Step{}, false
}

// Err reports a read or syntax error that ended the stream early.
func (g *fileGen) Err() error { return g.err }
