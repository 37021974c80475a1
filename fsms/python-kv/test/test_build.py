"""Unit tests of pykv.build: the digest follows the source files and
nothing else."""

import os
import re
import shutil
import tempfile
import unittest

from pykv import build


class BuildTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="python-kv-build-")
        self.addCleanup(shutil.rmtree, self.root)

    def write(self, rel, data):
        p = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(data)

    def test_digest_follows_sources(self):
        self.write("pykv/kv.py", "kv\n")
        self.write("pykv/sub/x.py", "x\n")
        self.write("pykv/__pycache__/kv.cpython-311.pyc", "cache\n")
        self.write("proto/fsm.proto", "proto\n")
        self.write("test/test_kv.py", "test\n")
        self.write("README.md", "docs\n")
        self.assertEqual(build.source_files(self.root), ["proto/fsm.proto", "pykv/kv.py", "pykv/sub/x.py"])
        d = build.build_digest(self.root)
        self.assertRegex(d, re.compile(r"^[0-9a-f]{64}$"))
        self.assertEqual(build.build_digest(self.root), d)
        self.write("test/test_kv.py", "other test\n")
        self.write("pykv/__pycache__/kv.cpython-311.pyc", "other cache\n")
        self.assertEqual(build.build_digest(self.root), d, "tests and caches are not code")
        self.write("pykv/sub/x.py", "y\n")
        self.assertNotEqual(build.build_digest(self.root), d)
        # A file's bytes cannot move into its neighbour's unnoticed.
        self.write("pykv/kv.py", "kv\ny\n")
        self.write("pykv/sub/x.py", "")
        self.assertNotEqual(build.build_digest(self.root), d)

    def test_own_sources(self):
        files = build.source_files()
        for f in ("pykv/build.py", "pykv/kv.py", "proto/fsm.proto", "proto/descriptors.binpb"):
            self.assertIn(f, files)
        self.assertFalse(any(f.startswith("test/") for f in files))


if __name__ == "__main__":
    unittest.main()
