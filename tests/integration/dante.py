"""Dante's danted (Debian's dante-server), started by the tests on loopback: a SOCKS server
no one here wrote, for the client side's interoperability tests.  It allows loopback clients
to loopback destinations only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from conftest import free_port, require, wait_until

CONF = """\
logoutput: {log}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
}}
client block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
}}
socks pass {{
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect bind udpassociate bindreply udpreply
    log: connect disconnect error
}}
socks block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}}
"""


class Dante:
    def __init__(self, tmp: Path) -> None:
        danted = "/usr/sbin/danted"
        assert os.access(danted, os.X_OK), require("danted")
        self.port = free_port()
        self.log_path = tmp / f"danted-{self.port}.log"
        conf = tmp / f"danted-{self.port}.conf"
        conf.write_text(CONF.format(log=self.log_path, port=self.port))
        check = subprocess.run([danted, "-V", "-f", str(conf)], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, f"danted rejects its config: {check.stderr}{check.stdout}"
        self.stderr_path = tmp / f"danted-{self.port}.stderr"
        with open(self.stderr_path, "wb") as err:
            # No -D: danted stays in the foreground; its own session, so its group is killed.
            self.proc = subprocess.Popen([danted, "-f", str(conf), "-N", "1",
                                          "-p", str(tmp / f"danted-{self.port}.pid")],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)

        def up() -> bool:
            assert self.proc.poll() is None, f"danted exited: {self.stderr()}"
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), 1):
                return True
            return False
        wait_until(up, 20, "danted to listen")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
