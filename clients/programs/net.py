"""The one place where the client programs get their sockets.

Owns two calls and the wording of their failures:

- `connect(host, port, timeout)`: a connected TCP socket to (host, port);
- `listen_for(control)`: for an FTP data connection in active mode, a listening object with
  ``getsockname()`` (the address to put in PORT/EPRT) and ``accept()`` (the server's
  connection), reachable by the peer of the *control* connection;
- `reason(error)`: one line saying why a call failed, for the programs' error messages.

It must not print, exit or retry: the programs decide what a failure means.

Both calls go through the SOCKS client library (`clients.sockssocket`), so socks.conf
decides: direct, through sockd, or refused (`clients.errors.SocksRefused`, an OSError).
`listen_for` after a control connection that went through a proxy is a SOCKS BIND (the
library binds for the host and port of the last proxied connect, as CSTC's Rbind did):
``getsockname`` is the address the proxy listens on, ``accept`` waits for its second reply.
"""

from __future__ import annotations

import socket

from clients import sockssocket

ACCEPT_TIMEOUT = 60.0       # seconds an active-mode data connection may take to come


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to (host, port), routed by socks.conf; raises OSError
    (socket.gaierror for a bad name, SocksRefused when socks.conf or the proxy refuses)."""
    return sockssocket.create_connection((host, port), timeout=timeout)


def listen_for(control: socket.socket) -> socket.socket:
    """A socket waiting for one connection from the peer of *control*, with an
    `ACCEPT_TIMEOUT` on accept: a SOCKS BIND when *control* went through a proxy, else a
    listener on the local address of *control* (the address its peer can reach)."""
    proxied = getattr(control, "via_proxy", False)
    listener = sockssocket.socksocket(control.family, socket.SOCK_STREAM)
    try:
        listener.settimeout(ACCEPT_TIMEOUT)
        listener.bind(("", 0) if proxied else (control.getsockname()[0], 0))
        listener.listen(1)
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
