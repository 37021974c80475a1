package jsoncmd

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxSafe is the largest integer magnitude a command or result may carry
// (2^53-1, JavaScript's Number.MAX_SAFE_INTEGER).
const MaxSafe = 1<<53 - 1

// Cmd is a decoded JSON object: field name to raw JSON value.
type Cmd map[string]json.RawMessage

// Parse decodes data as a JSON object. It reports false for invalid UTF-8,
// invalid JSON and non-object values.
func Parse(data []byte) (Cmd, bool) {
	if !utf8.Valid(data) {
		return nil, false
	}
	var c Cmd
	if err := json.Unmarshal(data, &c); err != nil || c == nil {
		return nil, false
	}
	return c, true
}

// ParseOp decodes data as a command or query object (kind is "command" or
// "query") and returns it with its "op" field. When data is not such an
// object, or has no string op, it returns the error result to answer with
// instead (the same text in every bundled FSM, as docs/plugin-protocol.md
// specifies).
func ParseOp(data []byte, kind string) (c Cmd, op string, errResult []byte) {
	c, ok := Parse(data)
	if !ok {
		return nil, "", Error("malformed " + kind)
	}
	op, ok = c.String("op")
	if !ok {
		return nil, "", Error("missing op")
	}
	return c, op, nil
}

// Has reports whether the field is present (with any value, even null).
func (c Cmd) Has(field string) bool {
	_, ok := c[field]
	return ok
}

// String returns a string field; false if absent or not a JSON string.
func (c Cmd) String(field string) (string, bool) {
	raw, ok := c[field]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// IsNull reports whether the field is present and null.
func (c Cmd) IsNull(field string) bool {
	raw, ok := c[field]
	return ok && string(raw) == "null"
}

// Int returns an integer field: a JSON number that, parsed as a correctly
// rounded IEEE-754 double, is integral with magnitude <= MaxSafe.
func (c Cmd) Int(field string) (int64, bool) {
	raw, ok := c[field]
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
