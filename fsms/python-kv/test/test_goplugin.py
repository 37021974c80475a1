"""Unit tests of pykv.goplugin's environment checks and pykv.cert."""

import unittest

from pykv import cert, goplugin


class EnvironmentTest(unittest.TestCase):
    def test_negotiate_version(self):
        self.assertEqual(goplugin.negotiate_version([1], ""), 1)
        self.assertEqual(goplugin.negotiate_version([1, 2], "3, 2,1"), 2)
        self.assertIsNone(goplugin.negotiate_version([1], "2,3,x"))
        self.assertIsNone(goplugin.negotiate_version([1], "01"))

    def test_check_environment(self):
        ok = {"RAFTD_PLUGIN": "c", "PLUGIN_MIN_PORT": "10", "PLUGIN_MAX_PORT": "20"}
        self.assertEqual(goplugin.check_environment("RAFTD_PLUGIN", "c", [1], ok), (1, 10, 20))
        for env in [{}, {"RAFTD_PLUGIN": "x"}, dict(ok, PLUGIN_MIN_PORT="30"), dict(ok, PLUGIN_MAX_PORT="-1"),
                    dict(ok, PLUGIN_MAX_PORT="70000"), dict(ok, PLUGIN_PROTOCOL_VERSIONS="2")]:
            with self.subTest(env=env), self.assertRaises(goplugin.PluginError):
                goplugin.check_environment("RAFTD_PLUGIN", "c", [1], env)


class CertTest(unittest.TestCase):
    def test_curve(self):
        self.assertTrue(cert.on_curve(*cert.G))
        # (N-1)G = -G.
        self.assertEqual(cert.scalar_mult(cert.N - 1), (cert.G[0], cert.P - cert.G[1]))
        p = cert.scalar_mult(0xDEADBEEF)
        self.assertTrue(cert.on_curve(*p))

    def test_sign_verify(self):
        d = 0x1234567890ABCDEF
        pub = cert.scalar_mult(d)
        r, s = cert.sign(d, b"message")
        self.assertTrue(cert.verify(pub, b"message", r, s))
        self.assertFalse(cert.verify(pub, b"messagf", r, s))
        self.assertFalse(cert.verify(cert.scalar_mult(d + 1), b"message", r, s))

    def test_der_integer(self):
        self.assertEqual(cert.integer(0), b"\x02\x01\x00")
        self.assertEqual(cert.integer(127), b"\x02\x01\x7f")
        self.assertEqual(cert.integer(128), b"\x02\x02\x00\x80")
        self.assertEqual(cert.tlv(4, b"x" * 200)[:3], b"\x04\x81\xc8")

    def test_generate(self):
        cert_pem, key_pem, der = cert.generate_server_cert()
        self.assertTrue(cert_pem.startswith(b"-----BEGIN CERTIFICATE-----\n"))
        self.assertTrue(key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----\n"))
        self.assertEqual(der[0], 0x30)


if __name__ == "__main__":
    unittest.main()
