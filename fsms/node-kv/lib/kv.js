'use strict';
// The kv state machine, versions 1 and 2, as specified in
// docs/plugin-protocol.md sections 6 and 7. It agrees byte for byte with
// the Go implementation (fsms/kv) in results, snapshot body and digest.
//
// State: string keys to string values. Keys are ordered by the bytes of
// their UTF-8 encoding, which is the same as ordering by Unicode code point
// (compareKeys). The store keeps a Map for point reads and writes and a
// lazily maintained sorted key index for ordered reads (list, snapshot,
// digest): new keys go to a small pending list that is merged into the
// sorted array when it grows, so a put is O(1) and a list is
// O(log n + pending + limit).

const crypto = require('node:crypto');
const { isUtf8 } = require('node:buffer');

/** NAME is the FSM name reported by Info. */
const NAME = 'kv';
/** MIN_VERSION and MAX_VERSION bound the FSM versions this implementation runs. */
const MIN_VERSION = 1;
const MAX_VERSION = 2;
/**
 * DOWNGRADE_SAFE_TO is the lowest version kv declares safe to switch back to
 * (Info's downgrade_safe_to): every version stores plain strings, version 2
 * only adds incr.
 */
const DOWNGRADE_SAFE_TO = 1;
/** FORMAT names the snapshot body encoding. */
const FORMAT = 'raftd.kv.v1';
/** CHUNK_BYTES is the size of snapshot data chunks (the protocol maximum). */
const CHUNK_BYTES = 1 << 20;

/**
 * compareKeys orders strings by Unicode code point, which equals the byte
 * order of their UTF-8 encodings. Returns -1, 0 or 1.
 */
function compareKeys(a, b) {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // UTF-16 puts surrogates (U+D800..DFFF, i.e. code points above
      // U+FFFF) below U+E000..FFFF; code point order puts them above.
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      }
      return x < y ? -1 : 1;
    }
  }
  return a.length < b.length ? -1 : 1;
}

