"""The one place where the client programs get their sockets.

Owns two calls and the wording of their failures:

- `connect(host, port, timeout)`: a connected TCP socket to (host, port);
- `listen_for(control)`: for an FTP data connection in active mode, a listening object with
  ``getsockname()`` (the address to put in PORT/EPRT) and ``accept()`` (the server's
  connection), reachable by the peer of the *control* connection;
- `reason(error)`: one line saying why a call failed, for the programs' error messages.

It must not print, exit or retry: the programs decide what a failure means.

THE LIBRARY PLUGS IN HERE.  Today both calls are direct (plain sockets).  When the SOCKS client
library (`clients.sockssocket`) is available, `connect` is its ``create_connection`` (socks.conf
decides: direct, through sockd, or refused) and `listen_for` is its socket class bound after a
connect to the control connection's peer: a SOCKS BIND, whose ``getsockname`` is the address
the proxy listens on and whose ``accept`` waits for the second reply.
"""

from __future__ import annotations

import socket

ACCEPT_TIMEOUT = 60.0       # seconds an active-mode data connection may take to come


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to (host, port); raises OSError (socket.gaierror for a bad name)."""
    return socket.create_connection((host, port), timeout=timeout)


def listen_for(control: socket.socket) -> socket.socket:
    """A socket listening for one connection from the peer of *control*, on the local address
    of *control* (the address that peer can reach), with an `ACCEPT_TIMEOUT` on accept."""
    local = control.getsockname()
    listener = socket.socket(control.family, socket.SOCK_STREAM)
    try:
        listener.bind((local[0], 0))
        listener.listen(1)
        listener.settimeout(ACCEPT_TIMEOUT)
    except OSError:
        listener.close()
        raise
    return listener


def reason(error: BaseException) -> str:
    """One line for *error*: "Connection refused", "Name or service not known", "timed out"."""
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
