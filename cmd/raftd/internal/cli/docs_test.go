package cli

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/cli from the command tree (make docs)")

// cliDocsDir is the generated command reference, from this package.
const cliDocsDir = "../../../../docs/cli"

// TestCLIReference fails when docs/cli, the reference generated from the
// command tree (cobra/doc), differs from what the commands say now; `make
// docs` rewrites it.
func TestCLIReference(t *testing.T) {
	tmp := t.TempDir()
	root := NewCmdRoot(&Factory{})
	var mark func(*cobra.Command)
	mark = func(c *cobra.Command) {
		c.DisableAutoGenTag = true // no date: the output must be reproducible
		for _, s := range c.Commands() {
			mark(s)
		}
	}
	mark(root)
	if err := doc.GenMarkdownTree(root, tmp); err != nil {
		t.Fatal(err)
	}
	if *updateDocs {
		if err := os.RemoveAll(cliDocsDir); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(cliDocsDir, os.DirFS(tmp)); err != nil {
			t.Fatal(err)
		}
		return
	}
	names := func(dir string) []string {
		ents, _ := os.ReadDir(dir)
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	want, have := names(tmp), names(cliDocsDir)
	for _, n := range want {
		got, err := os.ReadFile(filepath.Join(cliDocsDir, n))
		gen, _ := os.ReadFile(filepath.Join(tmp, n))
		if err != nil || string(got) != string(gen) {
			t.Errorf("docs/cli/%s is stale or missing; run make docs", n)
		}
	}
	for _, n := range have {
		if !slices.Contains(want, n) {
			t.Errorf("docs/cli/%s documents no command; run make docs", n)
		}
	}
}
