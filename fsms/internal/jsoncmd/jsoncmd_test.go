package jsoncmd

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func mustParse(t testing.TB, s string) Cmd {
	t.Helper()
	c, ok := Parse([]byte(s))
	if !ok {
		t.Fatalf("Parse(%s) failed", s)
	}
	return c
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":               `""`,
		"plain":          `"plain"`,
		"\"\\":           `"\"\\"`,
		"\b\f\n\r\t":     `"\b\f\n\r\t"`,
		"\x00\x1f\x0b":   `"\u0000\u001f\u000b"`,
		"\x7f/<&>":       "\"\x7f/<&>\"",
		"\u2028\u2029é😀": "\"\u2028\u2029é😀\"",
	} {
		if got := string(AppendString(nil, in)); got != want {
			t.Errorf("AppendString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestInt(t *testing.T) {
	for raw, want := range map[string]int64{"0": 0, "-0": 0, "12": 12, "1e3": 1000, "1.0": 1, "-9007199254740991": -MaxSafe, "1E2": 100} {
		c := mustParse(t, `{"d":`+raw+`}`)
		if got, ok := c.Int("d"); !ok || got != want {
			t.Errorf("Int(%s) = %d %v, want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{"1.5", `"1"`, "true", "null", "9007199254740992", "1e400", "-1e400", "[1]"} {
		if c := mustParse(t, `{"d":`+raw+`}`); func() bool { _, ok := c.Int("d"); return ok }() {
			t.Errorf("Int(%s) accepted", raw)
		}
	}
	if c := mustParse(t, `{}`); func() bool { _, ok := c.Int("d"); return ok }() {
		t.Error("missing field accepted")
	}
}

// checkSame fails unless Parse agrees with encoding/json decoding data into
// a map of raw values: the same acceptance and, when accepted, the same
// fields with the same raw values and the same String/Int/IsNull answers.
func checkSame(t *testing.T, data []byte) {
	t.Helper()
	var want map[string]json.RawMessage
	werr := json.Unmarshal(data, &want)
	wantOK := werr == nil && want != nil && utf8.Valid(data)
	c, ok := Parse(data)
	if ok != wantOK {
		t.Fatalf("Parse(%q) ok = %v, encoding/json ok = %v (%v)", data, ok, wantOK, werr)
	}
	if !ok {
		return
	}
	for i := 0; i < c.n; i++ {
		f := c.more
		if i < len(c.small) {
			f = c.small[i : i+1]
		} else {
			f = c.more[i-len(c.small) : i-len(c.small)+1]
		}
		if _, ok := want[string(f[0].name)]; !ok {
			t.Fatalf("Parse(%q) has field %q, encoding/json does not", data, f[0].name)
		}
	}
	for k, raw := range want {
		got, ok := c.get(k)
		if !ok || !bytes.Equal(got, raw) {
			t.Fatalf("Parse(%q) field %q = %q %v, want %q", data, k, got, ok, raw)
		}
		var ws string
		wsOK := json.Unmarshal(raw, &ws) == nil && len(raw) > 0 && raw[0] == '"'
		if gs, gok := c.String(k); gok != wsOK || gs != ws {
			t.Fatalf("Parse(%q).String(%q) = %q %v, want %q %v", data, k, gs, gok, ws, wsOK)
		}
		if c.IsNull(k) != (string(raw) == "null") {
			t.Fatalf("Parse(%q).IsNull(%q) wrong", data, k)
		}
	}
}

// scanFlatFields counts the fields the fast scanner records (duplicates
// included), or -1 when it does not take the input.
func scanFlatFields(data []byte) int {
	var c Cmd
	if !scanFlat(data, &c) {
		return -1
	}
	return c.n
}

var parseCases = []string{
	`{"op":"put","key":"k","value":"v"}`,
	` { "op" : "put" , "key":"k",` + "\n\t\r" + `"value":"v" } `,
	`{}`, ` {} `, `{ }`, `null`, `[]`, `"s"`, `1`, ``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`,
	`{"a":1}x`, `{"a":1}{}`, `{"a":1 "b":2}`, `{"a" 1}`, `{a:1}`, `{'a':1}`,
	`{"a":1,"a":2}`, `{"a":"x","a":null}`, `{"op":"get","op":"put"}`,
	`{"a":0}`, `{"a":-0}`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":1.5e}`, `{"a":1e+}`, `{"a":1E-7}`, `{"a":+1}`,
	`{"a":-1.25e+10}`, `{"a":1e400}`, `{"a":00}`, `{"a":0x10}`, `{"a":NaN}`, `{"a":Infinity}`,
	`{"a":true}`, `{"a":false}`, `{"a":null}`, `{"a":nul}`, `{"a":nullx}`, `{"a":truex}`, `{"a":True}`,
	`{"a":{"b":1}}`, `{"a":[1,2]}`, `{"a":[}`, `{"a":{"b":}}`,
	`{"a\u0062":1}`, `{"a":"b\"c"}`, `{"a":"\u00e9"}`, `{"a":"\ud800"}`, `{"a":"\x"}`, `{"a":"tab` + "\t" + `"}`,
	`{"a":"é😀"}`, "{\"a\":\"\xff\"}", "{\"\xc3\":1}", `{"":1}`, `{"a":""}`,
	`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k1":7}`,
	"\ufeff{}", "{\"a\":1}\x00",
}

func TestParseMatchesEncodingJSON(t *testing.T) {
	for _, s := range parseCases {
		checkSame(t, []byte(s))
	}
	// The cases the fast scanner must take (no fallback).
	for _, s := range []string{`{"op":"put","key":"k","value":"v"}`, `{"a":-1.25e+10,"b":true,"c":null,"d":false}`, `{}`} {
		if scanFlatFields([]byte(s)) < 0 {
			t.Errorf("scanFlat refused %s", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range parseCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSame(t, data) })
}
