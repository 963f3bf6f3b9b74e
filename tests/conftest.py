"""Shared fixtures: free loopback ports, local servers, and the real sockd process.

Every sockd started here runs with rules that allow loopback destinations
only, and `make test` runs the whole suite inside a private network namespace
where loopback is the only interface.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Loopback clients to loopback destinations, nothing else.
LOOPBACK_RULES = """\
# tests: loopback clients may reach loopback destinations, nothing else
permit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0
permit ::1/128 ::1/128
deny 0.0.0.0 0.0.0.0
"""


SERVER_TIMEOUT = 60     # seconds a test server's read may wait for its client

# What a crash of sockd leaves in its log or on its standard error (sockd(8), LOG LINES).
_CRASH = re.compile(r"Traceback|error -- internal error serving host|"
                    r"error -- worker \d+ stopped by")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll *predicate* until it returns something true, or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def require(program: str) -> str:
    """The path of a real program the tests drive; its absence fails the test."""
    path = shutil.which(program)
    assert path, f"{program} is not installed: run `make test` (scripts/install-deps test)"
    return path


def private_etc(files: dict[str, Path]) -> list[str]:
    """A `wrap` for the sockd fixture: run sockd in a private mount namespace where each
    file of /etc named in *files* is the test's own (bind-mounted); the host is untouched."""
    mounts = " && ".join(f"mount --bind {src} {dst}" for dst, src in files.items())
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'{mounts} && exec "$0" "$@"']


class Sockd:
    """A real sockd process on a free loopback port, logging to a file."""

    def __init__(self, tmp: Path, rules: str | None, args: list[str],
                 wrap: list[str] = ()) -> None:
        self.port = free_port()
        self.log_path = tmp / f"sockd-{self.port}.log"
        self.conf = tmp / f"sockd-{self.port}.conf"
        conf_args = []
        if rules is not None:
            self.conf.write_text(rules)
            conf_args = ["-c", str(self.conf)]
        listen = [] if "-l" in args else ["-l", f"127.0.0.1:{self.port}"]
        self.argv = [sys.executable, "-m", "sockd", "-f", "--log", str(self.log_path),
                     *listen, *conf_args, "--min-spare", "2", "--max-spare", "4",
                     "--max-workers", "16", *args]
        # Standard output and error go to a file, never to a pipe nobody drains
        # (a chatty sockd would block on a full pipe); teardown reads it.
        self.stderr_path = tmp / f"sockd-{self.port}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            # *wrap* runs before sockd and must exec it (unshare, setpriv...): the pid stays
            self.proc = subprocess.Popen([*wrap, *self.argv], cwd=ROOT, start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=stderr,
                                         stderr=stderr)
        self.pid = self.proc.pid

    def wait_ready(self) -> "Sockd":
        def ready():
            assert self.proc.poll() is None, \
                f"sockd exited with {self.proc.returncode}: {self.stderr()}"
            return self.idle_workers() >= 1
        wait_until(ready, 15, "sockd to start its workers")
        return self

    def stderr(self) -> str:
        """What sockd wrote to its standard output and error so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        return wait_until(lambda: (found := self.lines(pattern)) and len(found) >= count
                          and found, timeout, f"log line /{pattern}/ x{count}")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):     # gone before or while read
            return []

    def titles(self) -> dict[int, str]:
        out = {}
        for pid in [self.pid, *self.children()]:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") \
                    .decode().strip()
        return out

    def idle_workers(self) -> int:
        return sum(1 for t in self.titles().values() if t == "sockd: idle")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def assert_no_traceback(self) -> None:
        """Fail if sockd's log or its standard error shows a Python traceback.

        A worker logs an exception that ends a session or the worker itself
        as one line, without the traceback: that is a crash all the same.
        """
        for where, text in (("log", self.log()), ("stderr", self.stderr())):
            crash = _CRASH.search(text)
            assert crash is None, f"sockd's {where} shows a crash ({crash[0]!r}):\n{text}"


@pytest.fixture
def sockd(tmp_path):
    """Start a sockd: `sockd(rules=LOOPBACK_RULES, args=[])`, stopped after the test."""
    started: list[Sockd] = []

    def start(rules: str | None = LOOPBACK_RULES, args: list[str] = (), ready: bool = True,
              wrap: list[str] = ()):
        proc = Sockd(tmp_path, rules, list(args), list(wrap))
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        proc.stop()
    for proc in started:
        proc.assert_no_traceback()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen queue is 5: twenty sessions connecting at once to a server
    # slowed by a busy machine overflow it, and a connection the kernel then drops
    # comes back to sockd as a reset (test_many_sessions_at_once, once, CPUs busy).
    request_queue_size = 128

    def get_request(self):
        # A handler's reads are bounded too: a test's mistake ends in a
        # timeout, not in a thread that waits forever.
        conn, address = super().get_request()
        conn.settimeout(SERVER_TIMEOUT)
        return conn, address


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(handler, host: str = "127.0.0.1"):
    server = (_Server6 if ":" in host else _Server)((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def echo_server():
    """A TCP echo server on 127.0.0.1; yields its port."""
    server = serve(_EchoHandler)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server (python -m http.server) on 127.0.0.1 serving hello.txt."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_text("hello through socks\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1",
                             str(port), "-d", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def up():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
    wait_until(up, 10, "http.server")
    yield port
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def serve_ftp(root: Path, host: str = "127.0.0.1", user: str = "user",
               password: str = "secret"):
    """A real FTP server (pyftpdlib) on *host*, serving *root* (made here) to *user*;
    yields its port, and is stopped on exit."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    root.mkdir()
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmw")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer})
    server = FTPServer((host, free_port(host)), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2},
                              daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        server.close_all()
        thread.join(5)
