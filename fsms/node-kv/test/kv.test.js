'use strict';
// Unit tests of the kv semantics, the canonical encoding and the digest
// (docs/plugin-protocol.md sections 6 and 7).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { KV, Store, Decoder, RestoreError, compareKeys, encodeChunks } = require('../lib/kv');

function apply(kv, cmd, version = 1) {
  const data = Buffer.isBuffer(cmd) ? cmd : Buffer.from(typeof cmd === 'string' ? cmd : JSON.stringify(cmd));
  return kv.apply(data, version).toString();
}
function query(kv, q) {
  return kv.query(Buffer.from(typeof q === 'string' ? q : JSON.stringify(q))).toString();
}
function body(kv) {
  return Buffer.concat([...kv.snapshot().chunks]);
}

test('put, get, delete, list', () => {
  const kv = new KV();
  assert.equal(apply(kv, { op: 'put', key: 'b', value: '2' }), '{"ok":true}');
  assert.equal(apply(kv, { op: 'put', key: 'a', value: '1' }), '{"ok":true}');
  assert.equal(apply(kv, { op: 'put', key: 'ab', value: '' }), '{"ok":true}');
  assert.equal(query(kv, { op: 'get', key: 'a' }), '{"found":true,"value":"1"}');
  assert.equal(query(kv, { op: 'get', key: 'zz' }), '{"found":false,"value":""}');
  assert.equal(query(kv, { op: 'list' }), '{"items":[{"key":"a","value":"1"},{"key":"ab","value":""},{"key":"b","value":"2"}]}');
  assert.equal(query(kv, { op: 'list', prefix: 'a', limit: 1 }), '{"items":[{"key":"a","value":"1"}]}');
  assert.equal(query(kv, { op: 'list', prefix: 'a', limit: 0 }), '{"items":[{"key":"a","value":"1"},{"key":"ab","value":""}]}');
  assert.equal(query(kv, { op: 'list', prefix: 'c' }), '{"items":[]}');
  assert.equal(apply(kv, { op: 'delete', key: 'a' }), '{"ok":true}');
  assert.equal(apply(kv, { op: 'delete', key: 'a' }), '{"ok":false}');
  assert.equal(query(kv, { op: 'list' }), '{"items":[{"key":"ab","value":""},{"key":"b","value":"2"}]}');
});

test('cas', () => {
  const kv = new KV();
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: null, new: 'v1' }), '{"ok":true,"value":"v1"}');
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: null, new: 'v2' }), '{"ok":false,"value":"v1"}');
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: 'x', new: 'v2' }), '{"ok":false,"value":"v1"}');
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: 'v1', new: 'v2' }), '{"ok":true,"value":"v2"}');
  assert.equal(apply(kv, { op: 'cas', key: 'absent', old: '', new: 'x' }), '{"ok":false,"value":""}');
  assert.equal(apply(kv, { op: 'cas', key: 'k', new: 'v3' }), '{"error":"old must be a string or null"}');
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: 1, new: 'v3' }), '{"error":"old must be a string or null"}');
  // new is checked even when the comparison fails.
  assert.equal(apply(kv, { op: 'cas', key: 'k', old: 'nope' }), '{"error":"new must be a string"}');
  assert.equal(query(kv, { op: 'get', key: 'k' }), '{"found":true,"value":"v2"}');
});

