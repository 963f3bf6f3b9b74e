"""Holes in the command line, the files and the hooks (issue 6), each driven through a real sockd.

inetd mode and --user, hook values that would climb out of a directory, pid and log files that
are symbolic links, configuration files that are not regular files or too big, control bytes in
error messages, log rotation on HUP; and the start-up paths nothing else exercises: -f without
--log, detaching, --pidfile, repeated -l, the default listener, --inetd given explicitly,
systemd LISTEN_FDS, route and password errors under -t, HUP re-reading the password file.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from test_syslog import rsyslog  # noqa: F401 - the real rsyslogd fixture

from conftest import LOOPBACK_RULES, ROOT, free_port, wait_until
from sockd.passwords import ScryptHash

pytestmark = pytest.mark.integration

SOCKD = [sys.executable, "-m", "sockd"]
NOBODY = 65534


def run_sockd(*args, timeout: float = 20, **kw) -> subprocess.CompletedProcess:
    """sockd run to its end, bounded in time."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("cwd", ROOT)
    if kw["cwd"] != ROOT:       # the sockd package still comes from ROOT
        path = os.environ.get("PYTHONPATH")
        kw.setdefault("env", dict(os.environ, PYTHONPATH=f"{ROOT}:{path}" if path else str(ROOT)))
    return subprocess.run([*SOCKD, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture
def conf(tmp_path) -> Path:
    path = tmp_path / "c.conf"
    path.write_text(LOOPBACK_RULES)
    return path


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def socks4_connect(port: int, dst_port: int, user: bytes = b"tester",
                   host: str = "127.0.0.1") -> socket.socket:
    """A granted SOCKS 4 CONNECT to 127.0.0.1:dst_port through the sockd at host:port."""
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"\x04\x01" + struct.pack(">H", dst_port) + socket.inet_aton("127.0.0.1")
              + user + b"\x00")
    reply = recv_exactly(s, 8)
    assert reply[:2] == b"\x00\x5a", reply
    return s


def echo_through(port: int, echo_port: int, payload: bytes = b"ping", **kw) -> None:
    with socks4_connect(port, echo_port, **kw) as s:
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload


def socks5_password_status(port: int, user: bytes, password: bytes) -> int:
    """The RFC 1929 status byte sockd answers to user:password (0 is success)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x05\x01\x02")
        assert recv_exactly(s, 2) == b"\x05\x02"
        s.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        reply = recv_exactly(s, 2)
        assert reply[:1] == b"\x01", reply
        return reply[1]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):    # gone between the open and the read
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def uid_of(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]


class Lines:
    """The lines a process writes to a pipe, read by a thread (so the pipe never fills)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pattern: str, timeout: float = 10) -> str:
        return wait_until(lambda: next((x for x in self.lines if re.search(pattern, x)), None),
                          timeout, f"/{pattern}/ in {self.lines}")


