"""Malformed and hostile requests: the right reply or a clean close, one log line,
and the same worker serves the next client."""

import re
import socket
import struct
import time

import pytest

from test_signals import open_session

pytestmark = pytest.mark.integration

ONE_WORKER = ["--min-spare", "1", "--max-spare", "1", "--max-workers", "1",
              "--negotiate-timeout", "2", "--connect-timeout", "3"]


def exchange(port: int, data: bytes, *, shut: bool = False, timeout: float = 10) -> bytes:
    """Send *data*, return everything the server says until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if data:
            s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got


def socks5(port: int, dest: bytes) -> bytes:
    return exchange(port, b"\x05\x01\x00" + b"\x05\x01\x00" + dest)


def worker_pids(server, pattern):
    return {line.split("sockd[")[1].split("]")[0] for line in server.lines(pattern)}


def served_next(server, echo_port):
    """The (one) worker still serves a good client after a bad one."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                  + struct.pack(">H", echo_port))
        assert s.recv(2) == b"\x05\x00"
        reply = s.recv(10)
        assert reply[:2] == b"\x05\x00"
        s.sendall(b"still here")
        assert s.recv(100) == b"still here"


SESSION_LINE = r"(error|connected|refused|failed|timed-out|terminated) -- "

CASES = [
    # name, bytes sent, expected reply, log pattern
    ("wrong version", b"\x47ET / HTTP/1.0\r\n\r\n", b"",
     r"error -- not a SOCKS request \(first byte 0x47\) from host 127.0.0.1"),
    ("truncated socks4", b"\x04\x01\x00", b"", r"error -- .*closed the connection"),
    ("truncated socks5 request", b"\x05\x01\x00\x05\x01\x00\x01\x7f", b"\x05\x00",
     r"error -- .*closed the connection"),
    ("userid over the limit", b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300,
     b"\x00\x5b" + bytes(6), r"error -- "),
    ("socks4a name over the limit",
     b"\x04\x01\x00\x50\x00\x00\x00\x01alice\x00" + b"h" * 300,
     b"\x00\x5b" + bytes(6), r"error -- "),
    ("unknown socks5 command", b"\x05\x01\x00\x05\x07\x00\x01\x7f\x00\x00\x01\x00\x50",
     b"\x05\x00" + b"\x05\x07\x00\x01" + bytes(6), r"error -- "),
    ("unknown address type", b"\x05\x01\x00\x05\x01\x00\x08\x7f\x00\x00\x01\x00\x50",
     b"\x05\x00" + b"\x05\x08\x00\x01" + bytes(6), r"error -- "),
    ("no acceptable method", b"\x05\x01\x02", b"\x05\xff", r"error -- no acceptable"),
]


@pytest.mark.parametrize("name, data, reply, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_request(sockd, echo_server, name, data, reply, pattern):
    server = sockd(args=ONE_WORKER)
    shut = name.startswith("truncated")
    assert exchange(server.port, data, shut=shut) == reply
    lines = server.wait_log(pattern)
    assert len(lines) == 1, lines
    served_next(server, echo_server)
    assert len(worker_pids(server, SESSION_LINE)) == 1, server.log()


def test_client_that_sends_nothing_times_out(sockd, echo_server):
    server = sockd(args=ONE_WORKER)
    started = time.monotonic()
    assert exchange(server.port, b"") == b""
    assert time.monotonic() - started >= 1.5
    assert len(server.wait_log(r"timed-out -- negotiation with host 127.0.0.1")) == 1
    served_next(server, echo_server)


def test_unresolvable_name(sockd, echo_server):
    server = sockd(args=ONE_WORKER)
    name = b"no-such-host.invalid"
    reply = socks5(server.port, b"\x03" + bytes([len(name)]) + name + b"\x00\x50")
    assert reply == b"\x05\x00" + b"\x05\x04\x00\x01" + bytes(6)
    assert len(server.wait_log(r"failed -- Connect .*no-such-host.invalid.*getaddrinfo")) == 1
    served_next(server, echo_server)


def test_refused_by_rules(sockd, echo_server):
    server = sockd(args=ONE_WORKER)
    # 10.1.2.3 is not loopback: the rules refuse it before any packet could leave.
    reply = socks5(server.port, b"\x01" + socket.inet_aton("10.1.2.3") + b"\x00\x50")
    assert reply == b"\x05\x00" + b"\x05\x02\x00\x01" + bytes(6)
    socks4 = exchange(server.port, b"\x04\x01\x00\x50" + socket.inet_aton("10.1.2.3")
                      + b"bob\x00")
    assert socks4 == b"\x00\x5b" + bytes(6)
    lines = server.wait_log(r"refused -- Connect", count=2)
    assert re.search(r"from bob\(unknown\)@127\.0\.0\.1:\d+ to 10\.1\.2\.3:80 \(http\) rule=",
                     lines[1])
    served_next(server, echo_server)


def test_connection_refused_destination(sockd, echo_server):
    from conftest import free_port
    server = sockd(args=ONE_WORKER)
    closed = free_port()
    reply = socks5(server.port, b"\x01" + socket.inet_aton("127.0.0.1")
                   + struct.pack(">H", closed))
    assert reply == b"\x05\x00" + b"\x05\x05\x00\x01" + bytes(6)
    socks4 = exchange(server.port, b"\x04\x01" + struct.pack(">H", closed)
                      + socket.inet_aton("127.0.0.1") + b"\x00")
    assert socks4 == b"\x00\x5b" + bytes(6)
    assert len(server.wait_log(r"failed -- Connect .*Connection refused", count=2)) == 2
    served_next(server, echo_server)


def test_unreachable_destination(sockd, echo_server):
    # A loopback listener whose accept queue is full drops every new SYN: to
    # sockd the destination does not answer, exactly like an unreachable host.
    deaf = socket.socket()
    deaf.bind(("127.0.0.1", 0))
    deaf.listen(0)
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(deaf.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    server = sockd(args=ONE_WORKER)
    port = deaf.getsockname()[1]
    reply = socks5(server.port, b"\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port))
    assert reply == b"\x05\x00" + b"\x05\x04\x00\x01" + bytes(6)
    assert len(server.wait_log(r"timed-out -- Connect .*connect\(\) after 3 s")) == 1
    served_next(server, echo_server)
    for f in fillers:
        f.close()
    deaf.close()


def test_client_disconnects_mid_relay(sockd, echo_server):
    server = sockd(args=ONE_WORKER)
    s = open_session(server.port, echo_server)
    s.sendall(b"data" * 1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset, mid-relay
    assert len(server.wait_log(r"terminated -- Connect")) == 1
    served_next(server, echo_server)
