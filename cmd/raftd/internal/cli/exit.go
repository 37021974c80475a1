package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/raftd/raftd/core/client"
	"google.golang.org/grpc/codes"
)

// Exit codes.
const (
	ExitOK         = 0
	ExitFailure    = 1
	ExitUsage      = 2
	ExitNotApplied = 3
)

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

// exitErr maps the outcome of a call through core/client to the error the
// command exits with. It is the one place where the API's answer (its gRPC
// code and the not-applied mark, core/server errors.go) becomes an exit
// code:
//   - no node reachable, or a refusal marked not applied: 3;
//   - a refusal of the request itself (InvalidArgument, FailedPrecondition,
//     Unimplemented, NotFound, ResourceExhausted): 3;
//   - anything else after the request was sent: 1, outcome unknown.
func exitErr(op string, timeout time.Duration, err error) error {
	var ue *client.UnreachableError
	var ce *client.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ue) && ue.TimedOut:
		return withCode(ExitNotApplied, fmt.Errorf("%s: no node reachable within %s", op, timeout))
	case errors.As(err, &ue):
		return withCode(ExitNotApplied, fmt.Errorf("%s: cannot reach %s (is raftd running?)", op, ue.List()))
	case !errors.As(err, &ce):
		return withCode(ExitFailure, fmt.Errorf("%s: %w", op, err))
	case ce.NotApplied:
		return withCode(ExitNotApplied, ce)
	}
	switch ce.Status.Code() {
	case codes.DeadlineExceeded:
		return withCode(ExitFailure, fmt.Errorf("%s: no answer from %s within %s; outcome unknown", op, ce.Addr, timeout))
	case codes.Canceled:
		return withCode(ExitFailure, fmt.Errorf("%s: interrupted; outcome unknown", op))
	case codes.Unavailable:
		return withCode(ExitFailure, fmt.Errorf("%s: connection to %s lost: %s; outcome unknown", op, ce.Addr, ce.Status.Message()))
	case codes.InvalidArgument, codes.FailedPrecondition, codes.Unimplemented, codes.NotFound, codes.ResourceExhausted:
		return withCode(ExitNotApplied, ce)
	}
	return withCode(ExitFailure, ce)
}
