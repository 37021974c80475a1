'use strict';
// raftd-fsm-node-kv: the kv FSM as a raftd plugin process. Started by the
// raftd host (through the raftd-fsm-node-kv wrapper), never by hand.

const { serve, PluginError } = require('./lib/goplugin');
const { KV } = require('./lib/kv');
const { loadService, handlers } = require('./lib/service');

/** COOKIE_KEY and COOKIE_VALUE are the raftd plugin handshake cookie. */
const COOKIE_KEY = 'RAFTD_PLUGIN';
const COOKIE_VALUE = 'fsm-6f1c7a2e9b0d4e58';

function log(msg) {
  process.stderr.write(`node-kv: ${msg}\n`);
}

async function main() {
  const kv = new KV();
  await serve({
    cookieKey: COOKIE_KEY,
    cookieValue: COOKIE_VALUE,
    versions: [1],
    log,
    register(server) {
      server.addService(loadService(), handlers(kv, log));
    },
  });
}

main().catch((e) => {
  log(e instanceof PluginError ? e.message : e.stack || String(e));
  process.exit(1);
});
