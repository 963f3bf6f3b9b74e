"""The client programs against real servers on loopback: rfinger and rwhois against small
servers started here, rftp against pyftpdlib (passive and active, sha256-checked, FASCIST lines
through a real rsyslogd, the progress bar through a pty), rtelnet through a pty against
inetutils telnetd and a line service; and each program's failure path."""

import contextlib
import hashlib
import os
import pty
import pwd
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

from conftest import free_port, require, serve, serve_ftp, wait_until

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


# -- rftp against pyftpdlib --------------------------------------------------------------------


@pytest.fixture
def ftp_server(tmp_path):
    root = tmp_path / "ftp"
    with serve_ftp(root) as port:
        yield root, port


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def syslog_lines(out: Path, tag: str = "rftp[") -> list[str]:
    text = out.read_text(errors="replace") if out.exists() else ""
    return [line for line in text.splitlines() if tag in line]


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_rftp_binary_get_and_put(ftp_server, tmp_path, rsyslog, mode):  # noqa: F811
    root, port = ftp_server
    sock, out = rsyslog
    (root / "down.bin").write_bytes(os.urandom(700_000) + b"\r\n\n\r\x00\xff")
    local = tmp_path / "local"
    local.mkdir()
    (local / "up.bin").write_bytes(os.urandom(500_000) + b"\n\r\n")
    script = ("user user secret\n"
              + ("passive\n" if mode == "active" else "")
              + "get down.bin\nput up.bin\nls\nbye\n")
    result = run("rftp", "-n", "--syslog-address", str(sock), "127.0.0.1", str(port),
                 input=script.encode(), cwd=local)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert sha256(local / "down.bin") == sha256(root / "down.bin")
    assert sha256(root / "up.bin") == sha256(local / "up.bin")
    assert b"down.bin" in result.stdout and b"up.bin" in result.stdout   # the ls
    if mode == "active":
        assert b"Passive mode: off." in result.stdout
    lines = wait_until(lambda: len(syslog_lines(out)) >= 2 and syslog_lines(out), 15,
                       "the FASCIST lines")
    user = pwd.getpwuid(os.getuid()).pw_name
    assert re.fullmatch(rf"daemon\.info rftp\[\d+\]: transfer user={user} host=127\.0\.0\.1 "
                        r"direction=get file=down\.bin bytes=700006 status=complete",
                        lines[0]), lines
    assert lines[1].endswith("direction=put file=up.bin bytes=500003 status=complete")


def test_rftp_ascii_mode_converts_line_ends(ftp_server, tmp_path):
    root, port = ftp_server
    (root / "text.txt").write_bytes(b"one\ntwo\n")     # sent as CR LF in ASCII
    local = tmp_path / "local"
    local.mkdir()
    (local / "mine.txt").write_bytes(b"a\nb\n")
    result = run("rftp", "-n", "--no-fascist", "127.0.0.1", str(port), cwd=local,
                 input=b"user user secret\nascii\nget text.txt\nput mine.txt\nquit\n")
    assert result.returncode == 0, result.stdout
    assert (local / "text.txt").read_bytes() == b"one\ntwo\n"
    assert (root / "mine.txt").read_bytes() == b"a\nb\n"  # sent as CR LF, stored as LF


def test_rftp_fascist_escapes_names_and_can_be_turned_off(ftp_server, tmp_path, rsyslog):  # noqa: F811
    root, port = ftp_server
    sock, out = rsyslog
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.bin").write_bytes(b"x" * 10)
    quiet = run("rftp", "-n", "--no-fascist", "--syslog-address", str(sock), "127.0.0.1",
                str(port), cwd=local, input=b"user user secret\nput a.bin quiet.bin\nbye\n")
    assert quiet.returncode == 0
    loud = run("rftp", "-n", "--fascist", "127.0.0.1", str(port), cwd=local,
               environ=env(RFTP_SYSLOG=str(sock)),
               input=b'user user secret\nput a.bin "odd name\x1b[2J.bin"\nbye\n')
    assert loud.returncode == 0, loud.stdout
    assert (root / "odd name\x1b[2J.bin").read_bytes() == b"x" * 10
    line = wait_until(lambda: syslog_lines(out), 15, "the FASCIST line")[0]
    assert line.endswith(r"direction=put file=odd\x20name\x1b[2J.bin bytes=10 status=complete")
    assert len(syslog_lines(out)) == 1      # nothing from --no-fascist


def test_rftp_netrc_login_mget_and_failure_status(ftp_server, tmp_path):
    root, port = ftp_server
    for name in ("m1.dat", "m2.dat"):
        (root / name).write_bytes(name.encode() * 100)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    (home / ".netrc").chmod(0o600)
    local = tmp_path / "local"
    local.mkdir()
    result = run("rftp", "-i", "--no-fascist", "127.0.0.1", str(port), cwd=local,
                 environ=env(HOME=str(home)), input=b"pwd\nmget m*.dat\nget missing\nbye\n")
    assert b'"/"' in result.stdout
    assert (local / "m1.dat").read_bytes() == (root / "m1.dat").read_bytes()
    assert (local / "m2.dat").read_bytes() == (root / "m2.dat").read_bytes()
    assert re.search(rb"^550 .*\n", result.stdout, re.M)
    assert result.returncode == 1               # the failed get


