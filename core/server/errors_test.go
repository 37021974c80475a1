package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/raftd/raftd/core/node"
	"github.com/raftd/raftd/core/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// trailerStream records the trailer a handler sets.
type trailerStream struct{ trailer metadata.MD }

func (s *trailerStream) Method() string               { return "/test" }
func (s *trailerStream) SetHeader(metadata.MD) error  { return nil }
func (s *trailerStream) SendHeader(metadata.MD) error { return nil }
func (s *trailerStream) SetTrailer(md metadata.MD) error {
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

// TestToStatus checks the one mapping from the node's outcome classes to
// gRPC codes and the not-applied trailer.
func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err        error
		code       codes.Code
		notApplied bool
	}{
		{node.NotApplied(fmt.Errorf("node 1: %w", raft.ErrNoLeader)), codes.Unavailable, true},
		{node.NotApplied(fmt.Errorf("dropped: %w", raft.ErrProposalDropped)), codes.Unavailable, true},
		{node.NotApplied(node.ErrStopped), codes.Unavailable, true},
		{node.NotApplied(fmt.Errorf("%w: applied 3 of 9", node.ErrNotReady)), codes.Unavailable, true},
		{node.NotApplied(fmt.Errorf("not proposed: %w", context.DeadlineExceeded)), codes.Unavailable, true},
		{node.NotApplied(fmt.Errorf("%w: 9 bytes", node.ErrTooLarge)), codes.InvalidArgument, true},
		{node.NotApplied(fmt.Errorf("%w: id 0", node.ErrBadRequest)), codes.InvalidArgument, true},
		{node.NotApplied(node.ErrConfChangeInProgress), codes.FailedPrecondition, true},
		{node.NotApplied(node.ErrUnsupportedVersion), codes.FailedPrecondition, true},
		{node.NotApplied(node.ErrNoSnapshot), codes.FailedPrecondition, true},
		{fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded, false},
		{fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, context.Canceled), codes.Canceled, false},
		{fmt.Errorf("%w: leadership changed", node.ErrOutcomeUnknown), codes.Unavailable, false},
		{fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, node.ErrStopped), codes.Unavailable, false},
		{node.NotApplied(&node.HaltedError{Halt: node.Halt{Index: 7, Reason: "panic"}}), codes.FailedPrecondition, true},
		{fmt.Errorf("%w: %w", node.ErrOutcomeUnknown, &node.HaltedError{Halt: node.Halt{Index: 7}}), codes.Aborted, false},
		{&node.HaltedError{Halt: node.Halt{Index: 7}, What: "read"}, codes.FailedPrecondition, false},
		{node.NotApplied(fmt.Errorf("%w: entry 7", node.ErrSkipped)), codes.FailedPrecondition, true},
		{node.NotApplied(fmt.Errorf("%w: backlog", node.ErrOverloaded)), codes.ResourceExhausted, true},
		{fmt.Errorf("%w: %w: seq 1", node.ErrOutcomeUnknown, node.ErrSessionExpired), codes.AlreadyExists, false},
		{fmt.Errorf("%w: %w: too large", node.ErrOutcomeUnknown, node.ErrResultNotKept), codes.AlreadyExists, false},
		{context.DeadlineExceeded, codes.DeadlineExceeded, false},
		{errors.New("plugin query failed"), codes.Internal, false},
		{status.Error(codes.Aborted, "relayed from the leader"), codes.Aborted, false},
	} {
		st := &trailerStream{}
		ctx := grpc.NewContextWithServerTransportStream(context.Background(), st)
		err := toStatus(ctx, "op", tc.err)
		if got := status.Code(err); got != tc.code {
			t.Errorf("%v: code %v, want %v", tc.err, got, tc.code)
		}
		if got := IsNotApplied(st.trailer); got != tc.notApplied {
			t.Errorf("%v: not-applied mark %v, want %v", tc.err, got, tc.notApplied)
		}
	}
	if toStatus(context.Background(), "op", nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
