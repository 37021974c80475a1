'use strict';
// The plugin's build digest (InfoResponse.build, docs/plugin-protocol.md
// section 3): the host's binary SHA-256 covers only the raftd-fsm-node-kv
// launcher, so the plugin names the code node actually runs.

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

/** ROOT is the plugin's directory (the launcher's). */
const ROOT = path.join(__dirname, '..');

/**
 * sourceFiles returns the files of the plugin under root that make up its
 * code, as '/'-separated paths relative to root, in byte order: index.js,
 * package.json, package-lock.json and everything under lib/ and proto/.
 */
function sourceFiles(root = ROOT) {
  const out = [];
  for (const f of ['index.js', 'package.json', 'package-lock.json']) {
    if (fs.existsSync(path.join(root, f))) out.push(f);
  }
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  for (const d of ['lib', 'proto']) {
    if (fs.existsSync(path.join(root, d))) walk(d);
  }
  return out.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/**
 * buildDigest returns the hex SHA-256 over the source files: for each, in
 * order, its path, a NUL byte, its length in decimal, a NUL byte and its
 * bytes.
 */
function buildDigest(root = ROOT) {
  const h = crypto.createHash('sha256');
  for (const f of sourceFiles(root)) {
    const b = fs.readFileSync(path.join(root, f));
    h.update(`${f}\0${b.length}\0`);
    h.update(b);
  }
  return h.digest('hex');
}

module.exports = { buildDigest, sourceFiles };
