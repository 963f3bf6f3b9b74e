"""The ident client: ask the client host's identd who owns a connection (RFC 1413).

This module owns one I/O step: connect to port 113 on the client's host, send
the query, read one bounded reply line, all under one overall deadline, and
return an `IdentAnswer`. The bytes (query line, reply grammar, the 1,000-byte
bound) belong to `sockd.identwire`, which is pure; deciding what an answer
means (strict or relaxed rule, mismatch, hooks, log lines) belongs to the
session. It never logs and never raises for anything the remote side does:
refused, unreachable, silent, slow, garbage, an ERROR reply, an endless
line or an early close all come back as NO_ANSWER with a reason.

The query socket is bound to the address the client connected to (port 0,
with IP_BIND_ADDRESS_NO_PORT where the kernel has it, so no port is held
before connect), because an identd identifies the connection by both
address pairs (RFC 1413 §2): on a multi-homed host a query from another
address names a connection that does not exist. IPv4-mapped IPv6 addresses
(a dual-stack listener) are queried over IPv4.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time

from sockd.identwire import IdentAnswer, ReplyReader, query_line
from sockd.protocol import NEED_DATA

__all__ = ["IDENT_PORT", "IdentAnswer", "query"]

IDENT_PORT = 113
"""The identd's well-known port (RFC 1413 §1)."""

# Linux only (4.2 and later); elsewhere bind() picks the port at once, which is merely wasteful.
_IP_BIND_ADDRESS_NO_PORT: int | None = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)


def query(client_addr: str, client_port: int, local_addr: str, local_port: int,
          timeout: float, *, ident_port: int = IDENT_PORT) -> IdentAnswer:
    """Ask the identd on client_addr who owns client_addr:client_port -> local_addr:local_port.

    local_addr:local_port is the address and port the client connected to on
    this host; the query is made from local_addr. timeout (seconds) bounds the
    whole exchange: connect, send and the reply together. Never raises for
    anything the identd (or its absence) does.
    """
    deadline = time.monotonic() + timeout
    try:
        remote, local = _sockaddrs(client_addr, ident_port, local_addr)
    except (OSError, ValueError) as exc:
        return IdentAnswer.no_answer(f"unreachable ({_why(exc)})")
    try:
        with socket.socket(remote[0], socket.SOCK_STREAM) as sock:
            _bind(sock, local)
            _step(sock, deadline)
            try:
                sock.connect(remote[1])
            except TimeoutError:
                raise
            except OSError as exc:   # refused, no route, ...
                return IdentAnswer.no_answer(f"unreachable ({_why(exc)})")
            return _exchange(sock, client_port, local_port, deadline)
    except TimeoutError:
        return IdentAnswer.no_answer("timed out")
    except OSError as exc:   # our side: no socket left, cannot bind the address
        return IdentAnswer.no_answer(f"failed ({_why(exc)})")


def _sockaddrs(client_addr: str, ident_port: int,
               local_addr: str) -> tuple[tuple[int, tuple], tuple]:
    """((family, identd's sockaddr), our sockaddr to bind), IPv4-mapped addresses unmapped."""
    client, local = _unmapped(client_addr), _unmapped(local_addr)
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    if (":" in local) != (family == socket.AF_INET6):
        raise ValueError(f"client {client_addr} and local {local_addr} differ in family")
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    remote = socket.getaddrinfo(client, ident_port, family, socket.SOCK_STREAM, 0, flags)[0][4]
    ours = socket.getaddrinfo(local, 0, family, socket.SOCK_STREAM, 0, flags)[0][4]
    return (family, remote), ours


def _unmapped(address: str) -> str:
    """The IPv4 address inside an IPv4-mapped IPv6 one, else address unchanged."""
    with contextlib.suppress(ValueError):
        mapped = ipaddress.IPv6Address(address.split("%", 1)[0]).ipv4_mapped
        if mapped is not None:
            return str(mapped)
    return address


def _bind(sock: socket.socket, local: tuple) -> None:
    # The port is chosen at connect(), so no port is reserved for a query that fails early;
    # Linux takes this SOL_IP option on IPv6 sockets too.
    if _IP_BIND_ADDRESS_NO_PORT is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind(local)


def _step(sock: socket.socket, deadline: float) -> None:
    """Give the next blocking call what is left of the overall deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _exchange(sock: socket.socket, client_port: int, local_port: int,
              deadline: float) -> IdentAnswer:
    """Send the query and read the reply on a connected socket (TimeoutError at the deadline)."""
    reader = ReplyReader(client_port, local_port)
    try:
        _step(sock, deadline)
        sock.sendall(query_line(client_port, local_port))
        while (answer := reader.next_answer()) is NEED_DATA:
            _step(sock, deadline)
            data = sock.recv(4096)
            if data:
                reader.feed(data)
            else:
                reader.feed_eof()
    except TimeoutError:
        raise
    except OSError as exc:   # a reset: the identd went away without an answer
        return IdentAnswer.no_answer(f"closed early ({_why(exc)})")
    return answer


def _why(exc: BaseException) -> str:
    """A short, printable cause: strerror for OS errors, the message otherwise."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return "".join(c if " " <= c <= "~" else "?" for c in text)
