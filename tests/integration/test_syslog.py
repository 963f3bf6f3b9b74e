"""Session lines reach a real syslog daemon (rsyslogd) with ident sockd and the facility asked."""

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess

import pytest

from conftest import require, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def rsyslog(tmp_path):
    """A private rsyslogd: listens on its own socket, writes facility.severity tag msg."""
    sock = tmp_path / "log.sock"
    out = tmp_path / "messages"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{tmp_path}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
template(name="plain" type="string"
         string="%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n")
*.* action(type="omfile" file="{out}" template="plain")
""")
    # Its chatter goes to a file: a pipe nobody reads could fill and block it.
    with open(tmp_path / "rsyslogd.stderr", "wb") as stderr:
        proc = subprocess.Popen([require("rsyslogd"), "-n", "-f", str(conf), "-i",
                                 str(tmp_path / "rsyslogd.pid")], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    wait_until(sock.exists, 10, "rsyslogd's socket")
    yield sock, out
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


@pytest.mark.parametrize("facility", ["daemon", "local3"])
def test_session_lines_in_syslog(sockd, echo_server, rsyslog, facility):
    sock, out = rsyslog
    server = sockd(args=["--log", "syslog", "--syslog-address", str(sock),
                         "--facility", facility])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x04\x01" + struct.pack(">H", echo_server) + socket.inet_aton("127.0.0.1")
                  + b"carol\x00")
        assert s.recv(8)[:2] == b"\x00\x5a"
        s.sendall(b"logged")
        assert s.recv(10) == b"logged"

    def terminated():
        text = out.read_text() if out.exists() else ""
        return [line for line in text.splitlines() if "terminated -- Connect" in line]
    line = wait_until(terminated, 15, "the session line in syslog")[0]
    assert line.startswith(f"{facility}.info sockd[")
    assert re.search(r"from carol\(unknown\)@127\.0\.0\.1:\d+ to 127\.0\.0\.1:", line)
    assert f"{facility}.info sockd[{server.pid}]: started -- " in out.read_text()
