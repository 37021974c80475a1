"""The raftd.fsm.v1.StateMachine gRPC service over a KV instance, following
docs/plugin-protocol.md section 4. gRPC runs handlers on a thread pool, so
one lock around every call makes each call see and change the state between
whole entries. Snapshot captures a point-in-time view under the lock and
streams it without the lock while applies continue.
"""

import threading

import grpc

from . import kv as kvlib

SERVICE = "raftd.fsm.v1.StateMachine"


class StateMachine:
    """The StateMachine handlers for one KV. log(msg) writes a line to
    stderr; build is what Info reports as the plugin's build (build.py)."""

    def __init__(self, kv, messages, log, build=""):
        self.kv = kv
        self.build = build
        self.lock = threading.Lock()
        self.log = log
        self.m = messages
        self.InfoResponse = messages["raftd.fsm.v1.InfoResponse"]
        self.ApplyResponse = messages["raftd.fsm.v1.ApplyResponse"]
        self.QueryResponse = messages["raftd.fsm.v1.QueryResponse"]
        self.SnapshotChunk = messages["raftd.fsm.v1.SnapshotChunk"]
        self.SnapshotHeader = messages["raftd.fsm.v1.SnapshotHeader"]
        self.RestoreResponse = messages["raftd.fsm.v1.RestoreResponse"]
        self.DigestResponse = messages["raftd.fsm.v1.DigestResponse"]

    def _fail(self, context, code, msg):
        self.log(msg)
        context.abort(code, msg)

    def Info(self, request, context):
        kv = self.kv
        with self.lock:
            return self.InfoResponse(name=kvlib.NAME, min_version=kvlib.MIN_VERSION,
                                     max_version=kvlib.MAX_VERSION, applied_index=kv.applied_index,
                                     applied_term=kv.applied_term,
                                     downgrade_safe_to=kvlib.DOWNGRADE_SAFE_TO, build=self.build)

    def Apply(self, request_iterator, context):
        kv = self.kv
        lo, hi = kvlib.MIN_VERSION, kvlib.MAX_VERSION
        for req in request_iterator:
            entries = req.entries
            with self.lock:
                # Check the whole request first, so that a host bug applies
                # nothing.
                last = kv.applied_index
                versions = []
                for e in entries:
                    if e.index <= last:
                        self._fail(context, grpc.StatusCode.FAILED_PRECONDITION,
                                   "kv: entry index %d is not above applied index %d" % (e.index, last))
                    v = e.version or lo
                    if not lo <= v <= hi:
                        self._fail(context, grpc.StatusCode.FAILED_PRECONDITION,
                                   "kv: entry %d has version %d, outside %d..%d" % (e.index, e.version, lo, hi))
                    versions.append(v)
                    last = e.index
                apply = kv.apply
                results = [apply(e.data, v) for e, v in zip(entries, versions)]
                if entries:
                    e = entries[-1]
                    kv.applied_index, kv.applied_term, kv.version = e.index, e.term, versions[-1]
                resp = self.ApplyResponse(results=results, applied_index=kv.applied_index)
            yield resp

    def Query(self, request, context):
        with self.lock:
            return self.QueryResponse(result=self.kv.query(request.query))

    def Snapshot(self, request, context):
        with self.lock:
            header, chunks = self.kv.snapshot()
        yield self.SnapshotChunk(header=self.SnapshotHeader(**header))
        for c in chunks:
            yield self.SnapshotChunk(data=c)

    def Restore(self, request_iterator, context):
        header = None
        decoder = kvlib.Decoder()
        code = grpc.StatusCode.INVALID_ARGUMENT
        for chunk in request_iterator:
            if header is None:
                if not chunk.HasField("header"):
                    self._fail(context, code, "kv restore: the first message carries no header")
                header = chunk.header
                if header.format != kvlib.FORMAT:
                    self._fail(context, code, "kv restore: unknown snapshot format %r (want %s)"
                               % (header.format, kvlib.FORMAT))
                if chunk.data:
                    self._fail(context, code, "kv restore: the header message also carries data")
                continue
            if chunk.HasField("header"):
                self._fail(context, code, "kv restore: a second header in the stream")
            if len(chunk.data) > kvlib.CHUNK_BYTES:
                self._fail(context, code, "kv restore: chunk of %d bytes exceeds %d"
                           % (len(chunk.data), kvlib.CHUNK_BYTES))
            try:
                decoder.push(chunk.data)
            except kvlib.RestoreError as e:
                self._fail(context, grpc.StatusCode.DATA_LOSS, str(e))
        if header is None:
            self._fail(context, code, "kv restore: empty stream (no header)")
        try:
            store = decoder.finish()
        except kvlib.RestoreError as e:
            self._fail(context, grpc.StatusCode.DATA_LOSS, str(e))
        kv = self.kv
        with self.lock:
            kv.store = store
            kv.applied_index, kv.applied_term, kv.version = header.index, header.term, header.version
            return self.RestoreResponse(applied_index=kv.applied_index)

    def Digest(self, request, context):
        with self.lock:
            return self.DigestResponse(applied_index=self.kv.applied_index, digest=self.kv.digest())

    def handler(self):
        """The grpc.GenericRpcHandler serving this service."""
        m = self.m

        def types(name):
            req, resp = m.method(SERVICE, name)
            return {"request_deserializer": req.FromString, "response_serializer": resp.SerializeToString}

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Info": grpc.unary_unary_rpc_method_handler(self.Info, **types("Info")),
            "Apply": grpc.stream_stream_rpc_method_handler(self.Apply, **types("Apply")),
            "Query": grpc.unary_unary_rpc_method_handler(self.Query, **types("Query")),
            "Snapshot": grpc.unary_stream_rpc_method_handler(self.Snapshot, **types("Snapshot")),
            "Restore": grpc.stream_unary_rpc_method_handler(self.Restore, **types("Restore")),
            "Digest": grpc.unary_unary_rpc_method_handler(self.Digest, **types("Digest")),
        })
