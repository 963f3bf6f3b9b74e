"""The pool cannot be starved, never grows past --max-workers, and loses no client.

Idle connections that never send a byte (from one permitted address, or from an address no
rule permits) must not keep a permitted client out; a reload or a retirement must not leave
a client in the listen queue; TERM closes every copy of the listener within a second, even
in a worker still negotiating; at --max-workers new clients wait in the listen queue.
Clients other than 127.0.0.1 bind their socket to another address of 127.0.0.0/8 (all of it
is loopback) before they connect.
"""

import contextlib
import errno
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import wait_until
from test_signals import echo_round_trip, recv_exact

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ONLY_127_0_0_1 = """\
# tests: only 127.0.0.1 may use the server, and only to loopback destinations
permit 127.0.0.1 255.255.255.255 127.0.0.0 255.0.0.0
deny 0.0.0.0 0.0.0.0
"""


def socks5_connect(port: int) -> bytes:
    """A pipelined SOCKS5 greeting and CONNECT to 127.0.0.1:*port*."""
    return (b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
            + struct.pack(">H", port))


def connect(proxy_port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout,
                                    source_address=(source, 0))


def open_session(proxy_port: int, dest_port: int, source: str = "127.0.0.1",
                 timeout: float = 10) -> socket.socket:
    """A granted SOCKS5 session; the reply must come within *timeout* seconds."""
    s = connect(proxy_port, source, timeout)
    s.sendall(socks5_connect(dest_port))
    reply = recv_exact(s, 12)
    assert reply[:4] == b"\x05\x00\x05\x00", reply
    return s


def closed_without_a_word(s: socket.socket) -> bool:
    """True when the server closed *s* without sending anything."""
    try:
        return s.recv(16) == b""
    except ConnectionResetError:
        return True


def worker_count(server) -> int:
    return len(server.children())


class WorkerCounter:
    """Samples the number of workers in a thread, and remembers the most seen."""

    def __init__(self, server) -> None:
        self.server, self.most, self.running = server, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.most = max(self.most, worker_count(self.server))
            time.sleep(0.01)

    def stop(self) -> int:
        self.running = False
        self.thread.join(5)
        return self.most


# -- 1. idle connections do not starve the pool --------------------------------------------


def test_idle_connections_from_one_address_are_capped(sockd, echo_server):
    server = sockd(args=["--max-workers", "8", "--max-per-source", "4"])
    idle = [connect(server.port, "127.0.0.2") for _ in range(40)]
    try:
        with open_session(server.port, echo_server, timeout=10) as s:
            echo_round_trip(s)
        # all but four were closed at accept, without a reply (two workers that race for
        # the last place may both refuse: never more than four are let in)
        closed = wait_until(lambda: (n := sum(map(_closed_now, idle))) >= 36 and n, 15,
                            "36 idle connections to be closed")
        assert closed < 40
        line = server.wait_log(r"refused -- client 127\.0\.0\.2:\d+ at accept: ")[0]
        assert "sessions already from 127.0.0.2 (--max-per-source 4;" in line
        assert not server.lines(r"refused -- client 127\.0\.0\.1")
    finally:
        for c in idle:
            c.close()


def _closed_now(s: socket.socket) -> bool:
    """Without waiting: has the server closed *s* (no byte sent)?  Asked again and again."""
    s.setblocking(False)
    try:
        return s.recv(16, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_connections_from_a_source_no_rule_permits_are_closed_at_accept(sockd,
                                                                              echo_server):
    server = sockd(rules=ONLY_127_0_0_1, args=["--max-workers", "8"])
    idle = [connect(server.port, "127.0.0.3") for _ in range(20)]
    try:
        with open_session(server.port, echo_server, timeout=10) as s:
            echo_round_trip(s)
        for c in idle:
            c.settimeout(10)
            assert closed_without_a_word(c)
        lines = server.lines(r"refused -- client 127\.0\.0\.3:\d+ at accept: no rule can permit "
                             r"this source \(\d+ more since the last report\)$")
        assert 1 <= len(lines) < 20, "the line is rate-limited"
        assert not server.lines(r"negotiation with host 127\.0\.0\.3")
    finally:
        for c in idle:
            c.close()


def test_a_source_refused_with_a_shell_command_is_still_negotiated(sockd, echo_server, tmp_path):
    heard = tmp_path / "heard"
    rules = ONLY_127_0_0_1.replace("deny 0.0.0.0 0.0.0.0",
                                   f"deny 0.0.0.0 0.0.0.0 : echo %A >> {heard}")
    server = sockd(rules=rules, args=["--max-workers", "8"])
    with connect(server.port, "127.0.0.3") as s:
        s.sendall(socks5_connect(echo_server))
        assert recv_exact(s, 12)[:4] == b"\x05\x00\x05\x02"   # refused by the rules, as before
    wait_until(lambda: heard.exists() and "127.0.0.3" in heard.read_text(), 10,
               "the rule's shell command")
    assert not server.lines(r"at accept")


def test_after_a_reload_that_refuses_every_client_they_are_closed_at_accept(sockd,
                                                                            echo_server):
    server = sockd()
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)
    server.conf.write_text("deny 0.0.0.0 0.0.0.0\n")
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")

    def closed_at_accept() -> bool:
        with connect(server.port) as c:
            c.sendall(socks5_connect(echo_server))
            return closed_without_a_word(c)   # the old generation would have replied 0x02
    wait_until(closed_at_accept, 10, "the new generation to close clients at accept")
    server.wait_log(r"refused -- client 127\.0\.0\.1:\d+ at accept: no rule can permit")


