"""The command name every sockd process keeps (pidof, pgrep -x, killall, start-stop-daemon
--name), and what sockd does without a syslog socket.  Nothing here signals by name."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, require, wait_until

pytestmark = pytest.mark.integration


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_master_and_workers_are_named_sockd(sockd):
    server = sockd()
    workers = wait_until(lambda: len(server.children()) >= 2 and server.children(), 10,
                         "two workers")
    assert comm(server.pid) == "sockd"
    assert {comm(pid) for pid in workers} == {"sockd"}
    # ps still shows the long titles
    assert server.titles()[server.pid].startswith("sockd: master [")
    listed = subprocess.run([require("pgrep"), "-x", "sockd"], capture_output=True, text=True,
                            timeout=10).stdout.split()
    assert {server.pid, *workers} <= {int(pid) for pid in listed}
    found = subprocess.run([require("pidof"), "sockd"], capture_output=True, text=True,
                           timeout=10).stdout.split()
    assert server.pid in {int(pid) for pid in found}


@pytest.mark.parametrize("detach", [False, True])
def test_no_syslog_socket_is_said_and_exits_2(tmp_path, detach):
    missing = tmp_path / "no-such-log"
    argv = [sys.executable, "-m", "sockd", "--log", "syslog", "--syslog-address", str(missing),
            "-l", f"127.0.0.1:{free_port()}", *(["-f"] if not detach else [])]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr == (f"sockd: cannot log to syslog: no syslog socket at {missing} "
                           "(No such file or directory)\n")
