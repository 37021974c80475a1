package server

import (
	"context"
	"errors"

	"github.com/raftd/raftd/core/node"
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

// notApplied returns a status error of code c and marks it, through the
// response trailer, as certainly not applied.
func notApplied(ctx context.Context, c codes.Code, format string, args ...any) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs(OutcomeKey, OutcomeNotApplied))
	return status.Errorf(c, format, args...)
}

// toStatus maps an error of the node to a status error. It is the one
// place where the node's outcome classes (core/node errors.go) become gRPC
// codes:
//
//	node.ErrNotApplied       the code of the reason (refusalCode), marked not applied
//	context deadline/cancel  DeadlineExceeded / Canceled, outcome unknown
//	node.ErrHalted           with node.ErrOutcomeUnknown (a caller that was waiting
//	                         when apply halted): Aborted, outcome unknown; alone
//	                         (a linearizable read beyond the halt): FailedPrecondition
//	node.ErrSessionExpired,  AlreadyExists: a request id the cluster will not
//	node.ErrResultNotKept    apply again nor answer with a result; retrying it
//	                         gets the same answer (a new id applies anew)
//	node.ErrOutcomeUnknown   Unavailable, outcome unknown
//	anything else            Internal
func toStatus(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		// Already a status (for example relayed from the leader).
		return err
	}
	switch {
	case errors.Is(err, node.ErrNotApplied):
		return notApplied(ctx, refusalCode(err), "%s: %v (not applied)", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: deadline exceeded, outcome unknown", op)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: canceled, outcome unknown", op)
	case errors.Is(err, node.ErrHalted) && errors.Is(err, node.ErrOutcomeUnknown):
		return status.Errorf(codes.Aborted, "%s: %v", op, err)
	case errors.Is(err, node.ErrHalted):
		return status.Errorf(codes.FailedPrecondition, "%s: %v", op, err)
	case errors.Is(err, node.ErrSessionExpired), errors.Is(err, node.ErrResultNotKept):
		return status.Errorf(codes.AlreadyExists, "%s: %v", op, err)
	case errors.Is(err, node.ErrOutcomeUnknown):
		return status.Errorf(codes.Unavailable, "%s: %v", op, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// refusalCode is the code of a not-applied refusal, by its reason: the
// request is bad (InvalidArgument), the cluster's state refuses it
// (FailedPrecondition: retrying as is will not help; a halted apply, a
// skipped command), the node is overloaded (ResourceExhausted: its state
// machine is behind; retry later), or the node cannot take it now
// (Unavailable: no leader, stopping, still replaying; another node or a
// retry may).
func refusalCode(err error) codes.Code {
	switch {
	case errors.Is(err, node.ErrTooLarge), errors.Is(err, node.ErrBadRequest):
		return codes.InvalidArgument
	case errors.Is(err, node.ErrConfChangeInProgress), errors.Is(err, node.ErrUnsupportedVersion),
		errors.Is(err, node.ErrNoSnapshot), errors.Is(err, node.ErrHalted), errors.Is(err, node.ErrSkipped),
		errors.Is(err, node.ErrReload), errors.Is(err, node.ErrWrongFSM),
		errors.Is(err, node.ErrNoCheckpoint):
		return codes.FailedPrecondition
	case errors.Is(err, node.ErrOverloaded):
		return codes.ResourceExhausted
	}
	return codes.Unavailable
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
