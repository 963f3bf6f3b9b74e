#!/usr/bin/env python3
"""The interpreter's floor: the least a Python SOCKS5 server does for the benchmark's session.

scripts/bench.py runs it beside sockd (`--targets floor`) to answer one question: what
does the benchmark's session (greeting, CONNECT, a 32-byte echo, the server's close) cost
in Python before sockd does anything of its own, in each of two process models?

- **prefork**: PROCESSES processes block in accept(2), and each serves one client at a
  time with blocking calls and a select() relay: sockd's model, without sockd.
- **event**: PROCESSES processes (one per CPU) each serve every client they accept from
  one epoll loop, with non-blocking sockets: Dante's model.

Not a server to run: no rules, no log, no titles, no scoreboard, no error replies, no
authentication; SOCKS5 CONNECT to an IPv4 address only, and only to 127.0.0.0/8 (the
benchmark's network rule: anything else is closed unanswered).  It reads each message
whole in one recv(2) and sends each relayed piece in one send(2), which the benchmark's
small messages allow; it is no use for a stream.  It runs until killed: bench.py starts
it under timeout(1), in its own process group, and stops that group.

Usage: floor_socks.py prefork|event PORT PROCESSES
"""

import os
import select
import socket
import sys

_IN, _RDHUP = select.EPOLLIN, select.EPOLLRDHUP
_LOOPBACK = 127


def _request(data: bytes) -> tuple[str, int] | None:
    """The IPv4 loopback destination of a SOCKS5 CONNECT request, else None."""
    if len(data) != 10 or data[:4] != b"\x05\x01\x00\x01" or data[4] != _LOOPBACK:
        return None
    return socket.inet_ntoa(data[4:8]), int.from_bytes(data[8:10], "big")


def _reply(upstream: socket.socket) -> bytes:
    host, port = upstream.getsockname()
    return b"\x05\x00\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big")


# -- prefork ------------------------------------------------------------------------


def serve_prefork(listener: socket.socket) -> None:
    while True:
        client, _ = listener.accept()
        with client:
            try:
                _serve_one(client)
            except OSError:
                pass


def _serve_one(client: socket.socket) -> None:
    if client.recv(512)[:1] != b"\x05":
        return
    client.sendall(b"\x05\x00")
    target = _request(client.recv(512))
    if target is None:
        return
    with socket.create_connection(target) as upstream:
        client.sendall(_reply(upstream))
        _relay(client, upstream)


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Both ways until both ends have sent their end of file, half-closes passed on."""
    peer = {a: b, b: a}
    open_ = [a, b]
    while open_:
        for src in select.select(open_, [], [])[0]:
            data = src.recv(65536)
            if data:
                peer[src].sendall(data)
            else:
                peer[src].shutdown(socket.SHUT_WR)
                open_.remove(src)


# -- event-driven --------------------------------------------------------------------


class _Session:
    __slots__ = ("client", "state", "upstream", "ended")

    def __init__(self, client: socket.socket) -> None:
        self.client, self.upstream, self.state = client, None, "greeting"
        self.ended: set[int] = set()     # the fds whose end of file has been passed on


def serve_events(listener: socket.socket) -> None:
    poller = select.epoll()
    poller.register(listener.fileno(), _IN | select.EPOLLEXCLUSIVE)
    sessions: dict[int, _Session] = {}

    def close(session: _Session) -> None:
        for sock in (session.client, session.upstream):
            if sock is not None:
                sessions.pop(sock.fileno(), None)
                poller.unregister(sock.fileno())
                sock.close()

    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                try:
                    client, _ = listener.accept()
                except BlockingIOError:
                    continue
                client.setblocking(False)
                sessions[client.fileno()] = _Session(client)
                poller.register(client.fileno(), _IN)
                continue
            session = sessions.get(fd)
            if session is not None:
                try:
                    if not _step(session, fd, poller, sessions):
                        close(session)
                except OSError:
                    close(session)


def _step(session: _Session, fd: int, poller: select.epoll,
          sessions: dict[int, _Session]) -> bool:
    """Advance *session* on an event of *fd*; False when it is over."""
    client = session.client
    if session.state == "greeting":
        if client.recv(512)[:1] != b"\x05":
            return False
        client.send(b"\x05\x00")
        session.state = "request"
    elif session.state == "request":
        target = _request(client.recv(512))
        if target is None:
            return False
        upstream = session.upstream = socket.socket()
        upstream.setblocking(False)
        sessions[upstream.fileno()] = session
        poller.register(upstream.fileno(), select.EPOLLOUT)
        poller.modify(client.fileno(), 0)
        session.state = "connecting"
        try:
            upstream.connect(target)
        except BlockingIOError:
            pass
    elif session.state == "connecting":
        if session.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return False
        client.send(_reply(session.upstream))
        poller.modify(client.fileno(), _IN | _RDHUP)
        poller.modify(session.upstream.fileno(), _IN | _RDHUP)
        session.state = "relaying"
    elif fd not in session.ended:       # (a hang-up is reported even with no events asked)
        src, dst = (client, session.upstream) if fd == client.fileno() \
            else (session.upstream, client)
        data = src.recv(65536)
        if data:
            dst.send(data)
        else:
            dst.shutdown(socket.SHUT_WR)
            poller.modify(fd, 0)
            session.ended.add(fd)
            return len(session.ended) < 2
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("prefork", "event"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    model, port, processes = argv[0], int(argv[1]), int(argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(socket.SOMAXCONN)
    if model == "event":
        listener.setblocking(False)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    (serve_events if model == "event" else serve_prefork)(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
