"""The relay over socketpairs and loopback TCP: half-close, large transfers, urgent data, idle."""

import hashlib
import os
import socket
import threading

import pytest

from sockd.relay import relay

TIMEOUT = 30     # seconds any one read, join or relay may take before the test fails


def pairs():
    client_end, proxy_client = socket.socketpair()
    proxy_server, server_end = socket.socketpair()
    for end in (client_end, server_end):
        end.settimeout(TIMEOUT)
    return client_end, proxy_client, proxy_server, server_end


def run_relay(proxy_client, proxy_server, **kw):
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        stats=relay(proxy_client, proxy_server, idle_timeout=kw.get("idle", 30),
                    on_tick=kw.get("on_tick"), observe_client=kw.get("observe"))))
    thread.daemon = True           # a relay that never ends must not keep pytest alive
    thread.start()
    return thread, result


def read_all(sock):
    """Everything up to the end of file; a read that waits TIMEOUT s raises TimeoutError."""
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data.extend(chunk)
    return bytes(data)


@pytest.mark.parametrize("direction", ["client first", "server first"])
def test_half_close_keeps_the_other_direction_flowing(direction):
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    first, second = (client_end, server_end) if direction == "client first" \
        else (server_end, client_end)
    first.sendall(b"question")
    first.shutdown(socket.SHUT_WR)
    assert read_all(second) == b"question"          # the EOF came through
    second.sendall(b"answer after eof")
    second.shutdown(socket.SHUT_WR)
    assert read_all(first) == b"answer after eof"    # and the other way still flows
    thread.join(10)
    stats = result["stats"]
    assert stats.reason == "eof"
    ups = (stats.from_client, stats.from_server)
    assert ups == ((8, 16) if direction == "client first" else (16, 8))
    for s in (client_end, server_end, proxy_client, proxy_server):
        s.close()


def test_large_transfers_both_ways_arrive_whole():
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    up, down = os.urandom(24 << 20), os.urandom(16 << 20)
    got = {}

    def pump(sock, data, key):
        reader = threading.Thread(target=lambda: got.__setitem__(key, read_all(sock)))
        reader.start()
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
    a = threading.Thread(target=pump, args=(client_end, up, "at client"))
    b = threading.Thread(target=pump, args=(server_end, down, "at server"))
    a.start(), b.start()
    a.join(60), b.join(60)
    thread.join(60)
    assert hashlib.sha256(got["at server"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["at client"]).digest() == hashlib.sha256(down).digest()
    assert (result["stats"].from_client, result["stats"].from_server) == (len(up), len(down))


def test_idle_timeout_ends_the_relay():
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server, idle=1)
    thread.join(10)
    assert result["stats"].reason == "idle"


def test_on_tick_can_stop_the_relay():
    client_end, proxy_client, proxy_server, server_end = pairs()
    ticks = []
    thread, result = run_relay(proxy_client, proxy_server,
                               on_tick=lambda: ticks.append(1) or len(ticks) < 2)
    thread.join(10)
    assert result["stats"].reason == "stopped" and len(ticks) == 2


def test_reset_by_a_peer_ends_the_relay():
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    server_end.close()
    client_end.sendall(b"x" * 100000)
    thread.join(10)
    assert result["stats"].reason in ("reset", "eof")


