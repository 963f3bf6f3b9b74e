"""The listening sockets: parsed from --listen, inherited from systemd, or the default.

Owns address parsing and socket creation.  Runs in the master, before any
fork and before privileges are dropped.
"""

import os
import socket
import stat

DEFAULT_PORT = 1080
SD_LISTEN_FDS_START = 3
_inherited: set[int] = set()     # descriptors systemd passed us: its sockets, not ours


class ListenError(Exception):
    """A listener could not be parsed or bound (exit status 3, or 2 for bad syntax)."""


def socks_port() -> int:
    """The `socks` port of /etc/services, else 1080."""
    try:
        return socket.getservbyname("socks", "tcp")
    except OSError:
        return DEFAULT_PORT


def parse_address(text: str) -> tuple[str, int]:
    """Parse ADDR:PORT, [V6ADDR]:PORT, ADDR alone or :PORT.

    Raises ValueError with a message for the command line.
    """
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad listen address {text!r} (expected [ADDR]:PORT)")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port and not port.isdigit():
        try:
            port = str(socket.getservbyname(port, "tcp"))
        except OSError:
            raise ValueError(f"bad port in listen address {text!r}") from None
    number = int(port) if port else socks_port()
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in listen address {text!r}")
    return host or "0.0.0.0", number


def bind(host: str, port: int) -> socket.socket:
    """Create, bind and listen on one non-blocking TCP socket."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {describe_address(address)}: {exc.strerror}") \
            from None
    sock.setblocking(False)
    return sock


def default_listeners() -> list[socket.socket]:
    """All interfaces, IPv6 and IPv4 together where the host has IPv6."""
    port = socks_port()
    try:
        return [bind("::", port)]
    except ListenError:
        return [bind("0.0.0.0", port)]


def systemd_listeners() -> list[socket.socket] | None:
    """The sockets systemd passed us (LISTEN_FDS), or None when it passed none.

    Raises ListenError when a descriptor it names is not a listening stream socket.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = os.environ.get("LISTEN_FDS", "0")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count.isdigit():
        raise ListenError(f"systemd passed a bad LISTEN_FDS ({count!r})")
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        sock = _listening_socket(fd)
        if sock is None:
            for other in socks:
                other.close()
            raise ListenError(f"systemd passed descriptor {fd}, which is not a listening socket")
        sock.setblocking(False)
        socks.append(sock)
    _inherited.update(sock.fileno() for sock in socks)
    return socks or None


def _listening_socket(fd: int) -> socket.socket | None:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    if sock.type != socket.SOCK_STREAM or \
            not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        return None
    return sock


def stdin_is_connection() -> bool:
    """True when fd 0 is a connected TCP socket: started by inetd (`nowait`).

    Only TCP: a UNIX socket or a socketpair on standard input is some other
    program's plumbing, not a client inetd accepted.
    """
    return stdin_connection_problem() is None


def stdin_connection_problem() -> str | None:
    """Why fd 0 is not a client that inetd accepted for us, or None when it is one (a
    connected AF_INET or AF_INET6 SOCK_STREAM socket)."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return "standard input is closed"
    if not stat.S_ISSOCK(mode):
        return "standard input is not a socket"
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError as exc:
        return f"standard input is a socket sockd cannot use: {exc.strerror}"
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            kind = "a UNIX" if sock.family == socket.AF_UNIX else "a non-IP"
            return f"standard input is {kind} socket, not a TCP connection"
        if sock.type != socket.SOCK_STREAM:
            return "standard input is a datagram socket, not a TCP connection"
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return ("standard input is a listening socket: inetd `wait` mode is not "
                    "supported, use `nowait`")
        try:
            sock.getpeername()
        except OSError:
            return "standard input is a TCP socket that is not connected"
    return None


def stop(sock: socket.socket) -> None:
    """Stop listening on *sock* for every process that shares it, at once, then close it.

    Closing only drops this process's copy: while a busy worker still holds one, the kernel
    goes on completing connections into the listen queue that nobody accepts, and resets
    them when the last copy closes; behind a balancer those clients are lost instead of
    refused and retried elsewhere.  shutdown(2) on a listening socket ends the listening at
    once (Linux); connections are refused from then on.  A socket systemd passed us is
    only closed: systemd goes on listening on it, for the next start.
    """
    if sock.fileno() not in _inherited:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
    sock.close()


def describe_address(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(sock: socket.socket) -> str:
    return describe_address(sock.getsockname())
