package client

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
)

// Outcomes of a failed call, matched with errors.Is against the *Error
// that Apply, ApplyWithID and Query return.
var (
	// ErrNotApplied: the command certainly was not applied (no attempt
	// can have entered the log, or it was refused as invalid). A query
	// error always matches it: a query changes nothing.
	ErrNotApplied = errors.New("raftd: not applied")
	// ErrOutcomeUnknown: an attempt may have been applied. Retrying with
	// the same request identity (ApplyWithID with Result.ID or Error.ID)
	// applies it at most once.
	ErrOutcomeUnknown = errors.New("raftd: outcome unknown")
	// ErrSessionExpired (with ErrOutcomeUnknown): the cluster no longer
	// keeps the request identity's session (or its result): the command
	// may have been applied under it and will not be applied again under
	// it. Retrying it gets the same answer.
	ErrSessionExpired = errors.New("raftd: session expired")
)

// Error is a failed call.
type Error struct {
	// Op is "apply" or "query".
	Op string
	// ID is the request identity of an apply (zero for a query).
	ID RequestID
	// Attempts is the number of RPCs made.
	Attempts int
	// Addr is the node that gave the last answer ("" if none answered).
	Addr string
	// Code and Message are the last answer (Unavailable and a description
	// when no node could be reached, DeadlineExceeded or Canceled when ctx
	// ended).
	Code    codes.Code
	Message string

	notApplied bool
	expired    bool
}

func (e *Error) Error() string {
	outcome := "outcome unknown"
	if e.notApplied {
		outcome = "not applied"
	}
	where := ""
	if e.Addr != "" {
		where = " (" + e.Addr + ")"
	}
	if e.Attempts <= 1 {
		return fmt.Sprintf("raftd %s: %s%s; %s", e.Op, e.Message, where, outcome)
	}
	// The outcome is the call's, over every attempt; the message is only
	// the last attempt's (an earlier one may have been applied even when
	// the last was refused), so the two are kept apart.
	return fmt.Sprintf("raftd %s: %s after %d attempts; the last: %s%s", e.Op, outcome, e.Attempts, e.Message, where)
}

// Is reports whether e matches ErrNotApplied, ErrOutcomeUnknown or
// ErrSessionExpired.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotApplied:
		return e.notApplied
	case ErrOutcomeUnknown:
		return !e.notApplied
	case ErrSessionExpired:
		return e.expired
	}
	return false
}
