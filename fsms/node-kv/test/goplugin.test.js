'use strict';
// Tests of the go-plugin side: version negotiation, port range parsing,
// the AutoMTLS certificate and the process handshake.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn } = require('node:child_process');
const { negotiateVersion, portRange, PluginError } = require('../lib/goplugin');
const { generateServerCert } = require('../lib/cert');

const INDEX = path.join(__dirname, '..', 'index.js');
const COOKIE = { RAFTD_PLUGIN: 'fsm-6f1c7a2e9b0d4e58' };

test('negotiateVersion', () => {
  assert.equal(negotiateVersion([1], '1'), 1);
  assert.equal(negotiateVersion([1, 2], '3,2,1'), 2);
  assert.equal(negotiateVersion([1, 2], '1'), 1);
  assert.equal(negotiateVersion([1], '2,3'), undefined);
  assert.equal(negotiateVersion([1], 'x'), undefined);
  assert.equal(negotiateVersion([2, 1], ''), 1);
  assert.equal(negotiateVersion([1], undefined), 1);
});

test('portRange', () => {
  assert.deepEqual(portRange({}), [0, 0]);
  assert.deepEqual(portRange({ PLUGIN_MIN_PORT: '10000', PLUGIN_MAX_PORT: '25000' }), [10000, 25000]);
  assert.throws(() => portRange({ PLUGIN_MIN_PORT: '9', PLUGIN_MAX_PORT: '8' }), PluginError);
  assert.throws(() => portRange({ PLUGIN_MIN_PORT: 'x' }), PluginError);
  assert.throws(() => portRange({ PLUGIN_MAX_PORT: '70000' }), PluginError);
});

test('server certificate', () => {
  const now = new Date('2026-01-02T03:04:05Z');
  const { certPem, keyPem, der } = generateServerCert(now);
  const x = new crypto.X509Certificate(der);
  assert.equal(x.toString(), new crypto.X509Certificate(certPem).toString());
  assert.equal(x.subject, 'CN=localhost');
  assert.equal(x.subjectAltName, 'DNS:localhost');
  assert.ok(x.ca);
  assert.ok(x.verify(x.publicKey), 'self-signature verifies');
  assert.ok(x.checkPrivateKey(crypto.createPrivateKey(keyPem)));
  assert.equal(x.checkHost('localhost'), 'localhost');
  assert.deepEqual(x.keyUsage.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  assert.equal(new Date(x.validFrom).getTime(), now.getTime() - 30000);
  // After 2049 the validity end is a GeneralizedTime.
  assert.equal(new Date(x.validTo).getUTCFullYear(), 2055);
  // A fresh key and serial every time.
  assert.notEqual(generateServerCert(now).der.toString('hex'), der.toString('hex'));
});

function run(env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [INDEX], { env: { PATH: process.env.PATH, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('exit', (code, signal) => resolve({ out, err, code, signal }));
  });
}

test('handshake line with AutoMTLS', async () => {
  const client = generateServerCert();
  const r = await run({ ...COOKIE, PLUGIN_PROTOCOL_VERSIONS: '1', PLUGIN_CLIENT_CERT: client.certPem });
  const parts = r.out.trimEnd().split('|');
  assert.equal(parts.length, 6, r.out + r.err);
  assert.deepEqual(parts.slice(0, 3), ['1', '1', 'tcp']);
  assert.match(parts[3], /^127\.0\.0\.1:\d+$/);
  assert.equal(parts[4], 'grpc');
  assert.doesNotMatch(parts[5], /=/);
  const cert = new crypto.X509Certificate(Buffer.from(parts[5], 'base64'));
  assert.equal(cert.subjectAltName, 'DNS:localhost');
});

test('refuses to run without the cookie', async () => {
  const r = await run({});
  assert.equal(r.code, 1);
  assert.equal(r.out, '');
  assert.match(r.err, /raftd FSM plugin/);
});