test('incr is version 2 only', () => {
  const kv = new KV();
  assert.equal(apply(kv, { op: 'incr', key: 'n', delta: 5 }, 1), '{"error":"unsupported in version 1"}');
  assert.equal(query(kv, { op: 'get', key: 'n' }), '{"found":false,"value":""}');
  assert.equal(apply(kv, { op: 'incr', key: 'n', delta: 5 }, 2), '{"value":5}');
  assert.equal(apply(kv, { op: 'incr', key: 'n', delta: -7 }, 2), '{"value":-2}');
  assert.equal(query(kv, { op: 'get', key: 'n' }), '{"found":true,"value":"-2"}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":1e1}', 2), '{"value":8}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":2.0}', 2), '{"value":10}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":1.5}', 2), '{"error":"delta must be an integer"}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":"1"}', 2), '{"error":"delta must be an integer"}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":1e400}', 2), '{"error":"delta must be an integer"}');
  assert.equal(apply(kv, '{"op":"incr","key":"n","delta":9007199254740992}', 2), '{"error":"delta must be an integer"}');
  assert.equal(apply(kv, '{"op":"incr","delta":1}', 2), '{"error":"key must be a string"}');
  assert.equal(apply(kv, '{"op":"incr","key":"z","delta":-0}', 2), '{"value":0}');
  assert.equal(query(kv, { op: 'get', key: 'z' }), '{"found":true,"value":"0"}');
  for (const bad of ['', ' 1', '01', '-0', '+1', '1.0', '1e3', 'x', '9007199254740992', '-9007199254740992']) {
    apply(kv, { op: 'put', key: 'b', value: bad });
    assert.equal(apply(kv, { op: 'incr', key: 'b', delta: 1 }, 2), '{"error":"value is not an integer"}', bad);
  }
  apply(kv, { op: 'put', key: 'm', value: '9007199254740990' });
  assert.equal(apply(kv, { op: 'incr', key: 'm', delta: 1 }, 2), '{"value":9007199254740991}');
  assert.equal(apply(kv, { op: 'incr', key: 'm', delta: 1 }, 2), '{"error":"overflow"}');
  assert.equal(query(kv, { op: 'get', key: 'm' }), '{"found":true,"value":"9007199254740991"}');
  apply(kv, { op: 'put', key: 'm', value: '-9007199254740991' });
  assert.equal(apply(kv, { op: 'incr', key: 'm', delta: -1 }, 2), '{"error":"overflow"}');
});

test('decoding rules and error results', () => {
  const kv = new KV();
  const cases = [
    ['', '{"error":"malformed command"}'],
    ['nope', '{"error":"malformed command"}'],
    ['[]', '{"error":"malformed command"}'],
    ['null', '{"error":"malformed command"}'],
    ['"s"', '{"error":"malformed command"}'],
    ['{"op":"put"} x', '{"error":"malformed command"}'],
    [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), '{"error":"malformed command"}'],
    ['{}', '{"error":"missing op"}'],
    ['{"op":null}', '{"error":"missing op"}'],
    ['{"OP":"put"}', '{"error":"missing op"}'],
    ['{"op":"get","key":"a"}', '{"error":"unknown op: get"}'],
    ['{"op":"x\\"<\\u0001\\n"}', '{"error":"unknown op: x\\"<\\u0001\\n"}'],
    ['{"op":"put","key":1,"value":"v"}', '{"error":"key must be a string"}'],
    ['{"op":"put","key":"k","value":null}', '{"error":"value must be a string"}'],
    ['{"op":"put","value":"v"}', '{"error":"key must be a string"}'],
    ['{"op":"delete"}', '{"error":"key must be a string"}'],
    ['  {"op":"put","key":"k","value":"a","value":"b"}\n', '{"ok":true}'],
  ];
  for (const [cmd, want] of cases) assert.equal(apply(kv, cmd), want, String(cmd));
  assert.equal(query(kv, { op: 'get', key: 'k' }), '{"found":true,"value":"b"}');
  assert.equal(query(kv, 'x'), '{"error":"malformed query"}');
  assert.equal(query(kv, '{}'), '{"error":"missing op"}');
  assert.equal(query(kv, { op: 'put' }), '{"error":"unknown op: put"}');
  assert.equal(query(kv, { op: 'get' }), '{"error":"key must be a string"}');
  assert.equal(query(kv, { op: 'list', prefix: 1 }), '{"error":"prefix must be a string"}');
  assert.equal(query(kv, { op: 'list', prefix: null }), '{"error":"prefix must be a string"}');
  assert.equal(query(kv, { op: 'list', limit: '1' }), '{"error":"limit must be an integer"}');
  assert.equal(query(kv, { op: 'list', limit: -1 }), '{"error":"limit must be a non-negative integer"}');
  // Deeper than Go's encoding/json accepts (10000 levels) is malformed.
  const deep = (d) => `{"op":"put","key":"d","value":"v","x":${'['.repeat(d)}${']'.repeat(d)}}`;
  assert.equal(apply(kv, deep(9999)), '{"ok":true}');
  assert.equal(apply(kv, deep(10000)), '{"error":"malformed command"}');
});

