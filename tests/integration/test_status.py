"""sockd --status: the running server's pool and sessions, read from its scoreboard file."""

import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, require, wait_until
from sockd import scoreboard

pytestmark = pytest.mark.integration


def status(pidfile, *args: str, groups: str | None = None) -> subprocess.CompletedProcess:
    """sockd --status; as nobody with the supplementary *groups* (comma-separated, "" for
    none) when given."""
    argv = [sys.executable, "-m", "sockd", "--status", "--pidfile", str(pidfile), *args]
    if groups is not None:
        group_args = [f"--groups={groups}"] if groups else ["--clear-groups"]
        argv = [require("setpriv"), "--reuid=nobody", "--regid=nogroup", *group_args, *argv]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def open_session(proxy_port: int, dest_port: int, user: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
    s.sendall(b"\x04\x01" + struct.pack(">H", dest_port) + socket.inet_aton("127.0.0.1")
              + user + b"\x00")
    assert s.recv(8)[:2] == b"\x00\x5a"
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    return s


def test_status_shows_the_pool_and_each_session(sockd, echo_server, tmp_path):
    pidfile = tmp_path / "sockd.pid"
    server = sockd(args=["--pidfile", str(pidfile)])
    wait_until(pidfile.exists, 10, "the pid file")
    path = scoreboard.path_for(server.pid)
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0
    with open_session(server.port, echo_server, b"carol"):
        def busy():
            done = status(pidfile, "--json")
            assert done.returncode == 0, done.stderr
            data = json.loads(done.stdout)
            return data["sessions"] and data
        data = wait_until(busy, 10, "a busy worker in the status")
        assert data["master"]["pid"] == server.pid
        assert data["workers"] >= 2 and data["busy"] == 1 and data["idle"] >= 1
        [session] = data["sessions"]
        assert session["state"] == "relaying" and session["user"] == "carol"
        assert session["client"].startswith("127.0.0.1")
        assert session["command"] == "connect"
        assert session["destination"].startswith(f"127.0.0.1:{echo_server} (")
        assert session["pid"] in server.children() and session["age"] >= 0
        text = status(pidfile)
        assert text.returncode == 0
        lines = text.stdout.splitlines()
        assert lines[0].startswith("sockd ") and f"master pid {server.pid}" in lines[0]
        assert "1 busy" in lines[1] and "sessions served" in lines[1]
        assert lines[3].split()[:3] == ["PID", "STATE", "AGE"]
        row = lines[4].split()
        assert row[0] == str(session["pid"]) and row[1] == "relaying" and "carol" in row
    server.signal(15)
    assert server.proc.wait(15) == 0
    assert not os.path.exists(path)     # the master removes its file
    done = status(pidfile)
    assert done.returncode == 3 and "not running" in done.stderr


def test_status_needs_read_access_to_the_scoreboard(sockd, tmp_path):
    pidfile = tmp_path / "sockd.pid"
    server = sockd(args=["--pidfile", str(pidfile)])
    wait_until(pidfile.exists, 10, "the pid file")
    public = tempfile.mkdtemp(prefix="sockd-status-")     # a pid file nobody can read
    try:
        os.chmod(public, 0o755)
        copy = os.path.join(public, "sockd.pid")
        shutil.copy(pidfile, copy)
        os.chmod(copy, 0o644)
        done = status(copy, groups="")
        assert done.returncode == 1, done.stderr
        assert f"cannot read the scoreboard of pid {server.pid}" in done.stderr
        assert "Permission denied" in done.stderr
        done = status(copy, "--json", groups="adm")     # the readers' group
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["master"]["pid"] == server.pid
    finally:
        shutil.rmtree(public)


def test_status_without_a_server(tmp_path):
    done = status(tmp_path / "none.pid")
    assert done.returncode == 3
    assert done.stderr.startswith("sockd: not running (")
