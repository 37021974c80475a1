package jsoncmd

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxSafe is the largest integer magnitude a command or result may carry
// (2^53-1, JavaScript's Number.MAX_SAFE_INTEGER).
const MaxSafe = 1<<53 - 1

// Cmd is a decoded JSON object: each field name with its raw JSON value.
// A field that occurs twice has its last value, as with encoding/json.
// Raw values may alias the parsed data, which must not change while the
// Cmd is in use.
type Cmd struct {
	n     int
	small [4]field
	more  []field // fields after the first len(small)
}

type field struct {
	name []byte
	raw  []byte
}

func (c *Cmd) add(name, raw []byte) {
	if c.n < len(c.small) {
		c.small[c.n] = field{name, raw}
	} else {
		c.more = append(c.more, field{name, raw})
	}
	c.n++
}

// get returns the raw value of the last field named name.
func (c *Cmd) get(name string) ([]byte, bool) {
	for i := len(c.more) - 1; i >= 0; i-- {
		if string(c.more[i].name) == name {
			return c.more[i].raw, true
		}
	}
	for i := min(c.n, len(c.small)) - 1; i >= 0; i-- {
		if string(c.small[i].name) == name {
			return c.small[i].raw, true
		}
	}
	return nil, false
}

// Parse decodes data as a JSON object. It reports false for invalid UTF-8,
// invalid JSON and non-object values.
//
// Commands are almost always flat objects of plain strings, numbers and
// literals; those are scanned here without allocating per field. Anything
// else (escapes, nested values, anything malformed) is decoded, or
// refused, by encoding/json: the answer is the same either way (the fuzz
// test compares them).
func Parse(data []byte) (Cmd, bool) {
	if !utf8.Valid(data) {
		return Cmd{}, false
	}
	var c Cmd
	if scanFlat(data, &c) {
		return c, true
	}
	return parseSlow(data)
}

// parseSlow is Parse by encoding/json.
func parseSlow(data []byte) (Cmd, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return Cmd{}, false
	}
	var c Cmd
	for k, v := range m {
		c.add([]byte(k), v)
	}
	return c, true
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func skipSpace(d []byte, i int) int {
	for i < len(d) && isSpace(d[i]) {
		i++
	}
	return i
}

// scanFlat parses d, already known to be valid UTF-8, as an object whose
// keys and string values have no escapes and whose values are strings,
// numbers, true, false or null. It reports false, with c unspecified, for
// anything else (which may still be valid JSON).
func scanFlat(d []byte, c *Cmd) bool {
	i := skipSpace(d, 0)
	if i >= len(d) || d[i] != '{' {
		return false
	}
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		return skipSpace(d, i+1) == len(d)
	}
	for {
		// Key.
		end, ok := scanString(d, i)
		if !ok {
			return false
		}
		name := d[i+1 : end-1]
		i = skipSpace(d, end)
		if i >= len(d) || d[i] != ':' {
			return false
		}
		i = skipSpace(d, i+1)
		// Value.
		if i >= len(d) {
			return false
		}
		switch b := d[i]; {
		case b == '"':
			end, ok = scanString(d, i)
		case b == '-' || (b >= '0' && b <= '9'):
			end, ok = scanNumber(d, i)
		case b == 't':
			end, ok = scanLiteral(d, i, "true")
		case b == 'f':
			end, ok = scanLiteral(d, i, "false")
		case b == 'n':
			end, ok = scanLiteral(d, i, "null")
		default:
			return false
		}
		if !ok {
			return false
		}
		c.add(name, d[i:end:end])
		i = skipSpace(d, end)
		if i >= len(d) {
			return false
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case '}':
			return skipSpace(d, i+1) == len(d)
		default:
			return false
		}
	}
}

// scanString returns the end (after the closing quote) of the string at
// d[i], which has no escapes and no control characters.
func scanString(d []byte, i int) (int, bool) {
	if i >= len(d) || d[i] != '"' {
		return 0, false
	}
	for j := i + 1; j < len(d); j++ {
		switch b := d[j]; {
		case b == '"':
			return j + 1, true
		case b == '\\' || b < 0x20:
			return 0, false
		}
	}
	return 0, false
}

func digits(d []byte, i int) int {
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	return i
}

// scanNumber returns the end of the JSON number at d[i]:
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(d []byte, i int) (int, bool) {
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		i = digits(d, i+1)
	default:
		return 0, false
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func scanLiteral(d []byte, i int, lit string) (int, bool) {
	if len(d)-i < len(lit) || string(d[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// ParseOp decodes data as a command or query object (kind is "command" or
// "query") and returns it with its "op" field. When data is not such an
// object, or has no string op, it returns the error result to answer with
// instead (the same text in every bundled FSM, as docs/plugin-protocol.md
// specifies).
func ParseOp(data []byte, kind string) (c Cmd, op string, errResult []byte) {
	c, ok := Parse(data)
	if !ok {
		return Cmd{}, "", Error("malformed " + kind)
	}
	op, ok = c.String("op")
	if !ok {
		return Cmd{}, "", Error("missing op")
	}
	return c, op, nil
}

// Has reports whether the field is present (with any value, even null).
func (c *Cmd) Has(field string) bool {
	_, ok := c.get(field)
	return ok
}

// String returns a string field; false if absent or not a JSON string.
func (c *Cmd) String(field string) (string, bool) {
	raw, ok := c.get(field)
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if len(raw) >= 2 && bytes.IndexByte(raw, '\\') < 0 {
		// Parse checked it: a whole JSON string of valid UTF-8 without
		// escapes is its own contents.
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// IsNull reports whether the field is present and null.
func (c *Cmd) IsNull(field string) bool {
	raw, ok := c.get(field)
	return ok && string(raw) == "null"
}

// Int returns an integer field: a JSON number that, parsed as a correctly
// rounded IEEE-754 double, is integral with magnitude <= MaxSafe.
func (c *Cmd) Int(field string) (int64, bool) {
	raw, ok := c.get(field)
	if !ok || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		// Out of range parses to +-Inf (not an integer); anything else is
		// not a number at all.
		return 0, false
	}
	if f != math.Trunc(f) || math.Abs(f) > MaxSafe {
		return 0, false
	}
	return int64(f), true
}

// AddSafe returns a+b and true, or false if the sum leaves the safe range.
// Both inputs must be within the safe range.
func AddSafe(a, b int64) (int64, bool) {
	s := a + b // cannot overflow int64 for safe inputs
	if s > MaxSafe || s < -MaxSafe {
		return 0, false
	}
	return s, true
}

// Error returns the canonical {"error":msg} result.
func Error(msg string) []byte {
	b := make([]byte, 0, len(msg)+12)
	b = append(b, `{"error":`...)
	b = AppendString(b, msg)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string escaped the way ECMAScript
// JSON.stringify does: only '"', '\\' and code points below U+0020 are
// escaped, with lowercase hex.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendInt appends v in decimal.
func AppendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

// AppendBool appends true or false.
func AppendBool(b []byte, v bool) []byte { return strconv.AppendBool(b, v) }