def test_the_cap_counts_sessions_across_workers_and_frees_when_they_end(sockd, echo_server):
    server = sockd(args=["--max-workers", "8", "--max-per-source", "2"])
    first = open_session(server.port, echo_server, "127.0.0.4")
    second = open_session(server.port, echo_server, "127.0.0.4")
    with connect(server.port, "127.0.0.4") as third:
        third.sendall(socks5_connect(echo_server))
        assert closed_without_a_word(third)
    server.wait_log(r"refused -- client 127\.0\.0\.4:\d+ at accept: 2 sessions already from "
                    r"127\.0\.0\.4 \(--max-per-source 2; \d+ more since the last report\)$")
    with open_session(server.port, echo_server, "127.0.0.5") as other:   # another address
        echo_round_trip(other)
    first.close()
    server.wait_log(r"terminated -- .*127\.0\.0\.4")
    with open_session(server.port, echo_server, "127.0.0.4") as again:
        echo_round_trip(again)
    second.close()


# -- 5. at --max-workers, new clients wait in the listen queue -----------------------------


def test_max_workers_is_a_ceiling_and_the_next_client_waits(sockd, echo_server):
    server = sockd(args=["--min-spare", "1", "--max-spare", "3", "--max-workers", "3"])
    counter = WorkerCounter(server)
    sessions = [open_session(server.port, echo_server, timeout=15) for _ in range(3)]
    for s in sessions:
        echo_round_trip(s)
    fourth = connect(server.port)
    fourth.sendall(socks5_connect(echo_server))
    fourth.settimeout(1.5)
    with pytest.raises(TimeoutError):
        fourth.recv(12)             # no worker is free: it waits in the listen queue
    sessions.pop().close()
    fourth.settimeout(10)
    assert recv_exact(fourth, 12)[:4] == b"\x05\x00\x05\x00"
    echo_round_trip(fourth)
    fourth.close()
    for s in sessions:
        echo_round_trip(s)
        s.close()
    assert counter.stop() <= 3
    assert not server.lines(r"error --")
    server.wait_log(r"warning -- server reached --max-workers \(3\)")


# -- 2. after HUP, busy workers of the old generation count against --max-workers ------------


def test_busy_workers_of_the_old_generation_count_after_hup(sockd, echo_server):
    server = sockd(args=["--min-spare", "2", "--max-spare", "4", "--max-workers", "4"])
    sessions = [open_session(server.port, echo_server, timeout=15) for _ in range(3)]
    counter = WorkerCounter(server)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")
    # a client after the reload is served by the new generation, within the ceiling
    with open_session(server.port, echo_server, timeout=10) as s:
        echo_round_trip(s)
    deadline = time.monotonic() + 3     # let the pool run a few ticks with the old sessions open
    while time.monotonic() < deadline:
        assert worker_count(server) <= 4
        time.sleep(0.05)
    for s in sessions:
        echo_round_trip(s)          # the old generation still serves its sessions
        s.close()
    assert counter.stop() <= 4


# -- 3. a reload or a retirement leaves no client in the listen queue ------------------------


def test_each_client_answered_while_the_server_reloads(sockd, echo_server):
    server = sockd()
    for generation in range(2, 32):
        server.signal(signal.SIGHUP)
        if generation % 2:
            server.wait_log(rf"reloaded -- generation {generation}$")
        # a generous bound, not a speed claim: 30 reloads fork 30 generations of workers,
        # which a loaded machine boots slowly; a client left in the backlog would wait for ever
        with open_session(server.port, echo_server, timeout=15) as s:
            echo_round_trip(s)
    server.wait_log(r"reloaded -- generation 31$")


def test_each_client_answered_while_idle_workers_retire(sockd, echo_server):
    server = sockd(args=["--min-spare", "1", "--max-spare", "1", "--max-workers", "12"])
    burst = [open_session(server.port, echo_server, timeout=15) for _ in range(8)]
    for s in burst:
        s.close()
    grown = wait_until(lambda: server.idle_workers() >= 6 and worker_count(server), 10,
                       "the burst's workers to be idle")
    # the pool ends one idle worker a tick; clients come one at a time meanwhile
    fewest, deadline = grown, time.monotonic() + 15
    while time.monotonic() < deadline and fewest > 2:
        with open_session(server.port, echo_server, timeout=5) as s:
            echo_round_trip(s)
        fewest = min(fewest, worker_count(server))
    assert fewest <= 2, f"the pool did not shrink from {grown} workers"


# -- 4. TERM stops accepting within a second, even while a worker negotiates -----------------


def test_term_closes_the_listener_while_a_client_negotiates(sockd, echo_server):
    server = sockd(args=["--negotiate-timeout", "20", "--grace", "30"])
    silent = connect(server.port)
    wait_until(lambda: any(t.endswith("negotiating") for t in server.titles().values()), 5,
               "a worker negotiating with the silent client")
    negotiating = [pid for pid, t in server.titles().items() if t.endswith("negotiating")]
    server.signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError as exc:
            return exc.errno == errno.ECONNREFUSED
        return False
    wait_until(refused, 1.5, "no process to hold the listening socket")
    # the silent client's session is still alive, and is served to the end
    assert all(_alive(pid) for pid in negotiating)
    silent.sendall(socks5_connect(echo_server))
    assert recv_exact(silent, 12)[:4] == b"\x05\x00\x05\x00"
    echo_round_trip(silent)
    silent.close()
    assert server.proc.wait(30) == 0
    server.wait_log(r"stopped -- every session finished")


def _alive(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):   # gone while read
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    return False