test('result escaping matches JSON.stringify; lone surrogates become U+FFFD', () => {
  const kv = new KV();
  apply(kv, '{"op":"put","key":"k","value":"<>&/\\u007f\\u2028\\u0008\\u000c\\u001f\\ud800x\\ud83d\\ude00é"}');
  assert.equal(
    query(kv, { op: 'get', key: 'k' }),
    '{"found":true,"value":"<>&/\u007f\u2028\\b\\f\\u001f\ufffdx\u{1f600}é"}',
  );
  apply(kv, '{"op":"put","key":"\\udc00","value":""}');
  assert.equal(query(kv, { op: 'get', key: '\ufffd' }), '{"found":true,"value":""}');
});

test('keys are ordered by UTF-8 bytes', () => {
  const keys = ['\u{10000}', '\uffff', '\ue000', 'z', 'a', '', 'ab', '\u00e9', '\u{1f600}'];
  const want = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  assert.deepEqual([...keys].sort(compareKeys), want);
  const kv = new KV();
  for (const k of keys) apply(kv, { op: 'put', key: k, value: 'v' });
  const listed = JSON.parse(query(kv, { op: 'list' })).items.map((i) => i.key);
  assert.deepEqual(listed, want);
});

for (const tidyMin of [1024, 4, 0]) {
test(`store index stays consistent under random churn (tidyMin ${tidyMin})`, () => {
  // A seeded LCG: the run is reproducible.
  let seed = 42;
  const rnd = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor(seed / 65536) % n;
  };
  const s = new Store(tidyMin);
  const ref = new Map();
  for (let i = 0; i < 20000; i++) {
    const k = `k${rnd(3000)}`;
    if (rnd(3) === 0) {
      assert.equal(s.delete(k), ref.delete(k));
    } else {
      s.set(k, String(i));
      ref.set(k, String(i));
    }
    if (i % 97 === 0) {
      const from = rnd(4) === 0 ? '' : `k${rnd(3000)}`;
      const got = [...s.entries(from)];
      const want = [...ref.entries()].filter(([key]) => compareKeys(key, from) >= 0).sort((a, b) => compareKeys(a[0], b[0]));
      assert.deepEqual(got, want);
    }
  }
  assert.equal(s.size, ref.size);
  const cap = s.capture();
  const want = [...ref.entries()].sort((a, b) => compareKeys(a[0], b[0]));
  assert.deepEqual(cap.keys, want.map((e) => e[0]));
  assert.deepEqual(cap.values, want.map((e) => e[1]));
});
}

