// Package cli implements the raftd command line: one file per command, each
// an Options struct and a NewCmdX constructor whose RunE calls runX.
//
// Exit codes (DESIGN "User-facing contracts"):
//
//	0  success
//	1  failure, or outcome unknown (timeout or connection lost after a
//	   command was sent: it may or may not have been applied)
//	2  usage error (unknown flag or command, missing or bad argument)
//	3  certainly not applied (refused before entering the log: no leader,
//	   too large, invalid, unreachable cluster)
//
// Errors are printed as one line on stderr, prefixed "raftd: ".
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/raftd/raftd/cmd/raftd/internal/config"
	"github.com/raftd/raftd/cmd/raftd/internal/view"
	"github.com/raftd/raftd/core/daemon"
	"github.com/spf13/cobra"
)

// Factory carries what commands need from the outside world, so tests can
// substitute it.
type Factory struct {
	// In is read by `apply -` and `query -`.
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// Getenv reads the environment (os.Getenv by default).
	Getenv func(string) string
}

// Main runs raftd with args (without the program name) and returns the exit
// code. SIGINT and SIGTERM cancel the command's context.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := &Factory{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, Getenv: os.Getenv}
	return Run(ctx, f, args)
}

// Run is Main with the context and factory given, for tests.
func Run(ctx context.Context, f *Factory, args []string) int {
	root := NewCmdRoot(f)
	root.SetArgs(args)
	root.SetOut(f.Out)
	root.SetErr(f.ErrOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintf(f.ErrOut, "raftd: %s\n", view.OneLine(err.Error()))
	if code == ExitUsage {
		fmt.Fprintln(f.ErrOut, "Run 'raftd --help' for usage.")
	}
	return code
}

// NewCmdRoot returns the raftd command tree.
func NewCmdRoot(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "raftd",
		Short: "raftd: a replicated state machine with FSM plugins",
		Long: `raftd runs a Raft cluster whose state machine is a plugin process, and is
the client for such a cluster.

Exit codes: 0 ok; 1 failure or unknown outcome (the command may have been
applied); 2 usage error; 3 certainly not applied.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	// Usage errors carry their exit code from where they are made: flag
	// errors here, argument errors in the Args validators (exactArgs,
	// noArgs, maxArgs, and unknownCommand for an unknown subcommand).
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: err}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		NewCmdRun(f, nil),
		NewCmdDev(f, nil),
		NewCmdApply(f, nil),
		NewCmdQuery(f, nil),
		NewCmdStatus(f, nil),
		NewCmdMembers(f),
		NewCmdLeader(f),
		NewCmdFSM(f),
		NewCmdSnapshot(f),
		NewCmdBench(f, nil),
		NewCmdVersion(f),
		NewCmdCompletion(f),
		NewCmdCerts(f),
	)
	groupsRejectUnknown(root)
	return root
}

// groupsRejectUnknown makes every command that only groups subcommands
// (raftd, raftd fsm, raftd snapshot, …) print its help when called alone
// and refuse an unknown subcommand as a usage error. Without it cobra
// prints the help and exits 0 for `raftd fsm frobnicate`, which a script
// would take for success.
func groupsRejectUnknown(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = unknownCommand
		cmd.SuggestionsMinimumDistance = 2
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, c := range cmd.Commands() {
		groupsRejectUnknown(c)
	}
}

// unknownCommand refuses any argument of a command group: it can only be
// a subcommand that does not exist.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return usageErrorf("unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
}

// exactArgs is cobra.ExactArgs with a usage exit code and a clearer message.
func exactArgs(n int, what string) cobra.PositionalArgs { return rangeArgs(n, n, what) }

// rangeArgs is cobra.RangeArgs with a usage exit code.
func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usageErrorf("%s: expected %s, got %d argument(s)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// noArgs is cobra.NoArgs with a usage exit code.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s: unexpected argument %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// maxStdinBytes bounds a command read from stdin.
const maxStdinBytes = 64 << 20

// argOrStdin returns arg, or stdin's content (without one trailing newline)
// when arg is "-".
func argOrStdin(f *Factory, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	if f.In == nil {
		return "", usageErrorf("no standard input to read the command from")
	}
	b, err := io.ReadAll(io.LimitReader(f.In, maxStdinBytes+1))
	if err != nil {
		return "", withCode(ExitFailure, fmt.Errorf("read standard input: %w", err))
	}
	if len(b) > maxStdinBytes {
		return "", usageErrorf("standard input holds more than %d bytes", maxStdinBytes)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// bindConfig lets every flag of cmd be set from RAFTD_<FLAG> and --config
// FILE (package config); errors are usage errors.
func bindConfig(cmd *cobra.Command, f *Factory) {
	config.Bind(cmd, f.Getenv, func(err error) error { return usageErrorf("%s: %v", cmd.Name(), err) })
}

// addLogFlags registers --log-level and --log-format (run and dev).
func addLogFlags(cmd *cobra.Command, level, format *string, defLevel string) {
	cmd.Flags().StringVar(level, "log-level", defLevel, "debug, info, warn or error")
	cmd.Flags().StringVar(format, "log-format", daemon.LogFormatText, "text (one line per record) or json (one JSON object per line)")
}

// validateLogFlags checks --log-level and --log-format of cmd.
func validateLogFlags(cmd, level, format string) error {
	if _, err := daemon.NewLogger(io.Discard, format, level); err != nil {
		return usageErrorf("%s: --log-level/--log-format: %v", cmd, err)
	}
	return nil
}
