"""SOCKS5 UDP ASSOCIATE through a running sockd: PySocks and hand-built datagrams against
UDP echo servers on 127.0.0.1 and ::1, strangers, fragments, malformed headers, refused
destinations (judged and logged once), and the association's end with its TCP connection."""

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import socks

from conftest import LOOPBACK_RULES, ROOT, free_port, wait_until
from identd import FakeIdentd, send

pytestmark = pytest.mark.integration

ARGS = ["--min-spare", "1", "--max-spare", "2", "--max-workers", "4"]
# LOOPBACK_RULES let a ::1 client reach ::1 only; an IPv4 client may send datagrams to ::1 too
UDP_RULES = "permit cmd=udp 127.0.0.0/8 ::1/128\n" + LOOPBACK_RULES


class UdpEcho:
    """UDP echo servers on 127.0.0.1 and ::1, on one port; they count what they receive."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple]] = []
        self.socks = []
        for _ in range(20):
            port = free_port()
            try:
                for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    self.socks.append(s)
                    s.bind((host, port))
                    s.settimeout(0.1)
                break
            except OSError:
                self.close()
        self.port = port
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            for s in list(self.socks):
                with contextlib.suppress(OSError):
                    data, source = s.recvfrom(65536)
                    self.received.append((data, source))
                    s.sendto(data, source)

    def close(self) -> None:
        self.running = False
        if getattr(self, "thread", None):
            self.thread.join(5)
        for s in self.socks:
            s.close()
        self.socks = []


@pytest.fixture
def echo():
    e = UdpEcho()
    yield e
    e.close()


def header(host: str, port: int, frag: int = 0) -> bytes:
    """RSV FRAG ATYP DST.ADDR DST.PORT (RFC 1928 §7), by hand."""
    for atyp, family in ((1, socket.AF_INET), (4, socket.AF_INET6)):
        with contextlib.suppress(OSError):
            return bytes((0, 0, frag, atyp)) + socket.inet_pton(family, host) \
                + struct.pack(">H", port)
    name = host.encode()
    return bytes((0, 0, frag, 3, len(name))) + name + struct.pack(">H", port)


def split(datagram: bytes) -> tuple[int, str, int, bytes]:
    """(FRAG, address, port, payload) of a datagram from the relay."""
    assert datagram[:2] == b"\0\0"
    size, family = {1: (4, socket.AF_INET), 4: (16, socket.AF_INET6)}[datagram[3]]
    address = socket.inet_ntop(family, datagram[4:4 + size])
    port = struct.unpack(">H", datagram[4 + size:6 + size])[0]
    return datagram[2], address, port, datagram[6 + size:]


class Associate:
    """The client side of one UDP ASSOCIATE, spoken by hand."""

    def __init__(self, proxy: tuple[str, int], announce: bool = False) -> None:
        """DST is 0.0.0.0:0, or 0.0.0.0 and the client's UDP port when *announce*."""
        host = proxy[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.udp.settimeout(5)
        self.control = socket.create_connection(proxy, timeout=10)
        dst = ("0.0.0.0", self.udp.getsockname()[1] if announce else 0)
        self.control.sendall(b"\x05\x01\x00" + b"\x05\x03" + header(*dst)[2:])
        assert self.control.recv(2) == b"\x05\x00"
        head = self._read(4)
        assert head[:2] == b"\x05\x00", head
        size, afamily = (4, socket.AF_INET) if head[3] == 1 else (16, socket.AF_INET6)
        rest = self._read(size + 2)
        self.relay = (socket.inet_ntop(afamily, rest[:size]), struct.unpack(">H", rest[-2:])[0])

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.control.recv(n - len(data))
            assert chunk, "the control connection closed"
            data += chunk
        return data

    def send(self, datagram: bytes) -> None:
        self.udp.sendto(datagram, self.relay)

    def recv(self) -> tuple[int, str, int, bytes]:
        data, source = self.udp.recvfrom(70000)
        assert source[:2] == self.relay
        return split(data)

    def close(self) -> None:
        self.control.close()
        self.udp.close()


def pysocks(proxy_port: int, rdns: bool = False) -> socks.socksocket:
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=rdns)
    s.settimeout(5)
    return s