@contextlib.contextmanager
def running(argv: list[str], **kw):
    """A process in its own session, killed with its group at the end."""
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def inetd_connection():
    """(client, server end) of a TCP connection on loopback, as inetd would hand it over."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        conn, _ = listener.accept()
    return client, conn


# -- inetd mode (item 1) ------------------------------------------------------------------------


@pytest.fixture
def stdin_of_kind(request, tmp_path):
    """Standard input for sockd --inetd that is not a client inetd accepted."""
    kind = request.param
    with contextlib.ExitStack() as stack:
        if kind == "listening TCP socket":      # what inetd `wait` mode passes
            yield kind, stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        elif kind == "socketpair end":
            a, b = socket.socketpair()
            stack.enter_context(a)
            stack.enter_context(b)
            yield kind, a
        elif kind == "UNIX stream socket":
            server = stack.enter_context(socket.socket(socket.AF_UNIX))
            server.bind(str(tmp_path / "unix.sock"))
            server.listen()
            client = stack.enter_context(socket.socket(socket.AF_UNIX))
            client.connect(str(tmp_path / "unix.sock"))
            yield kind, client
        elif kind == "unconnected TCP socket":
            yield kind, stack.enter_context(socket.socket())
        elif kind == "/dev/null":
            yield kind, stack.enter_context(open(os.devnull))
        else:
            raise AssertionError(kind)


@pytest.mark.parametrize("stdin_of_kind", ["listening TCP socket", "socketpair end",
                                           "UNIX stream socket", "unconnected TCP socket",
                                           "/dev/null"], indirect=True)
def test_inetd_refuses_what_is_not_a_tcp_connection(stdin_of_kind, conf, tmp_path):
    kind, stdin = stdin_of_kind
    log = tmp_path / "inetd.log"
    out = run_sockd("--inetd", "-c", conf, "--log", log, stdin=stdin)
    assert out.returncode == 2, out
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("sockd: --inetd: standard input is "), out.stderr
    assert "Traceback" not in out.stderr + log.read_text()
    expected = {"listening TCP socket": "a listening socket", "socketpair end": "a UNIX socket",
                "UNIX stream socket": "a UNIX socket",
                "unconnected TCP socket": "not connected", "/dev/null": "not a socket"}[kind]
    assert expected in out.stderr
    assert f"error -- {out.stderr[len('sockd: '):]}" in log.read_text()


def test_inetd_refuses_a_closed_standard_input(conf, tmp_path):
    out = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *SOCKD, "--inetd", "-c", str(conf),
                          "--log", str(tmp_path / "l.log")], cwd=ROOT, capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 2, out
    # (The first file sockd opens may take descriptor 0: then it is "not a socket".)
    assert re.fullmatch(r"sockd: --inetd: standard input is (closed|not a socket)\n", out.stderr)


def test_inetd_session_and_hooks_run_as_the_user_given(tmp_path, echo_server):
    # Where nobody may write: tmp_path's parents are root's alone.
    shared = Path(tempfile.mkdtemp(prefix="sockd-inetd-", dir="/tmp"))
    try:
        shared.chmod(0o777)
        conf = tmp_path / "c.conf"
        conf.write_text(f"permit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0 : id -u > {shared}/uid\n"
                        "deny 0.0.0.0 0.0.0.0\n")
        conf.chmod(0o600)   # read as root, before the switch
        log = tmp_path / "inetd.log"
        client, conn = inetd_connection()
        with client, running([*SOCKD, "--inetd", "-c", str(conf), "--log", str(log),
                              "--user", "nobody"], stdin=conn, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE) as proc:
            conn.close()
            client.sendall(b"\x04\x01" + struct.pack(">H", echo_server)
                           + socket.inet_aton("127.0.0.1") + b"inetd-user\x00")
            assert recv_exactly(client, 8)[:2] == b"\x00\x5a"
            client.sendall(b"as nobody")
            assert recv_exactly(client, 9) == b"as nobody"
            assert uid_of(proc.pid) == [str(NOBODY)] * 4     # the session itself
            client.close()
            assert proc.wait(15) == 0, proc.stderr.read()
        assert (shared / "uid").read_text().strip() == str(NOBODY)   # and its hook
        assert re.search(r"terminated -- Connect from inetd-user\(unknown\)@127\.0\.0\.1",
                         log.read_text())
    finally:
        shutil.rmtree(shared)


def test_inetd_with_an_unknown_user_exits_3(conf, tmp_path):
    client, conn = inetd_connection()
    with client, conn:
        out = run_sockd("--inetd", "-c", conf, "--log", tmp_path / "l.log", "--user",
                        "no-such-user-here", stdin=conn)
    assert out.returncode == 3, out
    assert out.stderr == "sockd: no such user: no-such-user-here\n"


def test_explicit_inetd_serves_a_connected_tcp_socket(conf, tmp_path, echo_server):
    log = tmp_path / "inetd.log"
    client, conn = inetd_connection()
    with client, running([*SOCKD, "--inetd", "-c", str(conf), "--log", str(log)], stdin=conn,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        conn.close()
        client.sendall(b"\x05\x01\x00")
        assert recv_exactly(client, 2) == b"\x05\x00"
        client.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                       + struct.pack(">H", echo_server))
        assert recv_exactly(client, 10)[:2] == b"\x05\x00"
        client.sendall(b"explicit")
        assert recv_exactly(client, 8) == b"explicit"
        client.close()
        assert proc.wait(15) == 0, proc.stderr.read()
    assert re.search(r"terminated -- Connect from -\(unknown\)@127\.0\.0\.1", log.read_text())


def test_without_inetd_a_socketpair_on_stdin_does_not_mean_inetd(conf, tmp_path, echo_server):
    port = free_port()
    log = tmp_path / "s.log"
    a, b = socket.socketpair()
    with a, b, running([*SOCKD, "-f", "--log", str(log), "-c", str(conf),
                        "-l", f"127.0.0.1:{port}", "--min-spare", "1", "--max-spare", "2"],
                       stdin=a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        wait_until(lambda: "started -- " in log.read_text() if log.exists() else False, 15,
                   "the standalone server to start")
        wait_until(lambda: _serves(port, echo_server), 15, "the standalone server to serve")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def _serves(port: int, echo_port: int) -> bool:
    try:
        echo_through(port, echo_port)
    except OSError:
        return False
    return True


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


# -- pid file and log file (items 4 and 7) -------------------------------------------------------


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_as_pid_file_is_refused(conf, tmp_path, detach, dangling):
    target = tmp_path / "precious"
    if not dangling:
        target.write_text("precious\n")
    link = tmp_path / "sockd.pid"
    link.symlink_to(target)
    out = run_sockd(*([] if detach else ["-f"]), "--log", tmp_path / "l.log", "-c", conf,
                    "-l", f"127.0.0.1:{free_port()}", "--pidfile", link)
    assert out.returncode == 1, out
    assert out.stderr == (f"sockd: cannot write the pid file {link}: "
                          "a symbolic link (not followed)\n")
    assert link.is_symlink()
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == "precious\n"
    assert "Traceback" not in (tmp_path / "l.log").read_text()


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_as_log_file_is_refused(conf, tmp_path, dangling):
    target = tmp_path / "precious"
    if not dangling:
        target.write_text("precious\n")
    link = tmp_path / "sockd.log"
    link.symlink_to(target)
    out = run_sockd("-f", "--log", link, "-c", conf, "-l", f"127.0.0.1:{free_port()}")
    assert out.returncode == 2, out
    assert out.stderr == f"sockd: cannot log to {link}: a symbolic link (not followed)\n"
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == "precious\n"


def test_a_pid_file_that_cannot_be_created_fails_before_detaching(conf, tmp_path):
    pidfile = tmp_path / "no-such-dir" / "sockd.pid"
    port = free_port()
    out = run_sockd("--log", tmp_path / "l.log", "-c", conf, "-l", f"127.0.0.1:{port}",
                    "--pidfile", pidfile)
    assert out.returncode == 1, out
    assert out.stderr == (f"sockd: cannot write the pid file {pidfile}: "
                          "No such file or directory\n")
    assert "error -- cannot write the pid file" in (tmp_path / "l.log").read_text()
    with socket.socket() as s:      # nothing was left behind holding the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def _session(pid) -> str:
    """The session field of /proc/PID/stat, as this /proc numbers it (0: led from outside it)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3]


