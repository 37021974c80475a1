package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/plugin/fsm"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// Server adapts an fsm.FSM to the StateMachine gRPC service. It serializes
// every FSM call with one mutex (only a Snapshot's WriteTo runs outside it),
// checks entry order and versions, and maps FSM errors to the protocol's
// status codes.
type Server struct {
	fsmv1.UnimplementedStateMachineServer

	impl  fsm.FSM
	batch fsm.BatchApplier
	// rawChunks: the gRPC server runs with ServerOptions, so Restore
	// receives its chunks as rawChunk.
	rawChunks bool
	// restoreProcs: see GRPCPlugin.RestoreProcs.
	restoreProcs int

	mu     sync.Mutex
	inited bool
	info   fsm.Info // name and versions, from impl.Info at first use
	// applied is the index of the last entry applied or restored.
	// Invariant: every applied entry's index > the previous applied.
	applied uint64
}

// NewServer returns a Server for impl.
func NewServer(impl fsm.FSM) *Server {
	s := &Server{impl: impl}
	s.batch, _ = impl.(fsm.BatchApplier)
	return s
}

// initLocked loads name, versions and applied index once. s.mu held.
func (s *Server) initLocked(ctx context.Context) error {
	if s.inited {
		return nil
	}
	info, err := s.impl.Info(ctx)
	if err != nil {
		return toStatus(err)
	}
	if info.MinVersion < 1 || info.MaxVersion < info.MinVersion {
		return status.Errorf(codes.Internal, "fsm %q reports invalid version range %d..%d", info.Name, info.MinVersion, info.MaxVersion)
	}
	s.info, s.applied, s.inited = info, info.AppliedIndex, true
	return nil
}

// Info implements fsmv1.StateMachineServer.
func (s *Server) Info(ctx context.Context, _ *fsmv1.InfoRequest) (*fsmv1.InfoResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.initLocked(ctx); err != nil {
		return nil, err
	}
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &fsmv1.InfoResponse{Name: info.Name, MinVersion: info.MinVersion, MaxVersion: info.MaxVersion,
		AppliedIndex: info.AppliedIndex, AppliedTerm: info.AppliedTerm, DowngradeSafeTo: info.DowngradeSafeTo, Build: info.Build}, nil
}

