"""A go-plugin (hashicorp/go-plugin) server for Python's grpcio.

Contract with the host, in the order it happens (docs/plugin-protocol.md
sections 1 to 3):
  1. The magic cookie env var must hold the expected value; otherwise the
     process was not started by a host: explain on stderr, exit 1.
  2. PLUGIN_PROTOCOL_VERSIONS (comma-separated) lists the application
     protocol versions the host speaks; the highest one we also speak is
     chosen. With no overlap: an error, exit 1. Empty or absent: our
     lowest.
  3. If PLUGIN_CLIENT_CERT holds a PEM certificate (AutoMTLS), we create a
     self-signed server certificate and serve TLS that requires a client
     certificate signed by (in practice: equal to) that one.
  4. We listen on TCP 127.0.0.1, on a free port in PLUGIN_MIN_PORT ..
     PLUGIN_MAX_PORT (any free port when both are 0 or unset), and print
     exactly one line on stdout: CORE|APP|tcp|ADDR|grpc|CERT, CERT being
     the base64 (standard alphabet, no padding) DER of our certificate,
     empty without TLS.
  5. Besides the application services we serve grpc.health.v1.Health/Check
     (service "plugin" is SERVING) and plugin.GRPCController/Shutdown,
     which stops the server and exits 0.
SIGINT is ignored (the host's terminal may send it to the whole process
group; the host decides when we stop), and the process exits when its
parent dies.

check_environment needs only the standard library, so that a plugin run by
hand fails fast, before gRPC is even imported.
"""

import base64
import os
import random
import signal
import sys
import threading
import time

CORE_PROTOCOL_VERSION = 1
# gRPC receive limit: the protocol asks for at least 64 MiB.
MAX_RECV_BYTES = (1 << 31) - 1


class PluginError(Exception):
    """A start-up failure that ends the process with a one-line message."""


def negotiate_version(ours, env_value):
    """The highest of our versions that the host lists in env_value (None if
    none), or our lowest when env_value is empty."""
    if not env_value:
        return min(ours)
    theirs = set()
    for s in env_value.split(","):
        s = s.strip()
        if s.isascii() and s.isdigit() and str(int(s)) == s:
            theirs.add(int(s))
    common = [v for v in ours if v in theirs]
    return max(common) if common else None


def port_range(env):
    """The (min, max) ports to try, from PLUGIN_MIN_PORT/PLUGIN_MAX_PORT."""

    def parse(name):
        s = env.get(name, "")
        if s == "":
            return 0
        if not (s.isascii() and s.isdigit()) or int(s) > 65535:
            raise PluginError("%s=%r is not a port number" % (name, s))
        return int(s)

    lo, hi = parse("PLUGIN_MIN_PORT"), parse("PLUGIN_MAX_PORT")
    if lo > hi:
        raise PluginError("PLUGIN_MIN_PORT %d is greater than PLUGIN_MAX_PORT %d" % (lo, hi))
    return lo, hi


def check_environment(cookie_key, cookie_value, versions, env=None):
    """Validates the cookie, negotiates the protocol version and reads the
    port range. Returns (version, min_port, max_port); raises PluginError."""
    env = os.environ if env is None else env
    if env.get(cookie_key) != cookie_value:
        raise PluginError("this is a raftd FSM plugin; start it with raftd run --fsm PATH "
                          "(%s is not set to the expected value)" % cookie_key)
    version = negotiate_version(versions, env.get("PLUGIN_PROTOCOL_VERSIONS", ""))
    if version is None:
        raise PluginError("no common plugin protocol version: the host speaks %s, this plugin %s"
                          % (env.get("PLUGIN_PROTOCOL_VERSIONS"), ",".join(map(str, versions))))
    lo, hi = port_range(env)
    return version, lo, hi


def watch_parent(on_gone, interval=0.25):
    """Calls on_gone(parent pid) from a daemon thread once the parent process
    has died (we were re-parented)."""
    parent = os.getppid()
    if parent <= 1:
        return  # started by init or a subreaper directly: nothing to watch

    def run():
        while os.getppid() == parent:
            time.sleep(interval)
        on_gone(parent)

    threading.Thread(target=run, name="watch-parent", daemon=True).start()


def serve(cookie_key, cookie_value, versions, register, log, messages, workers=8):
    """Runs a go-plugin gRPC server until the host shuts it down, then exits
    the process with status 0.

    register(server, version) adds the application services to the
    grpc.Server; log(msg) writes a line to stderr; messages is a
    protos.Messages holding grpc.health.v1 and plugin. Raises PluginError
    for a bad environment.
    """
    version, lo, hi = check_environment(cookie_key, cookie_value, versions)

    from concurrent import futures

    import grpc

    from .cert import generate_server_cert

    client_pem = os.environ.get("PLUGIN_CLIENT_CERT", "")
    cert_field = ""
    if client_pem:
        cert_pem, key_pem, der = generate_server_cert()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_pem.encode(),
                                            require_client_auth=True)
        cert_field = base64.b64encode(der).decode().rstrip("=")
    else:
        creds = None

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECV_BYTES),
            ("grpc.max_send_message_length", -1),
            # grpcio sets SO_REUSEPORT by default: a second plugin could then
            # bind the same port and receive half of our connections.
            ("grpc.so_reuseport", 0),
        ],
    )

    stop = threading.Event()

    health_req, health_resp = messages.method("grpc.health.v1.Health", "Check")
    serving = health_resp.ServingStatus.Value("SERVING")

    def check(request, context):
        if request.service in ("", "plugin"):
            return health_resp(status=serving)
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %s" % request.service)

    empty_req, empty_resp = messages.method("plugin.GRPCController", "Shutdown")

    def shutdown(request, context):
        # Reply first, then stop: the host waits for the process to exit.
        stop.set()
        return empty_resp()

    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, request_deserializer=health_req.FromString,
                response_serializer=health_resp.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                shutdown, request_deserializer=empty_req.FromString,
                response_serializer=empty_resp.SerializeToString),
        }),
    ))
    register(server, version)

    # Ports are tried from a random point of the range (wrapping around), so
    # that plugins started together do not race for the same first port.
    port = 0
    last_err = None
    span = hi - lo + 1
    first = random.randrange(span)
    for a in range(min(span, 256)):
        addr = "127.0.0.1:%d" % (lo + (first + a) % span)
        try:
            port = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)
        except RuntimeError as e:  # grpcio raises when the bind fails
            last_err = e
            continue
        if port:
            break
    if not port:
        raise PluginError("cannot listen on 127.0.0.1: %s" % last_err)
    server.start()

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def parent_gone(ppid):
        try:
            # stderr is most likely a pipe to the dead host: this may fail.
            log("parent process %d is gone; exiting" % ppid)
        finally:
            os._exit(0)

    watch_parent(parent_gone)

    sys.stdout.write("%d|%d|tcp|127.0.0.1:%d|grpc|%s\n" % (CORE_PROTOCOL_VERSION, version, port, cert_field))
    sys.stdout.flush()
    # Nothing may write to stdout after the handshake line.
    sys.stdout = sys.stderr

    stop.wait()
    server.stop(grace=1).wait()
    sys.stderr.flush()
    # Skip interpreter teardown: gRPC's threads need not be joined.
    os._exit(0)