def test_rftp_wrong_password(ftp_server, tmp_path):
    _, port = ftp_server
    result = run("rftp", "-n", "--no-fascist", "127.0.0.1", str(port), cwd=tmp_path,
                 input=b"user user wrong\nbye\n")
    assert b"Login failed." in result.stdout
    assert result.returncode == 1


def test_rftp_on_a_terminal_progress_bar_and_hash_marks(ftp_server, tmp_path, on_pty):
    root, port = ftp_server
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    local = tmp_path / "local"
    local.mkdir()
    p = on_pty("rftp", "-n", "--no-fascist", "127.0.0.1", str(port), cwd=local)
    p.expect(rb"220 ")
    p.expect(rb"ftp> ")
    p.type(b"user user secret\r")
    p.expect(rb"230 (?s:.*)ftp> ")
    p.type(b"get big.bin\r")
    p.expect(rb"100% \|#+\| +2\.9 MiB +[\d.]+ [KMG]?i?B/s +\d\d:\d\d")
    p.expect(rb"3000000 bytes received in [\d.]+ secs")
    assert sha256(local / "big.bin") == sha256(root / "big.bin")
    p.type(b"hash\r")
    p.expect(rb"Hash mark printing on \(1024 bytes/hash mark\)")
    p.type(b"get big.bin copy.bin\r")
    p.expect(rb"#{2900,}\r\n")
    p.type(b"bye\r")
    assert p.wait() == 0


# -- rtelnet ----------------------------------------------------------------------------------


