package cli

import (
	"fmt"

	"github.com/raftd/raftd/cmd/raftd/internal/view"
	"github.com/raftd/raftd/core/buildinfo"
	"github.com/spf13/cobra"
)

// NewCmdVersion returns `raftd version`.
func NewCmdVersion(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print raftd's version, VCS commit and Go version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			in := buildinfo.Get()
			if asJSON {
				return view.JSON(f.Out, in)
			}
			mod := ""
			if in.Modified {
				mod = " (modified)"
			}
			_, err := fmt.Fprintf(f.Out, "raftd %s\ncommit %s%s\n%s %s\n", in.Version, in.Commit, mod, in.GoVersion, in.Platform)
			return err
		},
	}
	addJSONFlag(cmd, &asJSON, `{"version":…,"commit":…,"modified":…,"go_version":…,"platform":…}`)
	return cmd
}

// NewCmdCompletion returns `raftd completion bash|zsh|fish`.
func NewCmdCompletion(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Completion prints a script that makes the shell complete raftd's commands
and flags. Load it in the current shell, or install it for every new one.`,
		Example: `  source <(raftd completion bash)                       # this bash session
  raftd completion bash > /etc/bash_completion.d/raftd  # every bash session
  raftd completion zsh > "${fpath[1]}/_raftd"           # zsh (compinit enabled)
  raftd completion fish > ~/.config/fish/completions/raftd.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      exactArgs(1, "a shell: bash, zsh or fish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(f.Out, true)
			case "zsh":
				return root.GenZshCompletion(f.Out)
			case "fish":
				return root.GenFishCompletion(f.Out, true)
			}
			return usageErrorf("completion: unknown shell %q (bash, zsh or fish)", args[0])
		},
	}
}

// addJSONFlag registers --json; shape describes what is printed.
func addJSONFlag(cmd *cobra.Command, on *bool, shape string) {
	cmd.Flags().BoolVar(on, "json", false, "print one JSON object: "+shape)
}
