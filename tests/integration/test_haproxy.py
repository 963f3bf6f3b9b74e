"""Several sockd behind a real HAProxy (Debian's), with the PROXY protocol v2.

Three sockd on 127.0.0.2-4 behind HAProxy on 127.0.0.1, curl clients binding 127.0.0.10
(allowed) and 127.0.0.11 (refused), through the balancer to a loopback HTTP server.  Each
client binds a source port of its own (--local-port, above the kernel's ephemeral range),
so that HAProxy's log line for it (which server it went to) and sockd's lines (the real
client ADDRESS:PORT) can be told apart.
"""

import contextlib
import itertools
import os
import re
import signal
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, require, serve, wait_until

pytestmark = pytest.mark.integration

RULES = """\
# through the balancer: 127.0.0.10 may reach loopback destinations, 127.0.0.11 nothing
permit 127.0.0.10 255.255.255.255 127.0.0.0 255.0.0.0
deny 0.0.0.0 0.0.0.0
"""
BALANCER = "127.0.0.1"
HOSTS = {"s2": "127.0.0.2", "s3": "127.0.0.3", "s4": "127.0.0.4"}
CHUNKS, CHUNK, PAUSE = 10, 1024, 0.05  # under load: a response that takes half a second

HAPROXY_CFG = """\
global
    log stdout format raw local0 info
    maxconn 1000
defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
frontend socks
    bind {balancer}:{front}
    log-format "conn %ci:%cp %s %ts %B"
    default_backend sockd
backend sockd
    balance roundrobin
    source {balancer}
    default-server send-proxy-v2 check inter 200ms fall 2 rise 2
{servers}
"""

# Source ports for the clients: above the ephemeral range (32768-60999), each used once.
_ports = itertools.count(61000)


class Haproxy:
    """HAProxy in the foreground (-db), its log and warnings in one file."""

    def __init__(self, tmp: Path, servers: dict[str, int]) -> None:
        self.front = free_port(BALANCER)
        lines = "\n".join(f"    server {name} {HOSTS[name]}:{port}"
                          for name, port in servers.items())
        self.cfg = tmp / "haproxy.cfg"
        self.cfg.write_text(HAPROXY_CFG.format(balancer=BALANCER, front=self.front,
                                               servers=lines))
        self.log_path = tmp / "haproxy.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([require("haproxy"), "-db", "-f", str(self.cfg)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10) -> str:
        return wait_until(lambda: re.search(pattern, self.log(), re.M), timeout,
                          f"haproxy log /{pattern}/")[0]

    def server_of(self, port: int) -> str | None:
        """The server HAProxy sent the client from source port *port* to."""
        found = re.search(rf"^conn 127\.0\.0\.1[01]:{port} (\S+) ", self.log(), re.M)
        return found[1] if found else None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@dataclass
class Fetch:
    port: int           # the client's source port
    started: float      # time.monotonic() when curl started
    ok: bool
    detail: str


class _Trickle(socketserver.BaseRequestHandler):
    """HTTP/1.0 answered in CHUNKS pieces, PAUSE seconds apart: a session under load is
    always in the middle of its response, never already all in the sockets' buffers."""

    def handle(self):
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (CHUNKS * CHUNK))
        for _ in range(CHUNKS):
            time.sleep(PAUSE)
            self.request.sendall(b"x" * CHUNK)


