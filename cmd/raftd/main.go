// Command raftd runs a raftd node and talks to raftd clusters. See
// `raftd --help` and docs/operations.md.
package main

import (
	"os"

	"github.com/raftd/raftd/cmd/raftd/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
