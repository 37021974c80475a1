'use strict';
// raftd-fsm-node-kv: the kv FSM as a raftd plugin process. Started by the
// raftd host (through the raftd-fsm-node-kv wrapper), never by hand.

const { checkEnvironment, PluginError } = require('./lib/env');

/** HANDSHAKE is the raftd plugin handshake: cookie and protocol versions. */
const HANDSHAKE = {
  cookieKey: 'RAFTD_PLUGIN',
  cookieValue: 'fsm-6f1c7a2e9b0d4e58',
  versions: [1],
};

function log(msg) {
  process.stderr.write(`node-kv: ${msg}\n`);
}

async function main() {
  // Fail fast, before loading gRPC, when not started by a host.
  checkEnvironment(HANDSHAKE);
  if (typeof String.prototype.toWellFormed !== 'function') {
    throw new PluginError(`needs Node.js 20 or later, this is ${process.version}`);
  }
  const { serve } = require('./lib/goplugin');
  const { KV } = require('./lib/kv');
  const { loadService, handlers } = require('./lib/service');
  const { buildDigest } = require('./lib/build');
  const build = buildDigest();
  const kv = new KV();
  await serve({
    ...HANDSHAKE,
    log,
    register(server) {
      server.addService(loadService(), handlers(kv, log, build));
    },
  });
}

main().catch((e) => {
  log(e instanceof PluginError ? e.message : e.stack || String(e));
  process.exit(1);
});