def end_line(server, count: int = 1) -> str:
    return server.wait_log(r"(terminated|timed-out) -- Udp ", timeout=10, count=count)[-1]


def test_pysocks_relays_to_ipv4_ipv6_and_a_name(sockd, echo):
    server = sockd(rules=UDP_RULES, args=ARGS)
    s = pysocks(server.port, rdns=True)
    s.sendto(b"to v4", ("127.0.0.1", echo.port))
    assert s.recvfrom(100) == (b"to v4", ("127.0.0.1", echo.port))
    s.sendto(b"to v6", ("::1", echo.port))
    assert s.recvfrom(100) == (b"to v6", ("::1", echo.port))
    s.sendto(b"to a name", ("localhost", echo.port))
    data, (address, port) = s.recvfrom(100)
    assert (data, port) == (b"to a name", echo.port) and address in ("127.0.0.1", "::1")
    s.sendto(b"again", ("localhost", echo.port))
    assert s.recvfrom(100)[0] == b"again"
    relay_port = socket.socket.getpeername(s)[1]   # PySocks hides it
    assert any(f"udp relay 127.0.0.1:{relay_port}" in title
               for title in server.titles().values())
    s.close()
    line = end_line(server)
    assert "terminated -- Udp from -(unknown)@127.0.0.1:" in line
    assert "rule=- session=" in line and f"out=127.0.0.1:{relay_port}:" in line
    assert ": 4 datagrams (24 bytes) from 127.0.0.1, 4 datagrams (24 bytes) to 127.0.0.1, " \
        "dropped 0 frag, 0 malformed, 0 strangers, 0 refused, 0 failed, " in line
    assert line.endswith(" s (eof)")
    # one judged line per destination, with the rule and the outbound address
    connected = server.lines(r"connected -- Udp ")
    assert len(connected) == 4
    session = line.split("session=")[1].split()[0]
    assert all(f"session={session}" in entry for entry in connected)
    by_name = [entry for entry in connected if f" to localhost:{echo.port} " in entry]
    assert len(by_name) == 1 and " addr=" in by_name[0] and ".conf:" in by_name[0]
    assert any(f" to [::1]:{echo.port} " in entry and " out=[::1]:" in entry
               for entry in connected)
    assert len(echo.received) == 4


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_reply_names_the_real_relay_and_replies_come_wrapped(sockd, echo, host):
    """BND.ADDR:BND.PORT is the relay socket itself (datagrams from the relay come from
    there), on the family of the control connection; replies carry the echo's address."""
    ports = {"127.0.0.1": free_port(), "::1": free_port("::1")}
    server = sockd(args=[*ARGS, "-l", f"127.0.0.1:{ports['127.0.0.1']}",
                         "-l", f"[::1]:{ports['::1']}"])
    a = Associate((host, ports[host]))
    assert a.relay[0] == host and a.relay[1] not in (0, ports[host])
    a.send(header(host, echo.port) + b"ping")
    assert a.recv() == (0, host, echo.port, b"ping")
    assert echo.received[0][1][:2] != a.udp.getsockname()[:2]   # it left from sockd's side
    a.close()
    line = end_line(server)
    assert "1 datagrams (4 bytes) from" in line and "1 datagrams (4 bytes) to" in line


