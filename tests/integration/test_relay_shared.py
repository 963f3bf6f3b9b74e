"""--relay shared: what only the relay processes have (the rest runs in both modes through
relay_modes.sockd): their titles, a relay process killed and replaced, USR1, the idle
timeout, INT and TERM cutting tunnels with their end lines, --max-per-source."""

import os
import re
import signal
import socket

import pytest

from conftest import wait_until
from test_signals import echo_round_trip, open_session

pytestmark = pytest.mark.integration

SHARED = ["--relay", "shared", "--relay-processes", "2"]
RELAY_TITLE = re.compile(r"sockd: relay \[(\d+) tunnels, [\d.]+ MB/s\]")


def relays(server) -> dict[int, int]:
    """pid -> tunnels carried, from the relay processes' titles."""
    return {pid: int(m[1]) for pid, title in server.titles().items()
            if (m := RELAY_TITLE.fullmatch(title))}


def carried(server, count: int) -> dict[int, int]:
    return wait_until(lambda: (r := relays(server)) and sum(r.values()) == count and r, 5,
                      f"{count} tunnels in the relay processes' titles")


def test_workers_hand_sessions_over_and_go_back_to_accept(sockd, echo_server):
    server = sockd(args=[*SHARED, "--min-spare", "1", "--max-spare", "1"])
    assert len(relays(server)) == 2
    sessions = [open_session(server.port, echo_server) for _ in range(4)]
    for s in sessions:                 # one worker has served four at once: it did not relay
        echo_round_trip(s)
    carried(server, 4)
    assert server.idle_workers() >= 1
    server.wait_log(r"capacity -- \d+ file descriptors per process, room for \d+ tunnels "
                    r"\(--relay shared\)")
    for s in sessions:
        s.close()
    server.wait_log(r"terminated -- Connect .*: 4 bytes from 127\.0\.0\.1, 4 bytes from .* "
                    r"\(eof\)", count=4)
    carried(server, 0)


def test_kill_9_of_a_relay_process_loses_only_its_tunnels(sockd, echo_server):
    server = sockd(args=SHARED)
    sessions = [open_session(server.port, echo_server) for _ in range(6)]
    for s in sessions:
        echo_round_trip(s)
    counts = carried(server, 6)
    victim, lost_count = max(counts.items(), key=lambda item: item[1])
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"relay process {victim} killed by signal 9 \({lost_count} tunnels lost\)")
    lost = []
    for s in sessions:
        try:
            s.settimeout(2)
            echo_round_trip(s, b"after")
        except (OSError, AssertionError):
            lost.append(s)
    assert len(lost) == lost_count
    wait_until(lambda: len(relays(server)) == 2 and victim not in relays(server), 10,
               "a new relay process")
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)


def test_usr1_lists_the_tunnels(sockd, echo_server):
    server = sockd(args=SHARED)
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)
        carried(server, 1)
        server.signal(signal.SIGUSR1)
        server.wait_log(r"status -- 2 relay processes, 1 tunnels")
        line = server.wait_log(r"status -- relay \d+: relaying")[0]
    assert re.search(rf"relaying -@127\.0\.0\.1 connect 127\.0\.0\.1:{echo_server} ", line)


def test_idle_timeout_ends_a_carried_tunnel(sockd, echo_server):
    server = sockd(args=[*SHARED, "--idle-timeout", "1"])
    s = open_session(server.port, echo_server)
    echo_round_trip(s, b"12345")
    s.settimeout(10)
    assert s.recv(10) == b""           # the relay process ended it
    server.wait_log(r"timed-out -- Connect .*: 5 bytes from 127\.0\.0\.1, 5 bytes from .* "
                    r"\(idle\)")


def test_int_cuts_the_tunnels_with_their_end_lines(sockd, echo_server):
    server = sockd(args=[*SHARED, "--grace", "30"])
    s = open_session(server.port, echo_server)
    echo_round_trip(s, b"abc")
    carried(server, 1)
    server.signal(signal.SIGINT)
    assert server.proc.wait(10) == 0
    s.settimeout(5)
    assert s.recv(10) == b""
    server.wait_log(r"terminated -- Connect .*: 3 bytes from 127\.0\.0\.1, 3 bytes .*\(stopped\)")


def test_term_waits_for_the_tunnels_then_cuts_them_after_the_grace(sockd, echo_server):
    server = sockd(args=[*SHARED, "--grace", "2"])
    s = open_session(server.port, echo_server)
    echo_round_trip(s)
    carried(server, 1)
    server.signal(signal.SIGTERM)
    wait_until(lambda: _refused(server.port), 3, "the listeners to close")
    echo_round_trip(s, b"still relayed")     # the tunnel goes on during the grace period
    assert server.proc.wait(10) == 0
    server.wait_log(r"stopped -- grace period over, 1 sessions cut")
    server.wait_log(r"terminated -- Connect .*\(stopped\)")


def test_max_per_source_counts_the_carried_tunnels(sockd, echo_server):
    server = sockd(args=[*SHARED, "--max-per-source", "2"])
    held = [open_session(server.port, echo_server) for _ in range(2)]
    for s in held:
        echo_round_trip(s)
    carried(server, 2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
        try:
            assert third.recv(10) == b""     # closed at accept, without a reply
        except ConnectionResetError:
            pass
    server.wait_log(r"refused -- client 127\.0\.0\.1:\d+ at accept: 2 sessions already")
    for s in held:
        s.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
