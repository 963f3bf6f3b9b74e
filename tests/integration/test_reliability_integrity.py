"""Data integrity: transfers of random sizes (0 bytes to 16 MiB) both ways at once, with
half-closes at random points and urgent bytes, through SOCKS 4 and 5, CONNECT and BIND, in
every relay mode, each verified by sha256 (tests/integration/reliability.py, `transfer`).

`make test` runs a few hundred; `make soak` (scripts/soak.py) runs 10,000 and more.
"""

import os
import random
import signal
import socket
import struct
import time

import pytest
from reliability import (
    MAX_SIZE,
    inline,
    random_plan,
    recv_exact,
    relay_args,
    relay_mode,
    run_transfers,
    scale,
)

from conftest import wait_until

pytestmark = pytest.mark.integration
__all__ = ["relay_mode"]

TRANSFERS = scale("transfers", 400, 10_000)     # per relay mode, all four kinds mixed
CONCURRENCY = scale("concurrency", 8, 12)
SEED = scale("seed", 14, 14)


def test_random_transfers_arrive_whole_and_in_order(sockd, relay_mode):
    server = sockd(args=["--max-workers", str(CONCURRENCY * 2 + 4), "--max-spare",
                         str(CONCURRENCY), "--max-per-source", "0", "--bind-timeout", "60",
                         *relay_args(relay_mode)])
    rng = random.Random(f"{SEED}-{relay_mode}")
    kinds = [(4, "connect"), (5, "connect"), (4, "bind"), (5, "bind")]
    plans = [random_plan(rng, *kinds[n % 4], MAX_SIZE) for n in range(TRANSFERS)]
    tally = run_transfers(server.port, plans, CONCURRENCY)
    print(f"\nintegrity ({relay_mode}): {tally}")
    assert not tally.failures, "\n".join(tally.failures[:20])
    assert tally.done == TRANSFERS


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("command", ["connect", "bind"])
def test_edge_sizes(sockd, relay_mode, version, command):
    """0 and 1 byte, a byte around the pipe and socket buffer sizes, and 16 MiB, each way,
    each alone and against the other direction's half-close."""
    server = sockd(args=["--bind-timeout", "60", *relay_args(relay_mode)])
    rng = random.Random(f"edges-{version}-{command}")
    sizes = [0, 1, 65535, 65536, 65537, MAX_SIZE]
    plans = []
    for up, down in [(0, 0), (1, 0), (0, 1), (65536, 0), (0, 65537), (65535, 65536),
                     (MAX_SIZE, 0), (0, MAX_SIZE), (MAX_SIZE, 1)]:
        plan = random_plan(rng, version, command, 1)
        plan.up, plan.down = up, down
        plan.up_urgent = sorted({0, up - 1}) if up > 1 else []
        plan.down_urgent = sorted({0, down // 2}) if down > 1 else []
        plans.append(plan)
    assert {p.up for p in plans} | {p.down for p in plans} == set(sizes)
    tally = run_transfers(server.port, plans, 3)
    assert not tally.failures, "\n".join(tally.failures)


@pytest.mark.parametrize("version", [4, 5])
def test_urgent_bytes_a_bind_peer_sends_at_once_are_kept(sockd, relay_mode, version):
    server = sockd(args=["--bind-timeout", "30", *relay_args(relay_mode)])
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    inline(client)
    if version == 4:
        client.sendall(b"\x04\x02\x00\x00" + socket.inet_aton("127.0.0.1") + b"u\x00")
        first = recv_exact(client, 8)
        port = struct.unpack(">H", first[2:4])[0]
    else:
        client.sendall(b"\x05\x01\x00\x05\x02\x00\x01" + socket.inet_aton("127.0.0.1") + b"\0\0")
        first = recv_exact(client, 12)
        port = struct.unpack(">H", first[-2:])[0]
    [worker] = wait_until(lambda: [pid for pid, t in server.titles().items() if " bind " in t],
                          10, "the worker waiting for the peer")
    os.kill(worker, signal.SIGSTOP)            # the peer's bytes arrive before the accept
    try:
        peer = inline(socket.create_connection(("127.0.0.1", port), timeout=30))
        peer.send(b"b", socket.MSG_OOB)         # as in the soak: the only bytes, urgent
        peer.send(b"c", socket.MSG_OOB)
        peer.shutdown(socket.SHUT_WR)
        time.sleep(0.2)                        # (let them arrive while sockd is stopped)
    finally:
        os.kill(worker, signal.SIGCONT)
    recv_exact(client, 8 if version == 4 else 10)
    got = b""
    while chunk := client.recv(100):
        got += chunk
    client.close()
    peer.close()
    assert got == b"bc"
