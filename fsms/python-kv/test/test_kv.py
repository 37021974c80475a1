"""Unit tests of pykv.kv. The comparison with the Go kv, through real
plugin processes, is in ../pythonkv_test.go."""

import hashlib
import random
import unittest

from pykv import kv


class StoreTest(unittest.TestCase):
    def test_random_ops_keep_order(self):
        # A small tidy_min makes the pending list merge often.
        rnd = random.Random(1)
        s = kv.Store(tidy_min=4)
        ref = {}
        for i in range(5000):
            k = "k%03d" % rnd.randrange(300)
            if rnd.random() < 0.3:
                self.assertEqual(s.delete(k), k in ref)
                ref.pop(k, None)
            else:
                s.set(k, str(i))
                ref[k] = str(i)
            if i % 97 == 0:
                prefix = "k%d" % rnd.randrange(3)
                want = sorted((kk, v) for kk, v in ref.items() if kk >= prefix)
                self.assertEqual(list(s.items_from(prefix)), want)
        keys, values = s.capture()
        self.assertEqual(list(zip(keys, values)), sorted(ref.items()))

    def test_capture_is_point_in_time(self):
        s = kv.Store(tidy_min=0)
        s.set("a", "1")
        s.set("b", "2")
        keys, values = s.capture()
        s.set("a", "changed")
        s.delete("b")
        s.set("c", "3")
        s.tidy(full=True)
        self.assertEqual((keys, values), (["a", "b"], ["1", "2"]))

    def test_code_point_order_is_utf8_byte_order(self):
        ks = ["\uffff", "\U0001F600", "\ue000", "a", "", "\x00", "é"]
        self.assertEqual(sorted(ks), sorted(ks, key=lambda k: k.encode()))


class CommandTest(unittest.TestCase):
    def apply(self, f, cmd, version=2):
        return f.apply(cmd.encode() if isinstance(cmd, str) else cmd, version)

    def test_table(self):
        f = kv.KV()
        for cmd, version, want in [
            ('{"op":"put","key":"a","value":"1"}', 1, b'{"ok":true}'),
            ('{"op":"incr","key":"a","delta":2}', 1, b'{"error":"unsupported in version 1"}'),
            ('{"op":"incr","key":"a","delta":2}', 2, b'{"value":3}'),
            ('{"op":"incr","key":"a","delta":1e1}', 2, b'{"value":13}'),
            ('{"op":"incr","key":"a","delta":1.5}', 2, b'{"error":"delta must be an integer"}'),
            ('{"op":"incr","key":"a","delta":NaN}', 2, b'{"error":"malformed command"}'),
            ('{"op":"incr","key":"a","delta":1e400}', 2, b'{"error":"delta must be an integer"}'),
            ('{"op":"incr","key":"a","delta":9007199254740991}', 2, b'{"error":"overflow"}'),
            ('{"op":"incr","key":"a","delta":-13}', 2, b'{"value":0}'),
            ('{"op":"cas","key":"a","old":"0","new":"x\\u0001\\"/"}', 2, b'{"ok":true,"value":"x\\u0001\\"/"}'),
            ('{"op":"incr","key":"a","delta":1}', 2, b'{"error":"value is not an integer"}'),
            ('{"op":"cas","key":"z","old":null,"new":"\\ud800"}', 2, '{"ok":true,"value":"\ufffd"}'.encode()),
            ('{"op":"cas","key":"z","old":null,"new":"n"}', 2, '{"ok":false,"value":"\ufffd"}'.encode()),
            ('{"op":"cas","key":"z","new":"n"}', 2, b'{"error":"old must be a string or null"}'),
            ('{"op":"delete","key":"nope"}', 2, b'{"ok":false}'),
            ('{"op":"x\\u2028"}', 2, '{"error":"unknown op: x\u2028"}'.encode()),
            ('{"op":1}', 2, b'{"error":"missing op"}'),
            (b'{"op":"put","key":"\xff","value":"v"}', 2, b'{"error":"malformed command"}'),
            ('[]', 2, b'{"error":"malformed command"}'),
        ]:
            with self.subTest(cmd=cmd):
                self.assertEqual(self.apply(f, cmd, version), want)

    def test_depth_limit(self):
        f = kv.KV()
        for depth, ok in [(kv.MAX_DEPTH - 1, True), (kv.MAX_DEPTH, False)]:
            # The top-level object is one level.
            cmd = '{"op":"put","key":"d","value":"v","x":' + "[" * depth + "]" * depth + "}"
            want = b'{"ok":true}' if ok else b'{"error":"malformed command"}'
            self.assertEqual(self.apply(f, cmd), want, depth)

    def test_query(self):
        f = kv.KV()
        for k in ["b", "a", "ab", "c"]:
            self.apply(f, '{"op":"put","key":"%s","value":"%s"}' % (k, k.upper()))
        self.assertEqual(f.query(b'{"op":"list","prefix":"a"}'),
                         b'{"items":[{"key":"a","value":"A"},{"key":"ab","value":"AB"}]}')
        self.assertEqual(f.query(b'{"op":"list","limit":1}'), b'{"items":[{"key":"a","value":"A"}]}')
        self.assertEqual(f.query(b'{"op":"list","limit":-1}'), b'{"error":"limit must be a non-negative integer"}')
        self.assertEqual(f.query(b'{"op":"get","key":"q"}'), b'{"found":false,"value":""}')


class EncodingTest(unittest.TestCase):
    def test_worked_example(self):
        # docs/plugin-protocol.md section 7.
        body = b"".join(kv.encode_chunks(["a", "b"], ["1", ""], kv.CHUNK_BYTES))
        self.assertEqual(body.hex(), "00000001610000000131000000016200000000")
        self.assertEqual(kv.KV().digest().hex(), hashlib.sha256(b"").hexdigest())

    def test_chunks_and_decoder(self):
        keys = ["k%04d" % i for i in range(500)]
        values = ["v" * (i * 7 % 300) for i in range(500)]
        chunks = list(kv.encode_chunks(keys, values, 1000))
        self.assertTrue(all(len(c) == 1000 for c in chunks[:-1]))
        self.assertTrue(0 < len(chunks[-1]) <= 1000)
        body = b"".join(chunks)
        for size in (1, 3, 1000, len(body)):
            d = kv.Decoder()
            for off in range(0, len(body), size):
                d.push(body[off:off + size])
            s = d.finish()
            self.assertEqual(s.capture(), (keys, values))

    def test_decoder_rejects(self):
        rec = lambda b: len(b).to_bytes(4, "big") + b  # noqa: E731
        for body in [rec(b"a"), rec(b"b") + rec(b"1") + rec(b"a") + rec(b"1"),
                     rec(b"\xff") + rec(b""), b"\x00\x00"]:
            d = kv.Decoder()
            with self.assertRaises(kv.RestoreError, msg=body):
                d.push(body)
                d.finish()


if __name__ == "__main__":
    unittest.main()
