package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/raftd/raftd/core/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// OutcomeKey is the trailer key that marks a refusal made before the command
// entered the log. Its value is OutcomeNotApplied.
const OutcomeKey = "raftd-outcome"

// OutcomeNotApplied is the OutcomeKey value for "certainly not applied".
const OutcomeNotApplied = "not-applied"

// forwardedKey is the request metadata key set on forwarded requests.
const forwardedKey = "raftd-forwarded"

// Errors a Node implementation returns so that the server can map them to
// status codes. Wrap them with context; the server matches with errors.Is.
// raft.ErrNoLeader and raft.ErrProposalDropped are recognised as well.
var (
	// ErrNotLeader: this node is not the leader (the server then forwards).
	ErrNotLeader = errors.New("server: not the leader")
	// ErrRejected: the node refused the request before it entered the log
	// (for example a membership change already in progress).
	ErrRejected = errors.New("server: rejected")
	// ErrStopped: the node is shutting down; the outcome of a request in
	// flight is unknown.
	ErrStopped = errors.New("server: node stopped")
	// ErrLeadershipLost: the leader stepped down while the request waited;
	// the entry may still commit under the next leader.
	ErrLeadershipLost = errors.New("server: leadership lost while waiting")
)

// notApplied returns a status error of code c and marks it, through the
// response trailer, as certainly not applied.
func notApplied(ctx context.Context, c codes.Code, format string, args ...any) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs(OutcomeKey, OutcomeNotApplied))
	return status.Errorf(c, format, args...)
}

// detail is err's message without the sentinel prefixes of this package.
func detail(err error) string {
	msg := err.Error()
	for _, e := range []error{ErrRejected, ErrStopped, ErrLeadershipLost, ErrNotLeader} {
		msg = strings.TrimPrefix(msg, e.Error()+": ")
	}
	return msg
}

// toStatus maps an error from the Node to a status error.
func toStatus(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		// Already a status (for example relayed from the leader).
		return err
	}
	switch {
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNoLeader):
		return notApplied(ctx, codes.Unavailable, "%s: no leader: %v", op, err)
	case errors.Is(err, raft.ErrProposalDropped), errors.Is(err, ErrRejected):
		return notApplied(ctx, codes.Unavailable, "%s: refused by the leader, not applied: %s", op, detail(err))
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: deadline exceeded, outcome unknown", op)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: canceled, outcome unknown", op)
	case errors.Is(err, ErrStopped), errors.Is(err, ErrLeadershipLost):
		return status.Errorf(codes.Unavailable, "%s: %v; outcome unknown", op, err)
	}
	return status.Error(codes.Internal, fmt.Sprintf("%s: %v", op, err))
}

// IsNotApplied reports whether trailer md marks a refusal as certainly not
// applied.
func IsNotApplied(md metadata.MD) bool {
	for _, v := range md.Get(OutcomeKey) {
		if v == OutcomeNotApplied {
			return true
		}
	}
	return false
}
