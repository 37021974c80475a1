package transport

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/raftd/raftd/core/codec"
	"github.com/raftd/raftd/core/raft"
	raftv1 "github.com/raftd/raftd/proto/raft/v1"
)

// peer is the outbound side towards one node: a bounded queue drained by
// one goroutine (run) into one gRPC stream at a time.
type peer struct {
	t    *Transport
	id   uint64
	addr string
	// dialOpts are the transport's dial options with this peer's own.
	dialOpts []grpc.DialOption
	queue    chan raft.Message
	// queuedBytes is the estimated size of the messages in queue
	// (Options.QueueBytes); every receive from queue goes through take.
	queuedBytes atomic.Int64
	// ctx is cancelled by RemovePeer, by AddPeer with a new address, and by
	// Close. It bounds the peer's stream and its snapshot transfers.
	ctx    context.Context
	cancel context.CancelFunc
	cc     *grpc.ClientConn
	client raftv1.RaftClient

	connected atomic.Bool
}

func newPeer(t *Transport, id uint64, addr string) (*peer, error) {
	dialOpts := t.dialOpts
	if t.opts.PeerDialOptions != nil {
		dialOpts = append(slices.Clip(dialOpts), t.opts.PeerDialOptions(id)...)
	}
	cc, err := grpc.NewClient(target(addr), dialOpts...)
	if err != nil {
		return nil, err
	}
	p := &peer{
		t:        t,
		id:       id,
		addr:     addr,
		dialOpts: dialOpts,
		queue:    make(chan raft.Message, t.opts.QueueMessages),
		cc:       cc,
		client:   raftv1.NewRaftClient(cc),
	}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p, nil
}

// outgoingContext attaches the caller identification the server checks.
func (t *Transport) outgoingContext(ctx context.Context, to uint64) context.Context {
	return metadata.AppendToOutgoingContext(ctx,
		mdClusterID, t.opts.ClusterID,
		mdFrom, strconv.FormatUint(t.opts.ID, 10),
		mdTo, strconv.FormatUint(to, 10))
}

// run keeps a stream to the peer open until the peer is stopped, and pumps
// the queue into it. While no stream is up, queued messages are dropped and
// the peer is reported unreachable.
func (p *peer) run() {
	defer p.t.wg.Done()
	defer p.cc.Close()
	log := p.t.opts.Logger
	attempt := 0
	// The class of the last failure logged (its gRPC code): a peer that
	// stays down logs once, not at every retry. Codes, not messages, so
	// that a changing detail (a port, a timestamp) does not defeat it.
	var lastCode codes.Code
	logged := false
	for {
		sent, err := p.session()
		p.connected.Store(false)
		if p.ctx.Err() != nil {
			return
		}
		p.t.reportUnreachable(p.id)
		// Log state changes only: the first failure after a working
		// stream, and every change of the kind of failure.
		if code := status.Code(err); !logged || code != lastCode {
			if rejected(err) {
				log.Error("transport: peer rejected this node", "peer", p.id, "addr", p.addr, "err", err)
			} else {
				log.Warn("transport: stream down", "peer", p.id, "addr", p.addr, "err", err)
			}
			lastCode, logged = code, true
		}
		if sent && !rejected(err) {
			attempt = 0
			logged = false
		}
		if !p.dropFor(backoffDelay(attempt, p.t.opts.BackoffBase, p.t.opts.BackoffMax, jitter())) {
			return
		}
		attempt++
	}
}

// rejected reports whether err is the receiver refusing this node (wrong
// cluster or node id, a certificate that does not match), which retrying will not fix until someone fixes the
// configuration.
func rejected(err error) bool {
	c := status.Code(err)
	return c == codes.FailedPrecondition || c == codes.PermissionDenied
}

// dropFor waits d while dropping queued messages; it returns false if the
// peer was stopped meanwhile.
func (p *peer) dropFor(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return false
		case <-timer.C:
			return true
		case m := <-p.queue:
			p.take(&m)
			p.t.stats.messagesDropped.Add(1)
			p.t.reportUnreachable(p.id)
		}
	}
}

