"""The plugin's build digest (InfoResponse.build, docs/plugin-protocol.md
section 3): the host's binary SHA-256 covers only the raftd-fsm-python-kv
launcher, so the plugin names the code python3 actually runs."""

import hashlib
import os

# ROOT is the plugin's directory (the launcher's).
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def source_files(root=ROOT):
    """The files under root that make up the plugin's code, as '/'-separated
    paths relative to root, in byte order: everything under pykv/ (but
    __pycache__) and proto/."""
    out = []
    for top in ("pykv", "proto"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            out.extend(rel + "/" + f for f in filenames)
    return sorted(out, key=lambda p: p.encode())


def build_digest(root=ROOT):
    """The hex SHA-256 over the source files: for each, in order, its path,
    a NUL byte, its length in decimal, a NUL byte and its bytes."""
    h = hashlib.sha256()
    for f in source_files(root):
        with open(os.path.join(root, f), "rb") as fh:
            b = fh.read()
        h.update(("%s\0%d\0" % (f, len(b))).encode())
        h.update(b)
    return h.hexdigest()
