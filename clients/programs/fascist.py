"""FASCIST logging: every file rftp transfers, one syslog line (CSTC's rftp had it under
``#ifdef FASCIST``; the name is theirs).

Owns the line's format (`message`), its syslog datagram (`datagram`: the BSD form that
syslog(3) writes to /dev/log) and `Logger`, which sends it.  The line::

    transfer user=LOCALUSER host=REMOTEHOST direction=get|put file=REMOTEFILE bytes=N \
status=complete|incomplete

at facility daemon, severity info, tag ``rftp[PID]``.  The remote file name is escaped
(`sockd.log.escape`: every byte outside printable ASCII, the space and backslash included, as
\\xNN) so a file name can neither split the line nor hide a field.  If the socket cannot be
reached, rftp warns once on standard error and goes on: the transfer is the user's, the log
the site's.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from sockd.log import escape

DEV_LOG = "/dev/log"
ENVIRONMENT = "RFTP_SYSLOG"     # overrides DEV_LOG (the tests' own syslog receiver)
FACILITY_DAEMON = 3
SEVERITY_INFO = 6
NAME_LIMIT = 1024               # characters of a file name kept (before escaping)


def message(user: str, host: str, direction: str, remote: str, size: int,
            complete: bool) -> str:
    return (f"transfer user={escape(user)} host={escape(host)} direction={direction} "
            f"file={escape(remote, NAME_LIMIT)} bytes={size} "
            f"status={'complete' if complete else 'incomplete'}")


def datagram(text: str, pid: int, now: float | None = None) -> bytes:
    """``<30>Mmm dd hh:mm:ss rftp[PID]: text`` (RFC 3164, as syslog(3) sends to /dev/log)."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
    priority = FACILITY_DAEMON * 8 + SEVERITY_INFO
    return f"<{priority}>{stamp} rftp[{pid}]: {text}".encode("utf-8", "replace")


class Logger:
    """Sends transfer lines to the syslog socket *address* (None: $RFTP_SYSLOG, else
    /dev/log) when *enabled*."""

    def __init__(self, enabled: bool = True, address: str | None = None) -> None:
        self.enabled = enabled
        self.address = address or os.environ.get(ENVIRONMENT) or DEV_LOG
        self._warned = False

    def transfer(self, user: str, host: str, direction: str, remote: str, size: int,
                 complete: bool) -> None:
        if not self.enabled:
            return
        data = datagram(message(user, host, direction, remote, size, complete), os.getpid())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.address)
                s.send(data)
        except OSError as e:
            if not self._warned:
                self._warned = True
                print(f"rftp: cannot log transfers to {self.address}: {e.strerror or e}",
                      file=sys.stderr)
