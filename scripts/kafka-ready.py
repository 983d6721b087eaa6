#!/usr/bin/env python3
"""Is a Kafka broker serving on HOST:PORT? Exit 0 when a Metadata request
answers and lists at least one broker, 1 otherwise (2 on bad usage).

Usage: kafka-ready.py HOST PORT [TIMEOUT_S]   (-v as the first argument
prints what it saw on stderr). Stdlib only, one TCP connection, no JVM:
scripts/services runs it as the broker's health check.

On the wire: ApiVersions v0 (every broker answers it, whatever it supports)
tells which Metadata versions the broker takes; then Metadata at the highest
non-flexible version it takes (at most 8: v9+ use the flexible encoding),
with an empty topic list (brokers only, creates nothing).
"""
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"weir-services-ready"


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, fmt):
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    def string(self):  # nullable STRING: int16 length, -1 = null
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        out += chunk
    return bytes(out)


def call(sock, api_key, version, corr, body):
    """Send one request (header v1: key, version, correlation id, client id);
    return the response body after its correlation id."""
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    if size < 4 or size > 64 << 20:
        raise ValueError(f"bad response size {size}")
    resp = recv_exact(sock, size)
    got = struct.unpack_from(">i", resp)[0]
    if got != corr:
        raise ValueError(f"correlation id {got}, expected {corr}")
    return resp[4:]


def metadata_range(sock):
    r = Reader(call(sock, API_VERSIONS, 0, 1, b""))
    err = r.take(">h")
    if err != 0:
        raise ValueError(f"ApiVersions error code {err}")
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">hhh")
        if key == API_METADATA:
            return lo, hi
    raise ValueError("the broker does not list the Metadata API")


def brokers(sock, version):
    body = struct.pack(">i", 0)  # topics: empty array (v1+: no topics; v0: all)
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation = false
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations = false
    r = Reader(call(sock, API_METADATA, version, 2, body))
    if version >= 3:
        r.take(">i")  # throttle_time_ms
    found = []
    for _ in range(r.take(">i")):
        node = r.take(">i")
        host = r.string()
        port = r.take(">i")
        if version >= 1:
            r.string()  # rack
        found.append((node, host, port))
    return found


def main(argv):
    verbose = bool(argv) and argv[0] == "-v"
    if verbose:
        argv = argv[1:]
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    host, port = argv[0], int(argv[1])
    timeout = float(argv[2]) if len(argv) == 3 else 3.0
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            lo, hi = metadata_range(sock)
            version = min(hi, 8)
            if version < lo:
                raise ValueError(f"the broker takes Metadata v{lo}-v{hi} only (flexible)")
            found = brokers(sock, version)
    except (OSError, ValueError, struct.error) as e:
        if verbose:
            print(f"kafka-ready: {host}:{port}: {e}", file=sys.stderr)
        return 1
    if verbose:
        print(f"kafka-ready: {host}:{port}: Metadata v{version} (broker takes v{lo}-v{hi}): "
              f"brokers {found}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