test('canonical encoding and digest vectors', () => {
  const empty = new KV();
  assert.equal(body(empty).length, 0);
  assert.equal(empty.digest().toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  const kv = new KV();
  apply(kv, { op: 'put', key: 'b', value: '' });
  apply(kv, { op: 'put', key: 'a', value: '1' });
  assert.equal(body(kv).toString('hex'), '00000001' + '61' + '00000001' + '31' + '00000001' + '62' + '00000000');
  assert.equal(kv.digest().toString('hex'), crypto.createHash('sha256').update(body(kv)).digest('hex'));
  assert.equal(kv.digest().toString('hex'), 'b8aa4ad69f86e09bd003b8715beb93af9e5dfa222b2254ad1b1d26b9728121f1');
});

test('encodeChunks cuts at exact sizes, records may span chunks', () => {
  const keys = ['a', 'bb', 'ccc'];
  const values = ['x'.repeat(10), '', 'é'];
  const whole = Buffer.concat([...encodeChunks(keys, (i) => values[i], 1 << 20)]);
  for (const size of [1, 3, 4, 5, 7, 64]) {
    const chunks = [...encodeChunks(keys, (i) => values[i], size)];
    for (const c of chunks.slice(0, -1)) assert.equal(c.length, size);
    assert.ok(chunks.at(-1).length >= 1 && chunks.at(-1).length <= size);
    assert.deepEqual(Buffer.concat(chunks), whole);
  }
});

test('snapshot and restore round trip; snapshot is point-in-time', () => {
  const kv = new KV();
  for (let i = 0; i < 3000; i++) apply(kv, { op: 'put', key: `key-${(i * 7919) % 3000}`, value: 'v'.repeat(i % 50) + i });
  apply(kv, { op: 'put', key: '', value: '' });
  kv.appliedIndex = 77;
  kv.appliedTerm = 3;
  kv.version = 2;
  const snap = kv.snapshot();
  const digest = kv.digest();
  // Writes after the capture must not show up in the stream.
  apply(kv, { op: 'put', key: 'key-1', value: 'changed' });
  apply(kv, { op: 'delete', key: 'key-2' });
  apply(kv, { op: 'put', key: 'new', value: 'n' });
  assert.deepEqual(snap.header, { index: 77, term: 3, version: 2, format: 'raftd.kv.v1' });
  const data = Buffer.concat([...snap.chunks]);
  assert.equal(crypto.createHash('sha256').update(data).digest('hex'), digest.toString('hex'));
  // Feed it back in odd-sized pieces.
  for (const step of [1, 5, 4096]) {
    const d = new Decoder();
    for (let off = 0; off < data.length; off += step) d.push(data.subarray(off, off + step));
    const restored = new KV();
    restored.store = d.finish();
    assert.equal(restored.digest().toString('hex'), digest.toString('hex'));
    assert.equal(query(restored, { op: 'get', key: 'key-1' }), query(restoredRef(data), { op: 'get', key: 'key-1' }));
    // The restored store keeps working.
    apply(restored, { op: 'put', key: 'key-0', value: 'z' });
    assert.equal(query(restored, { op: 'get', key: 'key-0' }), '{"found":true,"value":"z"}');
  }
});

function restoredRef(data) {
  const d = new Decoder();
  d.push(data);
  const kv = new KV();
  kv.store = d.finish();
  return kv;
}

test('restore rejects corrupt bodies', () => {
  const rec = (s) => {
    const b = Buffer.from(s);
    const l = Buffer.alloc(4);
    l.writeUInt32BE(b.length);
    return Buffer.concat([l, b]);
  };
  const bad = {
    'truncated length': Buffer.concat([rec('a'), rec('1'), Buffer.from([0, 0])]),
    'truncated key': Buffer.concat([rec('a'), rec('1'), Buffer.from([0, 0, 0, 5, 0x61])]),
    'missing value': Buffer.concat([rec('a'), rec('1'), rec('b')]),
    'keys not ascending': Buffer.concat([rec('b'), rec('1'), rec('a'), rec('2')]),
    'duplicate key': Buffer.concat([rec('a'), rec('1'), rec('a'), rec('2')]),
    'invalid UTF-8': Buffer.concat([rec('a'), Buffer.from([0, 0, 0, 1, 0xff])]),
  };
  for (const [name, data] of Object.entries(bad)) {
    assert.throws(
      () => {
        const d = new Decoder();
        d.push(data);
        d.finish();
      },
      RestoreError,
      name,
    );
  }
  const d = new Decoder();
  d.push(Buffer.concat([rec(''), rec(''), rec('a'), rec('')]));
  const kv = new KV();
  kv.store = d.finish();
  assert.equal(query(kv, { op: 'list' }), '{"items":[{"key":"","value":""},{"key":"a","value":""}]}');
});
