"""The sockd command line: -ver, -t, exit statuses, inetd mode, the embedded default."""

import os
import socket
import struct
import subprocess
import sys

import pytest

from conftest import LOOPBACK_RULES, ROOT, free_port, require

pytestmark = pytest.mark.integration


def sockd(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sockd", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, **kw)


def test_ver_is_one_classic_flag():
    out = sockd("-ver")
    assert out.returncode == 0
    assert out.stdout.startswith("\tsockd single-homed")
    assert "SOCKS 4, 4a and 5" in out.stdout
    assert sockd("--version").stdout == out.stdout
    assert "multi-homed" in sockd("--route", "/etc/sockd.route", "-ver").stdout


def test_console_scripts_answer():
    bindir = os.path.dirname(sys.executable)
    assert subprocess.run([os.path.join(bindir, "sockd"), "-ver"],
                          capture_output=True).returncode == 0
    out = subprocess.run([os.path.join(bindir, "test_sockd_conf")], capture_output=True)
    assert out.returncode == 2 and b"usage" in out.stderr.lower()


def test_check_good_and_bad_files(tmp_path):
    good = tmp_path / "good.conf"
    good.write_text(LOOPBACK_RULES)
    out = sockd("-t", "-c", str(good))
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("permit 127.0.0.0 255.0.0.0\npermti 10.0.0.0 255.0.0.0\n"
                   "deny 0.0.0.0 0.0.0.0 127.0.0.1\n")
    out = sockd("-t", "-c", str(bad))
    assert out.returncode == 1
    errors = out.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"{bad}:2: ") and "permti" in errors[0]
    assert errors[1].startswith(f"{bad}:3: ")


def test_bad_config_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("permit 127.0.0.0 255.0.0.0 eq\n")
    out = sockd("-f", "--log", "stderr", "-c", str(bad), "-l", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert f"{bad}:1: " in out.stderr
    assert "Traceback" not in out.stderr


def test_command_line_errors_exit_2():
    assert sockd("--no-such-flag").returncode == 2
    assert sockd("--min-spare", "0").returncode == 2
    assert sockd("-l", "[::1:1080").returncode == 2


def test_listener_in_use_exits_3(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = tmp_path / "c.conf"
        conf.write_text(LOOPBACK_RULES)
        out = sockd("-f", "--log", "stderr", "-c", str(conf), "-l", f"127.0.0.1:{port}")
    assert out.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_unknown_user_exits_3(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text(LOOPBACK_RULES)
    out = sockd("-f", "--log", "stderr", "-c", str(conf), "-l", f"127.0.0.1:{free_port()}",
                "--user", "no-such-user-here")
    assert out.returncode == 3 and "no such user" in out.stderr


def test_inetd_mode_serves_the_connection_on_stdin(tmp_path, echo_server):
    conf = tmp_path / "c.conf"
    conf.write_text(LOOPBACK_RULES)
    log = tmp_path / "inetd.log"
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=15)
    conn, _ = listener.accept()
    proc = subprocess.Popen([sys.executable, "-m", "sockd", "-c", str(conf), "--log", str(log)],
                            cwd=ROOT, stdin=conn, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    conn.close()
    client.sendall(b"\x04\x01" + struct.pack(">H", echo_server) + socket.inet_aton("127.0.0.1")
                   + b"inetd-user\x00")
    assert client.recv(8)[:2] == b"\x00\x5a"
    client.sendall(b"via inetd")
    assert client.recv(100) == b"via inetd"
    client.close()
    assert proc.wait(15) == 0, proc.stderr.read()
    assert "terminated -- Connect from inetd-user(unknown)@127.0.0.1" in log.read_text()
    listener.close()


def test_embedded_default_allows_loopback_clients(tmp_path, echo_server):
    assert not os.path.exists("/etc/sockd.conf"), \
        "/etc/sockd.conf exists: the embedded default cannot be tested on this machine"
    from conftest import Sockd
    server = Sockd(tmp_path, None, []).wait_ready()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                      + struct.pack(">H", echo_server))
            reply = b""
            while len(reply) < 12:
                reply += s.recv(12)
            assert reply[:4] == b"\x05\x00\x05\x00"
        server.wait_log(r"the embedded default is in force")
        server.wait_log(r"terminated -- Connect .* rule=default")
    finally:
        server.stop()


def test_workers_run_as_the_user_given(sockd, echo_server):
    server = sockd(args=["--user", "nobody"])
    workers = [pid for pid, title in server.titles().items() if title == "sockd: idle"]
    assert workers
    for pid in workers:
        status = open(f"/proc/{pid}/status").read()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(65534)] * 4
    master = open(f"/proc/{server.pid}/status").read()
    assert "Uid:\t0\t" in master


def test_a_worker_that_cannot_boot_halts_the_master(tmp_path):
    # Without CAP_SETUID even root cannot become --user: every worker fails at
    # boot, and the master must stop with status 3 instead of forking forever.
    conf = tmp_path / "c.conf"
    conf.write_text(LOOPBACK_RULES)
    setpriv = require("setpriv")
    out = subprocess.run([setpriv, "--bounding-set", "-setuid,-setgid", sys.executable, "-m",
                          "sockd", "-f", "--log", "stderr", "-c", str(conf),
                          "-l", f"127.0.0.1:{free_port()}", "--user", "nobody"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 3
    assert "error -- worker cannot start: [Errno 1] Operation not permitted" in out.stderr
    assert "could not start; stopping the server" in out.stderr
    assert out.stderr.count("worker cannot start") <= 16
