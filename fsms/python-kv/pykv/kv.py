"""The kv state machine, versions 1 and 2 (docs/plugin-protocol.md sections
6 and 7). It agrees byte for byte with the Go implementation (fsms/kv) in
results, snapshot body and digest.

State: str keys to str values. Keys are ordered by the bytes of their UTF-8
encoding, which for strings without surrogates (decoding never keeps one)
is Python's own str order, by code point. The Store keeps a dict for point
reads and writes and a lazily maintained sorted key index for ordered reads
(list, snapshot, digest): new keys go to a pending list that is merged into
the sorted list when it grows, so a put is O(1) and a list is
O(log n + pending + limit).

Nothing here is thread-safe: the service holds one lock around every call.
"""

import bisect
import hashlib
import json
import math
import re
import struct
import sys

NAME = "kv"
MIN_VERSION = 1
MAX_VERSION = 2
# The lowest version kv declares safe to switch back to (Info's
# downgrade_safe_to): every version stores plain strings, version 2 only
# adds incr.
DOWNGRADE_SAFE_TO = 1
FORMAT = "raftd.kv.v1"
# Snapshot data chunks are at most this long (the protocol maximum).
CHUNK_BYTES = 1 << 20
# A record longer than this in a snapshot body is corruption (as in Go's
# fsms/internal/records).
MAX_RECORD_BYTES = 1 << 30
# The deepest nesting of arrays and objects a command may have, the
# top-level object counting as 1, as in Go's encoding/json.
MAX_DEPTH = 10000
# Integers in commands and results stay within +-MAX_SAFE (2^53-1).
MAX_SAFE = (1 << 53) - 1


class Store:
    """An ordered str -> str map (see the module comment).

    tidy_min is the pending/tombstone count below which they are not folded
    into the sorted index (tests lower it to exercise the merge).
    """

    def __init__(self, tidy_min=1024):
        self.tidy_min = tidy_min
        self.map = {}
        # Ascending; may hold keys that were deleted since (those are in
        # tomb). Never changed in place: a snapshot may hold it.
        self.sorted = []
        self.tomb = set()
        # Keys added since the last merge, not in sorted. May hold keys
        # deleted since (not in map) and duplicates; tidy drops both.
        self.pending = []
        self.pending_clean = True

    def __len__(self):
        return len(self.map)

    def get(self, key):
        return self.map.get(key)

    def set(self, key, value):
        m = self.map
        if key not in m:
            # A new key: back in sorted if it was tombstoned there, else
            # pending.
            if key in self.tomb:
                self.tomb.discard(key)
            else:
                self.pending.append(key)
                self.pending_clean = False
        m[key] = value

    def delete(self, key):
        if self.map.pop(key, None) is None:
            return False
        s = self.sorted
        i = bisect.bisect_left(s, key)
        if i < len(s) and s[i] == key:
            self.tomb.add(key)
        else:
            self.pending_clean = False  # a stale key in pending
        return True

    def tidy(self, full=False):
        """Sorts pending and folds it (and the tombstones) into sorted when
        they are large compared with the sorted index, or always if full."""
        if not self.pending_clean:
            m = self.map
            self.pending = sorted({k for k in self.pending if k in m})
            self.pending_clean = True
        limit = 0 if full else max(self.tidy_min, len(self.sorted) >> 4)
        if len(self.pending) > limit or len(self.tomb) > limit:
            tomb = self.tomb
            live = [k for k in self.sorted if k not in tomb] if tomb else self.sorted
            # Two ascending runs: timsort merges them in linear time. The
            # result is a new list; a captured snapshot keeps the old one.
            self.sorted = sorted(live + self.pending)
            self.tomb = set()
            self.pending = []

    def items_from(self, start=""):
        """Yields (key, value) in key order for keys >= start. The store
        must not change while iterating."""
        self.tidy()
        a, b, tomb, m = self.sorted, self.pending, self.tomb, self.map
        i = bisect.bisect_left(a, start) if start else 0
        j = bisect.bisect_left(b, start) if start else 0
        na, nb = len(a), len(b)
        while i < na or j < nb:
            if j >= nb or (i < na and a[i] < b[j]):
                k = a[i]
                i += 1
                if k in tomb:
                    continue
            else:
                k = b[j]
                j += 1
            yield k, m[k]

    def capture(self):
        """Returns a point-in-time view (keys, values): parallel lists in
        key order that later writes do not change."""
        self.tidy(full=True)
        keys = self.sorted
        m = self.map
        return keys, [m[k] for k in keys]


