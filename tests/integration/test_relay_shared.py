"""--relay shared: what only the relay processes have (the rest runs in both modes through
relay_modes.sockd): their titles, a relay process killed and replaced, USR1, the idle
timeout, INT and TERM cutting tunnels with their end lines, --max-per-source, the tunnels in
sockd --status; what is never handed off (an audited FTP control connection, a UDP
association); the real client behind a balancer."""

import json
import os
import re
import signal
import socket

import pytest
import socks
from test_proxy_protocol import TRUSTED, header, socks5_connect
from test_status import status
from test_udp import UDP_RULES, UdpEcho

from conftest import wait_until
from sockd import scoreboard
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


def test_max_per_source_counts_a_session_being_handed_over_once(sockd, echo_server):
    """The second session comes while the first may be in the worker's slot and its tunnel
    slot at once (the relay process holds it before the worker goes idle): it must still
    be let in.  Pinned to one CPU, the old count failed this test in 4 runs of 6."""
    server = sockd(args=[*SHARED, "--max-per-source", "2"])
    for done in range(0, 20, 2):
        first = open_session(server.port, echo_server)
        second = open_session(server.port, echo_server)     # at once: no wait between
        for s in (first, second):
            echo_round_trip(s)
            s.close()
        # Their slots are free before their end lines are written.
        server.wait_log(r"terminated -- Connect", count=done + 2)
    assert not server.lines("refused")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True     # a reset: the SYN met a listener that was closing
    return False


def test_status_lists_the_tunnels_of_the_relay_processes(sockd, echo_server, tmp_path):
    pidfile = tmp_path / "sockd.pid"
    server = sockd(args=[*SHARED, "--pidfile", str(pidfile)])
    wait_until(pidfile.exists, 10, "the pid file")
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s, b"12345")
        counts = carried(server, 1)

        def counted():
            done = status(pidfile, "--json")
            assert done.returncode == 0, done.stderr
            data = json.loads(done.stdout)
            return data["tunnels"] and data["tunnels"][0]["bytes_from_client"] == 5 and data
        data = wait_until(counted, 10, "the tunnel and its byte counts in the status")
        assert data["relay_processes"] == 2 and data["busy"] == 0
        [tunnel] = data["tunnels"]
        assert tunnel["pid"] in counts and counts[tunnel["pid"]] == 1
        assert tunnel["state"] == "relaying" and tunnel["client"] == "127.0.0.1"
        assert tunnel["command"] == "connect"
        assert tunnel["destination"].startswith(f"127.0.0.1:{echo_server} (")
        assert tunnel["bytes_from_destination"] == 5
        lines = status(pidfile).stdout.splitlines()
        assert lines[2] == "2 relay processes: 1 tunnels"
        row = lines[5].split()
        assert row[0] == str(tunnel["pid"]) and row[1] == "relaying" and row[-2:] == ["5", "5"]
    carried(server, 0)
    assert json.loads(status(pidfile, "--json").stdout)["tunnels"] == []
    server.signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert not os.path.exists(scoreboard.path_for(server.pid))


def test_an_audited_ftp_control_connection_stays_in_its_worker(sockd, echo_server):
    server = sockd(args=[*SHARED, "--ftp-audit", str(echo_server)])
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s, b"RETR secret.txt\r\n")
        server.wait_log(r"ftp -- .*RETR secret\.txt")       # the worker's observer saw it
        assert sum(relays(server).values()) == 0
        assert any(t.startswith("sockd: 127.0.0.1") and f" connect 127.0.0.1:{echo_server} " in t
                   for t in server.titles().values())     # its worker relays it
    server.wait_log(r"terminated -- Connect .*\(eof\)")


def test_a_udp_association_stays_in_its_worker(sockd):
    server = sockd(rules=UDP_RULES, args=SHARED)
    echo = UdpEcho()
    try:
        s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        s.set_proxy(socks.SOCKS5, "127.0.0.1", server.port)
        s.settimeout(5)
        s.sendto(b"datagram", ("127.0.0.1", echo.port))
        assert s.recvfrom(100)[0] == b"datagram"
        assert sum(relays(server).values()) == 0
        assert any(" udp relay 127.0.0.1:" in t for t in server.titles().values())
        s.close()
    finally:
        echo.close()
    server.wait_log(r"terminated -- Udp from ")


def test_a_tunnel_behind_a_balancer_carries_the_real_client(sockd, echo_server):
    server = sockd(args=[*SHARED, *TRUSTED, "--max-per-source", "1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(header("127.0.0.10", 40312) + socks5_connect(echo_server))
        assert sock.recv(12)[:4] == b"\x05\x00\x05\x00"
        echo_round_trip(sock)
        carried(server, 1)
        # the tunnel's slot counts 127.0.0.10 (not the balancer) for --max-per-source
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as again:
            again.sendall(header("127.0.0.10", 40313) + socks5_connect(echo_server))
            try:
                assert again.recv(12) == b""
            except ConnectionResetError:
                pass
        server.wait_log(r"refused -- client 127\.0\.0\.10:40313 at accept: 1 sessions already")
    server.wait_log(r"terminated -- .*@127\.0\.0\.10:40312 .*4 bytes from 127\.0\.0\.10, ")
