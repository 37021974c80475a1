package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/raftd/raftd/core/server"
	apiv1 "github.com/raftd/raftd/proto/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Defaults of Config.
const (
	DefaultAttemptTimeout = 5 * time.Second
	DefaultDialTimeout    = time.Second
	DefaultRetryBackoff   = 100 * time.Millisecond
)

// MaxClientIDBytes bounds RequestID.Client (the cluster refuses longer).
const MaxClientIDBytes = 64

// Config configures a Client.
type Config struct {
	// Endpoints are the client API addresses (host:port) of the cluster's
	// nodes, or some of them. Required.
	Endpoints []string
	// TLS is the connections' TLS configuration; nil is plaintext.
	TLS *tls.Config
	// AttemptTimeout bounds one attempt (one RPC to one node); an attempt
	// that runs out has an unknown outcome and is retried. The default is
	// DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// DialTimeout bounds waiting for a connection to one endpoint before
	// the next is tried. The default is DefaultDialTimeout.
	DialTimeout time.Duration
	// RetryBackoff is the pause before the endpoints are tried again after
	// none gave an answer to keep. The default is DefaultRetryBackoff.
	RetryBackoff time.Duration
}

// RequestID is the identity of one command: the session (Client) and the
// command's number in it (Seq, from 1). Acked tells the cluster that the
// session has the answers of its commands below it (0: none); it must not
// exceed Seq.
type RequestID struct {
	Client []byte
	Seq    uint64
	Acked  uint64
}

// Result is an applied command's result.
type Result struct {
	// Value is the state machine's result.
	Value []byte
	// Index and Term are the log position of the command's application.
	Index, Term uint64
	// Duplicate is set when an earlier attempt had been applied: Value,
	// Index and Term are that application's.
	Duplicate bool
	// ID is the request identity it was sent with.
	ID RequestID
	// Attempts is the number of RPCs made.
	Attempts int
}

// QueryResult is a query's answer.
type QueryResult struct {
	Value []byte
	// AppliedIndex is the answering node's applied index when it read.
	AppliedIndex uint64
}

// Client is a session of a raftd cluster. It is safe for concurrent use;
// concurrent Applies are numbered in the same session.
type Client struct {
	cfg   Config
	conns []*grpc.ClientConn

	mu     sync.Mutex
	lead   int // endpoint believed to lead, or -1
	sess   *session
	closed bool
}

// session is the request numbering of one client id.
type session struct {
	id       []byte
	next     uint64              // the next seq
	inflight map[uint64]struct{} // seqs of the calls not finished
}

func newSession() (*session, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("client: session id: %w", err)
	}
	return &session{id: id, next: 1, inflight: map[uint64]struct{}{}}, nil
}

// acked is the lowest seq not answered yet (mu held).
func (s *session) acked() uint64 {
	low := s.next
	for q := range s.inflight {
		low = min(low, q)
	}
	return low
}

// New returns a client of the cluster at cfg.Endpoints. It connects lazily.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: no endpoint")
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	sess, err := newSession()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, lead: -1, sess: sess}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second // a restarted node is found again promptly
	for _, ep := range cfg.Endpoints {
		cc, err := grpc.NewClient("passthrough:///"+ep, append(server.DialOptions(), grpc.WithTransportCredentials(creds),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.DialTimeout}))...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: endpoint %s: %w", ep, err)
		}
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

// Close closes the connections. Calls in progress fail.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// SessionID returns the client id of the session new Applies use.
func (c *Client) SessionID() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess.id
}

// Apply applies cmd exactly once: it numbers cmd in the client's session
// and sends it, retrying with the same identity until an answer or ctx
// ends (see the package doc). A session the cluster forgot is replaced by
// a new one when that is safe (no earlier attempt of cmd can have been
// applied). An error is an *Error matching ErrNotApplied or
// ErrOutcomeUnknown.
func (c *Client) Apply(ctx context.Context, cmd []byte) (*Result, error) {
	c.mu.Lock()
	s := c.sess
	seq := s.next
	s.next++
	s.inflight[seq] = struct{}{}
	c.mu.Unlock()
	done := func() {
		c.mu.Lock()
		delete(s.inflight, seq)
		c.mu.Unlock()
	}
	r, err := c.apply(ctx, cmd, func(attempt int, expired bool) (RequestID, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if expired {
			// Safe only because no attempt of cmd can have entered the log
			// (apply checks): move cmd to a new session.
			delete(s.inflight, seq)
			if c.sess == s {
				ns, err := newSession()
				if err != nil {
					return RequestID{}, false
				}
				c.sess = ns
			}
			s = c.sess
			seq = s.next
			s.next++
			s.inflight[seq] = struct{}{}
		}
		return RequestID{Client: s.id, Seq: seq, Acked: s.acked()}, true
	})
	done()
	return r, err
}

