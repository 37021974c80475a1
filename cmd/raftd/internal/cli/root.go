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

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK         = 0
	ExitFailure    = 1
	ExitUsage      = 2
	ExitNotApplied = 3
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

// exitError is an error with an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf returns an error that exits with ExitUsage.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// withCode wraps err so that it exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
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
	} else if isCobraUsageError(err) {
		code = ExitUsage
	}
	fmt.Fprintf(f.ErrOut, "raftd: %s\n", oneLine(err.Error()))
	if code == ExitUsage {
		fmt.Fprintln(f.ErrOut, "Run 'raftd --help' for usage.")
	}
	return code
}

// isCobraUsageError recognises the argument errors cobra makes itself.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most", "bad flag syntax"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
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
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage exit code and a clearer message.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
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

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}
