'use strict';
// The raftd.fsm.v1.StateMachine gRPC service over a KV instance, following
// docs/plugin-protocol.md section 4. Node runs every handler on one thread
// and each handler step is synchronous, so every call sees and changes the
// state between whole entries; Snapshot captures a point-in-time view and
// streams from it while applies continue.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const kvlib = require('./kv');

/**
 * PROTO_PATH is this plugin's copy of the repository's
 * proto/fsm/v1/fsm.proto, so that the plugin works when its directory is
 * copied elsewhere (make proto refreshes the copy; make proto-check fails
 * when it is stale).
 */
const PROTO_PATH = path.join(__dirname, '..', 'proto', 'fsm.proto');

/** loadService returns the StateMachine service definition from fsm.proto. */
function loadService(protoPath = PROTO_PATH) {
  const def = protoLoader.loadSync(protoPath, {
    keepCase: true,
    // uint64 indices arrive as JS numbers; values above 2^53-1 are refused
    // (checkIndex), never silently rounded into use.
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).raftd.fsm.v1.StateMachine.service;
}

function statusError(code, details) {
  const e = new Error(details);
  e.code = code;
  e.details = details;
  return e;
}

/**
 * handlers returns the StateMachine implementation for kv (a KV instance).
 * log(msg) writes a diagnostic line to stderr; build is what Info reports
 * as the plugin's build (lib/build.js).
 */
function handlers(kv, log = (m) => console.error(m), build = '') {
  return {
    Info(call, cb) {
      cb(null, {
        name: kvlib.NAME,
        min_version: kvlib.MIN_VERSION,
        max_version: kvlib.MAX_VERSION,
        applied_index: kv.appliedIndex,
        applied_term: kv.appliedTerm,
        downgrade_safe_to: kvlib.DOWNGRADE_SAFE_TO,
        build,
      });
    },

    Apply(call) {
      let broken = false;
      call.on('data', (req) => {
        if (broken) return;
        const entries = req.entries;
        // Check the whole request first so that a host bug applies nothing.
        let last = kv.appliedIndex;
        const versions = new Array(entries.length);
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i];
          if (!Number.isSafeInteger(e.index) || !Number.isSafeInteger(e.term) || e.index <= last) {
            broken = true;
            const msg =
              Number.isSafeInteger(e.index) && Number.isSafeInteger(e.term)
                ? `kv: entry index ${e.index} is not above applied index ${last}`
                : `kv: entry index ${e.index} or term ${e.term} is above 2^53-1, which this plugin cannot represent`;
            log(msg);
            call.emit('error', statusError(grpc.status.FAILED_PRECONDITION, msg));
            return;
          }
          const v = e.version === 0 ? kvlib.MIN_VERSION : e.version;
          if (v < kvlib.MIN_VERSION || v > kvlib.MAX_VERSION) {
            broken = true;
            const msg = `kv: entry ${e.index} has version ${e.version}, outside ${kvlib.MIN_VERSION}..${kvlib.MAX_VERSION}`;
            log(msg);
            call.emit('error', statusError(grpc.status.FAILED_PRECONDITION, msg));
            return;
          }
          versions[i] = v;
          last = e.index;
        }
        const results = new Array(entries.length);
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i];
          results[i] = kv.apply(e.data, versions[i]);
          kv.appliedIndex = e.index;
          kv.appliedTerm = e.term;
          kv.version = versions[i];
        }
        call.write({ results, applied_index: kv.appliedIndex });
      });
      call.on('end', () => {
        if (!broken) call.end();
      });
      call.on('error', () => {}); // a cancelled stream; the host starts a new one
    },

    Query(call, cb) {
      cb(null, { result: kv.query(call.request.query) });
    },

    Snapshot(call) {
      const snap = kv.snapshot();
      let cancelled = false;
      call.on('cancelled', () => {
        cancelled = true;
      });
      call.on('error', () => {
        cancelled = true;
      });
      call.write({ header: snap.header });
      const pump = () => {
        while (!cancelled) {
          const next = snap.chunks.next();
          if (next.done) {
            call.end();
            return;
          }
          if (!call.write({ data: next.value })) {
            call.once('drain', pump);
            return;
          }
        }
      };
      pump();
    },

    Restore(call, cb) {
      let header = null;
      let decoder = null;
      let failed = false;
      const fail = (code, msg) => {
        if (failed) return;
        failed = true;
        log(msg);
        cb(statusError(code, msg));
      };
      call.on('data', (chunk) => {
        if (failed) return;
        if (header === null) {
          if (!chunk.header) {
            fail(grpc.status.INVALID_ARGUMENT, 'kv restore: the first message carries no header');
            return;
          }
          header = chunk.header;
          if (header.format !== kvlib.FORMAT) {
            fail(grpc.status.INVALID_ARGUMENT, `kv restore: unknown snapshot format ${JSON.stringify(header.format)} (want ${kvlib.FORMAT})`);
            return;
          }
          if (!Number.isSafeInteger(header.index) || !Number.isSafeInteger(header.term)) {
            fail(grpc.status.INVALID_ARGUMENT, `kv restore: header index ${header.index} or term ${header.term} out of range`);
            return;
          }
          decoder = new kvlib.Decoder();
          if (chunk.data && chunk.data.length > 0) {
            fail(grpc.status.INVALID_ARGUMENT, 'kv restore: the header message also carries data');
          }
          return;
        }
        if (chunk.header) {
          fail(grpc.status.INVALID_ARGUMENT, 'kv restore: a second header in the stream');
          return;
        }
        if (chunk.data.length > kvlib.CHUNK_BYTES) {
          fail(grpc.status.INVALID_ARGUMENT, `kv restore: chunk of ${chunk.data.length} bytes exceeds ${kvlib.CHUNK_BYTES}`);
          return;
        }
        try {
          decoder.push(chunk.data);
        } catch (e) {
          if (e instanceof kvlib.RestoreError) fail(grpc.status.DATA_LOSS, e.message);
          else fail(grpc.status.INTERNAL, `kv restore: ${e.message}`);
        }
      });
      call.on('end', () => {
        if (failed) return;
        if (header === null) {
          fail(grpc.status.INVALID_ARGUMENT, 'kv restore: empty stream (no header)');
          return;
        }
        let store;
        try {
          store = decoder.finish();
        } catch (e) {
          fail(grpc.status.DATA_LOSS, e.message);
          return;
        }
        kv.store = store;
        kv.appliedIndex = header.index;
        kv.appliedTerm = header.term;
        kv.version = header.version;
        cb(null, { applied_index: kv.appliedIndex });
      });
      call.on('error', () => {
        failed = true;
      });
    },

    Digest(call, cb) {
      cb(null, { applied_index: kv.appliedIndex, digest: kv.digest() });
    },
  };
}

module.exports = { loadService, handlers, PROTO_PATH };
