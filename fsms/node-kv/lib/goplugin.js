'use strict';
// A go-plugin (hashicorp/go-plugin) server for @grpc/grpc-js.
//
// Contract with the host, in the order it happens:
//   1. The magic cookie env var must hold the expected value; otherwise the
//      process was not started by a host: explain on stderr, exit 1.
//   2. PLUGIN_PROTOCOL_VERSIONS (comma-separated) lists the application
//      protocol versions the host speaks; the highest one we also speak is
//      chosen. With no overlap: an error, exit 1. Empty or absent: our
//      lowest.
//   3. If PLUGIN_CLIENT_CERT holds a PEM certificate (AutoMTLS), we create a
//      self-signed server certificate and serve TLS that requires a client
//      certificate signed by (in practice: equal to) that one.
//   4. We listen on TCP 127.0.0.1, on a free port in PLUGIN_MIN_PORT ..
//      PLUGIN_MAX_PORT (any free port when both are 0 or unset; go-plugin
//      hosts send 10000..25000 by default), and print exactly one line on
//      stdout: CORE|APP|tcp|ADDR|grpc|CERT, CERT being the base64 (standard
//      alphabet, no padding) DER of our certificate, empty without TLS.
//   5. Besides the application services we serve grpc.health.v1.Health
//      (service "plugin" is SERVING) and plugin.GRPCController/Shutdown,
//      which stops the server and exits 0.
// SIGINT is ignored (the host's terminal may send it to the whole process
// group; the host decides when we stop), and the process exits when its
// parent dies.

const path = require('node:path');
const http2 = require('node:http2');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { generateServerCert } = require('./cert');
const { checkEnvironment, negotiateVersion, portRange, PluginError } = require('./env');

/** CORE_PROTOCOL_VERSION is go-plugin's core protocol version. */
const CORE_PROTOCOL_VERSION = 1;

/** LOADER_OPTIONS are the proto-loader options used for every proto here. */
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};


/**
 * FLOW_CONTROL_WINDOW is the HTTP/2 receive window (per stream and per
 * connection) of the plugin's server. Node's default of 64 KiB caps a
 * client stream such as Restore at one window per round trip.
 */
const FLOW_CONTROL_WINDOW = 16 << 20;

// grpc-js has no server option for the HTTP/2 window, so the plugin wraps
// http2.createSecureServer/createServer (which grpc-js calls at bind time)
// to add the initial window setting and widen each session's connection
// window.
function widenHttp2Windows() {
  for (const name of ['createSecureServer', 'createServer']) {
    const orig = http2[name];
    if (orig.raftdWidened) continue;
    const wrapped = function (options, ...rest) {
      const opts = { ...options, settings: { ...(options && options.settings), initialWindowSize: FLOW_CONTROL_WINDOW } };
      const srv = orig.call(this, opts, ...rest);
      srv.on('session', (session) => {
        try {
          session.setLocalWindowSize(FLOW_CONTROL_WINDOW);
        } catch {
          // An already closed session: nothing to widen.
        }
      });
      return srv;
    };
    wrapped.raftdWidened = true;
    http2[name] = wrapped;
  }
}

function bind(server, creds, port) {
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
}

/**
 * watchParent polls the parent pid and calls onGone when the parent process
 * has died (we were re-parented, or the original parent no longer exists).
 * The timer does not keep the event loop alive.
 */
function watchParent(onGone, intervalMs = 250) {
  const parent = process.ppid;
  const t = setInterval(() => {
    let gone = process.ppid !== parent;
    if (!gone) {
      try {
        process.kill(parent, 0);
      } catch (e) {
        gone = e.code === 'ESRCH';
      }
    }
    if (gone) {
      clearInterval(t);
      onGone(parent);
    }
  }, intervalMs);
  t.unref();
  return t;
}

/**
 * serve runs a go-plugin gRPC server and resolves once the handshake line is
 * printed. opts:
 *   cookieKey, cookieValue  the magic cookie (required)
 *   versions                application protocol versions we speak, e.g. [1]
 *   register(server, version) adds the application services
 *   log(msg)                stderr logger (default: console.error)
 *   maxRecvBytes            gRPC receive limit (default 2^31-1)
 * Throws PluginError for a bad environment.
 */