def test_detaching_with_a_pid_file(conf, tmp_path, echo_server):
    pidfile = tmp_path / "run" / "sockd.pid"
    pidfile.parent.mkdir()
    log = tmp_path / "d.log"
    port = free_port()
    out = run_sockd("--log", log, "-c", conf, "-l", f"127.0.0.1:{port}", "--pidfile", pidfile,
                    "--min-spare", "1", "--max-spare", "2")
    assert out.returncode == 0, out     # the starting command returned: the daemon runs on
    pid = int(pidfile.read_text())
    try:
        assert oct(pidfile.stat().st_mode & 0o777) == oct(0o644)
        assert alive(pid)
        wait_until(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(
            b"sockd: master"), 10, "the pid file to name the master")
        wait_until(lambda: "started -- sockd " in log.read_text(), 10, "started")
        assert re.search(rf"sockd\[{pid}\]: started -- sockd .*, pid {pid}, ", log.read_text())
        assert _session(pid) not in {"0", _session("self")}     # a session of its own
        wait_until(lambda: _serves(port, echo_server), 15, "the daemon to serve")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 15, "the daemon to stop")
        wait_until(lambda: not pidfile.exists(), 5, "the pid file to go")
        assert "stopped -- every session finished" in log.read_text()
    finally:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_detaching_with_relative_paths_reloads_on_hup(tmp_path, echo_server):
    # The daemon works in /: files named relative to where it was started must still be found.
    (tmp_path / "c.conf").write_text(LOOPBACK_RULES)
    port = free_port()
    out = run_sockd("--log", "d.log", "-c", "c.conf", "-l", f"127.0.0.1:{port}",
                    "--pidfile", "sockd.pid", "--min-spare", "1", "--max-spare", "2",
                    cwd=tmp_path)
    assert out.returncode == 0, out
    pid = int((tmp_path / "sockd.pid").read_text())
    log = tmp_path / "d.log"
    try:
        wait_until(lambda: _serves(port, echo_server), 15, "the daemon to serve")
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "reloaded -- generation 2" in log.read_text(), 10, "the reload")
        assert "reload failed" not in log.read_text()
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 15, "the daemon to stop")
        assert not (tmp_path / "sockd.pid").exists()
    finally:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_the_log_is_reopened_on_hup(sockd, echo_server):
    server = sockd()
    rotated = server.log_path.with_name(server.log_path.name + ".1")
    echo_through(server.port, echo_server, user=b"before")
    server.wait_log(r"terminated -- Connect from before")
    before = set(server.children())
    server.log_path.rename(rotated)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")       # in a new file at the old path
    assert "reloaded --" not in rotated.read_text()
    # The old generation leaves; a session served by the new one logs to the new file.
    wait_until(lambda: not before & set(server.children()) and server.idle_workers() >= 1, 15,
               "the old workers to leave")
    echo_through(server.port, echo_server, user=b"after")
    server.wait_log(r"terminated -- Connect from after")
    assert "from after" not in rotated.read_text()
    assert "from before" in rotated.read_text()
    assert oct(server.log_path.stat().st_mode & 0o777) == oct(0o644)