def test_strangers_fragments_and_malformed_headers_are_dropped_and_counted(sockd, echo):
    server = sockd(args=ARGS)
    a = Associate(("127.0.0.1", server.port))
    a.send(header("127.0.0.1", echo.port) + b"first")    # the client's port is learned here
    assert a.recv()[3] == b"first"
    # from another port of the client's host, and from another address
    for source in ("127.0.0.1", "127.0.0.2"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind((source, 0))
            stranger.sendto(header("127.0.0.1", echo.port) + b"stranger", a.relay)
    a.send(header("127.0.0.1", echo.port, frag=1) + b"fragment")
    a.send(header("127.0.0.1", echo.port, frag=0x81) + b"last fragment")
    for bad in (b"", b"\0", b"\0\0\0", b"\0\0\0\x09abcdef", b"\0\0\0\x01\x7f\0",
                b"\0\0\0\x03\0\0\x07", b"\0\0\0\x04" + bytes(10)):
        a.send(bad)
    # a reply from anyone but a peer the client has sent to is a stranger too
    out = server.wait_log(rf"connected -- Udp .* to 127\.0\.0\.1:{echo.port} ")[0]
    out_port = int(out.split(" out=127.0.0.1:")[1].split()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(b"not a peer", ("127.0.0.1", out_port))
    a.send(header("127.0.0.1", echo.port) + b"last")
    assert a.recv()[3] == b"last"       # and nothing else came in between
    a.close()
    line = end_line(server)
    assert "2 datagrams (9 bytes) from 127.0.0.1, 2 datagrams (9 bytes) to 127.0.0.1, " \
        "dropped 2 frag, 7 malformed, 3 strangers, 0 refused, 0 failed" in line
    assert [data for data, _ in echo.received] == [b"first", b"last"]


def test_the_request_port_is_the_only_client_port(sockd, echo):
    """DST.PORT given in the request: a datagram from another port of the client's address
    is a stranger, even the first one."""
    server = sockd(args=ARGS)
    a = Associate(("127.0.0.1", server.port), announce=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other.sendto(header("127.0.0.1", echo.port) + b"from elsewhere", a.relay)
    a.send(header("127.0.0.1", echo.port) + b"from the client")
    assert a.recv()[3] == b"from the client"
    a.close()
    line = end_line(server)
    assert "1 datagrams (15 bytes) from 127.0.0.1" in line and " 1 strangers," in line
    assert [data for data, _ in echo.received] == [b"from the client"]


def test_a_refused_destination_is_judged_and_logged_once(sockd, echo):
    rules = (f"deny cmd=udp 127.0.0.0/8 127.0.0.1/32 eq {echo.port} "
             f": echo \"udp-hook %c %z %s\"\n" + LOOPBACK_RULES)
    server = sockd(rules=rules, args=ARGS)
    a = Associate(("127.0.0.1", server.port))
    for _ in range(5):
        a.send(header("127.0.0.1", echo.port) + b"denied")
    a.send(header("::1", echo.port) + b"v6 is not in the rules for an IPv4 client")
    other = UdpEcho()
    try:
        a.send(header("127.0.0.1", other.port) + b"allowed")
        assert a.recv() == (0, "127.0.0.1", other.port, b"allowed")
    finally:
        other.close()
    a.close()
    line = end_line(server)
    assert " 1 datagrams (7 bytes) from 127.0.0.1" in line and " 6 refused," in line
    refused = server.lines(r"refused -- Udp ")
    assert len(refused) == 2
    assert f" to 127.0.0.1:{echo.port} " in refused[0] and ".conf:1 session=" in refused[0]
    assert f" to [::1]:{echo.port} " in refused[1] and ".conf:no-match" not in refused[1]
    server.wait_log(rf"udp-hook udp 127\.0\.0\.1 {echo.port}")
    # the hook ran once, not once per datagram
    assert len(server.lines(r"hook started -- .*udp-hook")) == 1
    assert echo.received == []


def test_this_host_listeners_relay_sockets_and_bad_names_are_refused(sockd, echo):
    server = sockd(args=ARGS)
    a = Associate(("127.0.0.1", server.port))
    for host in ("0.0.0.0", "0", "0x0", "::", "::ffff:0.0.0.0"):
        a.send(header(host, echo.port) + b"this host")
    a.send(header("127.0.0.1", server.port) + b"our listener")
    a.send(header(*a.relay) + b"the relay itself")
    a.send(b"\0\0\0\x03\x0alocal host" + struct.pack(">H", echo.port) + b"bad name")
    a.send(header("127.0.0.1", echo.port) + b"fine")
    assert a.recv()[3] == b"fine"
    a.close()
    line = end_line(server)
    assert " 8 refused," in line
    assert len(server.lines(r"Error: destination means this host$")) == 5
    assert server.lines(rf" to 127\.0\.0\.1:{server.port} .*Error: destination is a listener "
                        r"of this server$")
    assert server.lines(r"Error: destination is a socket of this association$")
    server.wait_log(r"error -- invalid host name 'local\\x20host' \(.*\) from host "
                    r"127\.0\.0\.1:\d+ session=")
    assert [data for data, _ in echo.received] == [b"fine"]


def test_the_association_ends_with_its_tcp_connection(sockd, echo):
    server = sockd(args=[*ARGS, "--idle-timeout", "60"])
    a = Associate(("127.0.0.1", server.port))
    a.control.sendall(b"bytes on the control connection are read and ignored")
    a.send(header("127.0.0.1", echo.port) + b"x")
    assert a.recv()[3] == b"x"
    wait_until(lambda: any("udp relay" in t for t in server.titles().values()), 5, "udp title")
    started = time.monotonic()
    a.control.close()
    line = end_line(server)
    assert time.monotonic() - started < 5 and line.endswith("(eof)")
    wait_until(lambda: not any("udp relay" in t for t in server.titles().values()), 5,
               "the worker to be idle again")
    # the relay socket is gone with it
    a.send(header("127.0.0.1", echo.port) + b"after the end")
    with pytest.raises(OSError):
        a.udp.recvfrom(100)
    a.udp.close()
    assert len(echo.received) == 1


def test_an_idle_association_times_out(sockd, echo):
    server = sockd(args=[*ARGS, "--idle-timeout", "1"])
    a = Associate(("127.0.0.1", server.port))
    line = server.wait_log(r"timed-out -- Udp ", timeout=10)[0]
    assert line.endswith("(idle)")
    assert a.control.recv(10) == b""
    a.close()


def test_datagrams_leave_from_the_route_files_source(sockd, echo, tmp_path):
    routes = tmp_path / "sockd.route"
    routes.write_text("127.0.0.2 127.0.0.0/8\n")
    server = sockd(args=[*ARGS, "--route", str(routes)])
    a = Associate(("127.0.0.1", server.port))
    assert a.relay[0] == "127.0.0.1"    # the client side stays where the client came
    a.send(header("127.0.0.1", echo.port) + b"routed")
    assert a.recv() == (0, "127.0.0.1", echo.port, b"routed")
    a.close()
    assert echo.received[0][1][0] == "127.0.0.2"
    assert server.wait_log(r"connected -- Udp .* to 127\.0\.0\.1:")[0].count(" out=127.0.0.2:")


def test_identd_is_asked_once_an_association(sockd, echo):
    """?=I rules on two destinations: identd is asked once (the answer is about the TCP
    connection); an answer lets a SOCKS 5 client without a user through, and names it."""
    other = UdpEcho()
    rules = (f"permit ?=I cmd=udp 127.0.0.0/8 127.0.0.1/32 eq {echo.port}\n"
             f"permit ?=I cmd=udp 127.0.0.0/8 127.0.0.1/32 eq {other.port}\n" + LOOPBACK_RULES)
    server = sockd(rules=rules, args=ARGS)
    try:
        with FakeIdentd(send(b"USERID : UNIX : carol"), port=113) as identd:
            a = Associate(("127.0.0.1", server.port))
            for port in (echo.port, other.port, echo.port):
                a.send(header("127.0.0.1", port) + b"hi")
                assert a.recv()[2:] == (port, b"hi")
            a.close()
            end_line(server)
        assert len(identd.queries) == 1
    finally:
        other.close()
    assert len(server.lines(r"connected -- Udp from -\(carol\)@127\.0\.0\.1:.* to 127")) == 2
    assert " 3 datagrams (6 bytes) from" in end_line(server)


def test_a_strict_rule_without_identd_refuses_the_destination_only(sockd, echo):
    other = UdpEcho()
    rules = (f"permit ?=I cmd=udp 127.0.0.0/8 127.0.0.1/32 eq {echo.port}\n" + LOOPBACK_RULES)
    server = sockd(rules=rules, args=[*ARGS, "--ident-timeout", "2"])
    try:
        a = Associate(("127.0.0.1", server.port))
        a.send(header("127.0.0.1", echo.port) + b"needs identd")
        a.send(header("127.0.0.1", other.port) + b"does not")
        assert a.recv()[2:] == (other.port, b"does not")
        a.close()
    finally:
        other.close()
    line = end_line(server)
    assert " 1 refused," in line and " 1 datagrams (8 bytes) from" in line
    assert len(server.lines(r"cannot connect to identd on 127\.0\.0\.1 \(.*\) session=")) == 1
    assert server.lines(rf"refused -- Udp from -\(unknown\)@.* to 127\.0\.0\.1:{echo.port} ")
    assert echo.received == []


def test_an_association_counts_for_max_per_source(sockd, echo):
    server = sockd(args=[*ARGS, "--max-per-source", "1"])
    a = Associate(("127.0.0.1", server.port))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
        assert second.recv(10) == b""      # closed at accept, no reply
    server.wait_log(r"sessions already from 127\.0\.0\.1 \(--max-per-source 1;")
    a.send(header("127.0.0.1", echo.port) + b"still served")
    assert a.recv()[3] == b"still served"
    a.close()


def test_the_association_goes_through_authentication(sockd, echo, tmp_path):
    passwd = tmp_path / "sockd.passwd"
    done = subprocess.run([sys.executable, "-m", "sockd.sockpasswd", "--file", str(passwd),
                           "add", "alice"], input="s3cret\ns3cret\n", text=True,
                          capture_output=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    rules = ("permit auth=password *=alice cmd=udp 127.0.0.0/8 127.0.0.1/32\n"
             "deny 0.0.0.0/0\n")
    server = sockd(rules=rules, args=[*ARGS, "--passwd", str(passwd)])
    wrong = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    wrong.set_proxy(socks.SOCKS5, "127.0.0.1", server.port, username="alice",
                    password="not-it")
    wrong.settimeout(20)
    with pytest.raises(socks.ProxyError):
        wrong.sendto(b"no", ("127.0.0.1", echo.port))
    wrong.close()
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", server.port, username="alice", password="s3cret")
    s.settimeout(20)
    s.sendto(b"yes", ("127.0.0.1", echo.port))
    assert s.recvfrom(100)[0] == b"yes"
    s.close()
    server.wait_log(r"authentication failed for user alice")
    assert len(server.lines(r"connected -- Udp from alice\(unknown\)@127\.0\.0\.1:")) == 2
    assert " 1 datagrams (3 bytes) from " in end_line(server)
    assert [data for data, _ in echo.received] == [b"yes"]


def test_an_association_no_rule_could_allow_is_refused_at_once(sockd, echo):
    """A client that no udp rule lets send anywhere gets 0x02 at once, not a relay that would
    hold a worker for datagrams all refused."""
    rules = "permit cmd=connect 127.0.0.0/8 127.0.0.0/8\ndeny 0.0.0.0/0\n"
    server = sockd(rules=rules, args=ARGS)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"\x05\x01\x00\x05\x03\x00\x01" + bytes(6))
        assert s.recv(2) == b"\x05\x00"
        assert s.recv(10)[:2] == b"\x05\x02"
        assert s.recv(10) == b""
    server.wait_log(r"refused -- Udp from -\(unknown\)@127\.0\.0\.1:\d+ to 0\.0\.0\.0:0 .*"
                    r"Error: no rule allows udp for this client$")