// Apply implements fsmv1.StateMachineServer: requests are received on a
// separate goroutine so that decoding the next batch overlaps applying the
// current one; responses go out in request order.
func (s *Server) Apply(stream fsmv1.StateMachine_ApplyServer) error {
	ctx := stream.Context()
	reqs := make(chan *fsmv1.ApplyRequest, 8)
	recvErr := make(chan error, 1)
	go func() {
		defer close(reqs)
		for {
			r, err := stream.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for r := range reqs {
		resp, err := s.applyBatch(ctx, r.Entries)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	select {
	case err := <-recvErr:
		return err
	default:
		return nil
	}
}

func (s *Server) applyBatch(ctx context.Context, in []*fsmv1.Entry) (*fsmv1.ApplyResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.initLocked(ctx); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return &fsmv1.ApplyResponse{AppliedIndex: s.applied}, nil
	}
	// Validate the whole batch before applying any of it.
	es := make([]fsm.Entry, len(in))
	prev := s.applied
	for i, e := range in {
		if e.Index <= prev {
			return nil, status.Errorf(codes.FailedPrecondition, "entry index %d is not above applied index %d", e.Index, prev)
		}
		v := e.Version
		if v == 0 {
			v = s.info.MinVersion
		}
		if v < s.info.MinVersion || v > s.info.MaxVersion {
			return nil, status.Errorf(codes.FailedPrecondition, "entry %d: version %d outside supported %d..%d", e.Index, v, s.info.MinVersion, s.info.MaxVersion)
		}
		es[i] = fsm.Entry{Index: e.Index, Term: e.Term, Data: e.Data, Version: v}
		prev = e.Index
	}
	var results [][]byte
	if s.batch != nil {
		rs, err := s.batch.ApplyBatch(ctx, es)
		if err != nil {
			return nil, toStatus(err)
		}
		if len(rs) != len(es) {
			return nil, status.Errorf(codes.Internal, "fsm returned %d results for %d entries", len(rs), len(es))
		}
		results = rs
	} else {
		results = make([][]byte, len(es))
		for i, e := range es {
			r, err := s.impl.Apply(ctx, e)
			if err != nil {
				// Entries before i are applied; the host treats the plugin
				// as broken and recovers from a snapshot, so that is fine.
				return nil, toStatus(err)
			}
			results[i] = r
		}
	}
	s.applied = prev
	return &fsmv1.ApplyResponse{Results: results, AppliedIndex: prev}, nil
}

// Query implements fsmv1.StateMachineServer.
func (s *Server) Query(ctx context.Context, req *fsmv1.QueryRequest) (*fsmv1.QueryResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.impl.Query(ctx, req.Query)
	if err != nil {
		return nil, toStatus(err)
	}
	return &fsmv1.QueryResponse{Result: r}, nil
}

// QueryBatch implements fsmv1.StateMachineServer: the queries run in order
// under one hold of the lock, so they see the same state; each gets its
// result or the status its Query call would have failed with.
func (s *Server) QueryBatch(ctx context.Context, req *fsmv1.QueryBatchRequest) (*fsmv1.QueryBatchResponse, error) {
	outs := make([]fsmv1.QueryOutcome, len(req.Queries))
	resp := &fsmv1.QueryBatchResponse{Outcomes: make([]*fsmv1.QueryOutcome, len(req.Queries))}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range req.Queries {
		o := &outs[i]
		resp.Outcomes[i] = o
		r, err := s.impl.Query(ctx, q)
		if err != nil {
			st := status.Convert(toStatus(err))
			o.Code, o.Message = uint32(st.Code()), st.Message()
			continue
		}
		o.Result = r
	}
	return resp, nil
}

// Digest implements fsmv1.StateMachineServer.
func (s *Server) Digest(ctx context.Context, _ *fsmv1.DigestRequest) (*fsmv1.DigestResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.initLocked(ctx); err != nil {
		return nil, err
	}
	d, err := s.impl.Digest(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &fsmv1.DigestResponse{AppliedIndex: s.applied, Digest: d}, nil
}

// Snapshot implements fsmv1.StateMachineServer. The FSM captures its view
// under the lock; the body streams without it, so Apply continues.
func (s *Server) Snapshot(_ *fsmv1.SnapshotRequest, stream fsmv1.StateMachine_SnapshotServer) error {
	ctx := stream.Context()
	s.mu.Lock()
	snap, err := s.impl.Snapshot(ctx)
	s.mu.Unlock()
	if err != nil {
		return toStatus(err)
	}
	defer snap.Release()
	h := snap.Header()
	if err := stream.Send(&fsmv1.SnapshotChunk{Header: &fsmv1.SnapshotHeader{
		Index: h.Index, Term: h.Term, Version: h.Version, Format: h.Format}}); err != nil {
		return err
	}
	cw := &ChunkWriter{Send: func(b []byte) error { return stream.Send(&fsmv1.SnapshotChunk{Data: b}) }}
	if err := snap.WriteTo(ctx, cw); err != nil {
		return toStatus(err)
	}
	return cw.Flush()
}

// Restore implements fsmv1.StateMachineServer.
func (s *Server) Restore(stream fsmv1.StateMachine_RestoreServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "restore: empty stream, want a header first")
		}
		return err
	}
	if first.Header == nil || len(first.Data) != 0 {
		return status.Error(codes.InvalidArgument, "restore: the first message must carry only a header")
	}
	ph := first.Header
	h := fsm.SnapshotHeader{Index: ph.Index, Term: ph.Term, Version: ph.Version, Format: ph.Format}
	// A restore is the one call with two things to do at once: the gRPC
	// transport reads and decrypts the stream while the FSM decodes it
	// into its new state. Nothing else runs meanwhile (s.mu).
	if n := runtime.GOMAXPROCS(0); s.restoreProcs > n {
		runtime.GOMAXPROCS(s.restoreProcs)
		defer runtime.GOMAXPROCS(n)
	}
	body := &chunkReader{stream: stream}
	if s.rawChunks {
		body.raw = &rawChunk{}
	}
	defer body.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.impl.Restore(ctx, h, body)
	if err == nil {
		// The body must be consumed exactly.
		var one [1]byte
		n, rerr := io.ReadFull(body, one[:])
		switch {
		case n > 0:
			err = fmt.Errorf("%w: trailing bytes after the body", fsm.ErrSnapshotCorrupt)
		case rerr != io.EOF:
			err = rerr
		}
	}
	if err != nil {
		// NB: with trailing bytes the FSM has already swapped its state;
		// reload the applied index from it either way. The host treats a
		// failed restore as fatal for this process.
		s.inited = false
		return toStatus(err)
	}
	s.inited = false // reload name/versions and applied index
	if err := s.initLocked(ctx); err != nil {
		return err
	}
	s.applied = h.Index
	return stream.SendAndClose(&fsmv1.RestoreResponse{AppliedIndex: h.Index})
}

