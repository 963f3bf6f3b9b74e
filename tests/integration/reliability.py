"""What the reliability tests share: the relay modes, SOCKS clients spoken by hand, verified
transfers, a background load, and the numbers that `make soak` turns up.

The same tests run short in `make test` and long under `make soak` (scripts/soak.py):
`scale(short, long)` picks the figure, or the environment variable that names it.

A transfer (`Plan`, `transfer`) opens a session through sockd (SOCKS 4 or 5, CONNECT or
BIND) to a destination socket the test itself holds, then sends both ways at once: random
bytes, some of them urgent (MSG_OOB), in random pieces; the second direction starts when the
first has delivered a random share of its bytes, so one direction half-closes (shutdown
SHUT_WR) at a random point of the other.  Both receivers hash what they read; the hashes and
lengths must be the sender's.
"""

import contextlib
import dataclasses
import hashlib
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, _EchoHandler, serve

TIMEOUT = 60                  # seconds any one read or write of a test client may wait
MAX_SIZE = 16 << 20           # the largest transfer, one direction
SOAK = os.environ.get("SOCKD_SOAK") == "1"


def scale(name: str, short: float, long: float) -> float:
    """The figure named *name*: $SOCKD_SOAK_<NAME> if set, else *long* under `make soak`,
    else *short* (the `make test` figure)."""
    value = os.environ.get(f"SOCKD_SOAK_{name.upper()}")
    if value is not None:
        return type(short)(value)
    return long if SOAK else short


# ---------------------------------------------------------------------------------------------
# Relay modes: "shared" joins as soon as sockd --help lists --relay (issue 12).

def _help() -> str:
    out = subprocess.run([sys.executable, "-m", "sockd", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    return out.stdout


_HELP = _help()
RELAY_MODES = ["worker", "shared"] if re.search(r"--relay(?![-\w])", _HELP) else ["worker"]


def relay_args(mode: str) -> list[str]:
    """sockd arguments for relay *mode*."""
    if mode == "worker":
        return []
    extra = ["--relay-processes", "2"] if "--relay-processes" in _HELP else []
    return ["--relay", "shared", *extra]


@pytest.fixture(params=RELAY_MODES, ids=[f"relay-{m}" for m in RELAY_MODES])
def relay_mode(request) -> str:
    """Each test taking this runs once per relay mode sockd has."""
    return request.param


RELAY_TITLE = "sockd: relay"


def relay_processes(server) -> list[int]:
    """The relay processes of a --relay shared sockd, by their title."""
    return [pid for pid, title in server.titles().items() if title.startswith(RELAY_TITLE)]


def workers(server) -> list[int]:
    """The worker processes (every child that is not a relay process)."""
    return [pid for pid, title in server.titles().items()
            if pid != server.pid and not title.startswith(RELAY_TITLE)]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of *pids* (those still there), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def uids(pid: int) -> list[int]:
    """Real, effective, saved and file-system uid of *pid* (/proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return [int(u) for u in line.split()[1:]]


# ---------------------------------------------------------------------------------------------
# SOCKS spoken by hand (not sockd's codec: a codec mistake must not hide itself)

class SocksError(Exception):
    """The proxy refused, or the handshake broke: *code* is the reply code, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SocksError(f"end of file after {len(data)} of {n} bytes of a reply")
        data += chunk
    return data


def _socks4(sock: socket.socket, command: int, host: str, port: int, user: bytes) -> None:
    sock.sendall(struct.pack(">BBH", 4, command, port) + socket.inet_aton(host) + user + b"\0")


def _reply4(sock: socket.socket) -> tuple[str, int]:
    raw = recv_exact(sock, 8)
    if raw[0] != 0 or raw[1] != 90:
        raise SocksError(f"SOCKS 4 reply {raw!r}", raw[1])
    return socket.inet_ntoa(raw[4:]), struct.unpack(">H", raw[2:4])[0]


def _socks5(sock: socket.socket, command: int, host: str, port: int,
            login: tuple[bytes, bytes] | None) -> None:
    if login is None:
        sock.sendall(b"\x05\x01\x00")
        if recv_exact(sock, 2) != b"\x05\x00":
            raise SocksError("method refused")
    else:
        user, password = login
        sock.sendall(b"\x05\x01\x02")
        if recv_exact(sock, 2) != b"\x05\x02":
            raise SocksError("username/password not chosen")
        sock.sendall(bytes((1, len(user))) + user + bytes((len(password),)) + password)
        if recv_exact(sock, 2) != b"\x01\x00":
            raise SocksError("login refused")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    atyp = 4 if family == socket.AF_INET6 else 1
    sock.sendall(bytes((5, command, 0, atyp)) + socket.inet_pton(family, host)
                 + struct.pack(">H", port))


def _reply5(sock: socket.socket) -> tuple[str, int]:
    head = recv_exact(sock, 4)
    if head[0] != 5 or head[1] != 0:
        raise SocksError(f"SOCKS 5 reply {head!r}", head[1])
    if head[3] == 1:
        host = socket.inet_ntoa(recv_exact(sock, 4))
    elif head[3] == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16))
    else:
        raise SocksError(f"SOCKS 5 reply with ATYP {head[3]}")
    return host, struct.unpack(">H", recv_exact(sock, 2))[0]