# -- configuration files that are not regular files (item 5) -------------------------------------


KINDS = ["/dev/zero", "FIFO", "directory", "oversize"]


def not_regular(kind: str, path: Path) -> str:
    """Make *path* a configuration file of this kind; returns the error sockd must give."""
    if kind == "/dev/zero":
        path.symlink_to("/dev/zero")    # a linked file is followed: the device is refused
        return f"{path}: not a regular file (a character device)"
    if kind == "FIFO":
        os.mkfifo(path)
        return f"{path}: not a regular file (a FIFO)"
    if kind == "directory":
        path.mkdir()
        return f"{path}: not a regular file (a directory)"
    with open(path, "wb") as f:         # sparse: 16 MiB + 1 that cost no disk
        f.write(LOOPBACK_RULES.encode())
        f.truncate(16 * 1024 * 1024 + 1)
    return f"{path}: larger than 16777216 bytes"


@pytest.mark.parametrize("kind", KINDS)
def test_a_rules_file_that_is_not_a_regular_file_at_start(kind, tmp_path):
    path = tmp_path / "sockd.conf"
    message = not_regular(kind, path)
    out = run_sockd("-f", "--log", "stderr", "-c", path, "-l", f"127.0.0.1:{free_port()}",
                    timeout=15)
    assert out.returncode == 1, out
    assert out.stderr == f"sockd: {message}\n"


@pytest.mark.parametrize("kind", KINDS)
def test_a_rules_file_that_is_not_a_regular_file_under_check(kind, tmp_path):
    path = tmp_path / "sockd.conf"
    message = not_regular(kind, path)
    out = run_sockd("-t", "-c", path, timeout=15)
    assert out.returncode == 1, out
    assert out.stderr == f"{message}\n"


