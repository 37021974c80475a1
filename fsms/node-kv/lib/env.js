'use strict';
// The go-plugin start-up checks that need nothing but the environment, so
// that a binary started by hand fails fast, before gRPC is even loaded.

/** PluginError is a start-up failure that ends the process with a one-line message. */
class PluginError extends Error {}

/**
 * negotiateVersion picks the application protocol version: the highest of
 * ours that the host lists in envValue (undefined if none), or our lowest
 * when envValue is empty.
 */
function negotiateVersion(ours, envValue) {
  const sorted = [...ours].sort((a, b) => b - a);
  if (envValue) {
    const theirs = new Set();
    for (const s of envValue.split(',')) {
      const v = Number.parseInt(s.trim(), 10);
      if (Number.isInteger(v) && String(v) === s.trim()) theirs.add(v);
    }
    for (const v of sorted) if (theirs.has(v)) return v;
    return undefined;
  }
  return sorted[sorted.length - 1];
}

/** portRange returns the [min, max] ports to try from the PLUGIN_*_PORT env vars. */
function portRange(env) {
  const parse = (name) => {
    const s = env[name];
    if (s === undefined || s === '') return 0;
    const v = Number(s);
    if (!Number.isInteger(v) || v < 0 || v > 65535) {
      throw new PluginError(`${name}=${JSON.stringify(s)} is not a port number`);
    }
    return v;
  };
  const min = parse('PLUGIN_MIN_PORT');
  const max = parse('PLUGIN_MAX_PORT');
  if (min > max) throw new PluginError(`PLUGIN_MIN_PORT ${min} is greater than PLUGIN_MAX_PORT ${max}`);
  return [min, max];
}

/**
 * checkEnvironment validates the cookie, negotiates the protocol version
 * and reads the port range. opts: cookieKey, cookieValue, versions. Returns
 * {version, minPort, maxPort}; throws PluginError.
 */
function checkEnvironment(opts, env = process.env) {
  if (!opts.cookieKey || !opts.cookieValue) throw new PluginError('no magic cookie configured');
  if (env[opts.cookieKey] !== opts.cookieValue) {
    throw new PluginError(
      `this is a raftd FSM plugin; start it with raftd run --fsm PATH (${opts.cookieKey} is not set to the expected value)`,
    );
  }
  const version = negotiateVersion(opts.versions, env.PLUGIN_PROTOCOL_VERSIONS);
  if (version === undefined) {
    throw new PluginError(
      `no common plugin protocol version: the host speaks ${env.PLUGIN_PROTOCOL_VERSIONS}, this plugin ${opts.versions.join(',')}`,
    );
  }
  const [minPort, maxPort] = portRange(env);
  return { version, minPort, maxPort };
}

module.exports = { PluginError, negotiateVersion, portRange, checkEnvironment };
