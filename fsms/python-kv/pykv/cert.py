"""A self-signed server certificate for go-plugin AutoMTLS, with the standard
library alone: an ECDSA P-256 key pair and signature computed here, and a
minimal X.509 v3 certificate encoded by hand in DER (RFC 5280).

The host trusts exactly this certificate and checks server name
"localhost", so it carries CN and SAN DNS "localhost", is its own CA (basic
constraints CA:TRUE, key usage digitalSignature + keyEncipherment +
keyCertSign) and allows serverAuth and clientAuth.

The elliptic-curve arithmetic is plain Python integers. It runs once per
process start, to sign our own certificate; TLS itself (handshakes, record
encryption) is done by gRPC's C core.
"""

import base64
import datetime
import hashlib
import secrets

# ---- P-256 (FIPS 186-4 D.1.2.3) ---------------------------------------------

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def _double(x, y, z):
    """Doubles a point in Jacobian coordinates (a = -3)."""
    if z == 0 or y == 0:
        return 0, 1, 0
    yy = y * y % P
    s = 4 * x * yy % P
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    z3 = 2 * y * z % P
    return x3, y3, z3


def _add(p1, p2):
    """Adds two points in Jacobian coordinates."""
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(x1, y1, z1) if s1 == s2 else (0, 1, 0)
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return x3, y3, z3


def scalar_mult(k, point=G):
    """Returns k * point as affine (x, y); point is affine. k must be in
    [1, N-1]."""
    acc = (0, 1, 0)
    add = (point[0], point[1], 1)
    while k:
        if k & 1:
            acc = _add(acc, add)
        add = _double(*add)
        k >>= 1
    x, y, z = acc
    if z == 0:
        raise ValueError("point at infinity")
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def on_curve(x, y):
    return (y * y - (x * x * x + A * x + B)) % P == 0


def sign(d, message):
    """ECDSA-SHA256 signature of message with private key d: (r, s)."""
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    while True:
        k = secrets.randbelow(N - 1) + 1
        r = scalar_mult(k)[0] % N
        if r == 0:
            continue
        s = pow(k, -1, N) * (e + r * d) % N
        if s != 0:
            return r, s


def verify(pub, message, r, s):
    """Checks an ECDSA-SHA256 signature (for tests)."""
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, N)
    p1 = scalar_mult(e * w % N) if e * w % N else None
    p2 = scalar_mult(r * w % N, pub)
    if p1 is None:
        x = p2[0]
    else:
        j = _add((p1[0], p1[1], 1), (p2[0], p2[1], 1))
        if j[2] == 0:
            return False
        zi = pow(j[2], -1, P)
        x = j[0] * zi * zi % P
    return x % N == r


# ---- DER ----------------------------------------------------------------------


def _len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, *contents):
    body = b"".join(contents)
    return bytes([tag]) + _len(len(body)) + body


def seq(*c):
    return tlv(0x30, *c)


def integer(v):
    """A non-negative INTEGER, minimally encoded."""
    b = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")
    if b[0] & 0x80:
        b = b"\x00" + b
    return tlv(0x02, b)


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = [40 * parts[0] + parts[1]]
    for p in parts[2:]:
        groups = [p & 0x7F]
        p >>= 7
        while p:
            groups.insert(0, 0x80 | (p & 0x7F))
            p >>= 7
        out += groups
    return tlv(0x06, bytes(out))


def _bool(v):
    return tlv(0x01, b"\xff" if v else b"\x00")


def _bit_string(b, unused=0):
    return tlv(0x03, bytes([unused]), b)


def _time(t):
    """UTCTime before 2050, GeneralizedTime from then on (RFC 5280
    4.1.2.5), to the second."""
    if t.year < 2050:
        return tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_P256 = "1.2.840.10045.3.1.7"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_COMMON_NAME = "2.5.4.3"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_EXT_KEY_USAGE = "2.5.29.37"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"


def _extension(ident, critical, value):
    if critical:
        return seq(oid(ident), _bool(True), tlv(0x04, value))
    return seq(oid(ident), tlv(0x04, value))


def _pem(kind, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)).encode()


def generate_server_cert(now=None):
    """Returns (cert_pem, key_pem, der) for a fresh ECDSA P-256 self-signed
    certificate for "localhost", valid from 30 s ago for 30 years. der is
    the certificate's DER, which the handshake line carries."""
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    d = secrets.randbelow(N - 1) + 1
    qx, qy = scalar_mult(d)
    point = b"\x04" + qx.to_bytes(32, "big") + qy.to_bytes(32, "big")
    spki = seq(seq(oid(OID_EC_PUBLIC_KEY), oid(OID_P256)), _bit_string(point))
    serial = bytearray(secrets.token_bytes(16))
    serial[0] = (serial[0] & 0x7F) | 0x40  # positive, 16 bytes, minimal
    sig_alg = seq(oid(OID_ECDSA_SHA256))
    name = seq(tlv(0x31, seq(oid(OID_COMMON_NAME), tlv(0x0C, b"localhost"))))
    not_before = now - datetime.timedelta(seconds=30)
    not_after = now + datetime.timedelta(days=30 * 365)
    # keyUsage bits 0 (digitalSignature), 2 (keyEncipherment), 5
    # (keyCertSign): 1010 0100, the last two bits unused.
    key_usage = _bit_string(b"\xa4", 2)
    extensions = seq(
        _extension(OID_BASIC_CONSTRAINTS, True, seq(_bool(True))),
        _extension(OID_KEY_USAGE, True, key_usage),
        _extension(OID_EXT_KEY_USAGE, False, seq(oid(OID_SERVER_AUTH), oid(OID_CLIENT_AUTH))),
        _extension(OID_SUBJECT_ALT_NAME, False, seq(tlv(0x82, b"localhost"))),
    )
    tbs = seq(
        tlv(0xA0, integer(2)),  # version v3
        integer(int.from_bytes(serial, "big")),
        sig_alg,
        name,
        seq(_time(not_before), _time(not_after)),
        name,
        spki,
        tlv(0xA3, extensions),
    )
    r, s = sign(d, tbs)
    der = seq(tbs, sig_alg, _bit_string(seq(integer(r), integer(s))))
    # SEC 1 ECPrivateKey (RFC 5915).
    key = seq(integer(1), tlv(0x04, d.to_bytes(32, "big")),
              tlv(0xA0, oid(OID_P256)), tlv(0xA1, _bit_string(point)))
    return _pem("CERTIFICATE", der), _pem("EC PRIVATE KEY", key), der