@pytest.mark.parametrize("option", ["--route", "--passwd"])
@pytest.mark.parametrize("kind", ["/dev/zero", "FIFO"])
def test_route_and_password_files_must_be_regular_files_too(option, kind, conf, tmp_path):
    path = tmp_path / "file"
    message = not_regular(kind, path)
    out = run_sockd("-t", "-c", conf, option, path, timeout=15)
    assert (out.returncode, out.stderr) == (1, f"{message}\n")
    out = run_sockd("-f", "--log", "stderr", "-c", conf, option, path,
                    "-l", f"127.0.0.1:{free_port()}", timeout=15)
    assert (out.returncode, out.stderr) == (1, f"sockd: {message}\n")


@pytest.mark.parametrize("kind", KINDS)
def test_a_reload_with_a_rules_file_that_is_not_a_regular_file_keeps_the_rules(
        kind, sockd, echo_server):
    server = sockd()
    server.conf.unlink()
    message = not_regular(kind, server.conf)
    server.signal(signal.SIGHUP)
    server.wait_log(re.escape(f"error -- reload failed, the rules in force stay: {message}"))
    assert not server.lines(r"reloaded -- ")
    echo_through(server.port, echo_server)     # the master is not stuck, the rules stay
    server.signal(signal.SIGUSR1)              # and it still answers signals
    server.wait_log(r"status -- \d+ workers")


# -- escaped configuration errors (item 6) -------------------------------------------------------


HOSTILE_RULES = b"permit\x1b[2J\x07\xff\xfe 127.0.0.0/8\n"
ESCAPED = "unknown action 'permit\\x1b[2J\\x07\\xff\\xfe' (expected allow, permit or deny)"


def test_a_hostile_token_is_escaped_under_check(tmp_path):
    path = tmp_path / "sockd.conf"
    path.write_bytes(HOSTILE_RULES)
    out = run_sockd("-t", "-c", path)
    assert out.returncode == 1
    assert out.stderr == f"{path}:1: {ESCAPED}\n"


