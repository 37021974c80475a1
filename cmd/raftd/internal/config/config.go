// Package config sets a command's flags from the environment and from a
// YAML file, below the command line. A flag's value comes from, in order
// of precedence:
//
//  1. the command line (--metrics-addr 127.0.0.1:9101);
//  2. the environment variable RAFTD_<FLAG>, the flag's name upper-cased
//     with dashes as underscores (RAFTD_METRICS_ADDR=127.0.0.1:9101);
//  3. the key named like the flag in the config file
//     (metrics-addr: 127.0.0.1:9101);
//  4. the flag's default.
//
// The file is a YAML mapping of flag names to scalars; a list stands for
// a comma-separated value (peers: ["1=10.0.0.1:7001", "2=10.0.0.2:7001"]).
// An unknown key, a key given twice, a value of the wrong shape or one the
// flag does not accept is an error naming the file and line.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Help ends the long help of a command that Bind binds.
const Help = `Every flag can also be set in the environment as RAFTD_<FLAG> (upper case,
dashes as underscores: RAFTD_METRICS_ADDR, RAFTD_LOG_FORMAT) or as a key of
the YAML file --config FILE (also RAFTD_CONFIG; keys are flag names:
"metrics-addr: 127.0.0.1:9101"). The command line wins over the
environment, which wins over the file. An unknown key or a bad value is an
error (exit 2).`

// Bind adds --config FILE to cmd and, before cmd runs, sets the flags its
// command line left unset (Apply) from getenv and from that file, or the
// file $RAFTD_CONFIG names. onErr makes the command's error of Apply's.
func Bind(cmd *cobra.Command, getenv func(string) string, onErr func(error) error) {
	var path string
	cmd.Flags().StringVar(&path, "config", "", "YAML file of flag values, keyed by flag name (default $RAFTD_CONFIG)")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if path == "" && getenv != nil {
			path = getenv(EnvPrefix + "CONFIG")
		}
		if err := Apply(cmd.Flags(), getenv, path, "config", "help"); err != nil {
			return onErr(err)
		}
		return nil
	}
}

// EnvPrefix starts the name of every flag's environment variable.
const EnvPrefix = "RAFTD_"

// EnvName returns the environment variable of flag name: "metrics-addr"
// -> "RAFTD_METRICS_ADDR".
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// maxFileBytes bounds a config file.
const maxFileBytes = 1 << 20

// Apply sets every flag of fs that the command line left unset: from
// getenv(EnvName(flag)) if that is not empty, else from the YAML file at
// path (none if path is empty). Flags named in skip are left alone and are
// unknown keys in the file. Errors are one line.
func Apply(fs *pflag.FlagSet, getenv func(string) string, path string, skip ...string) error {
	fromCLI := map[string]bool{}
	fs.Visit(func(fl *pflag.Flag) { fromCLI[fl.Name] = true })
	usable := func(name string) bool { return fs.Lookup(name) != nil && !slices.Contains(skip, name) }

	fromEnv := map[string]bool{}
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if err != nil || fromCLI[fl.Name] || !usable(fl.Name) || getenv == nil {
			return
		}
		env := EnvName(fl.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if serr := fs.Set(fl.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q: %v", env, v, serr)
			return
		}
		fromEnv[fl.Name] = true
	})
	if err != nil || path == "" {
		return err
	}
	kvs, err := readFile(path)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if !usable(kv.key) {
			return fmt.Errorf("config %s:%d: unknown key %q%s", path, kv.line, kv.key, hint(fs, kv.key, usable))
		}
	}
	for _, kv := range kvs {
		if fromCLI[kv.key] || fromEnv[kv.key] {
			continue
		}
		if err := fs.Set(kv.key, kv.value); err != nil {
			return fmt.Errorf("config %s:%d: %s: %q: %v", path, kv.line, kv.key, kv.value, err)
		}
	}
	return nil
}

// hint suggests the flag a mistyped key may have meant.
func hint(fs *pflag.FlagSet, key string, usable func(string) bool) string {
	if k := strings.ReplaceAll(strings.ToLower(key), "_", "-"); k != key && usable(k) {
		return fmt.Sprintf(" (did you mean %q?)", k)
	}
	best, bestD := "", 3
	fs.VisitAll(func(fl *pflag.Flag) {
		if d := distance(key, fl.Name); d < bestD && usable(fl.Name) {
			best, bestD = fl.Name, d
		}
	})
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// keyValue is one key of the file, its value as a flag value, and its line.
type keyValue struct {
	key, value string
	line       int
}

// readFile reads the YAML mapping at path, in file order.
func readFile(path string) ([]keyValue, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, maxFileBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %s", path, oneLine(err.Error()))
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s:%d: want a mapping of flag names to values", path, m.Line)
	}
	var out []keyValue
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config %s:%d: a key must be a flag name", path, k.Line)
		}
		if l, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("config %s:%d: key %q already given on line %d", path, k.Line, k.Value, l)
		}
		seen[k.Value] = k.Line
		val, err := flagValue(v)
		if err != nil {
			return nil, fmt.Errorf("config %s:%d: %s: %v", path, v.Line, k.Value, err)
		}
		out = append(out, keyValue{key: k.Value, value: val, line: k.Line})
	}
	return out, nil
}

// flagValue is the flag value of a YAML value: a scalar as written, a list
// of scalars joined by commas.
func flagValue(v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", errors.New("no value (write \"\" for an empty one)")
		}
		return v.Value, nil
	case yaml.SequenceNode:
		var parts []string
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
				return "", errors.New("a list may hold only values")
			}
			parts = append(parts, e.Value)
		}
		return strings.Join(parts, ","), nil
	case yaml.AliasNode:
		return flagValue(v.Alias)
	}
	return "", errors.New("want a value or a list of values, not a mapping")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