// ApplyWithID applies cmd under the caller's request identity id: at most
// once per id, whoever sends it and however often; a retry of an id that
// was applied returns the first result with Duplicate set. It retries like
// Apply, always with id. id.Client must be 1 to MaxClientIDBytes bytes and
// id.Seq at least 1.
func (c *Client) ApplyWithID(ctx context.Context, id RequestID, cmd []byte) (*Result, error) {
	if len(id.Client) == 0 || len(id.Client) > MaxClientIDBytes || id.Seq == 0 || id.Acked > id.Seq {
		return nil, &Error{Op: "apply", ID: id, Code: codes.InvalidArgument, notApplied: true,
			Message: fmt.Sprintf("bad request id: client of %d bytes (1 to %d), seq %d (at least 1), acked %d (at most seq)", len(id.Client), MaxClientIDBytes, id.Seq, id.Acked)}
	}
	return c.apply(ctx, cmd, func(int, bool) (RequestID, bool) { return id, false })
}

// answer is what one attempt got.
type answer struct {
	addr       string
	code       codes.Code
	msg        string
	notApplied bool // the node marked the refusal not applied, or it was never sent
	// unreachable: no connection to the node, nothing sent (notApplied)
	unreachable bool
}

// apply sends cmd until an answer is final. idFor returns the identity
// of an attempt; asked again with expired set, it may move cmd to a new
// session (ok) when the cluster refused the old one.
func (c *Client) apply(ctx context.Context, cmd []byte, idFor func(attempt int, expired bool) (RequestID, bool)) (*Result, error) {
	id, _ := idFor(0, false)
	maybeApplied := false // an attempt may have entered the log
	reached := false      // some node was connected to
	attempts := 0
	var last answer
	fail := func(a answer, expired bool) (*Result, error) {
		return nil, &Error{Op: "apply", ID: id, Attempts: attempts, Addr: a.addr, Code: a.code, Message: a.msg,
			notApplied: !maybeApplied && !expired, expired: expired}
	}
	for {
		var unreachable []string
		for _, i := range c.order() {
			if ctx.Err() != nil || c.isClosed() {
				break
			}
			attempts++
			req := &apiv1.ApplyRequest{Command: cmd, RequestId: &apiv1.RequestID{Client: id.Client, Seq: id.Seq, Acked: id.Acked}}
			var resp *apiv1.ApplyResponse
			a := c.attempt(ctx, i, func(ctx context.Context, api apiv1.RaftdClient, opts ...grpc.CallOption) error {
				var err error
				resp, err = api.Apply(ctx, req, opts...)
				return err
			})
			switch {
			case a.code == codes.OK:
				c.setLead(i)
				return &Result{Value: resp.GetResult(), Index: resp.GetIndex(), Term: resp.GetTerm(),
					Duplicate: resp.GetDuplicate(), ID: id, Attempts: attempts}, nil
			case a.code == codes.AlreadyExists && !a.notApplied:
				if maybeApplied {
					return fail(a, true)
				}
				nid, ok := idFor(attempts, true)
				if !ok {
					return fail(a, true)
				}
				id = nid
				last = a
				continue
			case a.unreachable:
				unreachable = append(unreachable, a.addr)
			case a.notApplied:
				if a.code != codes.Unavailable && a.code != codes.ResourceExhausted {
					return fail(a, false) // refused as invalid, or the cluster's state refuses it
				}
			case a.code == codes.Unavailable || a.code == codes.DeadlineExceeded || a.code == codes.Aborted || a.code == codes.Canceled:
				maybeApplied = true
			default:
				maybeApplied = true
				return fail(a, false)
			}
			if !a.unreachable {
				reached, last = true, a
			}
			id, _ = idFor(attempts, false) // a fresher ack, same seq
		}
		if !reached && len(unreachable) == len(c.conns) {
			return fail(answer{code: codes.Unavailable, msg: "cannot reach " + strings.Join(unreachable, ", ")}, false)
		}
		if err := c.pause(ctx); err != nil {
			if last.msg == "" || errors.Is(err, errClosed) {
				last = answer{code: codeOf(err), msg: err.Error()}
			}
			return fail(last, false)
		}
	}
}

// Query runs a linearizable query (served by or through the leader),
// retrying on other nodes until an answer or ctx ends.
func (c *Client) Query(ctx context.Context, q []byte) (*QueryResult, error) {
	return c.query(ctx, q, apiv1.Consistency_CONSISTENCY_LINEARIZABLE)
}

// StaleQuery runs a query on the first node that answers, from its local
// state, which may lag the cluster.
func (c *Client) StaleQuery(ctx context.Context, q []byte) (*QueryResult, error) {
	return c.query(ctx, q, apiv1.Consistency_CONSISTENCY_STALE)
}