def test_a_hostile_token_is_escaped_at_start(tmp_path):
    path = tmp_path / "sockd.conf"
    path.write_bytes(HOSTILE_RULES)
    log = tmp_path / "l.log"
    out = subprocess.run([*SOCKD, "-f", "--log", str(log), "-c", str(path),
                          "-l", f"127.0.0.1:{free_port()}"], cwd=ROOT, capture_output=True,
                         timeout=20, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert out.stderr == f"sockd: {path}:1: {ESCAPED}\n".encode()
    assert f"error -- {path}:1: {ESCAPED}\n".encode() in log.read_bytes()


def test_a_hostile_file_name_is_escaped(tmp_path):
    path = tmp_path / "bad\x1bname\nx.conf"
    path.write_text("permti 127.0.0.0/8\n")
    out = run_sockd("-t", "-c", path)
    assert out.returncode == 1
    assert out.stderr == (f"{tmp_path}/bad\\x1bname\\x0ax.conf:1: unknown action 'permti' "
                          "(expected allow, permit or deny)\n")


def test_a_hostile_token_reaches_syslog_escaped(rsyslog, tmp_path):  # noqa: F811
    sock, messages = rsyslog
    path = tmp_path / "sockd.conf"
    path.write_bytes(HOSTILE_RULES)
    out = run_sockd("-f", "--log", "syslog", "--syslog-address", sock, "-c", path,
                    "-l", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    line = wait_until(lambda: messages.exists() and next(
        (x for x in messages.read_text().splitlines() if "error -- " in x), None), 10,
        "the error in syslog")
    assert line.endswith(f"error -- {path}:1: {ESCAPED}"), line
    assert line.startswith("daemon.err sockd[")


def test_a_hostile_token_on_reload_reaches_syslog(rsyslog, sockd, tmp_path):  # noqa: F811
    sock, messages = rsyslog
    server = sockd(args=["--log", "syslog", "--syslog-address", str(sock)])
    server.conf.write_bytes(HOSTILE_RULES)
    os.kill(server.pid, signal.SIGHUP)
    line = wait_until(lambda: messages.exists() and next(
        (x for x in messages.read_text().splitlines() if "reload failed" in x), None), 10,
        "the reload error in syslog")
    assert line.endswith(f"error -- reload failed, the rules in force stay: "
                         f"{server.conf}:1: {ESCAPED}"), line


# -- start-up paths nothing else exercised (item 8) ----------------------------------------------


def test_foreground_without_log_logs_to_stderr(conf, echo_server):
    port = free_port()
    with running([*SOCKD, "-f", "-c", str(conf), "-l", f"127.0.0.1:{port}", "--min-spare", "1",
                  "--max-spare", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                 text=True) as proc:
        stderr = Lines(proc.stderr)
        stderr.wait(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d sockd\[{proc.pid}\]: started -- sockd "
                    rf".*listening on 127\.0\.0\.1:{port}$")
        wait_until(lambda: _serves(port, echo_server), 15, "sockd to serve")
        stderr.wait(r"sockd\[\d+\]: terminated -- Connect from tester\(unknown\)@127\.0\.0\.1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        stderr.thread.join(10)
        stderr.wait(r"stopped -- every session finished")
        assert not any("Traceback" in line for line in stderr.lines)


# Loopback clients of both families to IPv4 loopback destinations, nothing else.
BOTH_FAMILIES_RULES = LOOPBACK_RULES.replace("permit ::1/128 ::1/128",
                                             "permit ::1/128 ::1/128\npermit ::1/128 127.0.0.0/8")


def test_repeated_listen_options_all_serve(sockd, echo_server):
    ports = [free_port(), free_port("::1")]
    server = sockd(rules=BOTH_FAMILIES_RULES,
                   args=["-l", f"127.0.0.1:{ports[0]}", "-l", f"[::1]:{ports[1]}"])
    server.wait_log(rf"started -- .*listening on 127\.0\.0\.1:{ports[0]}, \[::1\]:{ports[1]}$")
    echo_through(ports[0], echo_server, user=b"four")
    echo_through(ports[1], echo_server, user=b"six", host="::1")
    server.wait_log(r"terminated -- Connect from four\(unknown\)@127\.0\.0\.1")
    server.wait_log(r"terminated -- Connect from six\(unknown\)@\[::1\]:\d+ ")


def only_loopback_here() -> None:
    """The default listener binds every interface: run it only where lo is the only one."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10,
                           check=True).stdout.splitlines()
    names = [line.split(":")[1].strip().split("@")[0] for line in links]
    assert names == ["lo"], (f"not inside a private network namespace (interfaces {names}): "
                             "run the tests with `make test` (unshare --net)")


def test_the_default_listener_is_every_interface_on_the_socks_port(tmp_path, echo_server):
    only_loopback_here()
    conf = tmp_path / "c.conf"
    conf.write_text(BOTH_FAMILIES_RULES)
    assert socket.getservbyname("socks", "tcp") == 1080
    log = tmp_path / "d.log"
    with running([*SOCKD, "-f", "--log", str(log), "-c", str(conf), "--min-spare", "1",
                  "--max-spare", "2"], stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE) as proc:
        wait_until(lambda: log.exists() and "started -- " in log.read_text(), 15, "start")
        assert re.search(r"started -- .*listening on \[::\]:1080$", log.read_text(), re.M)
        wait_until(lambda: _serves(1080, echo_server), 15, "sockd to serve on 1080")
        echo_through(1080, echo_server, host="::1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


# What systemd does before it runs the service: the socket on descriptor 3, LISTEN_PID the pid
# of the program (exec keeps it), LISTEN_FDS the count.
SYSTEMD_EXEC = """\
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
if fd != 3:
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, "-m", "sockd", *sys.argv[2:]])
"""


def systemd_argv(fd: int, *args) -> list[str]:
    """sockd started as systemd does, with *fd* as its one listener."""
    return [sys.executable, "-c", SYSTEMD_EXEC, str(fd), *map(str, args)]


def test_systemd_socket_activation(tmp_path, echo_server):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        fd = os.dup(listener.fileno())
    ignored = free_port()
    log = tmp_path / "s.log"
    conf = tmp_path / "c.conf"
    conf.write_text(f"permit 127.0.0.0/8 127.0.0.0/8 : env > {tmp_path}/hook.env\n")
    with running(systemd_argv(fd, "-f", "--log", log, "-c", conf, "-l", f"127.0.0.1:{ignored}",
                              "--min-spare", "1", "--max-spare", "2"),
                 pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        os.close(fd)        # sockd's copy is the only one left
        wait_until(lambda: log.exists() and "started -- " in log.read_text(), 15, "start")
        assert re.search(rf"started -- sockd .*, pid {proc.pid}, listening on "
                         rf"127\.0\.0\.1:{port}$", log.read_text(), re.M)
        echo_through(port, echo_server)
        with pytest.raises(ConnectionRefusedError):     # -l is ignored under systemd
            socket.create_connection(("127.0.0.1", ignored), timeout=5).close()
        env = wait_until(lambda: (tmp_path / "hook.env").exists()
                         and (tmp_path / "hook.env").read_text(), 10, "the hook's environment")
        assert "PATH=" in env and "LISTEN_" not in env
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_systemd_passing_no_socket_is_an_error_not_a_traceback(conf, tmp_path):
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        out = subprocess.run(systemd_argv(fd, "-f", "--log", "stderr", "-c", conf), cwd=ROOT,
                             pass_fds=(fd,), capture_output=True, text=True, timeout=20)
    finally:
        os.close(fd)
    assert out.returncode == 3, out
    assert out.stderr == "sockd: systemd passed descriptor 3, which is not a listening socket\n"


def test_route_and_password_errors_under_check(conf, tmp_path):
    routes = tmp_path / "sockd.route"
    routes.write_text("# interface destination\n127.0.0.1 127.0.0.0/8\n10.0.0.1\n")
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hashed(b'secret')}\nbob\n")
    out = run_sockd("-t", "-c", conf, "--route", routes, "--passwd", passwd)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"{routes}:3: interface address '10.0.0.1' has no destination",
        f"{passwd}:2: expected user:$scrypt$... (see sockpasswd(8))",
    ]
    out = run_sockd("-f", "--log", "stderr", "-c", conf, "--passwd", passwd,
                    "-l", f"127.0.0.1:{free_port()}")
    assert (out.returncode, out.stderr) == \
        (1, f"sockd: {passwd}:2: expected user:$scrypt$... (see sockpasswd(8))\n")
    out = run_sockd("-f", "--log", "stderr", "-c", conf, "--route", routes,
                    "-l", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr == f"sockd: {routes}:3: interface address '10.0.0.1' has no destination\n"


def hashed(password: bytes) -> str:
    """A password file's hash (cheap parameters: these tests check files, not hashes)."""
    return str(ScryptHash.make(password, ln=4))


def test_hup_rereads_the_password_file(sockd, tmp_path):
    passwd = tmp_path / "passwd"
    alice, bob = f"alice:{hashed(b'secret')}\n", f"bob:{hashed(b'hunter2')}\n"
    passwd.write_text(alice)
    server = sockd(args=["--passwd", str(passwd)])
    assert socks5_password_status(server.port, b"alice", b"secret") == 0
    assert socks5_password_status(server.port, b"bob", b"hunter2") != 0
    passwd.write_text(alice + bob)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")
    # A worker of the old generation may still take one last client: poll, bounded.
    wait_until(lambda: socks5_password_status(server.port, b"bob", b"hunter2") == 0, 10,
               "bob to be let in after the reload")
    passwd.write_text(bob)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 3")
    wait_until(lambda: socks5_password_status(server.port, b"alice", b"secret") != 0, 10,
               "alice to be refused after the second reload")
