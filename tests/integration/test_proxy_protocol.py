"""--proxy-protocol through the real sockd, with headers written by hand: whom it believes,
what it refuses, and that the rules, hooks, logs, the checks at accept and ident all see the
client the header names.  (A real HAProxy in front: test_haproxy.py.)"""

import ipaddress
import socket
import struct
import subprocess
import sys

import pytest
from socks_wire import TIMEOUT, read_all, recv_exact

from conftest import ROOT, wait_until
from sockd.proxyproto import build_v1, build_v2

pytestmark = pytest.mark.integration

V4 = ipaddress.IPv4Address
TRUSTED = ["--proxy-protocol", "127.0.0.1/32"]

# 127.0.0.10 may reach loopback destinations; 127.0.0.11 may not; 127.0.0.1 (the
# "balancer" these tests play) only for its LOCAL connections.
RULES = """\
permit cmd=udp 127.0.0.10/32 127.0.0.1/32
permit 127.0.0.10 255.255.255.255 127.0.0.0 255.0.0.0 : echo hook client=%a
permit 127.0.0.12 255.255.255.255 127.0.0.0 255.0.0.0
permit ?=I 127.0.0.13 255.255.255.255 127.0.0.0 255.0.0.0
permit 127.0.0.1 255.255.255.255 127.0.0.0 255.0.0.0
deny 0.0.0.0 0.0.0.0
"""


def header(client: str, port: int = 40312, version: int = 2) -> bytes:
    build = build_v2 if version == 2 else build_v1
    return build((V4(client), port), (V4("127.0.0.1"), 1080))


def socks5_connect(dport: int) -> bytes:
    return b"\x05\x01\x00" + b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + \
        struct.pack(">H", dport)


