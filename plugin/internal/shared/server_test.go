package shared_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/raftd/raftd/fsms/counter"
	"github.com/raftd/raftd/fsms/kv"
	"github.com/raftd/raftd/plugin/fsm"
	"github.com/raftd/raftd/plugin/internal/shared"
	fsmv1 "github.com/raftd/raftd/proto/fsm/v1"
)

// connect serves impl in-process over go-plugin's gRPC test connection and
// returns the generated client.
func connect(t *testing.T, impl fsm.FSM) fsmv1.StateMachineClient {
	t.Helper()
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{
		shared.PluginName: &shared.GRPCPlugin{Impl: impl},
	})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(shared.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(fsmv1.StateMachineClient)
}

// connectRaw serves impl like the SDK does (ServerOptions, RawChunks: a
// restore reads the chunks' data from gRPC's buffers) on a loopback
// listener and returns a client.
func connectRaw(t *testing.T, impl fsm.FSM) fsmv1.StateMachineClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append(shared.ServerOptions(), grpc.MaxRecvMsgSize(shared.MaxMsgBytes))...)
	if err := (&shared.GRPCPlugin{Impl: impl, RawChunks: true}).GRPCServer(nil, s); err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(shared.MaxMsgBytes)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return fsmv1.NewStateMachineClient(cc)
}

// rawMsg is a message whose encoding is b.
func rawMsg(b []byte) proto.Message {
	m := &emptypb.Empty{}
	m.ProtoReflect().SetUnknown(b)
	return m
}

// connectors are the two ways a Restore stream is read.
var connectors = map[string]func(*testing.T, fsm.FSM) fsmv1.StateMachineClient{"proto": connect, "raw": connectRaw}

func entries(from, n int, version uint32) []*fsmv1.Entry {
	out := make([]*fsmv1.Entry, n)
	for i := range out {
		out[i] = &fsmv1.Entry{Index: uint64(from + i), Term: 1, Version: version,
			Data: []byte(fmt.Sprintf(`{"op":"put","key":"k%07d","value":"%s"}`, from+i, strings.Repeat("v", 100)))}
	}
	return out
}

func TestApplyPipelined(t *testing.T) {
	for _, impl := range []fsm.FSM{kv.New(), onlyApply{kv.New()}} {
		rpc := connect(t, impl)
		ctx := context.Background()
		stream, err := rpc.Apply(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Ten requests on the wire before reading any response, plus an
		// empty one (a barrier).
		for i := 0; i < 10; i++ {
			if err := stream.Send(&fsmv1.ApplyRequest{Entries: entries(1+i*100, 100, 1)}); err != nil {
				t.Fatal(err)
			}
		}
		stream.Send(&fsmv1.ApplyRequest{})
		for i := 0; i < 10; i++ {
			r, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Results) != 100 || r.AppliedIndex != uint64((i+1)*100) || string(r.Results[0]) != `{"ok":true}` {
				t.Fatalf("response %d: %d results, applied %d", i, len(r.Results), r.AppliedIndex)
			}
		}
		if r, err := stream.Recv(); err != nil || len(r.Results) != 0 || r.AppliedIndex != 1000 {
			t.Fatalf("barrier: %v %v", r, err)
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v", err)
		}
		info, err := rpc.Info(ctx, &fsmv1.InfoRequest{})
		if err != nil || info.Name != "kv" || info.AppliedIndex != 1000 || info.MaxVersion != 2 || info.DowngradeSafeTo != 1 {
			t.Fatalf("info %v %v", info, err)
		}
	}
}

// onlyApply hides kv's BatchApplier.
type onlyApply struct{ *kv.FSM }

func (onlyApply) ApplyBatch() {}

func TestApplyRejectsHostBugs(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		reqs [][]*fsmv1.Entry
		code codes.Code
	}{
		"index not increasing": {[][]*fsmv1.Entry{entries(5, 1, 1), entries(5, 1, 1)}, codes.FailedPrecondition},
		"index going back":     {[][]*fsmv1.Entry{{{Index: 3}, {Index: 2}}}, codes.FailedPrecondition},
		"version too high":     {[][]*fsmv1.Entry{entries(1, 1, 3)}, codes.FailedPrecondition},
		"index zero":           {[][]*fsmv1.Entry{{{Index: 0}}}, codes.FailedPrecondition},
	} {
		rpc := connect(t, kv.New())
		stream, _ := rpc.Apply(ctx)
		var err error
		for _, es := range tc.reqs {
			stream.Send(&fsmv1.ApplyRequest{Entries: es})
		}
		for range tc.reqs {
			if _, err = stream.Recv(); err != nil {
				break
			}
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: err = %v, want %v", name, err, tc.code)
		}
	}
}

func TestSnapshotRestore(t *testing.T) {
	for name, connect := range connectors {
		t.Run(name, func(t *testing.T) { testSnapshotRestore(t, connect) })
	}
}

