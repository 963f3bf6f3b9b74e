"""Holes in the command line, the files and the hooks (issue 6), each driven through a real sockd.

inetd mode and --user, hook values that would climb out of a directory, pid and log files that
are symbolic links, configuration files that are not regular files or too big, control bytes in
error messages, log rotation on HUP; and the start-up paths nothing else exercises: -f without
--log, detaching, --pidfile, repeated -l, the default listener, systemd LISTEN_FDS, route and
password errors under -t, HUP re-reading the password file.
"""

import socket
import struct
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until

pytestmark = pytest.mark.integration

SOCKD = [sys.executable, "-m", "sockd"]


def run_sockd(*args, **kw):
    """sockd run to its end, with a bound on its time."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*SOCKD, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, **kw)


def socks4_connect(port: int, dst_port: int, user: bytes = b"tester",
                   host: str = "127.0.0.1") -> socket.socket:
    """A SOCKS 4 CONNECT to 127.0.0.1:dst_port through sockd on port; returns the socket,
    with the reply read and checked."""
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"\x04\x01" + struct.pack(">H", dst_port) + socket.inet_aton("127.0.0.1")
              + user + b"\x00")
    reply = recv_exactly(s, 8)
    assert reply[:2] == b"\x00\x5a", reply
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def echo_through(port: int, echo_port: int, payload: bytes = b"ping", **kw) -> None:
    with socks4_connect(port, echo_port, **kw) as s:
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload


# -- hook values (item 2) ------------------------------------------------------------------------


def test_a_userid_cannot_make_a_hook_write_outside_its_directory(sockd, echo_server, tmp_path):
    top = tmp_path / "top"
    logs = top / "var" / "logs"
    logs.mkdir(parents=True)
    rules = (f"permit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0 : touch {logs}/%u.log\n"
             "deny 0.0.0.0 0.0.0.0\n")
    server = sockd(rules=rules)
    echo_through(server.port, echo_server, user=b"../../x")
    server.wait_log(r"hook started -- ")
    # (An idle worker does not reap its hooks, so "hook done" may wait for the next client.)
    wait_until((logs / "_._.._x.log").exists, 10, "the hook's file")
    created = sorted(p for p in top.rglob("*") if p.is_file())
    assert created == [logs / "_._.._x.log"]
    assert not (top / "x.log").exists()
