// Package client calls the raftd client API (proto/api/v1) of a cluster.
// It tries the nodes it knows in turn, retries refusals that another node
// or a moment later may take (no leader yet, node stopping), and reports
// every other answer with its address and whether the request was
// certainly not applied (the server's not-applied mark, core/server).
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/raftd/raftd/core/pki"
	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Budgets of Call.
const (
	// ConnectTimeout bounds connecting to one address before the next is
	// tried, so that a node that accepts TCP but does not answer cannot
	// take the whole timeout.
	ConnectTimeout = time.Second
	// RetryBackoff is the pause before trying the addresses again after
	// every reachable one refused with a not-applied Unavailable.
	RetryBackoff = 100 * time.Millisecond
)

// Client calls a cluster through the client API addresses of its nodes.
// It holds no connection between calls and is safe for concurrent use.
type Client struct {
	// Addrs are the nodes' client API addresses (host:port), tried in turn.
	Addrs []string
	// Timeout bounds a whole Call, retries included. Zero: only ctx.
	Timeout time.Duration
	// TLS, if set, is the TLS configuration of the connections (core/pki
	// ClientConfig); nil is plaintext.
	TLS *tls.Config
}

// Error is a call that a node answered with an error.
type Error struct {
	// Addr is the node that answered.
	Addr string
	// Status is its answer.
	Status *status.Status
	// NotApplied is set when the node marked the refusal as made before
	// the request entered the log: it certainly was not applied.
	NotApplied bool
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%s)", e.Status.Message(), e.Addr) }

// UnreachableError is a call that reached no node; it was not applied.
type UnreachableError struct {
	// Addrs are the addresses that could not be connected to.
	Addrs []string
	// TLSErrs[i], if not nil, is why a TLS connection to Addrs[i] failed
	// (a server certificate from an unknown CA, a client certificate
	// refused); it is set only when the Client uses TLS.
	TLSErrs []error
	// TimedOut is set when the deadline ended the attempts before every
	// address was tried.
	TimedOut bool
}

func (e *UnreachableError) Error() string { return "cannot reach " + e.List() }

// List names the addresses, each with its TLS error if it had one.
func (e *UnreachableError) List() string {
	out := make([]string, len(e.Addrs))
	for i, a := range e.Addrs {
		out[i] = a
		if i < len(e.TLSErrs) && e.TLSErrs[i] != nil {
			out[i] += " (" + e.TLSErrs[i].Error() + ")"
		}
	}
	return strings.Join(out, ", ")
}

// Dial returns a connection to addr that accepts the API's largest
// messages, over TLS with tc (nil: plaintext). It connects lazily.
func Dial(addr string, tc *tls.Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	return grpc.NewClient("passthrough:///"+addr, append(server.DialOptions(), grpc.WithTransportCredentials(creds))...)
}

// waitReady waits until cc is connected, it fails, or ctx ends.
func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	cc.Connect()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return errors.New("not connected")
		}
		if !cc.WaitForStateChange(ctx, st) {
			return ctx.Err()
		}
	}
}

// Call runs fn, which makes one RPC and must pass opts to it, against the
// addresses in turn until a node answers:
//   - an address that cannot be connected to within ConnectTimeout is
//     skipped;
//   - a not-applied Unavailable refusal (no leader yet, node stopping)
//     moves on to the next address, and the addresses are tried again
//     every RetryBackoff until the timeout; the last refusal is returned;
//   - any other answer is returned at once, a failure as *Error.
//
// If no address could be reached, it returns *UnreachableError.
func (c *Client) Call(ctx context.Context, fn func(ctx context.Context, api apiv1.RaftdClient, opts ...grpc.CallOption) error) error {
	if len(c.Addrs) == 0 {
		return errors.New("client: no address")
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var lastRefusal error
	for {
		var unreachable []string
		var tlsErrs []error
		for _, a := range c.Addrs {
			cc, err := Dial(a, c.TLS)
			if err != nil {
				return fmt.Errorf("client: %s: %w", a, err)
			}
			cctx, ccancel := context.WithTimeout(ctx, ConnectTimeout)
			err = waitReady(cctx, cc)
			ccancel()
			if err != nil {
				cc.Close()
				unreachable = append(unreachable, a)
				var terr error
				if c.TLS != nil && ctx.Err() == nil {
					terr = pki.Probe(a, c.TLS, ConnectTimeout)
				}
				tlsErrs = append(tlsErrs, terr)
				if ctx.Err() != nil {
					break
				}
				continue
			}
			var tr metadata.MD
			err = fn(ctx, apiv1.NewRaftdClient(cc), grpc.Trailer(&tr))
			cc.Close()
			if err == nil {
				return nil
			}
			e := &Error{Addr: a, Status: status.Convert(err), NotApplied: server.IsNotApplied(tr)}
			if !e.NotApplied || e.Status.Code() != codes.Unavailable {
				return e
			}
			lastRefusal = e
		}
		if lastRefusal == nil {
			return &UnreachableError{Addrs: unreachable, TLSErrs: tlsErrs, TimedOut: ctx.Err() != nil && len(unreachable) < len(c.Addrs)}
		}
		select {
		case <-ctx.Done():
			return lastRefusal
		case <-time.After(RetryBackoff):
		}
	}
}

// Do calls one unary method of the API through c.Call, for example
// client.Do(ctx, c, apiv1.RaftdClient.Apply, &apiv1.ApplyRequest{...}).
func Do[Req, Resp any](ctx context.Context, c *Client, method func(apiv1.RaftdClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var resp Resp
	err := c.Call(ctx, func(ctx context.Context, api apiv1.RaftdClient, opts ...grpc.CallOption) error {
		var err error
		resp, err = method(api, ctx, req, opts...)
		return err
	})
	return resp, err
}

// DownloadSnapshot streams a node's latest snapshot (a new one taken at its
// applied index first if takeNew) into w and returns its header. The first
// node of Addrs that answers serves it; put the leader first to get the
// leader's. onHeader, if not nil, is called with the header before the
// data (its Size tells how much follows).
func (c *Client) DownloadSnapshot(ctx context.Context, takeNew bool, w io.Writer, onHeader func(*apiv1.SnapshotHeader)) (*apiv1.SnapshotHeader, error) {
	var hdr *apiv1.SnapshotHeader
	err := c.Call(ctx, func(ctx context.Context, api apiv1.RaftdClient, opts ...grpc.CallOption) error {
		stream, err := api.DownloadSnapshot(ctx, &apiv1.DownloadSnapshotRequest{TakeNew: takeNew}, opts...)
		if err != nil {
			return err
		}
		for {
			ch, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if ch.GetHeader() != nil {
				hdr = ch.GetHeader()
				if onHeader != nil {
					onHeader(hdr)
				}
			}
			if _, err := w.Write(ch.GetData()); err != nil {
				return err
			}
		}
	})
	if err == nil && hdr == nil {
		err = errors.New("client: the node sent no snapshot header")
	}
	return hdr, err
}

// LeaderAPIAddr returns the client API address of the leader in st, an
// answer of Status: the node to send to so that nothing is forwarded.
func LeaderAPIAddr(st *apiv1.StatusResponse) (string, error) {
	if st.GetLeader() == 0 {
		return "", errors.New("no leader")
	}
	for _, n := range st.GetNodes() {
		if n.GetId() == st.GetLeader() && n.GetApiAddr() != "" && n.GetError() == "" {
			return n.GetApiAddr(), nil
		}
	}
	return "", fmt.Errorf("leader %d has no reachable client address", st.GetLeader())
}