async function serve(opts) {
  const env = process.env;
  const log = opts.log || ((m) => console.error(m));
  const { version, minPort, maxPort } = checkEnvironment(opts, env);

  let creds;
  let certField = '';
  const clientCertPem = env.PLUGIN_CLIENT_CERT;
  if (clientCertPem) {
    const { certPem, keyPem, der } = generateServerCert();
    try {
      creds = grpc.ServerCredentials.createSsl(
        Buffer.from(clientCertPem),
        [{ private_key: Buffer.from(keyPem), cert_chain: Buffer.from(certPem) }],
        true,
      );
    } catch (e) {
      throw new PluginError(`PLUGIN_CLIENT_CERT: ${e.message}`);
    }
    certField = der.toString('base64').replace(/=+$/, '');
  } else {
    creds = grpc.ServerCredentials.createInsecure();
  }

  widenHttp2Windows();
  const maxRecv = opts.maxRecvBytes || 2147483647;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxRecv,
    'grpc.max_send_message_length': -1,
    // Nobody inspects this process with channelz; skip its per-call work.
    'grpc.enable_channelz': 0,
  });

  let exiting = false;
  const exit = (code) => {
    if (exiting) return;
    exiting = true;
    server.forceShutdown();
    // Let stdout/stderr drain; the process has nothing else to wait for.
    setImmediate(() => process.exit(code));
  };

  const protoDir = path.join(__dirname, '..', 'proto');
  const infra = grpc.loadPackageDefinition(
    protoLoader.loadSync([path.join(protoDir, 'health.proto'), path.join(protoDir, 'grpc_controller.proto')], LOADER_OPTIONS),
  );
  const serving = new Set(['', 'plugin']);
  server.addService(infra.grpc.health.v1.Health.service, {
    Check(call, cb) {
      if (serving.has(call.request.service)) return cb(null, { status: 'SERVING' });
      return cb({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
    },
    Watch(call) {
      const status = serving.has(call.request.service) ? 'SERVING' : 'SERVICE_UNKNOWN';
      call.write({ status });
      // The stream stays open until the client cancels or we exit.
    },
  });
  server.addService(infra.plugin.GRPCController.service, {
    Shutdown(call, cb) {
      cb(null, {});
      // Reply first, then stop: the host waits for the process to exit.
      setImmediate(() => exit(0));
    },
  });

  opts.register(server, version);

  // Ports are tried from a random point of the range (wrapping around), so
  // that plugins started together do not race for the same first port.
  let port;
  let lastErr;
  const span = maxPort - minPort + 1;
  const first = Math.floor(Math.random() * span);
  const attempts = Math.min(span, 256);
  // grpc-js logs every failed bind; a busy port is expected here.
  grpc.setLogVerbosity(grpc.logVerbosity.NONE);
  for (let a = 0; a < attempts && port === undefined; a++) {
    try {
      port = await bind(server, creds, minPort + ((first + a) % span));
    } catch (e) {
      lastErr = e;
    }
  }
  grpc.setLogVerbosity(grpc.logVerbosity.ERROR);
  if (port === undefined) throw new PluginError(`cannot listen on 127.0.0.1: ${lastErr && lastErr.message}`);

  process.on('SIGINT', () => {});
  watchParent((ppid) => {
    log(`parent process ${ppid} is gone; exiting`);
    exit(0);
  });

  let line = `${CORE_PROTOCOL_VERSION}|${version}|tcp|127.0.0.1:${port}|grpc|${certField}`;
  if (env.PLUGIN_MULTIPLEX_GRPC) line += '|false'; // no gRPC broker multiplexing
  process.stdout.write(line + '\n');
  return { server, version, port, exit };
}

module.exports = { serve, negotiateVersion, portRange, watchParent, PluginError, LOADER_OPTIONS, CORE_PROTOCOL_VERSION };