def connect(proxy_port: int, version: int, host: str, port: int, *, user: bytes = b"u",
            login: tuple[bytes, bytes] | None = None) -> socket.socket:
    """A CONNECT session through sockd; raises SocksError or OSError."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT)
    inline(sock)
    try:
        if version == 4:
            _socks4(sock, 1, host, port, user)
            _reply4(sock)
        else:
            _socks5(sock, 1, host, port, login)
            _reply5(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(proxy_port: int, version: int, peer: str = "127.0.0.1", *, user: bytes = b"u",
         ) -> tuple[socket.socket, socket.socket]:
    """A BIND session: (client's socket, the peer's socket that sockd accepted)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT)
    inline(sock)
    try:
        if version == 4:
            _socks4(sock, 2, peer, 0, user)
            host, port = _reply4(sock)
        else:
            _socks5(sock, 2, peer, 0, None)
            host, port = _reply5(sock)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        other = inline(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET))
        try:
            other.settimeout(TIMEOUT)
            other.connect((host, port))
            second = _reply4(sock) if version == 4 else _reply5(sock)
            assert second[1] == other.getsockname()[1], (second, other.getsockname())
        except BaseException:
            other.close()
            raise
    except BaseException:
        sock.close()
        raise
    return sock, other


def inline(sock: socket.socket) -> socket.socket:
    """Urgent bytes arrive in the stream, where a relay that kept them in order put them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    sock.settimeout(TIMEOUT)
    return sock


# ---------------------------------------------------------------------------------------------
# Verified transfers

_BLOCK: bytes | None = None
_BLOCK_LOCK = threading.Lock()


def block() -> memoryview:
    """16 MiB + 64 KiB of random bytes, made once; a transfer sends a slice of it."""
    global _BLOCK
    with _BLOCK_LOCK:
        if _BLOCK is None:
            _BLOCK = os.urandom(MAX_SIZE + (1 << 16))
    return memoryview(_BLOCK)


@dataclasses.dataclass
class Plan:
    """One transfer: how it is opened and what goes each way."""
    version: int                  # 4 or 5
    command: str                  # "connect" or "bind"
    up: int                       # bytes client -> destination
    down: int                     # bytes destination -> client
    up_start: int                 # where in `block` each direction's bytes begin
    down_start: int
    up_urgent: list[int]          # offsets sent as urgent bytes
    down_urgent: list[int]
    down_after: float             # the destination starts when this share of `up` arrived
    seed: int                     # the sizes of the pieces

    def __str__(self) -> str:
        return (f"SOCKS{self.version} {self.command} up={self.up} down={self.down} "
                f"urgent={len(self.up_urgent)}+{len(self.down_urgent)} "
                f"down_after={self.down_after:.2f} seed={self.seed}")


def size(rng: random.Random, largest: int) -> int:
    """0 bytes sometimes, else log-uniform up to *largest* (most are small, some are large)."""
    roll = rng.random()
    if roll < 0.05:
        return 0
    if roll < 0.08:
        return largest
    return min(largest, int(2 ** rng.uniform(0, largest.bit_length())))


def random_plan(rng: random.Random, version: int, command: str, largest: int = MAX_SIZE,
                ) -> Plan:
    up, down = size(rng, largest), size(rng, largest)

    def urgent(n: int) -> list[int]:
        count = rng.choice([0, 0, 1, 2, 5]) if n else 0
        return sorted(rng.sample(range(n), min(count, n)))
    return Plan(version, command, up, down, rng.randrange(1 << 16), rng.randrange(1 << 16),
                urgent(up), urgent(down), rng.choice([0.0, rng.random(), 1.0]),
                rng.randrange(1 << 30))


class _Direction:
    """One direction of a transfer: its sender's and receiver's view."""

    def __init__(self) -> None:
        self.received = 0
        self.digest = ""
        self.error: BaseException | None = None
        self.progress = threading.Condition()

    def receive(self, sock: socket.socket) -> None:
        h = hashlib.sha256()
        try:
            while chunk := sock.recv(1 << 17):
                h.update(chunk)
                with self.progress:
                    self.received += len(chunk)
                    self.progress.notify_all()
        except BaseException as exc:    # noqa: BLE001 - reported by the caller
            self.error = exc
        self.digest = h.hexdigest()
        with self.progress:
            self.received = -1 if self.error else self.received
            self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            self.progress.wait_for(lambda: self.received >= count or self.received < 0
                                   or self.error is not None, TIMEOUT)


def send(sock: socket.socket, data: memoryview, urgent: list[int], rng: random.Random,
         pace: float = 0.0, piece: int = 0) -> None:
    """*data* in random pieces, the bytes at *urgent* offsets sent with MSG_OOB; then a
    half-close.  *pace* seconds between pieces of *piece* bytes (0: random sizes) make a
    transfer last."""
    position = 0
    marks = [*urgent, len(data)]
    for mark in marks:
        while position < mark:
            size = min(mark - position,
                       piece or rng.choice([1, 100, 1460, 8192, 65536, 1 << 20]))
            sock.sendall(data[position:position + size])
            position += size
            if pace:
                time.sleep(pace)
        if mark < len(data):
            assert sock.send(data[mark:mark + 1], socket.MSG_OOB) == 1
            position += 1
    sock.shutdown(socket.SHUT_WR)


def open_transfer(proxy_port: int, plan: Plan) -> tuple[socket.socket, socket.socket]:
    """The client's and the destination's socket of a session opened for *plan*."""
    if plan.command == "bind":
        return bind(proxy_port, plan.version)
    with socket.socket() as listener:
        inline(listener)              # accepted sockets inherit SO_OOBINLINE
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = connect(proxy_port, plan.version, "127.0.0.1", listener.getsockname()[1])
        try:
            far, _ = listener.accept()
        except BaseException:
            client.close()
            raise
        return client, inline(far)


def transfer(proxy_port: int, plan: Plan, pace: float = 0.0, piece: int = 0,
             opened: tuple[socket.socket, socket.socket] | None = None) -> int:
    """Run *plan* through sockd and verify it; returns the bytes moved.  Raises
    AssertionError (naming the plan) when a byte is lost, added or out of place, and
    SocksError or OSError when the session could not be opened or broke."""
    client, far = opened or open_transfer(proxy_port, plan)
    data = block()
    up_data = data[plan.up_start:plan.up_start + plan.up]
    down_data = data[plan.down_start:plan.down_start + plan.down]
    up, down = _Direction(), _Direction()
    rng = random.Random(plan.seed)
    rng_down = random.Random(plan.seed + 1)
    errors: list[BaseException] = []

    def down_sender() -> None:
        try:
            up.wait_for(int(plan.up * plan.down_after))
            send(far, down_data, plan.down_urgent, rng_down, pace, piece)
        except BaseException as exc:    # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=up.receive, args=(far,), daemon=True),
               threading.Thread(target=down.receive, args=(client,), daemon=True),
               threading.Thread(target=down_sender, daemon=True)]
    with client, far:
        for t in threads:
            t.start()
        try:
            send(client, up_data, plan.up_urgent, rng, pace, piece)
        except BaseException as exc:    # noqa: BLE001
            errors.append(exc)
        for t in threads:
            t.join(TIMEOUT * 4)
    for direction in (up, down):
        if direction.error is not None:
            errors.append(direction.error)
    if errors:
        raise errors[0]
    want_up = hashlib.sha256(up_data).hexdigest()
    want_down = hashlib.sha256(down_data).hexdigest()
    assert (up.received, up.digest) == (plan.up, want_up), f"upstream garbled: {plan}"
    assert (down.received, down.digest) == (plan.down, want_down), \
        f"downstream garbled: {plan}"
    return plan.up + plan.down


@dataclasses.dataclass
class Tally:
    """What a batch of transfers came to."""
    done: int = 0
    moved: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.done} transfers verified, {self.moved / 2**20:.1f} MiB, "
                f"{len(self.failures)} failed, {self.seconds:.1f} s")


def run_transfers(proxy_port: int, plans: list[Plan], concurrency: int = 8,
                  pace: float = 0.0, piece: int = 0) -> Tally:
    """Run *plans*, *concurrency* at a time; every failure is kept with its plan."""
    tally = Tally()
    lock = threading.Lock()
    started = time.monotonic()

    def one(plan: Plan) -> None:
        try:
            moved = transfer(proxy_port, plan, pace, piece)
        except BaseException as exc:    # noqa: BLE001
            with lock:
                tally.failures.append(f"{plan}: {exc!r}")
            return
        with lock:
            tally.done += 1
            tally.moved += moved

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, plans))
    tally.seconds = time.monotonic() - started
    return tally


# ---------------------------------------------------------------------------------------------
# A load running meanwhile

class CutShort(ConnectionError):
    """A session that ended early: every byte that came was right, some never came."""


def same(got: bytes, sent: bytes, what: str) -> None:
    """Raise CutShort when *got* is a proper prefix of *sent*, AssertionError (garbled) when
    it is anything else but *sent*."""
    if got != sent:
        if sent.startswith(got):
            raise CutShort(f"{what}: {len(got)} of {len(sent)} bytes, then the end")
        raise AssertionError(f"{what} garbled: {len(got)} bytes, not the {len(sent)} sent")


def garbled(errors: list[str]) -> list[str]:
    """The errors that are not a lost session (refused, reset, cut short) but wrong bytes."""
    return [e for e in errors if "garbled" in e or "AssertionError" in e]


class _Echo:
    def __init__(self) -> None:
        self.server = serve(_EchoHandler)
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Load:
    """Clients in threads, each opening sessions one after another (SOCKS 4 and 5, CONNECT
    to an echo server, some BIND) and checking an exchange of random bytes in each.

    `errors` keeps what went wrong, `served` counts the good sessions; `pause()` and
    `resume()` bracket a moment when no new session may begin.
    """

    def __init__(self, proxy_port: int, clients: int = 6, payload: int = 4096,
                 binds: bool = True, session_hook: Callable[[int], None] | None = None,
                 ) -> None:
        self.proxy_port = proxy_port
        self.payload = payload
        self.binds = binds
        self.echo = _Echo()
        self.errors: list[str] = []
        self.served = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.session_hook = session_hook
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True)
                        for n in range(clients)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(TIMEOUT * 2)
        self.echo.close()

    def wait_served(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        target = self.served + count
        while self.served < target:
            assert time.monotonic() < deadline, \
                f"the load made no progress: {len(self.errors)} errors: {self.errors[:5]}"
            time.sleep(0.02)

    def one_session(self, n: int, rng: random.Random) -> None:
        version = rng.choice([4, 5])
        data = os.urandom(rng.randrange(1, self.payload + 1))
        if self.binds and rng.random() < 0.2:
            client, far = bind(self.proxy_port, version)
            with client, far:
                client.sendall(data)
                got = b""
                while len(got) < len(data) and (chunk := far.recv(65536)):
                    got += chunk
                same(got, data, "BIND")
                far.sendall(data)
                far.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := client.recv(65536):
                    got += chunk
                same(got, data, "BIND")
            return
        with connect(self.proxy_port, version, "127.0.0.1", self.echo.port) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            same(got, data, "echo")

    def _client(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stopping.is_set():
            try:
                self.one_session(n, rng)
            except BaseException as exc:    # noqa: BLE001
                with self.lock:
                    self.errors.append(f"client {n}: {exc!r}")
                continue
            with self.lock:
                self.served += 1