func (c *Client) query(ctx context.Context, q []byte, cons apiv1.Consistency) (*QueryResult, error) {
	attempts := 0
	reached := false
	var last answer
	for {
		var unreachable []string
		for _, i := range c.order() {
			if ctx.Err() != nil || c.isClosed() {
				break
			}
			attempts++
			var resp *apiv1.QueryResponse
			a := c.attempt(ctx, i, func(ctx context.Context, api apiv1.RaftdClient, opts ...grpc.CallOption) error {
				var err error
				resp, err = api.Query(ctx, &apiv1.QueryRequest{Query: q, Consistency: cons}, opts...)
				return err
			})
			switch {
			case a.code == codes.OK:
				return &QueryResult{Value: resp.GetResult(), AppliedIndex: resp.GetAppliedIndex()}, nil
			case a.unreachable:
				unreachable = append(unreachable, a.addr)
				continue
			case a.code == codes.Unavailable, a.code == codes.DeadlineExceeded, a.code == codes.ResourceExhausted, a.code == codes.Aborted:
				reached, last = true, a
				continue
			}
			return nil, &Error{Op: "query", Attempts: attempts, Addr: a.addr, Code: a.code, Message: a.msg, notApplied: true}
		}
		if !reached && len(unreachable) == len(c.conns) {
			return nil, &Error{Op: "query", Attempts: attempts, Code: codes.Unavailable, Message: "cannot reach " + strings.Join(unreachable, ", "), notApplied: true}
		}
		if err := c.pause(ctx); err != nil {
			if last.msg == "" || errors.Is(err, errClosed) {
				last = answer{code: codeOf(err), msg: err.Error()}
			}
			return nil, &Error{Op: "query", Attempts: attempts, Addr: last.addr, Code: last.code, Message: last.msg, notApplied: true}
		}
	}
}

// attempt makes one RPC through endpoint i, bounded by AttemptTimeout.
// An endpoint that is not connected within DialTimeout is skipped: the
// request was never sent (notApplied).
func (c *Client) attempt(ctx context.Context, i int, call func(context.Context, apiv1.RaftdClient, ...grpc.CallOption) error) answer {
	ep := c.cfg.Endpoints[i]
	cc := c.conns[i]
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	err := waitReady(dctx, cc)
	cancel()
	if err != nil {
		c.clearLead(i)
		return answer{addr: ep, code: codes.Unavailable, msg: fmt.Sprintf("cannot connect to %s: %v", ep, err), notApplied: true, unreachable: true}
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	var tr metadata.MD
	err = call(actx, apiv1.NewRaftdClient(cc), grpc.Trailer(&tr))
	if err == nil {
		return answer{addr: ep, code: codes.OK}
	}
	st := status.Convert(err)
	a := answer{addr: ep, code: st.Code(), msg: st.Message(), notApplied: server.IsNotApplied(tr)}
	if !a.notApplied {
		c.clearLead(i)
	}
	return a
}

// codeOf is the code of a pause error: ctx's, or Canceled when closed.
func codeOf(err error) codes.Code {
	if errors.Is(err, errClosed) {
		return codes.Canceled
	}
	return status.FromContextError(err).Code()
}

// waitReady waits until cc is connected, fails to, or ctx ends.
func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			return errors.New("connection failed")
		case connectivity.Shutdown:
			return errors.New("client closed")
		}
		if !cc.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}

// order is the endpoints to try: the believed leader first, then the
// others in their configured order.
func (c *Client) order() []int {
	c.mu.Lock()
	lead := c.lead
	c.mu.Unlock()
	out := make([]int, 0, len(c.conns))
	if lead >= 0 {
		out = append(out, lead)
	}
	for i := range c.conns {
		if i != lead {
			out = append(out, i)
		}
	}
	return out
}

func (c *Client) setLead(i int) {
	c.mu.Lock()
	if c.lead < 0 {
		c.lead = i
	}
	c.mu.Unlock()
}

func (c *Client) clearLead(i int) {
	c.mu.Lock()
	if c.lead == i {
		c.lead = -1
	}
	c.mu.Unlock()
}

// errClosed ends the calls of a closed Client.
var errClosed = errors.New("client closed")

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// pause waits RetryBackoff before another round, asks the cluster who
// leads, and lets failed connections retry at once. It fails when ctx
// ended or the client is closed.
func (c *Client) pause(ctx context.Context) error {
	if c.isClosed() {
		return errClosed
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.cfg.RetryBackoff):
	}
	for _, cc := range c.conns {
		if cc.GetState() == connectivity.TransientFailure {
			cc.ResetConnectBackoff()
		}
	}
	c.findLeader(ctx)
	return nil
}

// findLeader asks the first node that answers for the leader and, if its
// API address is one of the endpoints, sends there first from now on.
func (c *Client) findLeader(ctx context.Context) {
	for _, cc := range c.conns {
		if cc.GetState() != connectivity.Ready {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		resp, err := apiv1.NewRaftdClient(cc).Members(mctx, &apiv1.MembersRequest{})
		cancel()
		if err != nil || resp.GetLeader() == 0 {
			continue
		}
		for _, m := range resp.GetMembers() {
			if m.GetId() != resp.GetLeader() {
				continue
			}
			for j, ep := range c.cfg.Endpoints {
				if ep == m.GetApiAddr() {
					c.mu.Lock()
					c.lead = j
					c.mu.Unlock()
					return
				}
			}
		}
		return
	}
}
