package jsoncmd

import "testing"

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
		c := Cmd{"d": []byte(raw)}
		if got, ok := c.Int("d"); !ok || got != want {
			t.Errorf("Int(%s) = %d %v, want %d", raw, got, ok, want)
		}
	}
	for _, raw := range []string{"1.5", `"1"`, "true", "null", "9007199254740992", "1e400", "-1e400", "[1]"} {
		if _, ok := (Cmd{"d": []byte(raw)}).Int("d"); ok {
			t.Errorf("Int(%s) accepted", raw)
		}
	}
	if _, ok := (Cmd{}).Int("d"); ok {
		t.Error("missing field accepted")
	}
}
