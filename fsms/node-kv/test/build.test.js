'use strict';
// The build digest: stable for the same files, different when any source
// file changes, blind to files outside the code (tests, docs).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildDigest, sourceFiles } = require('../lib/build');

test('build digest follows the source files', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'node-kv-build-'));
  try {
    fs.mkdirSync(path.join(root, 'lib', 'sub'), { recursive: true });
    fs.mkdirSync(path.join(root, 'test'));
    fs.writeFileSync(path.join(root, 'index.js'), 'main\n');
    fs.writeFileSync(path.join(root, 'lib', 'kv.js'), 'kv\n');
    fs.writeFileSync(path.join(root, 'lib', 'sub', 'x.js'), 'x\n');
    fs.writeFileSync(path.join(root, 'test', 'a.test.js'), 'test\n');
    fs.writeFileSync(path.join(root, 'README.md'), 'docs\n');
    assert.deepEqual(sourceFiles(root), ['index.js', 'lib/kv.js', 'lib/sub/x.js']);
    const d = buildDigest(root);
    assert.match(d, /^[0-9a-f]{64}$/);
    assert.equal(buildDigest(root), d);
    fs.writeFileSync(path.join(root, 'test', 'a.test.js'), 'other test\n');
    fs.writeFileSync(path.join(root, 'README.md'), 'other docs\n');
    assert.equal(buildDigest(root), d, 'tests and docs are not code');
    fs.writeFileSync(path.join(root, 'lib', 'sub', 'x.js'), 'y\n');
    assert.notEqual(buildDigest(root), d, 'a changed source file changes the build');
    // A file's bytes cannot move into its neighbour's unnoticed.
    fs.writeFileSync(path.join(root, 'lib', 'sub', 'x.js'), 'x\n');
    assert.equal(buildDigest(root), d);
    fs.writeFileSync(path.join(root, 'lib', 'kv.js'), 'kv\nx\n');
    fs.writeFileSync(path.join(root, 'lib', 'sub', 'x.js'), '');
    assert.notEqual(buildDigest(root), d);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('the plugin\'s own build covers its lib and proto files', () => {
  const files = sourceFiles();
  for (const f of ['index.js', 'package.json', 'package-lock.json', 'lib/build.js', 'lib/kv.js', 'proto/fsm.proto']) {
    assert.ok(files.includes(f), `${f} in ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')));
});
