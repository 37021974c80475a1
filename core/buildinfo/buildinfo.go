// Package buildinfo tells which raftd a binary is: its version, the VCS
// commit it was built from and the Go version that built it.
//
// The version and commit come from the linker when the build sets them
// (`make build` does):
//
//	go build -ldflags "-X github.com/raftd/raftd/core/buildinfo.version=v1.2.0 \
//	  -X github.com/raftd/raftd/core/buildinfo.commit=$(git rev-parse HEAD) \
//	  -X github.com/raftd/raftd/core/buildinfo.modified=true" ./cmd/...
//
// Otherwise from the build information the go command embeds
// (runtime/debug.ReadBuildInfo): the module version (a pseudo-version such
// as v0.0.0-20260101120000-0123456789ab+dirty for a build in a git
// checkout, or the version a program that embeds raftd requires) and the
// vcs.revision and vcs.modified settings.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Module is raftd's module path.
const Module = "github.com/raftd/raftd"

// Set by the linker (-X); empty otherwise. modified is "true" for a build
// of a working tree with uncommitted changes.
var (
	version  string
	commit   string
	modified string
)

// Info describes the running binary.
type Info struct {
	// Version is the release ("v1.2.0"), a Go pseudo-version, or "devel"
	// when neither the linker nor the go command recorded one.
	Version string `json:"version"`
	// Commit is the VCS revision, or "unknown".
	Commit string `json:"commit"`
	// Modified reports that the working tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the Go release that built the binary ("go1.26.8").
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns the running binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	in := get(bi, version, commit)
	in.Modified = in.Modified || modified == "true"
	return in
}

// get is Get with its sources given (bi may be nil).
func get(bi *debug.BuildInfo, ldVersion, ldCommit string) Info {
	in := Info{Version: ldVersion, Commit: ldCommit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" {
			in.Version = moduleVersion(bi)
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" || in.Version == "(devel)" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// moduleVersion is raftd's module version: the main module's when raftd is
// the program, the required version when another program embeds it.
func moduleVersion(bi *debug.BuildInfo) string {
	if bi.Main.Path == Module {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == Module {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}
