'use strict';
// Self-signed server certificate for go-plugin AutoMTLS.
//
// The host verifies the plugin's certificate against itself (it is put in
// the host's RootCAs) with server name "localhost", so the certificate
// carries DNS name "localhost" and the serverAuth and clientAuth usages.

const crypto = require('node:crypto');
const forge = require('node-forge');

/**
 * generateServerCert returns {certPem, keyPem, der} for a fresh RSA-2048
 * self-signed certificate valid for "localhost". der is the raw DER bytes of
 * the certificate (a Buffer), which the handshake line carries.
 */
function generateServerCert() {
  // Node's native key generation is much faster than forge's pure-JS one.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs1', format: 'pem' });
  const key = forge.pki.privateKeyFromPem(keyPem);
  const pub = forge.pki.setRsaPublicKey(key.n, key.e);

  const cert = forge.pki.createCertificate();
  cert.publicKey = pub;
  // A positive 128-bit serial: clear the top bit so DER does not read it as
  // negative.
  const serial = crypto.randomBytes(16);
  serial[0] &= 0x7f;
  cert.serialNumber = serial.toString('hex');
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 30 * 1000);
  cert.validity.notAfter = new Date(now + 30 * 365 * 24 * 3600 * 1000);
  const attrs = [
    { name: 'commonName', value: 'localhost' },
    { name: 'organizationName', value: 'raftd' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] },
  ]);
  cert.sign(key, forge.md.sha256.create());

  const certPem = forge.pki.certificateToPem(cert);
  const der = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
  return { certPem, keyPem, der };
}

module.exports = { generateServerCert };