// session opens one stream, waits for the receiver to accept it, and pumps
// the queue into it until it breaks. sent reports whether any batch went
// out. The returned error is never nil.
func (p *peer) session() (sent bool, err error) {
	ctx, cancel := context.WithCancel(p.t.outgoingContext(p.ctx, p.id))
	defer cancel()
	// Bound the handshake: connecting and the receiver's header.
	timer := time.AfterFunc(p.t.opts.DialTimeout, cancel)
	var callOpts []grpc.CallOption
	if !sendGenerated {
		callOpts = append(callOpts, grpc.CallContentSubtype(contentSubtype))
	}
	stream, err := p.client.Stream(ctx, callOpts...)
	if err == nil {
		var md metadata.MD
		if md, err = stream.Header(); err == nil && len(md.Get(mdAccepted)) == 0 {
			// Refused before the header: the status says why.
			var resp raftv1.StreamResponse
			if err = stream.RecvMsg(&resp); err == nil {
				err = errors.New("transport: receiver did not accept the stream")
			}
		}
	}
	if !timer.Stop() && err != nil {
		return false, errors.New("transport: timed out connecting")
	}
	if err != nil {
		return false, err
	}
	p.connected.Store(true)

	// The receiver only answers when the stream ends; waiting for that
	// answer notices a dead or restarted peer even while nothing is sent.
	ended := make(chan error, 1)
	go func() {
		var resp raftv1.StreamResponse
		err := stream.RecvMsg(&resp)
		if err == nil {
			err = errors.New("transport: receiver closed the stream")
		}
		ended <- err
	}()
	defer func() {
		cancel()
		<-ended
	}()

	faults := p.t.opts.Faults
	batch := make([]raft.Message, 0, 64)
	// carry holds a message that did not fit the previous batch.
	var carry *raft.Message
	limit := p.t.opts.MaxMessageBytes - msgSlackBytes
	for {
		clear(batch)
		batch = batch[:0]
		size := 0
		if carry != nil {
			batch = append(batch, *carry)
			size = estimateSize(carry)
			carry = nil
		} else {
			select {
			case <-p.ctx.Done():
				return sent, p.ctx.Err()
			case err := <-ended:
				ended <- err // for the deferred wait
				return sent, err
			case m := <-p.queue:
				p.take(&m)
				if n, ok := p.admit(&m); ok {
					batch = append(batch, m)
					size = n
				}
			}
		}
	fill:
		for size > 0 && size < p.t.opts.MaxBatchBytes {
			select {
			case m := <-p.queue:
				p.take(&m)
				n, ok := p.admit(&m)
				switch {
				case !ok:
				case size+n > limit:
					carry = &m
					break fill
				default:
					batch = append(batch, m)
					size += n
				}
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			continue
		}
		if d := faults.delayFor(p.id); d > 0 {
			select {
			case <-time.After(d):
			case <-p.ctx.Done():
				return sent, p.ctx.Err()
			}
		}
		var out any = &rawBatch{buf: codec.AppendBatch(nil, batch)}
		if sendGenerated {
			out = codec.BatchToProto(batch)
		}
		if err := stream.SendMsg(out); err != nil {
			if errors.Is(err, io.EOF) {
				// The receiver ended the stream; its status says why.
				err = <-ended
				ended <- err
			}
			p.t.stats.messagesDropped.Add(uint64(len(batch)))
			return sent, err
		}
		sent = true
		p.t.stats.batchesSent.Add(1)
		p.t.stats.messagesSent.Add(uint64(len(batch)))
	}
}

// msgSlackBytes is the headroom kept below MaxMessageBytes for framing and
// the estimate's error.
const msgSlackBytes = 4096

// admit returns m's estimated encoded size, or false after dropping m if
// it is too large to ever be sent.
func (p *peer) admit(m *raft.Message) (int, bool) {
	n := estimateSize(m)
	if n > p.t.opts.MaxMessageBytes-msgSlackBytes {
		p.t.opts.Logger.Error("transport: dropping a message that exceeds MaxMessageBytes",
			"type", m.Type, "to", m.To, "index", m.Index, "bytes", n, "max", p.t.opts.MaxMessageBytes)
		p.t.stats.messagesDropped.Add(1)
		p.t.reportUnreachable(p.id)
		return 0, false
	}
	return n, true
}

// estimateSize is an upper-bound estimate of m's encoded size.
// take accounts for m leaving the queue.
func (p *peer) take(m *raft.Message) { p.queuedBytes.Add(-int64(estimateSize(m))) }

func estimateSize(m *raft.Message) int {
	n := 96 + len(m.Context)
	for i := range m.Entries {
		n += len(m.Entries[i].Data) + 40
	}
	if s := m.Snapshot; s != nil {
		n += 64 + len(s.Data) + 10*(len(s.Metadata.ConfState.Voters)+len(s.Metadata.ConfState.Learners))
	}
	return n
}
