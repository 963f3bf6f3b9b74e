"""Ident servers for the tests: the real oidentd, hostile stand-ins, and connections owned by
another user.

- `oidentd(tmp_path, replies={"daemon": "mallory"})` runs Debian's oidentd in the foreground on
  127.0.0.1 and ::1, port 113 by default (the suite runs as root in a private network namespace,
  so the port is free), with a private configuration file: every user's own name is reported,
  except the users in *replies*, for whom oidentd is forced to answer the given name (the
  spoofed answer for a mismatch). Its messages (-S) go to tmp_path/oidentd-PORT.log; its
  process group is killed on exit.
- `owned_connection(user, host, port)` opens a TCP connection to host:port from a child process
  running as *user* (setpriv), so that oidentd reports *user* for it; it yields the child's
  source port and is closed on exit.
- `FakeIdentd(behaviour)` is a small hostile identd on a loopback port: it reads the query line
  and lets *behaviour(conn, query)* answer (see the `silent`, `send`, `endless`... helpers).

Nothing here sleeps to wait: readiness is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import require, wait_until

IDENT_PORT = 113


def _listening(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@contextlib.contextmanager
def oidentd(tmp_path: Path, replies: dict[str, str] | None = None, port: int = IDENT_PORT,
            addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
            args: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """Run oidentd on *addresses*:*port* while the block runs; see the module docstring."""
    conf = tmp_path / f"oidentd-{port}.conf"
    # An empty default block: users may not spoof; the forced replies below override that.
    text = "default {\n\tdefault {\n\t\tdeny spoof\n\t}\n}\n"
    for name, answer in (replies or {}).items():
        text += f'user "{name}" {{\n\tdefault {{\n\t\tforce reply "{answer}"\n\t}}\n}}\n'
    conf.write_text(text)
    argv = [require("oidentd"), "-i", "-S", "-C", str(conf), "-p", str(port),
            "-u", "nobody", "-g", "nogroup", "-t", "10", "-l", "50", *args]
    for address in addresses:
        argv += ["-a", address]
    log = tmp_path / f"oidentd-{port}.log"
    stderr = log.open("wb")
    proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=stderr, stderr=stderr)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"oidentd exited {proc.returncode}: {log.read_text()}"
            return all(_listening(a, port) for a in addresses)
        wait_until(ready, 10, "oidentd to listen")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stderr.close()


_HOLD = """\
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family)
if sys.argv[3]:
    s.bind((sys.argv[3], 0))
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def owned_connection(user: str, host: str, port: int, source: str = "") -> Iterator[int]:
    """A connection to host:port held by a process running as *user*; yields its source port.

    The listener at host:port is the caller's: it should accept the connection.
    """
    group = "nogroup" if user == "nobody" else user
    proc = subprocess.Popen([require("setpriv"), "--reuid", user, "--regid", group,
                             "--clear-groups", sys.executable, "-c", _HOLD, host, str(port),
                             source],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"connecting as {user}: {proc.communicate(timeout=10)}"
        yield int(line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()


# ---------------------------------------------------------------- hostile stand-ins

Behaviour = Callable[[socket.socket, bytes, threading.Event], None]


class FakeIdentd:
    """A hostile identd on host:port (port 0: a free one); each connection runs *behaviour*.

    behaviour(conn, query, stop) gets the accepted socket, the query line the client sent
    (b"" if none came within 5 s) and an event set when the server stops; the connection is
    closed when it returns. Use as a context manager: on exit the listener is closed and the
    behaviours are told to stop.
    """

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.queries: list[bytes] = []
        self.peers: list[tuple] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeIdentd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            query = b""
            with contextlib.suppress(OSError):
                while b"\n" not in query and len(query) < 100:
                    chunk = conn.recv(100)
                    if not chunk:
                        break
                    query += chunk
            self.queries.append(query)
            self.behaviour(conn, query, self.stop)


def _ports(query: bytes) -> bytes:
    """The port pair of a query, as an identd echoes it."""
    return query.split(b"\r")[0].split(b"\n")[0].strip()


def send(text: bytes) -> Behaviour:
    """Answer `<ports asked> : text` CR LF, then close."""
    def behaviour(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
        conn.sendall(_ports(query) + b" : " + text + b"\r\n")
    return behaviour


def raw(data: bytes) -> Behaviour:
    """Send exactly *data*, then close."""
    return lambda conn, query, stop: conn.sendall(data)


def silent(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
    """Keep the connection open and say nothing until the server stops (30 s at most)."""
    stop.wait(30)


def endless(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
    """One line that never ends: 'A' bytes until the client goes away (30 s at most)."""
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        conn.sendall(b"A" * 4096)


def trickle(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
    """A valid reply sent one byte every 0.2 s: each byte is in time, the whole never is."""
    reply = _ports(query) + b" : USERID : UNIX : " + b"slow" * 100 + b"\r\n"
    for byte in reply:
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def close_early(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
    """Read the query and close without a word."""


def reset(conn: socket.socket, query: bytes, stop: threading.Event) -> None:
    """Read the query and reset the connection (SO_LINGER with a zero time)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
