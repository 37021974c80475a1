package cli

import (
	"fmt"
	"time"

	"github.com/raftd/raftd/core/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

// exitFor maps a failed call to addr to the error the command exits with.
// It is the one place where the API's answer (its gRPC code and the
// not-applied trailer, core/server errors.go) becomes an exit code:
//   - marked not applied: 3; next is set for Unavailable (this node cannot
//     take it now: no leader, stopping), so that the caller tries the next
//     address and retries the list until its timeout;
//   - a refusal of the request itself (InvalidArgument, FailedPrecondition,
//     Unimplemented, NotFound, ResourceExhausted): 3;
//   - anything else after the request was sent: 1, outcome unknown.
func exitFor(op, addr string, timeout time.Duration, err error, tr metadata.MD) (exit error, next bool) {
	st := status.Convert(err)
	msg := st.Message()
	if server.IsNotApplied(tr) {
		return withCode(ExitNotApplied, fmt.Errorf("%s (%s)", msg, addr)), st.Code() == codes.Unavailable
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return withCode(ExitFailure, fmt.Errorf("%s: no answer from %s within %s; outcome unknown", op, addr, timeout)), false
	case codes.Canceled:
		return withCode(ExitFailure, fmt.Errorf("%s: interrupted; outcome unknown", op)), false
	case codes.Unavailable:
		return withCode(ExitFailure, fmt.Errorf("%s: connection to %s lost: %s; outcome unknown", op, addr, msg)), false
	case codes.InvalidArgument, codes.FailedPrecondition, codes.Unimplemented, codes.NotFound, codes.ResourceExhausted:
		return withCode(ExitNotApplied, fmt.Errorf("%s (%s)", msg, addr)), false
	}
	return withCode(ExitFailure, fmt.Errorf("%s (%s)", msg, addr)), false
}