# ---- commands ---------------------------------------------------------------

# encode_string is the canonical JSON string encoding: ECMAScript
# JSON.stringify's escapes (", \, \b \f \n \r \t, other controls as \u00xx
# with lowercase hex), everything else verbatim. json's ensure_ascii=False
# encoder does exactly that.
encode_string = json.encoder.encode_basestring


def error_result(msg):
    return b'{"error":' + encode_string(msg).encode() + b"}"


RESULT_OK_TRUE = b'{"ok":true}'
RESULT_OK_FALSE = b'{"ok":false}'
ERR_MALFORMED_COMMAND = error_result("malformed command")
ERR_MALFORMED_QUERY = error_result("malformed query")
ERR_MISSING_OP = error_result("missing op")
ERR_UNSUPPORTED_V1 = error_result("unsupported in version 1")
ERR_NOT_INTEGER = error_result("value is not an integer")
ERR_OVERFLOW = error_result("overflow")
ERR_OLD = error_result("old must be a string or null")
ERR_LIMIT_NEG = error_result("limit must be a non-negative integer")


class Number:
    """A JSON number kept as its text, so that integer checks see exactly
    what the command said (see to_int)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


class Malformed(Exception):
    """Raised by the decoding hooks: the command is not valid JSON for us."""


def _reject_constant(name):
    # Python's json accepts NaN, Infinity and -Infinity; JSON does not.
    raise Malformed(name)


# Python's json parser recurses once per nesting level, counted against the
# interpreter's recursion limit (default 1000): raise it so that commands
# MAX_DEPTH deep parse. (The threads that run this need a C stack to match;
# main.py sets threading.stack_size.)
if sys.getrecursionlimit() < 2 * MAX_DEPTH + 1000:
    sys.setrecursionlimit(2 * MAX_DEPTH + 1000)

_DECODER = json.JSONDecoder(parse_int=Number, parse_float=Number, parse_constant=_reject_constant)
_BRACKETS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _too_deep(data):
    """Reports whether JSON text nests arrays/objects deeper than MAX_DEPTH
    (brackets inside strings do not count)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(data):
        c = m.group()
        if c == b"[" or c == b"{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c == b"]" or c == b"}":
            depth -= 1
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(s):
    """Replaces each lone surrogate (only a \\uD800-style escape can make
    one; json joins valid pairs) with U+FFFD, as Go's encoding/json does."""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def decode(data):
    """Decoding rule 1: valid UTF-8, JSON, an object. Returns a dict or
    None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _too_deep(data):
        return None
    try:
        v = _DECODER.decode(text)
    except (ValueError, Malformed, RecursionError):
        return None
    return v if type(v) is dict else None


class Rejection(Exception):
    """Carries a rejection result out of the field readers."""

    def __init__(self, result):
        super().__init__()
        self.result = result


def get_str(obj, field):
    v = obj.get(field)
    if type(v) is str:
        return well_formed(v)
    raise Rejection(error_result(field + " must be a string"))


def to_int(v):
    """Returns the integer value of a JSON number that, parsed as an
    IEEE-754 double with correct rounding, is integral with magnitude <=
    MAX_SAFE; None otherwise."""
    if type(v) is not Number:
        return None
    f = float(v.text)  # correctly rounded; 1e400 is inf
    if not math.isfinite(f) or f != math.floor(f) or abs(f) > MAX_SAFE:
        return None
    return int(f)


def get_int(obj, field):
    v = to_int(obj.get(field))
    if v is None:
        raise Rejection(error_result(field + " must be an integer"))
    return v


def read_op(cmd):
    """Decoding rule 2: the op string, or None."""
    op = cmd.get("op")
    return well_formed(op) if type(op) is str else None


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")


def parse_canonical_int(s):
    """The value of a canonical decimal safe integer, or None."""
    if len(s) > 17 or s == "-0" or not _CANONICAL_INT.match(s):
        return None
    v = int(s)
    return v if -MAX_SAFE <= v <= MAX_SAFE else None


_U32 = struct.Struct(">I")


class KV:
    """The kv state machine: the store plus the applied position."""

    def __init__(self):
        self.store = Store()
        self.applied_index = 0
        self.applied_term = 0
        self.version = 0  # FSM version of the last applied entry, 0 if none

    def apply(self, data, version):
        """Runs one command (bytes) under FSM version 1 or 2 and returns the
        result bytes. Bad input is a result, never an exception; the state
        is unchanged when the result is an error."""
        cmd = decode(data)
        if cmd is None:
            return ERR_MALFORMED_COMMAND
        op = read_op(cmd)
        if op is None:
            return ERR_MISSING_OP
        try:
            if op == "put":
                key = get_str(cmd, "key")
                value = get_str(cmd, "value")
                self.store.set(key, value)
                return RESULT_OK_TRUE
            if op == "delete":
                key = get_str(cmd, "key")
                return RESULT_OK_TRUE if self.store.delete(key) else RESULT_OK_FALSE
            if op == "cas":
                key = get_str(cmd, "key")
                if "old" not in cmd:
                    return ERR_OLD
                old = cmd["old"]
                if old is not None:
                    if type(old) is not str:
                        return ERR_OLD
                    old = well_formed(old)
                new = get_str(cmd, "new")
                cur = self.store.get(key)
                ok = cur is None if old is None else cur == old
                if ok:
                    self.store.set(key, new)
                    return b'{"ok":true,"value":' + encode_string(new).encode() + b"}"
                cur = "" if cur is None else cur
                return b'{"ok":false,"value":' + encode_string(cur).encode() + b"}"
            if op == "incr":
                if version < 2:
                    return ERR_UNSUPPORTED_V1
                key = get_str(cmd, "key")
                delta = get_int(cmd, "delta")
                cur = self.store.get(key)
                v = 0
                if cur is not None:
                    v = parse_canonical_int(cur)
                    if v is None:
                        return ERR_NOT_INTEGER
                total = v + delta
                if abs(total) > MAX_SAFE:
                    return ERR_OVERFLOW
                out = str(total)
                self.store.set(key, out)
                return b'{"value":' + out.encode() + b"}"
            return error_result("unknown op: " + op)
        except Rejection as r:
            return r.result

    def query(self, data):
        """Answers a read-only request (bytes) with result bytes."""
        q = decode(data)
        if q is None:
            return ERR_MALFORMED_QUERY
        op = read_op(q)
        if op is None:
            return ERR_MISSING_OP
        try:
            if op == "get":
                key = get_str(q, "key")
                v = self.store.get(key)
                if v is None:
                    return b'{"found":false,"value":""}'
                return b'{"found":true,"value":' + encode_string(v).encode() + b"}"
            if op == "list":
                prefix = get_str(q, "prefix") if "prefix" in q else ""
                limit = 0
                if "limit" in q:
                    limit = get_int(q, "limit")
                    if limit < 0:
                        return ERR_LIMIT_NEG
                parts = []
                for k, v in self.store.items_from(prefix):
                    if not k.startswith(prefix):
                        break
                    parts.append('{"key":' + encode_string(k) + ',"value":' + encode_string(v) + "}")
                    if limit and len(parts) >= limit:
                        break
                return ('{"items":[' + ",".join(parts) + "]}").encode()
            return error_result("unknown op: " + op)
        except Rejection as r:
            return r.result

    def snapshot(self):
        """Captures the current state. Returns (header, chunks): header a
        dict index/term/version/format, chunks an iterator of bytes (each
        1..CHUNK_BYTES long) whose concatenation is the canonical encoding.
        Later applies do not change what the iterator yields."""
        keys, values = self.store.capture()
        header = {"index": self.applied_index, "term": self.applied_term,
                  "version": self.version, "format": FORMAT}
        return header, encode_chunks(keys, values, CHUNK_BYTES)

    def digest(self):
        """The SHA-256 (32 bytes) of the canonical encoding."""
        h = hashlib.sha256()
        keys, values = self.store.capture()
        for chunk in encode_chunks(keys, values, 1 << 16):
            h.update(chunk)
        return h.digest()


def encode_chunks(keys, values, size):
    """Yields the canonical encoding of the pairs (keys[i], values[i]):
    u32(len) bytes for each key and value, in chunks of exactly size bytes
    (the last one shorter, none empty)."""
    buf = bytearray()
    pack = _U32.pack
    for k, v in zip(keys, values):
        kb = k.encode()
        vb = v.encode()
        buf += pack(len(kb))
        buf += kb
        buf += pack(len(vb))
        buf += vb
        if len(buf) >= size:
            n = len(buf) - len(buf) % size
            view = memoryview(buf)
            for off in range(0, n, size):
                yield bytes(view[off:off + size])
            view.release()
            del buf[:n]
    if buf:
        yield bytes(buf)


class RestoreError(Exception):
    """A snapshot body that does not decode (gRPC DATA_LOSS)."""


class Decoder:
    """Turns canonical-encoding bytes, pushed in chunks of any size, back
    into a Store, checking that keys are strictly ascending and valid
    UTF-8."""

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0
        self.keys = []
        self.map = {}
        self.prev = None  # the previous key's bytes
        self.records = 0

    def push(self, chunk):
        """Consumes one data chunk. Raises RestoreError."""
        buf = self.buf
        if self.pos:
            del buf[:self.pos]
            self.pos = 0
        buf += chunk
        pos, end = 0, len(buf)
        unpack = _U32.unpack_from
        keys, m = self.keys, self.map
        while True:
            # A whole record pair: u32 key u32 value.
            if end - pos < 4:
                break
            (klen,) = unpack(buf, pos)
            if klen > MAX_RECORD_BYTES:
                raise RestoreError("kv snapshot: record %d: key of %d bytes" % (self.records, klen))
            if end - pos < 8 + klen:
                break
            (vlen,) = unpack(buf, pos + 4 + klen)
            if vlen > MAX_RECORD_BYTES:
                raise RestoreError("kv snapshot: record %d: value of %d bytes" % (self.records, vlen))
            if end - pos < 8 + klen + vlen:
                break
            kb = bytes(buf[pos + 4:pos + 4 + klen])
            if self.prev is not None and kb <= self.prev:
                raise RestoreError("kv snapshot: key of record %d is not above the previous key" % self.records)
            try:
                k = kb.decode("utf-8")
                v = buf[pos + 8 + klen:pos + 8 + klen + vlen].decode("utf-8")
            except UnicodeDecodeError:
                raise RestoreError("kv snapshot: record %d is not valid UTF-8" % self.records) from None
            self.prev = kb
            keys.append(k)
            m[k] = v
            self.records += 1
            pos += 8 + klen + vlen
        self.pos = pos

    def finish(self):
        """Returns the decoded Store. Raises RestoreError on a body that
        ends inside a record."""
        if len(self.buf) != self.pos:
            raise RestoreError("kv snapshot: body ends inside record %d" % self.records)
        s = Store()
        s.map = self.map
        s.sorted = self.keys
        return s
