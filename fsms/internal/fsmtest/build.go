package fsmtest

import (
	"context"
	"os"
	"testing"

	"github.com/raftd/raftd/plugin/host"
)

// CheckBuildFollowsSources checks the build a plugin run by an interpreter
// reports (fsm.Info.Build): copy, a copy of the plugin's directory, runs
// the same code as orig and so reports the same build with the same
// launcher; once the source file at src (in the copy) changes and copy
// restarts, the launcher, and so the binary SHA-256, is the same but the
// build is not. comment is a comment line in the file's language.
func CheckBuildFollowsSources(t *testing.T, orig, copy *host.Client, src, comment string) {
	t.Helper()
	ctx := context.Background()
	want, err := orig.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := copy.Info(ctx)
	if err != nil || got.Build != want.Build || copy.BinarySHA256() != orig.BinarySHA256() {
		t.Fatalf("copy: build %q sha256 %s, %v; original: build %q sha256 %s", got.Build, copy.BinarySHA256(), err, want.Build, orig.BinarySHA256())
	}
	f, err := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(comment + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := copy.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = copy.Info(ctx)
	if err != nil || got.Build == want.Build || copy.BinarySHA256() != orig.BinarySHA256() {
		t.Fatalf("changed copy: build %q sha256 %s, %v; original: build %q sha256 %s", got.Build, copy.BinarySHA256(), err, want.Build, orig.BinarySHA256())
	}
}