func testSnapshotRestore(t *testing.T, connect func(*testing.T, fsm.FSM) fsmv1.StateMachineClient) {
	ctx := context.Background()
	src := kv.New()
	for i := 0; i < 40; i++ {
		// 40 values of 100 KiB: a body of about 4 MiB, so several chunks.
		src.Apply(ctx, fsm.Entry{Index: uint64(i + 1), Term: 2, Version: 2,
			Data: []byte(fmt.Sprintf(`{"op":"put","key":"k%02d","value":"%s"}`, i, strings.Repeat("x", 100<<10)))})
	}
	rpc := connect(t, src)
	ss, err := rpc.Snapshot(ctx, &fsmv1.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ss.Recv()
	if err != nil || first.Header == nil || first.Header.Index != 40 || first.Header.Term != 2 || first.Header.Version != 2 || first.Header.Format != kv.Format || len(first.Data) != 0 {
		t.Fatalf("header %v %v", first, err)
	}
	var chunks [][]byte
	for {
		c, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Header != nil || len(c.Data) == 0 || len(c.Data) > shared.ChunkBytes {
			t.Fatalf("chunk with header %v and %d bytes", c.Header != nil, len(c.Data))
		}
		chunks = append(chunks, c.Data)
	}
	if len(chunks) < 4 {
		t.Fatalf("%d chunks", len(chunks))
	}
	want, _ := src.Digest(ctx)

	dst := connect(t, kv.New())
	rs, _ := dst.Restore(ctx)
	rs.Send(&fsmv1.SnapshotChunk{Header: first.Header})
	for i, c := range chunks {
		m := &fsmv1.SnapshotChunk{Data: c}
		switch i % 3 {
		case 1:
			// An unknown field after the data (encoders may add fields).
			m.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 7))
		case 2:
			// The data field twice: the last one counts.
			b := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("junk"))
			b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), c)
			m = nil
			if err := rs.SendMsg(rawMsg(b)); err != nil {
				t.Fatal(err)
			}
		}
		if m != nil {
			rs.Send(m)
		}
	}
	if r, err := rs.CloseAndRecv(); err != nil || r.AppliedIndex != 40 {
		t.Fatalf("restore: %v %v", r, err)
	}
	d, err := dst.Digest(ctx, &fsmv1.DigestRequest{})
	if err != nil || d.AppliedIndex != 40 || !bytes.Equal(d.Digest, want) {
		t.Fatalf("digest %v %v", d, err)
	}
	// Applying continues above the restored index only.
	as, _ := dst.Apply(ctx)
	as.Send(&fsmv1.ApplyRequest{Entries: entries(40, 1, 1)})
	if _, err := as.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("apply at restored index: %v", err)
	}
}

func TestRestoreErrors(t *testing.T) {
	for name, connect := range connectors {
		t.Run(name, func(t *testing.T) { testRestoreErrors(t, connect) })
	}
}

func testRestoreErrors(t *testing.T, connect func(*testing.T, fsm.FSM) fsmv1.StateMachineClient) {
	ctx := context.Background()
	hdr := &fsmv1.SnapshotHeader{Index: 1, Format: kv.Format}
	for name, tc := range map[string]struct {
		msgs []*fsmv1.SnapshotChunk
		code codes.Code
	}{
		"empty stream":     {nil, codes.InvalidArgument},
		"no header":        {[]*fsmv1.SnapshotChunk{{Data: []byte("x")}}, codes.InvalidArgument},
		"unknown format":   {[]*fsmv1.SnapshotChunk{{Header: &fsmv1.SnapshotHeader{Format: "nope"}}}, codes.InvalidArgument},
		"second header":    {[]*fsmv1.SnapshotChunk{{Header: hdr}, {Header: hdr}}, codes.InvalidArgument},
		"truncated":        {[]*fsmv1.SnapshotChunk{{Header: hdr}, {Data: []byte{0, 0, 0, 9, 'a'}}}, codes.DataLoss},
		"oversize chunk":   {[]*fsmv1.SnapshotChunk{{Header: hdr}, {Data: make([]byte, shared.ChunkBytes+1)}}, codes.InvalidArgument},
		"counter trailing": {[]*fsmv1.SnapshotChunk{{Header: &fsmv1.SnapshotHeader{Format: counter.Format}}, {Data: make([]byte, 9)}}, codes.DataLoss},
	} {
		var impl fsm.FSM = kv.New()
		if strings.HasPrefix(name, "counter") {
			impl = counter.New()
		}
		rpc := connect(t, impl)
		rs, _ := rpc.Restore(ctx)
		for _, m := range tc.msgs {
			rs.Send(m)
		}
		_, err := rs.CloseAndRecv()
		if status.Code(err) != tc.code {
			t.Errorf("%s: err = %v, want %v", name, err, tc.code)
		}
	}
}

func TestQueryAndDigest(t *testing.T) {
	ctx := context.Background()
	rpc := connect(t, counter.New())
	stream, _ := rpc.Apply(ctx)
	stream.Send(&fsmv1.ApplyRequest{Entries: []*fsmv1.Entry{{Index: 7, Data: []byte(`{"op":"add","delta":3}`)}}})
	if r, err := stream.Recv(); err != nil || string(r.Results[0]) != `{"value":3}` {
		t.Fatalf("%v %v", r, err)
	}
	q, err := rpc.Query(ctx, &fsmv1.QueryRequest{Query: []byte(`{"op":"get"}`)})
	if err != nil || string(q.Result) != `{"value":3}` {
		t.Fatalf("%v %v", q, err)
	}
	d, err := rpc.Digest(ctx, &fsmv1.DigestRequest{})
	if err != nil || d.AppliedIndex != 7 || len(d.Digest) != 32 {
		t.Fatalf("%v %v", d, err)
	}
}

func TestChunkWriter(t *testing.T) {
	var sent [][]byte
	w := &shared.ChunkWriter{Send: func(b []byte) error { sent = append(sent, append([]byte(nil), b...)); return nil }}
	w.Write(make([]byte, 10))
	w.Write(make([]byte, shared.ChunkBytes*2))
	w.Flush()
	total := 0
	for _, s := range sent {
		if len(s) == 0 || len(s) > shared.ChunkBytes {
			t.Fatalf("chunk of %d", len(s))
		}
		total += len(s)
	}
	if total != 10+2*shared.ChunkBytes || len(sent) != 3 {
		t.Fatalf("%d bytes in %d chunks", total, len(sent))
	}
}
