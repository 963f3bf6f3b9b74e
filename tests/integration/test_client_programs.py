"""The client programs against real servers on loopback: rfinger and rwhois against small
servers started here, rftp against pyftpdlib (passive and active, sha256-checked, FASCIST lines
through a real rsyslogd, the progress bar through a pty), rtelnet through a pty against
inetutils telnetd and a line service; and each program's failure path."""

import contextlib
import os
import pty
import re
import select
import signal
import socketserver
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_syslog import rsyslog  # noqa: F401  (the fixture)

from conftest import free_port, serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    e.pop("SOCKS_SERVER", None)
    return e


def run(program: str, *args, input: bytes = b"", cwd=None, environ=None, timeout=60):
    return subprocess.run([sys.executable, "-m", f"clients.programs.{program}", *args],
                          input=input, capture_output=True, cwd=cwd,
                          env=environ or env(), timeout=timeout)


class Pty:
    """A program on a pseudo-terminal: type into it, wait for what it shows."""

    def __init__(self, argv: list[str], environ: dict, cwd=None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            if cwd:
                os.chdir(cwd)
            os.execve(argv[0], argv, environ)
        self.seen = b""

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return False
        self.seen += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float = 15) -> re.Match:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while time.monotonic() < deadline:
            match = re.compile(pattern).search(self.seen, max(0, start - 200))
            if match:
                return match
            if not self._read(0.1):
                break
        match = re.compile(pattern).search(self.seen)
        assert match, f"{pattern!r} not seen in {self.seen[-2000:]!r}"
        return match

    def wait(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0):
                    pass
                return os.waitstatus_to_exitcode(status)
            self._read(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running; saw {self.seen[-2000:]!r}")

    def close(self) -> None:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def on_pty():
    started = []

    def start(program: str, *args, cwd=None, **extra) -> Pty:
        p = Pty([sys.executable, "-m", f"clients.programs.{program}", *args],
                env(TERM="xterm", **extra), cwd)
        started.append(p)
        return p
    yield start
    for p in started:
        p.close()


def closed_port() -> int:
    return free_port()


# -- rfinger and rwhois -----------------------------------------------------------------------


@pytest.fixture
def one_line_server():
    """A server that records the first line of each connection and answers ANSWER."""
    queries: list[bytes] = []
    answer = b"Login: alice\r\nName: Alice \x1b[31mred\x1b[0m\r\n\xff end\r\n"

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            request = self.request
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = request.recv(1024)
                if not chunk:
                    break
                data += chunk
            queries.append(data)
            request.sendall(answer)

    server = serve(Handler)
    yield server.server_address[1], queries, answer
    server.shutdown()
    server.server_close()


def test_rfinger_long_query_answer_as_sent(one_line_server):
    port, queries, answer = one_line_server
    result = run("rfinger", "-l", "-p", str(port), "alice@127.0.0.1")
    assert result.returncode == 0, result.stderr
    assert queries == [b"/W alice\r\n"]
    assert result.stdout == answer          # not a terminal: the bytes as received


def test_rfinger_list_and_forwarding_forms(one_line_server):
    port, queries, _ = one_line_server
    assert run("rfinger", "-p", str(port), "@127.0.0.1").returncode == 0
    assert run("rfinger", "-p", str(port), "bob@elsewhere@127.0.0.1").returncode == 0
    assert queries == [b"\r\n", b"bob@elsewhere\r\n"]


def test_rwhois_query_and_answer(one_line_server):
    port, queries, answer = one_line_server
    result = run("rwhois", "-h", "127.0.0.1", "-p", str(port), "example.com")
    assert result.returncode == 0, result.stderr
    assert queries == [b"example.com\r\n"]
    assert result.stdout == answer


def test_answers_on_a_terminal_show_control_bytes_visibly(one_line_server, on_pty):
    port, _, _ = one_line_server
    p = on_pty("rwhois", "-h", "127.0.0.1", "-p", str(port), "x")
    assert p.wait() == 0
    assert b"Alice ^[[31mred^[[0m" in p.seen
    assert b"\\xff end" in p.seen
    assert b"\x1b" not in p.seen


@pytest.mark.parametrize("program,args", [
    ("rfinger", ["-p", "{port}", "alice@127.0.0.1"]),
    ("rwhois", ["-h", "127.0.0.1", "-p", "{port}", "example.com"]),
    ("rtelnet", ["127.0.0.1", "{port}"]),
    ("rftp", ["127.0.0.1", "{port}"]),
])
def test_no_server_exit_status_and_one_line(program, args):
    port = closed_port()
    result = run(program, *(a.format(port=port) for a in args))
    assert result.returncode == 1
    lines = [line for line in result.stderr.decode().splitlines()
             if not line.startswith("Trying ")]
    assert lines == [f"{program}: 127.0.0.1 port {port}: Connection refused"]


def test_usage_errors_exit_2():
    assert run("rwhois").returncode == 2
    assert run("rfinger", "a\nb@127.0.0.1").returncode == 2
