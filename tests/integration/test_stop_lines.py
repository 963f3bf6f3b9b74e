"""Sessions cut by INT or at the end of --grace still get their closing line."""

import signal
import socket
import struct

import pytest

pytestmark = pytest.mark.integration

CLOSING = r"terminated -- Connect .*@127\.0\.0\.1.*: 4 bytes from 127\.0\.0\.1.*, 4 bytes from " \
          r"127\.0\.0\.1:%d, \d+\.\d{3} s \(stopped\)"


def open_session(proxy_port: int, dest_port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
    s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
              + struct.pack(">H", dest_port))
    reply = b""
    while len(reply) < 12 and (chunk := s.recv(12 - len(reply))):
        reply += chunk
    assert reply[:4] == b"\x05\x00\x05\x00", reply
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    return s


def test_int_cuts_each_session_with_its_closing_line(sockd, echo_server):
    server = sockd(args=["--grace", "30"])
    sessions = [open_session(server.port, echo_server) for _ in range(2)]
    server.signal(signal.SIGINT)
    assert server.proc.wait(5) == 0
    assert len(server.lines(CLOSING % echo_server)) == 2, server.log()
    assert len(server.lines(r"stopping now -- letting no session finish")) == 1, server.log()
    for s in sessions:
        s.settimeout(5)
        assert s.recv(10) == b""
        s.close()


def test_the_end_of_grace_cuts_with_closing_lines(sockd, echo_server):
    server = sockd(args=["--grace", "1"])
    s = open_session(server.port, echo_server)
    server.signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    log = server.log()
    assert "stopped -- grace period over, 1 sessions cut" in log
    assert len(server.lines(CLOSING % echo_server)) == 1, log
    # the closing line comes after the master said it cuts
    assert log.index("grace period over") < log.index("terminated -- ")
    s.close()


def test_a_second_int_kills_at_once(sockd, echo_server):
    server = sockd(args=["--grace", "30"])
    with open_session(server.port, echo_server):
        server.signal(signal.SIGINT)
        server.signal(signal.SIGINT)
        assert server.proc.wait(5) == 0