@pytest.fixture
def telnetd(tmp_path):
    """inetutils telnetd for one connection, inetd-style (the connection on its stdin and
    stdout), its login replaced by /bin/cat (-E); yields the port."""
    program = require("telnetd") if os.path.exists("/usr/sbin/telnetd") is False \
        else "/usr/sbin/telnetd"
    port = free_port()
    wrapper = ("import os, socket, sys\n"
               "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
               "print('ready', flush=True)\n"
               "s.settimeout(30)\n"
               "c, _ = s.accept()\n"
               "s.close()\n"
               "os.dup2(c.fileno(), 0); os.dup2(c.fileno(), 1)\n"
               "os.execv(sys.argv[2], ['telnetd', '-h', '-E', '/bin/cat'])\n")
    proc = subprocess.Popen([sys.executable, "-c", wrapper, str(port), program],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    assert proc.stdout.readline() == b"ready\n"
    _TELNETD[port] = proc.pid
    yield port
    del _TELNETD[port]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


_TELNETD: dict[int, int] = {}     # port -> the pid of the telnetd serving it


def wait_for_cat(port: int) -> None:
    """Until telnetd (on *port*) has started its login program, cat: it runs on the pty
    as its controlling terminal from then on, so the pty's interrupt character reaches it.
    (Before that, the interrupt would find no process to signal and flush what was typed.)"""
    def cat_running() -> bool:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.split(")")[-1]
                if name == "cat" and int(fields.split()[1]) == _TELNETD[port]:
                    return True
        return False
    wait_until(cat_running, 15, "telnetd's cat")


def test_rtelnet_with_telnetd_character_mode_escape_and_quit(telnetd, on_pty):
    p = on_pty("rtelnet", "127.0.0.1", str(telnetd))
    p.expect(rb"Escape character is '\^\]'")
    p.type(b"hello there\r")
    p.expect(rb"hello there\r\n(?s:.*)hello there\r\n")     # telnetd's echo, then cat's line
    p.type(b"\x1d")
    p.expect(rb"telnet> ")
    p.type(b"status\n")
    p.expect(rb"Operating character at a time\.\r\n")
    p.expect(rb"Options: remote ECHO, remote SUPPRESS-GO-AHEAD, local TERMINAL-TYPE, "
             rb"local NAWS")
    p.type(b"\x1d")
    p.expect(rb"telnet> ")
    p.type(b"quit\n")
    assert p.wait() == 0
    assert b"Connection closed." in p.seen


def test_rtelnet_send_ip_interrupts_the_remote_program(telnetd, on_pty):
    p = on_pty("rtelnet", "127.0.0.1", str(telnetd))
    p.expect(rb"Escape character is '\^\]'")
    # The echo below can be the terminal's own and the pty's, with cat not yet started:
    # an interrupt sent then would be lost (under load, 3 runs in 20 failed so).
    wait_for_cat(telnetd)
    p.type(b"still here\r")
    p.expect(rb"still here\r\n(?s:.*)still here\r\n")
    p.type(b"\x1d")
    p.expect(rb"telnet> ")
    p.type(b"send ip\n")        # IAC IP, the Synch: telnetd interrupts cat, the session ends
    assert p.wait() == 0, p.seen    # even when telnetd is gone before the Synch is sent
    assert b"Connection closed by foreign host." in p.seen


def test_rtelnet_line_service_on_a_terminal(echo_server, on_pty):
    p = on_pty("rtelnet", "127.0.0.1", str(echo_server))
    p.expect(rb"Escape character")
    p.type(b"one line\n")           # line by line: our terminal echoes, the service answers
    p.expect(rb"one line\r\n(?s:.*)one line\r+\n")   # the service's CR LF, through ONLCR
    p.type(b"\x1d")                 # ends the read as a newline would (VEOL)
    p.expect(rb"telnet> ")
    p.type(b"status\n")
    p.expect(rb"Operating line by line\.")
    p.type(b"\x1dquit\n")
    assert p.wait() == 0


def test_rtelnet_script_on_standard_input(echo_server):
    result = run("rtelnet", "127.0.0.1", str(echo_server),
                 input=b"first\nsecond \xff\n\x1dstatus\nthird\n")
    assert result.returncode == 0, result.stderr
    # sent as NVT lines (CR LF, IAC doubled) and echoed back as they were sent
    assert b"first\r\nsecond \xff\r\n" in result.stdout
    assert b"Operating line by line." in result.stdout
    assert result.stdout.endswith(b"third\r\n")
    assert b"Connection closed by foreign host." in result.stderr


# -- through socks.conf: via sockd, or refused ---------------------------------------------------
# 127.0.0.1 always goes direct (socks.conf(5)); these servers listen on 127.0.0.2.

FAR = "127.0.0.2"


def socks_env(tmp_path, text: str) -> dict:
    conf = tmp_path / "socks.conf"
    conf.write_text(text)
    return env(SOCKS_CONF=str(conf))


@pytest.fixture
def far_line_server():
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = self.request.recv(1024)
                if not chunk:
                    break
                data += chunk
            self.request.sendall(b"answer to " + data)

    server = serve(Handler, FAR)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_rfinger_and_rwhois_go_through_sockd(sockd, far_line_server, tmp_path):
    server = sockd()
    environ = socks_env(tmp_path, f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n")
    finger = run("rfinger", "-p", str(far_line_server), f"alice@{FAR}", environ=environ)
    assert finger.returncode == 0, finger.stderr
    assert finger.stdout == b"answer to alice\r\n"
    whois = run("rwhois", "-h", FAR, "-p", str(far_line_server), "example", environ=environ)
    assert whois.returncode == 0, whois.stderr
    assert whois.stdout == b"answer to example\r\n"
    assert len(server.wait_log(rf"terminated -- Connect from .* to {FAR}:{far_line_server} ",
                               count=2)) == 2


@pytest.mark.parametrize("program, args", [
    ("rfinger", ["-p", "79", f"alice@{FAR}"]),
    ("rwhois", ["-h", FAR, "example"]),
    ("rtelnet", [FAR, "23"]),
    ("rftp", ["-n", FAR]),
])
def test_refused_by_socks_conf(tmp_path, program, args):
    environ = socks_env(tmp_path, "deny 0.0.0.0/0\n")
    result = run(program, *args, input=b"bye\n", environ=environ)
    assert result.returncode != 0
    lines = [line for line in result.stderr.decode().splitlines()
             if not line.startswith("Trying ")]
    assert len(lines) == 1 and "denied by socks.conf" in lines[0], lines


@pytest.fixture
def far_ftp_server(tmp_path):
    root = tmp_path / "farftp"
    with serve_ftp(root, FAR) as port:
        yield root, port


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_rftp_through_sockd(sockd, far_ftp_server, tmp_path, mode):
    """Passive data connections are SOCKS CONNECTs; active ones come back through SOCKS BIND."""
    root, port = far_ftp_server
    (root / "down.bin").write_bytes(os.urandom(400_000))
    local = tmp_path / "local"
    local.mkdir()
    (local / "up.bin").write_bytes(os.urandom(300_000))
    server = sockd()
    environ = socks_env(tmp_path, f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n")
    script = ("user user secret\n" + ("passive\n" if mode == "active" else "")
              + "get down.bin\nput up.bin\nbye\n")
    result = run("rftp", "-n", "--no-fascist", FAR, str(port), input=script.encode(),
                 cwd=local, environ=environ)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert sha256(local / "down.bin") == sha256(root / "down.bin")
    assert sha256(root / "up.bin") == sha256(local / "up.bin")
    if mode == "active":
        assert len(server.wait_log(r"terminated -- Bind from ", count=2)) == 2
    else:
        server.wait_log(rf"terminated -- Connect from .* to {FAR}:", count=3)