def fetch(front: int, http_port: int, path: str, client: str = "127.0.0.10") -> Fetch:
    """One curl through the balancer from *client*, on a source port of its own."""
    while True:
        port, started = next(_ports), time.monotonic()
        argv = [require("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                "--max-time", "30", "--socks5", f"{BALANCER}:{front}", "--interface", client,
                "--local-port", str(port), f"http://127.0.0.1:{http_port}/{path}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=40)
        if done.returncode != 45:       # 45: the source port was taken; take another
            ok = done.returncode == 0 and done.stdout == "200"
            return Fetch(port, started, ok, f"rc={done.returncode} {done.stderr.strip()}")


class Load:
    """*clients* curl loops through the balancer until stopped."""

    def __init__(self, front: int, clients: int = 6) -> None:
        self.results: list[Fetch] = []
        self.stopping = threading.Event()
        self.server = serve(_Trickle)
        port = self.server.server_address[1]
        self.threads = [threading.Thread(target=self._loop, args=(front, port))
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _loop(self, front: int, http_port: int) -> None:
        while not self.stopping.is_set():
            self.results.append(fetch(front, http_port, "slow"))

    def stop(self) -> list[Fetch]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        self.server.shutdown()
        self.server.server_close()
        return self.results


@pytest.fixture
def farm(sockd, http_server, tmp_path):
    """Three sockd behind one HAProxy: (haproxy, {name: Sockd}, http port)."""
    servers = {}
    for name, address in HOSTS.items():
        port = free_port(address)
        servers[name] = sockd(rules=RULES, args=["-l", f"{address}:{port}", "--proxy-protocol",
                                                 f"{BALANCER}/32", "--min-spare", "4"])
    balancer = Haproxy(tmp_path, {name: int(s.argv[s.argv.index("-l") + 1].rsplit(":", 1)[1])
                                  for name, s in servers.items()})
    try:
        wait_until(lambda: fetch(balancer.front, http_server, "hello.txt").ok, 15,
                   "a first fetch through haproxy")
        yield balancer, servers, http_server
    finally:
        balancer.stop()


def busy(server) -> bool:
    """True when one of *server*'s workers is relaying a client's session."""
    return any(" connect 127.0.0.1:" in title for title in server.titles().values())


def test_rules_see_the_real_client_through_the_balancer(farm):
    balancer, servers, http_port = farm
    allowed = [fetch(balancer.front, http_port, "hello.txt") for _ in range(6)]
    refused = [fetch(balancer.front, http_port, "hello.txt", client="127.0.0.11")
               for _ in range(3)]
    assert all(f.ok for f in allowed), [f.detail for f in allowed]
    assert not any(f.ok for f in refused)
    logs = "\n".join(s.log() for s in servers.values())
    for f in allowed:
        assert re.search(rf"connected -- Connect from .*@127\.0\.0\.10:{f.port} ", logs), f.port
    for f in refused:
        wait_until(lambda f=f: re.search(
            rf"refused -- client 127\.0\.0\.11:{f.port} at accept: no rule can permit",
            "\n".join(s.log() for s in servers.values())), 10, f"the refusal of {f.port}")
    # round robin: every host served some of them, and none logged the balancer as client
    assert all(s.lines(r"connected -- ") for s in servers.values())
    assert not re.search(r"@127\.0\.0\.1:\d+ ", logs)


def test_a_killed_sockd_loses_only_its_own_sessions(farm):
    balancer, servers, http_port = farm
    load = Load(balancer.front)
    try:
        wait_until(lambda: busy(servers["s3"]), 15, "a session on s3")
        servers["s3"].stop()                            # SIGKILL to its process group
        balancer.wait_log(r"Server sockd/s3 is DOWN")
        down = time.monotonic()
        wait_until(lambda: sum(f.started > down + 0.05 for f in load.results) >= 12, 30,
                   "sessions after s3 went down")
    finally:
        results = load.stop()
    wait_until(lambda: all(balancer.server_of(f.port) for f in results), 10,
               "haproxy's line for every client")
    failed = [(f.port, balancer.server_of(f.port), f.detail) for f in results if not f.ok]
    assert failed, "no session was lost: s3 was killed with none in flight"
    assert all(server == "s3" for _, server, _ in failed), failed
    after = [f for f in results if f.started > down + 0.05]
    assert all(f.ok and balancer.server_of(f.port) in ("s2", "s4") for f in after)
    for name in ("s2", "s4"):
        assert not servers[name].lines(r"error -- |refused -- |failed -- ")


def test_a_drained_sockd_loses_none(farm):
    balancer, servers, http_port = farm
    drained = servers["s4"]
    load = Load(balancer.front)
    try:
        wait_until(lambda: busy(drained), 15, "a session on s4")
        drained.signal(signal.SIGTERM)
        balancer.wait_log(r"Server sockd/s4 is DOWN")
        down = time.monotonic()
        wait_until(lambda: sum(f.started > down + 0.05 for f in load.results) >= 12, 30,
                   "sessions after s4 went down")
        assert drained.proc.wait(30) == 0
    finally:
        results = load.stop()
    failed = [(f.port, balancer.server_of(f.port), f.detail) for f in results if not f.ok]
    assert not failed
    on_drained = [f for f in results if balancer.server_of(f.port) == "s4"]
    assert on_drained
    terminated = drained.lines(r"terminated -- .*\(eof\)$")
    assert len(terminated) == len(on_drained)
    assert not drained.lines(r"error -- |refused -- |failed -- |cut")