// lowerBound returns the first position in sorted arr[lo:] with arr[i] >= key.
function lowerBound(arr, key, lo = 0) {
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(arr[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Store is an ordered string map (see the file comment). tidyMin is the
 * pending/tombstone count below which they are not folded into the sorted
 * index (tests lower it to exercise the merge).
 */
class Store {
  constructor(tidyMin = 1024) {
    this.tidyMin = tidyMin;
    this.map = new Map();
    this.sorted = []; // ascending; may hold keys that were deleted (in tomb)
    this.tomb = new Set(); // keys in sorted but not in map
    // Keys added since the last merge, not in sorted. May hold keys deleted
    // since (not in map) and duplicates (deleted and added again); tidy
    // drops both.
    this.pending = [];
    this.pendingClean = true; // pending is sorted, unique and live
  }

  get size() {
    return this.map.size;
  }

  get(key) {
    return this.map.get(key);
  }

  has(key) {
    return this.map.has(key);
  }

  set(key, value) {
    const before = this.map.size;
    this.map.set(key, value); // one hash lookup on the hot path
    if (this.map.size !== before) {
      // A new key: back in sorted if it was tombstoned there, else pending.
      if (this.tomb.size === 0 || !this.tomb.delete(key)) {
        this.pending.push(key);
        this.pendingClean = false;
      }
    }
  }

  delete(key) {
    if (!this.map.delete(key)) return false;
    const i = lowerBound(this.sorted, key);
    if (i < this.sorted.length && this.sorted[i] === key) {
      this.tomb.add(key);
    } else {
      this.pendingClean = false; // a stale entry in pending
    }
    return true;
  }

  // tidy sorts pending and folds it (and tombstones) into sorted when they
  // are large compared to the sorted index.
  tidy(full = false) {
    if (!this.pendingClean) {
      const live = this.pending.filter((k) => this.map.has(k)).sort(compareKeys);
      const uniq = [];
      for (const k of live) if (uniq.length === 0 || uniq[uniq.length - 1] !== k) uniq.push(k);
      this.pending = uniq;
      this.pendingClean = true;
    }
    const limit = full ? 0 : Math.max(this.tidyMin, this.sorted.length >>> 4);
    if (this.pending.length > limit || this.tomb.size > limit) {
      const a = this.sorted;
      const b = this.pending;
      const out = new Array(a.length - this.tomb.size + b.length);
      let i = 0;
      let j = 0;
      let n = 0;
      while (i < a.length || j < b.length) {
        if (j >= b.length || (i < a.length && compareKeys(a[i], b[j]) < 0)) {
          const k = a[i++];
          if (!this.tomb.has(k)) out[n++] = k;
        } else {
          out[n++] = b[j++];
        }
      }
      out.length = n;
      // A new array: a captured snapshot may still hold the old one.
      this.sorted = out;
      this.tomb.clear();
      this.pending = [];
    }
  }

  /**
   * *entries yields [key, value] in key order for keys >= from. The store
   * must not be modified while iterating.
   */
  *entries(from = '') {
    this.tidy();
    const a = this.sorted;
    const b = this.pending;
    let i = from === '' ? 0 : lowerBound(a, from);
    let j = from === '' ? 0 : lowerBound(b, from);
    while (i < a.length || j < b.length) {
      let k;
      if (j >= b.length || (i < a.length && compareKeys(a[i], b[j]) < 0)) {
        k = a[i++];
        if (this.tomb.has(k)) continue;
      } else {
        k = b[j++];
      }
      yield [k, this.map.get(k)];
    }
  }

  /**
   * capture returns a point-in-time view {keys, values} (parallel arrays in
   * key order) that later writes do not change. Strings are shared, not
   * copied.
   */
  capture() {
    this.tidy(true);
    const keys = this.sorted;
    const values = new Array(keys.length);
    for (let i = 0; i < keys.length; i++) values[i] = this.map.get(keys[i]);
    return { keys, values };
  }
}

// ---- commands ------------------------------------------------------------

const RESULT_OK_TRUE = Buffer.from('{"ok":true}');
const RESULT_OK_FALSE = Buffer.from('{"ok":false}');

function errorResult(msg) {
  return Buffer.from(`{"error":${JSON.stringify(msg)}}`);
}
const ERR_MALFORMED_COMMAND = errorResult('malformed command');
const ERR_MALFORMED_QUERY = errorResult('malformed query');
const ERR_MISSING_OP = errorResult('missing op');
const ERR_UNSUPPORTED_V1 = errorResult('unsupported in version 1');
const ERR_NOT_INTEGER = errorResult('value is not an integer');
const ERR_OVERFLOW = errorResult('overflow');
const ERR_OLD = errorResult('old must be a string or null');
const ERR_LIMIT_NEG = errorResult('limit must be a non-negative integer');

// Rejection carries a rejection result out of the field readers.
class Rejection {
  constructor(result) {
    this.result = result;
  }
}

/**
 * MAX_DEPTH is the deepest nesting of arrays and objects a command may
 * have (the top-level object counts as 1), as in Go's encoding/json.
 */
const MAX_DEPTH = 10000;

// tooDeep reports whether JSON text nests arrays/objects deeper than
// MAX_DEPTH (brackets inside strings do not count).
function tooDeep(data) {
  if (data.length <= 2 * MAX_DEPTH) return false; // cannot nest that deep and close
  let depth = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i];
    if (c === 0x22) {
      for (i++; i < data.length && data[i] !== 0x22; i++) if (data[i] === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_DEPTH) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}

// decode implements decoding rule 1: valid UTF-8, JSON, an object.
function decode(data) {
  if (!isUtf8(data) || tooDeep(data)) return undefined;
  let v;
  try {
    v = JSON.parse(data.toString('utf8'));
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  return v;
}

function str(obj, field) {
  if (Object.hasOwn(obj, field)) {
    const v = obj[field];
    if (typeof v === 'string') return v.toWellFormed();
  }
  throw new Rejection(errorResult(`${field} must be a string`));
}

function int(obj, field) {
  if (Object.hasOwn(obj, field)) {
    const v = obj[field];
    if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  }
  throw new Rejection(errorResult(`${field} must be an integer`));
}

// readOp implements decoding rule 2; it returns the op string.
function readOp(cmd) {
  if (!Object.hasOwn(cmd, 'op') || typeof cmd.op !== 'string') return undefined;
  return cmd.op.toWellFormed();
}

const CANONICAL_INT = /^-?(0|[1-9][0-9]*)$/;

/** KV is the kv state machine: the store plus the applied position. */
class KV {
  constructor() {
    this.store = new Store();
    this.appliedIndex = 0;
    this.appliedTerm = 0;
    this.version = 0; // FSM version of the last applied entry, 0 if none
  }

  /**
   * apply runs one command (a Buffer) under FSM version (1 or 2) and
   * returns the result bytes. It never throws for bad input; the state is
   * unchanged when the result is an error.
   */
  apply(data, version) {
    const cmd = decode(data);
    if (cmd === undefined) return ERR_MALFORMED_COMMAND;
    const op = readOp(cmd);
    if (op === undefined) return ERR_MISSING_OP;
    try {
      switch (op) {
        case 'put': {
          const key = str(cmd, 'key');
          const value = str(cmd, 'value');
          this.store.set(key, value);
          return RESULT_OK_TRUE;
        }
        case 'delete': {
          const key = str(cmd, 'key');
          return this.store.delete(key) ? RESULT_OK_TRUE : RESULT_OK_FALSE;
        }
        case 'cas': {
          const key = str(cmd, 'key');
          let old = null;
          if (!Object.hasOwn(cmd, 'old') || (cmd.old !== null && typeof cmd.old !== 'string')) {
            return ERR_OLD;
          }
          if (cmd.old !== null) old = cmd.old.toWellFormed();
          const nv = str(cmd, 'new');
          const cur = this.store.get(key);
          const ok = old === null ? cur === undefined : cur !== undefined && cur === old;
          if (ok) {
            this.store.set(key, nv);
            return Buffer.from(`{"ok":true,"value":${JSON.stringify(nv)}}`);
          }
          return Buffer.from(`{"ok":false,"value":${JSON.stringify(cur === undefined ? '' : cur)}}`);
        }
        case 'incr': {
          if (version < 2) return ERR_UNSUPPORTED_V1;
          const key = str(cmd, 'key');
          const delta = int(cmd, 'delta');
          const cur = this.store.get(key);
          let v = 0;
          if (cur !== undefined) {
            if (!CANONICAL_INT.test(cur) || cur === '-0') return ERR_NOT_INTEGER;
            v = Number(cur);
            if (!Number.isSafeInteger(v)) return ERR_NOT_INTEGER;
          }
          const sum = v + delta;
          if (!Number.isSafeInteger(sum)) return ERR_OVERFLOW;
          const out = String(sum === 0 ? 0 : sum);
          this.store.set(key, out);
          return Buffer.from(`{"value":${out}}`);
        }
        default:
          return errorResult(`unknown op: ${op}`);
      }
    } catch (e) {
      if (e instanceof Rejection) return e.result;
      throw e;
    }
  }

  /** query answers a read-only request (a Buffer) with result bytes. */
  query(data) {
    const q = decode(data);
    if (q === undefined) return ERR_MALFORMED_QUERY;
    const op = readOp(q);
    if (op === undefined) return ERR_MISSING_OP;
    try {
      switch (op) {
        case 'get': {
          const key = str(q, 'key');
          const v = this.store.get(key);
          if (v === undefined) return Buffer.from('{"found":false,"value":""}');
          return Buffer.from(`{"found":true,"value":${JSON.stringify(v)}}`);
        }
        case 'list': {
          let prefix = '';
          if (Object.hasOwn(q, 'prefix')) prefix = str(q, 'prefix');
          let limit = 0;
          if (Object.hasOwn(q, 'limit')) {
            limit = int(q, 'limit');
            if (limit < 0) return ERR_LIMIT_NEG;
          }
          const parts = [];
          for (const [k, v] of this.store.entries(prefix)) {
            if (!k.startsWith(prefix)) break;
            parts.push(`{"key":${JSON.stringify(k)},"value":${JSON.stringify(v)}}`);
            if (limit > 0 && parts.length >= limit) break;
          }
          return Buffer.from(`{"items":[${parts.join(',')}]}`);
        }
        default:
          return errorResult(`unknown op: ${op}`);
      }
    } catch (e) {
      if (e instanceof Rejection) return e.result;
      throw e;
    }
  }

  /**
   * snapshot captures the current state and returns {header, chunks}:
   * header {index, term, version, format} and a generator of Buffers (each
   * 1..CHUNK_BYTES bytes) whose concatenation is the canonical encoding.
   * Later applies do not change what the generator yields.
   */
  snapshot() {
    const view = this.store.capture();
    return {
      header: { index: this.appliedIndex, term: this.appliedTerm, version: this.version, format: FORMAT },
      chunks: encodeChunks(view.keys, (i) => view.values[i], CHUNK_BYTES),
    };
  }

  /** digest returns the SHA-256 (32-byte Buffer) of the canonical encoding. */
  digest() {
    const h = crypto.createHash('sha256');
    const st = this.store;
    st.tidy(true);
    const keys = st.sorted;
    // The generator runs to completion here, so reading live values is safe.
    for (const chunk of encodeChunks(keys, (i) => st.map.get(keys[i]), 64 * 1024)) h.update(chunk);
    return h.digest();
  }
}

// encodeChunks yields the canonical encoding of the pairs (keys[i],
// valueAt(i)) in chunks of exactly size bytes (the last one shorter, none
// empty).
function* encodeChunks(keys, valueAt, size) {
  let buf = Buffer.allocUnsafe(size);
  let pos = 0;
  const full = []; // finished chunks not yet yielded
  const u32 = Buffer.allocUnsafe(4);
  // copy appends src, cutting chunks as they fill.
  const copy = (src) => {
    let off = 0;
    while (off < src.length) {
      const n = Math.min(src.length - off, size - pos);
      src.copy(buf, pos, off, off + n);
      pos += n;
      off += n;
      if (pos === size) {
        full.push(buf);
        buf = Buffer.allocUnsafe(size);
        pos = 0;
      }
    }
  };
  // record appends u32(len) and the UTF-8 bytes of s.
  const record = (s) => {
    const len = Buffer.byteLength(s, 'utf8');
    if (pos + 4 + len < size) {
      // Fast path: fits in the current chunk (and does not fill it).
      buf.writeUInt32BE(len, pos);
      pos += 4;
      pos += buf.write(s, pos, 'utf8');
      return;
    }
    u32.writeUInt32BE(len, 0);
    copy(u32);
    copy(Buffer.from(s, 'utf8'));
  };
  for (let i = 0; i < keys.length; i++) {
    record(keys[i]);
    record(valueAt(i));
    while (full.length > 0) yield full.shift();
  }
  if (pos > 0) yield buf.subarray(0, pos);
}

/** RestoreError is a snapshot body that does not decode (gRPC DATA_LOSS). */
class RestoreError extends Error {}

/**
 * Decoder turns canonical-encoding bytes, pushed in arbitrary chunks, back
 * into a Store, checking that keys are strictly ascending and valid UTF-8.
 */
class Decoder {
  constructor() {
    this.store = new Store();
    this.keys = []; // ascending, becomes store.sorted
    this.parts = []; // buffered bytes not yet consumed
    this.have = 0;
    this.need = 4; // bytes wanted next
    this.stage = 0; // 0 key length, 1 key, 2 value length, 3 value
    this.key = null;
    this.prevKey = null;
    this.records = 0;
  }

  take(n) {
    // Returns exactly n buffered bytes as one Buffer.
    let out;
    if (this.parts[0].length >= n) {
      out = this.parts[0].subarray(0, n);
      if (this.parts[0].length === n) this.parts.shift();
      else this.parts[0] = this.parts[0].subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let pos = 0;
      while (pos < n) {
        const p = this.parts[0];
        const k = Math.min(p.length, n - pos);
        p.copy(out, pos, 0, k);
        pos += k;
        if (k === p.length) this.parts.shift();
        else this.parts[0] = p.subarray(k);
      }
    }
    this.have -= n;
    return out;
  }

  /** push consumes one data chunk. Throws RestoreError. */
  push(chunk) {
    if (chunk.length > 0) {
      this.parts.push(chunk);
      this.have += chunk.length;
    }
    // need can be 0 (an empty key or value): that field completes at once.
    while (this.need <= this.have) {
      const b = this.need === 0 ? EMPTY : this.take(this.need);
      switch (this.stage) {
        case 0:
        case 2:
          this.need = b.readUInt32BE(0);
          this.stage++;
          break;
        case 1:
          if (this.prevKey !== null && Buffer.compare(this.prevKey, b) >= 0) {
            throw new RestoreError(`kv snapshot: key of record ${this.records} is not above the previous key`);
          }
          if (!isUtf8(b)) throw new RestoreError(`kv snapshot: key of record ${this.records} is not valid UTF-8`);
          this.prevKey = Buffer.from(b);
          this.key = b.toString('utf8');
          this.need = 4;
          this.stage = 2;
          break;
        default:
          if (!isUtf8(b)) throw new RestoreError(`kv snapshot: value of record ${this.records} is not valid UTF-8`);
          this.keys.push(this.key);
          this.store.map.set(this.key, b.toString('utf8'));
          this.records++;
          this.need = 4;
          this.stage = 0;
      }
    }
  }

  /** finish returns the decoded Store. Throws RestoreError on a truncated body. */
  finish() {
    if (this.stage !== 0 || this.have !== 0) {
      throw new RestoreError(`kv snapshot: body ends inside record ${this.records}`);
    }
    this.store.sorted = this.keys;
    return this.store;
  }
}

const EMPTY = Buffer.alloc(0);

module.exports = {
  KV,
  Store,
  Decoder,
  RestoreError,
  compareKeys,
  encodeChunks,
  NAME,
  MIN_VERSION,
  MAX_VERSION,
  DOWNGRADE_SAFE_TO,
  FORMAT,
  CHUNK_BYTES,
  MAX_DEPTH,
};
