"""The master's signals and the pool: HUP, TERM, INT, USR1, kill -9 of a worker."""

import hashlib
import os
import signal
import socket
import struct
import threading

import pytest
import relay_modes

from conftest import LOOPBACK_RULES, wait_until

pytestmark = pytest.mark.integration
sockd = relay_modes.sockd     # every test here runs in both relay modes


def open_session(proxy_port: int, dest_port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
    s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
              + struct.pack(">H", dest_port))
    reply = recv_exact(s, 12)
    assert reply[:4] == b"\x05\x00\x05\x00", reply
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := s.recv(n - len(data))):
        data += chunk
    return data


def echo_round_trip(s: socket.socket, data: bytes = b"ping") -> None:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        assert chunk, "the session ended"
        got += chunk
    assert got == data


@pytest.mark.relay_worker_only
def test_kill_9_of_a_busy_worker_loses_only_its_session(sockd, echo_server):
    server = sockd()
    victim = open_session(server.port, echo_server)
    survivor = open_session(server.port, echo_server)
    echo_round_trip(victim)
    echo_round_trip(survivor)
    busy = wait_until(lambda: [pid for pid, t in server.titles().items()
                               if "connect 127.0.0.1" in t], 5, "busy titles")
    assert len(busy) == 2
    # kill the worker serving `victim`: the one whose socket peer is our port
    os.kill(busy[0], signal.SIGKILL)
    server.wait_log(rf"worker {busy[0]} killed by signal 9")
    lost = []
    for s in (victim, survivor):
        try:
            s.settimeout(2)
            echo_round_trip(s, b"after")
        except (OSError, AssertionError):
            lost.append(s)
    assert len(lost) == 1
    wait_until(lambda: server.idle_workers() >= 2, 10, "the pool to refill")
    echo_round_trip(open_session(server.port, echo_server))


def test_hup_reloads_while_clients_connect(sockd, echo_server):
    server = sockd()
    before = open_session(server.port, echo_server)
    outcomes = []                 # "served", "refused", or what went wrong
    stop = threading.Event()

    def one_client(n: int) -> str:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                          + struct.pack(">H", echo_server))
                reply = recv_exact(s, 12)
                if reply == b"\x05\x00\x05\x02\x00\x01" + bytes(6):
                    return "refused"              # by the new rules: answered all the same
                assert reply[:4] == b"\x05\x00\x05\x00", reply
                echo_round_trip(s)
                return "served"
        except (AssertionError, OSError) as exc:
            return f"client {n}: {exc!r}"

    def clients():
        # One client at a time, before, during and after the reload, until told to stop.
        for n in range(1000):
            if stop.is_set():
                return
            outcomes.append(one_client(n))
    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    wait_until(lambda: outcomes.count("served") >= 5, 15, "clients served before the reload")
    # now every loopback destination is refused (a rule that refused every request from
    # loopback clients would close them at accept, without the SOCKS refusal read below)
    server.conf.write_text("# now everything is refused\ndeny 0.0.0.0 0.0.0.0 127.0.0.0 "
                           "255.0.0.0\n" + LOOPBACK_RULES)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")
    wait_until(lambda: outcomes.count("refused") >= 10, 30, "clients refused after it")
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "a client still waiting"
    # Every client got its answer: no timeout, no reset, no client left in the backlog.
    assert [o for o in outcomes if o not in ("served", "refused")] == []
    # sessions in flight finish under the rules they started with
    echo_round_trip(before, b"still mine")
    before.close()
    wait_until(lambda: server.idle_workers() >= 1, 10, "new generation")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                  + struct.pack(">H", echo_server))
        assert recv_exact(s, 12)[2:4] == b"\x05\x02"
    server.wait_log(r"refused -- Connect .*rule=.*:2")


def test_hup_with_a_broken_file_keeps_the_rules(sockd, echo_server):
    server = sockd()
    server.conf.write_text("permti 127.0.0.0 255.0.0.0\n")
    server.signal(signal.SIGHUP)
    line = server.wait_log(r"reload failed")[0]
    assert f"{server.conf}:1:" in line
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)
    assert server.proc.poll() is None


def test_term_lets_a_transfer_in_flight_complete(sockd, echo_server):
    server = sockd(args=["--grace", "20"])
    s = open_session(server.port, echo_server)
    payload = os.urandom(8 << 20)
    received = bytearray()

    def read_all():
        while len(received) < len(payload):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)
    reader = threading.Thread(target=read_all)
    reader.start()
    s.sendall(payload[:1 << 20])
    server.signal(signal.SIGTERM)
    # within a second no new client is accepted
    def refused():
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            return True     # a reset: the SYN met a listener that was closing
        return False
    wait_until(refused, 3, "the listeners to close")
    s.sendall(payload[1 << 20:])
    reader.join(30)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    s.close()
    assert server.proc.wait(30) == 0
    server.wait_log(r"stopped -- every session finished")
    server.wait_log(r"terminated -- Connect .* 8388608 bytes from 127.0.0.1")


def test_int_stops_at_once(sockd, echo_server):
    server = sockd(args=["--grace", "30"])
    s = open_session(server.port, echo_server)
    server.signal(signal.SIGINT)
    assert server.proc.wait(5) == 0
    s.settimeout(5)
    assert s.recv(10) == b""


@pytest.mark.relay_worker_only
def test_usr1_logs_the_pool(sockd, echo_server):
    server = sockd()
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)
        wait_until(lambda: any("connect 127.0.0.1" in t for t in server.titles().values()),
                   5, "a busy title")
        server.signal(signal.SIGUSR1)
        line = server.wait_log(r"status -- \d+ workers")[0]
    assert "1 busy" in line and "sessions served" in line


@pytest.mark.relay_worker_only
def test_titles_in_ps(sockd, echo_server):
    import subprocess
    server = sockd()
    with open_session(server.port, echo_server) as s:
        echo_round_trip(s)
        def busy():
            out = subprocess.run(["ps", "-o", "args=", "--ppid", str(server.pid)],
                                 capture_output=True, text=True).stdout
            return [line for line in out.splitlines() if "connect" in line]
        line = wait_until(busy, 5, "a busy worker in ps")[0]
    assert line.strip() == f"sockd: 127.0.0.1 connect 127.0.0.1:{echo_server} " \
                           f"({socket_service(echo_server)})"
    master = subprocess.run(["ps", "-o", "args=", "-p", str(server.pid)], capture_output=True,
                            text=True).stdout.strip()
    assert master.startswith("sockd: master [") and "workers," in master


def socket_service(port: int) -> str:
    try:
        return socket.getservbyport(port, "tcp")
    except OSError:
        return str(port)


def test_retire_after_max_requests(sockd, echo_server):
    server = sockd(args=["--max-requests", "2", "--min-spare", "1", "--max-spare", "1"])
    for _ in range(5):
        with open_session(server.port, echo_server) as s:
            echo_round_trip(s)
    server.wait_log(r"retiring after 2 sessions", count=2)