def tcp_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Two ends of a real TCP connection on loopback: socketpair() has no urgent data."""
    with socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host
                              else socket.AF_INET) as listener:
        near = socket.create_connection(listener.getsockname()[:2], timeout=TIMEOUT)
        far, _ = listener.accept()
    far.settimeout(TIMEOUT)
    return near, far


def tcp_pairs():
    client_end, proxy_client = tcp_pair()
    proxy_server, server_end = tcp_pair()
    for end in (client_end, server_end):
        # The test's ends read urgent bytes inline, so a byte the relay passed
        # on as urgent would still be counted where it belongs; the relay's
        # ends are left as accept() and connect() made them.
        end.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    return client_end, proxy_client, proxy_server, server_end


def send_with_urgent_bytes(sock: socket.socket, pieces: list[bytes]) -> bytes:
    """Send *pieces*, each followed by one urgent byte (MSG_OOB); return what was sent.

    Data comes first: an urgent byte that reaches the relay's socket before
    relay() has made it read urgent data inline can be dropped by the kernel
    (see test_urgent.py), and here relay() runs in a thread just started.
    """
    sent = bytearray()
    for n, piece in enumerate(pieces):
        urgent = b"!#%&"[n % 4:n % 4 + 1]
        sock.sendall(piece)
        assert sock.send(urgent, socket.MSG_OOB) == 1
        sent += piece + urgent
    return bytes(sent)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("direction", ["client first", "server first"])
def test_urgent_data_is_relayed_inline_and_ends_nothing(direction):
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    first, second = (client_end, server_end) if direction == "client first" \
        else (server_end, client_end)
    # Urgent bytes mid-stream, two in a row, and one right before the FIN
    # (splice(2) then meets the urgent mark and the end of file together).
    question = send_with_urgent_bytes(first, [b"data before", os.urandom(300000), b""])
    first.shutdown(socket.SHUT_WR)
    assert digest(read_all(second)) == digest(question)      # whole, in order, then EOF
    answer = send_with_urgent_bytes(second, [b"answer", os.urandom(200000), b"after"])
    second.shutdown(socket.SHUT_WR)
    assert digest(read_all(first)) == digest(answer)         # the other way still flows
    thread.join(TIMEOUT)
    stats = result["stats"]
    assert stats.reason == "eof"
    sizes = (len(question), len(answer)) if direction == "client first" \
        else (len(answer), len(question))
    assert (stats.from_client, stats.from_server) == sizes
    for s in (client_end, server_end, proxy_client, proxy_server):
        s.close()


def test_urgent_bytes_in_busy_streams_both_ways():
    """Urgent marks while pipes and socket buffers are full, in both directions at once."""
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    pieces = {key: [os.urandom(1 << 20) for _ in range(12)] for key in ("up", "down")}
    sent, got = {}, {}

    def talk(sock, key, other):
        reader = threading.Thread(target=lambda: got.__setitem__(other, read_all(sock)))
        reader.start()
        sent[key] = send_with_urgent_bytes(sock, pieces[key])
        sock.shutdown(socket.SHUT_WR)
        reader.join(TIMEOUT)
    talkers = [threading.Thread(target=talk, args=(client_end, "up", "down")),
               threading.Thread(target=talk, args=(server_end, "down", "up"))]
    for t in talkers:
        t.start()
    for t in talkers:
        t.join(TIMEOUT)
    thread.join(TIMEOUT)
    assert digest(got["up"]) == digest(sent["up"])
    assert digest(got["down"]) == digest(sent["down"])
    stats = result["stats"]
    assert (stats.reason, stats.from_client, stats.from_server) == \
        ("eof", len(sent["up"]), len(sent["down"]))


def test_relay_reads_urgent_data_inline_on_both_sockets():
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    thread, result = run_relay(proxy_client, proxy_server)
    client_end.shutdown(socket.SHUT_WR)
    server_end.shutdown(socket.SHUT_WR)
    thread.join(TIMEOUT)
    assert result["stats"].reason == "eof"
    for sock in (proxy_client, proxy_server):
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1


# -- an observed client-to-server direction (the FTP audit's) --------------------------


class Observer:
    """Keeps what the relay showed it, and checks that it came as bytes."""

    def __init__(self) -> None:
        self.seen = bytearray()
        self.calls = 0

    def __call__(self, data: bytes) -> None:
        assert isinstance(data, bytes) and data
        self.seen += data
        self.calls += 1


@pytest.mark.parametrize("direction", ["client first", "server first"])
def test_observed_half_close_keeps_the_other_direction_flowing(direction):
    client_end, proxy_client, proxy_server, server_end = pairs()
    observer = Observer()
    thread, result = run_relay(proxy_client, proxy_server, observe=observer)
    first, second = (client_end, server_end) if direction == "client first" \
        else (server_end, client_end)
    first.sendall(b"question")
    first.shutdown(socket.SHUT_WR)
    assert read_all(second) == b"question"
    second.sendall(b"answer after eof")
    second.shutdown(socket.SHUT_WR)
    assert read_all(first) == b"answer after eof"
    thread.join(10)
    stats = result["stats"]
    assert stats.reason == "eof"
    assert (stats.from_client, stats.from_server) == \
        ((8, 16) if direction == "client first" else (16, 8))
    assert bytes(observer.seen) == (b"question" if direction == "client first"
                                    else b"answer after eof")
    for s in (client_end, server_end, proxy_client, proxy_server):
        s.close()


def test_observed_large_transfers_arrive_whole_and_the_observer_sees_every_byte():
    client_end, proxy_client, proxy_server, server_end = pairs()
    observer = Observer()
    thread, result = run_relay(proxy_client, proxy_server, observe=observer)
    up, down = os.urandom(24 << 20), os.urandom(16 << 20)
    got = {}

    def pump(sock, data, key):
        reader = threading.Thread(target=lambda: got.__setitem__(key, read_all(sock)))
        reader.start()
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
    a = threading.Thread(target=pump, args=(client_end, up, "at client"))
    b = threading.Thread(target=pump, args=(server_end, down, "at server"))
    a.start(), b.start()
    a.join(60), b.join(60)
    thread.join(60)
    assert digest(got["at server"]) == digest(up) == digest(bytes(observer.seen))
    assert digest(got["at client"]) == digest(down)
    assert (result["stats"].from_client, result["stats"].from_server) == (len(up), len(down))
    assert observer.calls > 1


@pytest.mark.parametrize("direction", ["client first", "server first"])
def test_observed_urgent_data_is_relayed_inline_and_ends_nothing(direction):
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    observer = Observer()
    thread, result = run_relay(proxy_client, proxy_server, observe=observer)
    first, second = (client_end, server_end) if direction == "client first" \
        else (server_end, client_end)
    question = send_with_urgent_bytes(first, [b"data before", os.urandom(300000), b""])
    first.shutdown(socket.SHUT_WR)
    assert digest(read_all(second)) == digest(question)
    answer = send_with_urgent_bytes(second, [b"answer", os.urandom(200000), b"after"])
    second.shutdown(socket.SHUT_WR)
    assert digest(read_all(first)) == digest(answer)
    thread.join(TIMEOUT)
    stats = result["stats"]
    assert stats.reason == "eof"
    from_client = question if direction == "client first" else answer
    assert (stats.from_client, stats.from_server) == \
        (len(from_client), len(question) + len(answer) - len(from_client))
    assert digest(bytes(observer.seen)) == digest(from_client)
    for s in (client_end, server_end, proxy_client, proxy_server):
        s.close()


def test_observed_abor_with_telnet_synch_arrives_in_order():
    """What an FTP client sends to abort: IAC IP, then IAC DM as urgent data (the SYNCH,
    RFC 959 §4.1.3), then ABOR; a transfer runs the other way meanwhile."""
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    observer = Observer()
    thread, result = run_relay(proxy_client, proxy_server, observe=observer)
    download = os.urandom(4 << 20)
    got = {}
    reader = threading.Thread(target=lambda: got.__setitem__("down", read_all(client_end)))
    reader.start()
    sender = threading.Thread(target=lambda: (server_end.sendall(download),
                                              server_end.shutdown(socket.SHUT_WR)))
    sender.start()
    client_end.sendall(b"RETR big\r\n\xff\xf4\xff")
    assert client_end.send(b"\xf2", socket.MSG_OOB) == 1
    client_end.sendall(b"ABOR\r\n")
    client_end.shutdown(socket.SHUT_WR)
    expected = b"RETR big\r\n\xff\xf4\xff\xf2ABOR\r\n"
    assert read_all(server_end) == expected
    sender.join(TIMEOUT)
    reader.join(TIMEOUT)
    thread.join(TIMEOUT)
    assert digest(got["down"]) == digest(download)
    assert bytes(observer.seen) == expected
    assert (result["stats"].reason, result["stats"].from_client) == ("eof", len(expected))


def test_observed_urgent_bytes_in_busy_streams_both_ways():
    client_end, proxy_client, proxy_server, server_end = tcp_pairs()
    observer = Observer()
    thread, result = run_relay(proxy_client, proxy_server, observe=observer)
    pieces = {key: [os.urandom(1 << 20) for _ in range(8)] for key in ("up", "down")}
    sent, got = {}, {}

    def talk(sock, key, other):
        reader = threading.Thread(target=lambda: got.__setitem__(other, read_all(sock)))
        reader.start()
        sent[key] = send_with_urgent_bytes(sock, pieces[key])
        sock.shutdown(socket.SHUT_WR)
        reader.join(TIMEOUT)
    talkers = [threading.Thread(target=talk, args=(client_end, "up", "down")),
               threading.Thread(target=talk, args=(server_end, "down", "up"))]
    for t in talkers:
        t.start()
    for t in talkers:
        t.join(TIMEOUT)
    thread.join(TIMEOUT)
    assert digest(got["up"]) == digest(sent["up"]) == digest(bytes(observer.seen))
    assert digest(got["down"]) == digest(sent["down"])
    stats = result["stats"]
    assert (stats.reason, stats.from_client, stats.from_server) == \
        ("eof", len(sent["up"]), len(sent["down"]))


def test_observed_idle_timeout_and_reset_end_the_relay():
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server, idle=1, observe=Observer())
    thread.join(10)
    assert result["stats"].reason == "idle"
    client_end, proxy_client, proxy_server, server_end = pairs()
    thread, result = run_relay(proxy_client, proxy_server, observe=Observer())
    server_end.close()
    client_end.sendall(b"x" * 100000)
    thread.join(10)
    assert result["stats"].reason in ("reset", "eof")
