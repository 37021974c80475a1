'use strict';
// Self-signed server certificate for go-plugin AutoMTLS, built with
// node:crypto alone: an ECDSA P-256 key and a minimal X.509 v3 certificate
// encoded by hand in DER (RFC 5280).
//
// The host trusts exactly this certificate and checks server name
// "localhost", so it carries CN and SAN DNS "localhost", is its own CA
// (basic constraints CA:TRUE, key usage digitalSignature + keyEncipherment
// + keyCertSign) and allows serverAuth and clientAuth.

const crypto = require('node:crypto');

// ---- DER ----------------------------------------------------------------

function len(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag, ...contents) {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

const seq = (...c) => tlv(0x30, ...c);
const set = (...c) => tlv(0x31, ...c);
const octets = (b) => tlv(0x04, b);
const utf8 = (s) => tlv(0x0c, Buffer.from(s, 'utf8'));
const bool = (v) => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const bitString = (b, unusedBits = 0) => tlv(0x03, Buffer.from([unusedBits]), b);

// integer encodes a non-negative big-endian magnitude minimally.
function integer(b) {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  let v = b.subarray(i);
  if (v[0] & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return tlv(0x02, v);
}

function oid(dotted) {
  const parts = dotted.split('.').map(Number);
  const out = [40 * parts[0] + parts[1]];
  for (const p of parts.slice(2)) {
    const groups = [];
    let v = p;
    do {
      groups.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < groups.length - 1; i++) groups[i] |= 0x80;
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

// time encodes a Date as UTCTime before 2050 and GeneralizedTime after
// (RFC 5280 section 4.1.2.5), to the second.
function time(d) {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z';
  if (d.getUTCFullYear() < 2050) return tlv(0x17, Buffer.from(digits.slice(2), 'ascii'));
  return tlv(0x18, Buffer.from(digits, 'ascii'));
}

const OID = {
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
};

function extension(id, critical, value) {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function toPem(type, der) {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${type}-----\n${b64}\n-----END ${type}-----\n`;
}

/**
 * generateServerCert returns {certPem, keyPem, der} for a fresh ECDSA P-256
 * self-signed certificate for "localhost", valid from 30 s ago for 30
 * years. der is the certificate's DER (a Buffer), which the handshake line
 * carries.
 */
function generateServerCert(now = new Date()) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const serial = crypto.randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x40; // positive, 16 bytes, minimal
  const sigAlg = seq(oid(OID.ecdsaWithSHA256));
  const name = seq(set(seq(oid(OID.commonName), utf8('localhost'))));
  const notBefore = new Date(now.getTime() - 30 * 1000);
  const notAfter = new Date(now.getTime() + 30 * 365 * 24 * 3600 * 1000);
  // keyUsage bits 0 (digitalSignature), 2 (keyEncipherment), 5
  // (keyCertSign): 1010 0100, the last two bits unused.
  const keyUsage = bitString(Buffer.from([0xa4]), 2);
  const extensions = seq(
    extension(OID.basicConstraints, true, seq(bool(true))),
    extension(OID.keyUsage, true, keyUsage),
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
    extension(OID.subjectAltName, false, seq(tlv(0x82, Buffer.from('localhost', 'ascii')))),
  );
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))), // version v3
    integer(serial),
    sigAlg,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    tlv(0xa3, extensions),
  );
  const signature = crypto.sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const der = seq(tbs, sigAlg, bitString(signature));
  return {
    certPem: toPem('CERTIFICATE', der),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }),
    der,
  };
}

module.exports = { generateServerCert };