def through(server, first: bytes) -> socket.socket:
    """A connection to *server* from 127.0.0.1 that starts with *first*."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(first)
    return sock


def echo_through(server, first: bytes, echo_server: int) -> bytes:
    """Send *first* (a header, or nothing) and a pipelined SOCKS5 CONNECT to the echo server;
    the reply code, or b"" when sockd closed without one."""
    with through(server, first + socks5_connect(echo_server)) as sock:
        replies = recv_exact(sock, 12)
        if len(replies) < 12:
            return b""
        if replies[3] == 0:
            sock.sendall(b"ping")
            assert recv_exact(sock, 4) == b"ping"
        return replies[3:4]


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_names_the_client_to_rules_hooks_and_logs(sockd, echo_server, version):
    server = sockd(rules=RULES, args=TRUSTED)
    assert echo_through(server, header("127.0.0.10", 40312, version), echo_server) == b"\x00"
    line = server.wait_log(r"connected -- Connect from .*@127\.0\.0\.10:40312 ")[0]
    assert "127.0.0.1:" not in line.split(" to ")[0]
    server.wait_log(r"hook output -- .*: hook client=127\.0\.0\.10$")
    server.wait_log(r"terminated -- .*@127\.0\.0\.10:40312 .*4 bytes from 127\.0\.0\.10")


def test_a_client_the_rules_never_permit_is_refused_at_accept_by_its_real_address(
        sockd, echo_server):
    server = sockd(rules=RULES, args=TRUSTED)
    assert echo_through(server, header("127.0.0.11"), echo_server) == b""
    server.wait_log(r"refused -- client 127\.0\.0\.11:40312 at accept: no rule can permit")


def test_max_per_source_counts_the_real_clients(sockd, echo_server):
    server = sockd(rules=RULES, args=[*TRUSTED, "--max-per-source", "1"])
    with through(server, header("127.0.0.10", 1000) + socks5_connect(echo_server)) as held:
        assert recv_exact(held, 12)[3] == 0
        # the same balancer, another client: let in; the same client again: refused
        assert echo_through(server, header("127.0.0.12", 1001), echo_server) == b"\x00"
        assert echo_through(server, header("127.0.0.10", 1002), echo_server) == b""
        server.wait_log(r"refused -- client 127\.0\.0\.10:1002 at accept: 1 sessions already "
                        r"from 127\.0\.0\.10 \(--max-per-source 1;")


def test_ident_through_a_balancer_is_unreachable_and_strict_refuses(sockd, echo_server):
    server = sockd(rules=RULES, args=TRUSTED)
    assert echo_through(server, header("127.0.0.13"), echo_server) == b"\x02"
    server.wait_log(r"refused -- Connect from .*@127\.0\.0\.13:40312 ")
    server.wait_log(r"cannot connect to identd on 127\.0\.0\.13 \(behind a load balancer\)")


def test_a_header_from_an_untrusted_address_is_not_believed(sockd, echo_server):
    server = sockd(rules=RULES, args=["--proxy-protocol", "127.0.0.2/32,::1"])
    for version in (1, 2):
        assert echo_through(server, header("127.0.0.10", 40312, version), echo_server) == b""
    lines = server.wait_log(r"error -- PROXY protocol header from an address --proxy-protocol "
                            r"does not trust from host 127\.0\.0\.1:\d+ session=", count=2)
    assert len(lines) == 2
    assert not server.lines("127.0.0.10")


def test_a_trusted_address_without_a_header_is_closed(sockd, echo_server):
    server = sockd(rules=RULES, args=TRUSTED)
    assert echo_through(server, b"", echo_server) == b""
    server.wait_log(r"error -- no PROXY header \(first byte 0x05\) from balancer "
                    r"127\.0\.0\.1:\d+$")


@pytest.mark.parametrize("bad, reason", [
    (b"PROXY TCP4 127.0.0.300 127.0.0.1 1 2\r\n", r"PROXY v1 source address is not IPv4"),
    (b"PROXY TCP4 " + b"1" * 120, r"PROXY v1 header longer than 107 bytes"),
    (build_v2((V4("127.0.0.10"), 1), (V4("127.0.0.1"), 2))[:12] + b"\x11",
     r"PROXY v2 version 1 is not 2"),
])
def test_a_malformed_header_is_one_error_line(sockd, echo_server, bad, reason):
    server = sockd(rules=RULES, args=TRUSTED)
    with through(server, bad) as sock:
        assert read_all(sock) == b""
    server.wait_log(rf"error -- {reason} from balancer 127\.0\.0\.1:\d+$")
    assert echo_through(server, header("127.0.0.10"), echo_server) == b"\x00"  # serves on
    server.wait_log(r"connected -- ")
    assert len(server.lines(r"error -- ")) == 1


def test_a_truncated_header_is_one_error_line(sockd):
    server = sockd(rules=RULES, args=TRUSTED)
    with through(server, header("127.0.0.10")[:20]):
        pass
    server.wait_log(r"error -- truncated PROXY header from balancer 127\.0\.0\.1:\d+ "
                    r"\(20 bytes\)$")
    assert len(server.lines(r"error -- |refused -- ")) == 1


def test_a_late_header_times_out(sockd):
    server = sockd(rules=RULES, args=[*TRUSTED, "--negotiate-timeout", "1"])
    with through(server, b"PROXY TCP4 127.0.0.10 ") as sock:
        assert read_all(sock) == b""
    server.wait_log(r"timed-out -- PROXY header from balancer 127\.0\.0\.1:\d+ after 1 s$")


def test_health_checks_do_not_fill_the_log(sockd, echo_server):
    """HAProxy's checks: connect and close, with or without a LOCAL header; and a client that
    connects directly and says nothing.  None is worth a line at the default level."""
    plain = sockd(rules=RULES, args=["--proxy-protocol", "127.0.0.2"])
    trusted = sockd(rules=RULES, args=TRUSTED)
    for server, first in ((plain, b""), (trusted, b""), (trusted, build_v2(None)),
                          (trusted, build_v1(None))):
        for _ in range(3):
            with through(server, first) as sock:
                sock.shutdown(socket.SHUT_WR)
                assert read_all(sock) == b""
    # a LOCAL connection that does carry a request is the balancer's own
    assert echo_through(trusted, build_v2(None), echo_server) == b"\x00"
    trusted.wait_log(r"connected -- Connect from .*@127\.0\.0\.1:\d+ ")
    # (sockd logs before it closes: what the checks could have written is written)
    assert not plain.lines(r"^(?!.* (started|rules|capacity) -- )")
    assert not trusted.lines(r"^(?!.* (started|rules|capacity|connected|terminated) -- )")


def test_debug_level_shows_the_health_checks(sockd):
    server = sockd(rules=RULES, args=[*TRUSTED, "--debug"])
    with through(server, b""):
        pass
    with through(server, build_v2(None)):
        pass
    server.wait_log(r"balancer 127\.0\.0\.1:\d+ closed the connection before sending a byte$")
    server.wait_log(r"client 127\.0\.0\.1:\d+ closed the connection before sending a byte "
                    r"session=\d+\.\d+$")
    server.wait_log(r"balancer 127\.0\.0\.1:\d+: a PROXY header naming no client")


def test_bad_networks_are_a_usage_error():
    for bad in ("127.0.0.1/33", "10.0.0.1/8", "example.com", "127.0.0.1,"):
        done = subprocess.run([sys.executable, "-m", "sockd", "-t", "--proxy-protocol", bad],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (bad, done.stderr)
        assert "--proxy-protocol" in done.stderr and "bad network" in done.stderr


def test_inetd_mode_reads_the_header_too(tmp_path, echo_server):
    conf = tmp_path / "sockd.conf"
    conf.write_text(RULES)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        conn, _ = listener.accept()
    log = tmp_path / "inetd.log"
    with client, conn:
        proc = subprocess.Popen([sys.executable, "-m", "sockd", "--inetd", "-c", str(conf),
                                 "--log", str(log), *TRUSTED], cwd=ROOT, stdin=conn,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        conn.close()
        client.sendall(header("127.0.0.10") + socks5_connect(echo_server))
        assert recv_exact(client, 12)[3] == 0
        client.sendall(b"ping")
        assert recv_exact(client, 4) == b"ping"
    assert proc.wait(timeout=30) == 0
    wait_until(lambda: "@127.0.0.10:40312 " in log.read_text(), 10, "the inetd session's line")


@pytest.mark.parametrize("routed", [False, True])
def test_udp_through_a_balancer_answers_with_an_address_the_client_reaches(
        sockd, tmp_path, routed):
    """The relay is on the route file's address for the client when it has one, else on the
    address the balancer reached; datagrams come from the real client, not the balancer."""
    args = list(TRUSTED)
    if routed:
        routes = tmp_path / "sockd.route"
        routes.write_text("127.0.0.5 127.0.0.10/32\n")
        args += ["--route", str(routes)]
    server = sockd(rules=RULES, args=args)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        echo.bind(("127.0.0.1", 0))
        echo.settimeout(TIMEOUT)
        client.bind(("127.0.0.10", 0))
        client.settimeout(TIMEOUT)
        request = b"\x05\x01\x00\x05\x03\x00\x01" + socket.inet_aton("127.0.0.10") + \
            struct.pack(">H", client.getsockname()[1])
        with through(server, header("127.0.0.10") + request) as control:
            reply = recv_exact(control, 12)
            assert reply[:4] == b"\x05\x00\x05\x00", reply
            relay = (socket.inet_ntoa(reply[6:10]), struct.unpack(">H", reply[10:12])[0])
            assert relay[0] == ("127.0.0.5" if routed else "127.0.0.1")
            client.sendto(b"\0\0\0\x01" + socket.inet_aton("127.0.0.1")
                          + struct.pack(">H", echo.getsockname()[1]) + b"ping", relay)
            data, source = echo.recvfrom(100)
            assert data == b"ping"
            echo.sendto(b"pong", source)
            answer, _ = client.recvfrom(100)
            assert answer.endswith(b"pong")
    server.wait_log(r"connected -- Udp from .*@127\.0\.0\.10:40312 ")
