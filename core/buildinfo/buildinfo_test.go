package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name                string
		bi                  *debug.BuildInfo
		ldVersion, ldCommit string
		want                Info
	}{
		{name: "no build info", want: Info{Version: "devel", Commit: "unknown"}},
		{name: "go build in a checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "v0.0.0-20260101120000-0123abcd0000+dirty"}, Settings: vcs},
			want: Info{Version: "v0.0.0-20260101120000-0123abcd0000+dirty", Commit: "0123abcd", Modified: true, GoVersion: "go1.26.8"}},
		{name: "devel main module",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "(devel)"}},
			want: Info{Version: "devel", Commit: "unknown", GoVersion: "go1.26.8"}},
		{name: "linker flags win",
			bi:        &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "(devel)"}, Settings: vcs},
			ldVersion: "v1.2.0", ldCommit: "feedbeef",
			want: Info{Version: "v1.2.0", Commit: "feedbeef", Modified: true, GoVersion: "go1.26.8"}},
		{name: "embedded in another program",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/app", Version: "v3.0.0"},
				Deps: []*debug.Module{{Path: "example.com/other", Version: "v9.9.9"}, {Path: Module, Version: "v1.4.0"}}},
			want: Info{Version: "v1.4.0", Commit: "unknown", GoVersion: "go1.26.8"}},
		{name: "embedded and replaced",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/app"},
				Deps: []*debug.Module{{Path: Module, Version: "v1.4.0", Replace: &debug.Module{Path: "../raftd", Version: ""}}}},
			want: Info{Version: "v1.4.0", Commit: "unknown", GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(tc.bi, tc.ldVersion, tc.ldCommit)
			want := tc.want
			want.Platform = got.Platform
			if want.GoVersion == "" {
				want.GoVersion = got.GoVersion
			}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			if got.GoVersion == "" || got.Platform == "" {
				t.Fatalf("empty Go version or platform: %+v", got)
			}
		})
	}
}