// chunkReader is the body of a Restore stream: the data of the chunks
// after the header, received as the FSM reads (on its goroutine, with no
// copy but the one into the FSM's buffer). With raw set (a server with
// ServerOptions) a chunk's data is read from the buffers gRPC received it
// in (rawChunk); otherwise from the decoded message. An error (a second
// header, an oversized chunk, the stream's) is returned once the data
// before it is read, and again on every later call.
type chunkReader struct {
	stream fsmv1.StateMachine_RestoreServer
	raw    *rawChunk
	cur    []byte
	err    error
}

// pending is how many bytes of the current chunk are unread.
func (r *chunkReader) pending() int {
	if r.raw != nil {
		return r.raw.n
	}
	return len(r.cur)
}

// fill makes the current chunk non-empty, or returns the error that ends
// the body.
func (r *chunkReader) fill() error {
	for r.pending() == 0 {
		if r.err != nil {
			return r.err
		}
		if r.raw != nil {
			err := r.stream.RecvMsg(r.raw)
			switch {
			case err != nil:
				r.raw.release()
				r.err = err // io.EOF at the end of the stream
			case r.raw.header != nil:
				r.raw.release()
				r.err = status.Error(codes.InvalidArgument, "restore: a second header")
			case r.raw.n > ChunkBytes:
				n := r.raw.n
				r.raw.release()
				r.err = status.Errorf(codes.InvalidArgument, "restore: chunk of %d bytes exceeds %d", n, ChunkBytes)
			}
			continue
		}
		c, err := r.stream.Recv()
		switch {
		case err != nil:
			r.err = err // io.EOF at the end of the stream
		case c.Header != nil:
			r.err = status.Error(codes.InvalidArgument, "restore: a second header")
		case len(c.Data) > ChunkBytes:
			r.err = status.Errorf(codes.InvalidArgument, "restore: chunk of %d bytes exceeds %d", len(c.Data), ChunkBytes)
		default:
			r.cur = c.Data
		}
	}
	return nil
}

// Read implements io.Reader.
func (r *chunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := r.fill(); err != nil {
		return 0, err
	}
	if r.raw != nil {
		return r.raw.read(p), nil
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// ReadByte implements io.ByteReader: readers of the body may read it
// directly, without a buffer of their own.
func (r *chunkReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := r.Read(b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// close frees what the reader holds of the stream.
func (r *chunkReader) close() {
	if r.raw != nil {
		r.raw.release()
	}
}

// ChunkWriter cuts a byte stream into messages of at most ChunkBytes.
type ChunkWriter struct {
	Send func([]byte) error
	buf  []byte
}

// Write buffers p, sending full chunks.
func (w *ChunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, ChunkBytes)
		}
		k := min(len(p), ChunkBytes-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == ChunkBytes {
			if err := w.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Flush sends any buffered bytes. The buffer is reused afterwards, so Send
// must not retain it: a gRPC stream's Send serializes the message before it
// returns (NB: true for grpc-go without a stats handler that keeps
// messages; neither side installs one). Reusing it keeps a snapshot's
// garbage at one chunk instead of letting GC lag pile up chunks.
func (w *ChunkWriter) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.Send(w.buf)
	w.buf = w.buf[:0]
	return err
}

// toStatus maps an FSM error to a gRPC status.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, fsm.ErrSnapshotFormat):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrSnapshotCorrupt):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, fsm.ErrVersion):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
