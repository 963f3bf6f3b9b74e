"""sockd.udp.Association over loopback sockets and a socketpair for the control connection:
the verdict cache (one judgement per destination, bounded), peers, counters, and the
reasons an association ends.  The judge is a plain function here; the session's is tested
through the real daemon (tests/integration/test_udp.py)."""

import ipaddress
import socket
import threading

import pytest

from sockd import protocol, udp

LOCAL = ipaddress.ip_address("127.0.0.1")


class Running:
    """An Association run in a thread, with a client UDP socket and a UDP echo socket."""

    def __init__(self, judge=None, client_port: int = 0, idle_timeout: float = 30,
                 on_tick=None) -> None:
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(5)
        self.echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.echo.bind(("127.0.0.1", 0))
        self.echo.settimeout(5)
        self.control, self.far = socket.socketpair()
        self.association = udp.Association(LOCAL, LOCAL, client_port)
        self.judged: list[tuple] = []
        self.judge = judge or self.allow_all
        self.reason = None
        self.thread = threading.Thread(target=self._run, args=(idle_timeout, on_tick),
                                       daemon=True)
        self.thread.start()

    def allow_all(self, host, port) -> udp.Verdict:
        self.judged.append((host, port))
        address = ipaddress.ip_address(host) if isinstance(host, str) else host
        return udp.Verdict(address, self.association.outbound_for(address, None))

    def _run(self, idle_timeout, on_tick) -> None:
        self.reason = self.association.run(self.control, self.judge, idle_timeout=idle_timeout,
                                           on_tick=on_tick)

    @property
    def relay(self) -> tuple[str, int]:
        address, port = self.association.relay_address
        return str(address), port

    def send(self, host, port: int, payload: bytes, frag: int = 0) -> None:
        self.client.sendto(protocol.build_udp_datagram(host, port, payload, frag), self.relay)

    def echo_once(self) -> bytes:
        data, source = self.echo.recvfrom(65536)
        self.echo.sendto(data, source)
        return data

    def finish(self) -> str:
        self.far.close()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.association.close()
        for s in (self.client, self.echo, self.control):
            s.close()
        return self.reason


def test_a_datagram_goes_out_and_its_reply_comes_back_wrapped():
    r = Running()
    echo_port = r.echo.getsockname()[1]
    r.send(LOCAL, echo_port, b"hello")
    assert r.echo_once() == b"hello"
    data, source = r.client.recvfrom(65536)
    assert source == r.relay
    assert protocol.parse_udp_datagram(data) == (protocol.UdpHeader(0, LOCAL, echo_port),
                                                 b"hello")
    assert r.finish() == "eof"
    n = r.association.counters
    assert (n.from_client, n.from_client_bytes, n.to_client, n.to_client_bytes) == (1, 5, 1, 5)


def test_each_destination_is_judged_once():
    r = Running()
    echo_port = r.echo.getsockname()[1]
    for i in range(5):
        r.send(LOCAL, echo_port, b"%d" % i)
        assert r.echo_once() == b"%d" % i
        r.client.recvfrom(100)
    r.finish()
    assert r.judged == [(LOCAL, echo_port)]


def test_refused_destinations_are_cached_and_counted():
    calls = []

    def refuse(host, port):
        calls.append((host, port))
        return udp.REFUSED

    r = Running(judge=refuse)
    for _ in range(4):
        r.send(LOCAL, 9, b"no")
    r.send("localhost", 9, b"no")
    r.finish()
    assert calls == [(LOCAL, 9), ("localhost", 9)]
    assert r.association.counters.refused == 5


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(udp, "MAX_DESTINATIONS", 2)
    r = Running()
    echo_port = r.echo.getsockname()[1]
    # three destinations: the first is forgotten, then judged again
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"):
        r.send(ipaddress.ip_address(host), echo_port, b"x")
        if host == "127.0.0.1":
            assert r.echo_once() == b"x"
            assert r.client.recvfrom(100)
    r.finish()
    assert [str(h) for h, _ in r.judged] == ["127.0.0.1", "127.0.0.2", "127.0.0.3",
                                             "127.0.0.1"]


def test_only_the_clients_port_once_known():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        r = Running()
        echo_port = r.echo.getsockname()[1]
        r.send(LOCAL, echo_port, b"first")          # the port is learned from this one
        assert r.echo_once() == b"first"
        other.sendto(protocol.build_udp_datagram(LOCAL, echo_port, b"other"), r.relay)
        r.send(LOCAL, echo_port, b"second")
        assert r.echo_once() == b"second"
        r.finish()
    assert r.association.counters.strangers == 1


def test_replies_only_from_peers():
    r = Running()
    echo_port = r.echo.getsockname()[1]
    r.send(LOCAL, echo_port, b"ping")
    data, source = r.echo.recvfrom(100)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.sendto(b"not a peer", source)
    r.echo.sendto(b"pong", source)
    data, _ = r.client.recvfrom(100)
    assert data.endswith(b"pong")
    r.finish()
    assert r.association.counters.strangers == 1


@pytest.mark.parametrize("datagram, counter", [
    (b"\0\0", "malformed"),
    (b"\0\0\0\x05\x7f\0\0\x01\0\x07", "malformed"),
    (b"\0\0\x01\x01\x7f\0\0\x01\0\x07data", "frag"),
])
def test_bad_datagrams_are_counted_not_fatal(datagram, counter):
    r = Running()
    r.client.sendto(datagram, r.relay)
    echo_port = r.echo.getsockname()[1]
    r.send(LOCAL, echo_port, b"still here")
    assert r.echo_once() == b"still here"
    r.finish()
    assert getattr(r.association.counters, counter) == 1
    assert r.judged == [(LOCAL, echo_port)]


def test_control_bytes_are_discarded_and_eof_ends():
    r = Running()
    r.far.sendall(b"ignored" * 1000)
    assert r.finish() == "eof"


def test_idle_and_stopped():
    r = Running(idle_timeout=0.5)
    r.thread.join(10)
    assert r.reason == "idle"
    r.finish()
    ticks = []
    r = Running(on_tick=lambda: ticks.append(1) and False)
    r.thread.join(10)
    assert r.reason == "stopped" and ticks == [1]
    r.finish()


def test_sockets_names_the_relay_and_the_outbound_sockets():
    r = Running()
    sock = r.association.outbound_for(LOCAL, None)
    own = r.association.sockets()
    relay_address, relay_port = r.association.relay_address
    assert own.reached_by(relay_address, relay_port, lambda a: True)
    assert own.reached_by(LOCAL, sock.getsockname()[1], lambda a: True)
    assert udp.Association.source_towards(sock, LOCAL, 9) == (LOCAL, sock.getsockname()[1])
    r.finish()
