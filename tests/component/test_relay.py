"""The relay over socketpairs: half-close both ways, large transfers, idle timeout."""

import hashlib
import os
import socket
import threading

import pytest

from sockd.relay import relay


def pairs():
    client_end, proxy_client = socket.socketpair()
    proxy_server, server_end = socket.socketpair()
    return client_end, proxy_client, proxy_server, server_end


def run_relay(proxy_client, proxy_server, **kw):
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        stats=relay(proxy_client, proxy_server, idle_timeout=kw.get("idle", 30),
                    on_tick=kw.get("on_tick"))))
    thread.start()
    return thread, result


def read_all(sock):
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
