"""Entry point of raftd-fsm-python-kv: started by the raftd host, never by
hand."""

import sys
import threading

from . import build, goplugin, kv as kvlib

# The raftd plugin handshake: cookie and protocol versions.
COOKIE_KEY = "RAFTD_PLUGIN"
COOKIE_VALUE = "fsm-6f1c7a2e9b0d4e58"
VERSIONS = [1]


def log(msg):
    """Writes one line to stderr, which the host copies into its log. A
    host that has died has closed the pipe: the line is lost, and nothing
    else happens."""
    try:
        sys.stderr.write("python-kv: %s\n" % msg)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main():
    try:
        # Fail fast, before importing gRPC, when not started by a host.
        goplugin.check_environment(COOKIE_KEY, COOKIE_VALUE, VERSIONS)
        try:
            import grpc  # noqa: F401
            import google.protobuf  # noqa: F401
        except ImportError as e:
            raise goplugin.PluginError("%s: install Debian's python3-grpcio and python3-protobuf" % e) from None
        from . import protos, service

        # Commands may nest arrays and objects kv.MAX_DEPTH deep, and
        # Python's json parser recurses once per level (kv raises the
        # interpreter's recursion limit): give gRPC's threads the C stack
        # for it.
        threading.stack_size(64 << 20)

        messages = protos.Messages()
        sm = service.StateMachine(kvlib.KV(), messages, log, build=build.build_digest())
        goplugin.serve(COOKIE_KEY, COOKIE_VALUE, VERSIONS,
                       register=lambda server, version: server.add_generic_rpc_handlers((sm.handler(),)),
                       log=log, messages=messages)
    except goplugin.PluginError as e:
        log(str(e))
        return 1
    return 0
