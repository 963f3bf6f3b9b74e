"""Service readiness for systemd: sd_notify(3) in a few lines, over NOTIFY_SOCKET.

Owns the one datagram the service manager reads (`READY=1`, `RELOADING=1`,
`STOPPING=1`, `STATUS=...`).  Without NOTIFY_SOCKET (no systemd, or a unit
that is not Type=notify) every call does nothing; a manager that has gone
away costs a failed send and nothing more.  The master takes the variable
out of the environment at start, so that workers and shell hooks never talk
to systemd in its name.
"""

import os
import socket


class Notifier:
    """The NOTIFY_SOCKET of this process, if any."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.pop("NOTIFY_SOCKET", "")
        if address.startswith("@"):             # an abstract socket (sd_notify(3))
            address = "\0" + address[1:]
        self.address = address if address[:1] in ("/", "\0") else None

    def send(self, *assignments: str) -> bool:
        """Send the VAR=value *assignments* as one datagram; True when it went."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "backslashreplace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message, self.address)
        except OSError:
            return False
        return True
