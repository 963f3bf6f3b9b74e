"""A SOCKS5 UDP association: its sockets, its datagram loop, its verdicts and counters.

Owns the I/O of one UDP ASSOCIATE (RFC 1928 §7) once it is granted: the
relay socket the client sends to, the outbound sockets datagrams leave from
(one per address family and source address), the loop that moves datagrams
between them, the per-destination verdict cache and the counts for the end
line.  It must not judge or log: the session passes in `judge`, which checks
a destination, consults the rules, runs hooks and writes the destination's
log line, once per destination; the association only caches what it says.

Theory of operation:

- Client side.  Datagrams are taken only from the client's address (that of
  the TCP control connection) and, once known, its port (the request's
  DST.PORT when not 0, else the port of the first datagram from that
  address).  Anything else is a stranger: dropped and counted.  A header
  that does not parse is dropped and counted as malformed; FRAG != 0 as
  frag (there is no reassembly).  The payload goes to the destination of
  the header, if its cached verdict allows it, else it is counted refused.
- Outbound side.  A reply is accepted only from an address and port the
  client has sent to (a stranger otherwise); it is sent to the client behind
  the RFC 1928 header naming that address and port, built once per peer and
  written into the receive buffer's headroom, so that a reply is received
  and sent without being copied.
- The loop polls the relay socket, the outbound sockets and the control
  connection (whose bytes are read and thrown away: RFC 1928 gives them no
  meaning).  It ends when the control connection reaches end of file or
  fails, when no datagram has been relayed either way for the idle timeout,
  or when on_tick (called about once a second) says stop.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sockd import protocol
from sockd.destination import OwnListeners
from sockd.protocol import Host, ProtocolError
from sockd.rules import unmapped

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DATAGRAM = 65535             # the largest UDP payload the kernel hands us
HEADROOM = 22                    # the longest reply header: RSV FRAG ATYP=4, 16 bytes, port
MAX_DESTINATIONS = 1024          # verdicts (and peers) kept per association
BATCH = 64                       # datagrams read from one socket before polling again
TICK = 1.0                       # seconds between calls of on_tick
_POLL_CONTROL = select.POLLIN | select.POLLRDHUP
_CONTROL_RESET = (errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH)


@dataclass(frozen=True)
class Verdict:
    """What `judge` says of one destination: where its datagrams go, or None (refused)."""

    address: IPAddress | None = None     # the destination's address, unmapped
    sock: socket.socket | None = None    # the outbound socket to send from

    @property
    def allowed(self) -> bool:
        return self.address is not None


REFUSED = Verdict()

_Route = tuple[socket.socket, tuple[str, int]]

# judge(host, port): the verdict on a destination the client names for the first time.
Judge = Callable[[Host, int], Verdict]


@dataclass
class Counters:
    """What the end line reports (payload bytes, without the SOCKS header)."""

    from_client: int = 0          # datagrams relayed from the client
    from_client_bytes: int = 0
    to_client: int = 0            # datagrams relayed to the client
    to_client_bytes: int = 0
    frag: int = 0                 # FRAG != 0
    malformed: int = 0            # a header that does not parse
    strangers: int = 0            # from anyone but the client, or a peer it has not sent to
    refused: int = 0              # to a destination the verdict refuses
    failed: int = 0               # sendto() failed, either way


def _family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _key(address: IPAddress) -> str:
    """*address* as recvfrom() reports it (inet_ntop), for comparing without parsing."""
    return socket.inet_ntop(_family(address), address.packed)


def _dgram_socket(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Association:
    """One UDP association; `run()` relays until it is over, `close()` frees its sockets.

    The relay socket is made at once (OSError when it cannot be), bound to
    *local*, the address the client reached, on a port the kernel chooses.
    *client* is the client's address; *client_port* its expected source port,
    0 when not known yet.
    """

    def __init__(self, local: IPAddress, client: IPAddress, client_port: int) -> None:
        local, client = unmapped(local), unmapped(client)
        self.relay = _dgram_socket(_family(local), str(local))
        port = self.relay.getsockname()[1]
        self.relay_address: tuple[IPAddress, int] = (local, port)
        self.client_key = _key(client)
        self.client_port = client_port
        self.counters = Counters()
        self._outbound: dict[tuple[int, str], socket.socket] = {}
        self._by_fd: dict[int, socket.socket] = {}
        # (host, port) as the client names it -> (outbound socket, sendto() address), or
        # None when refused: what a datagram needs, ready, so that it costs no formatting
        self._routes: OrderedDict[tuple[Host, int], _Route | None] = OrderedDict()
        self._peers: OrderedDict[tuple[str, int], bytes] = OrderedDict()   # -> reply header
        self._poller = select.poll()
        self._poller.register(self.relay, select.POLLIN)
        self._buffer = bytearray(HEADROOM + MAX_DATAGRAM)
        self._view = memoryview(self._buffer)

    def __enter__(self) -> Association:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for sock in (self.relay, *self._outbound.values()):
            sock.close()
        self._outbound.clear()
        self._by_fd.clear()

    # -- what the session asks while judging -------------------------------------

    def outbound_for(self, address: IPAddress, source: IPAddress | None) -> socket.socket:
        """The socket datagrams to *address* leave from: bound to *source* (the route
        file's), else to the wildcard of *address*'s family; made on first use.

        Raises OSError when it cannot be made.
        """
        version = unmapped(address).version
        host = str(source) if source is not None else ("::" if version == 6 else "0.0.0.0")
        sock = self._outbound.get((version, host))
        if sock is None:
            sock = _dgram_socket(_family(unmapped(address)), host)
            self._outbound[(version, host)] = sock
            self._by_fd[sock.fileno()] = sock
            self._poller.register(sock, select.POLLIN)
        return sock

    @staticmethod
    def source_towards(sock: socket.socket, address: IPAddress,
                       port: int) -> tuple[IPAddress, int]:
        """The address and port *address* sees datagrams from *sock* come from: for a
        wildcard socket the kernel's choice of source, found by connecting a probe."""
        host, own_port = sock.getsockname()[:2]
        source = ipaddress.ip_address(host.partition("%")[0])
        if source.is_unspecified:
            with socket.socket(sock.family, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect((str(address), port))
                    source = ipaddress.ip_address(probe.getsockname()[0].partition("%")[0])
                except OSError:
                    pass   # no route: the datagrams will fail to leave, and be counted
        return unmapped(source), own_port

    def sockets(self) -> OwnListeners:
        """The association's own addresses and ports, so that no destination is one."""
        return OwnListeners.of(sock.getsockname()[:2]
                               for sock in (self.relay, *self._outbound.values()))

    # -- the loop ------------------------------------------------------------------

    def run(self, control: socket.socket, judge: Judge, *, idle_timeout: float,
            on_tick: Callable[[], bool] | None = None) -> str:
        """Relay datagrams until the association ends; returns why.

        "eof" when the control connection closed, "reset" when it failed,
        "idle" after *idle_timeout* seconds with no datagram relayed either
        way, "stopped" when on_tick returned False.
        """
        control.setblocking(False)
        self._poller.register(control, _POLL_CONTROL)
        relay_fd, control_fd = self.relay.fileno(), control.fileno()
        now = last_activity = time.monotonic()
        next_tick = now + TICK
        while True:
            try:
                events = self._poller.poll(max(next_tick - now, 0.0) * 1000)
            except InterruptedError:
                events = []
            now = time.monotonic()
            for fd, _ in events:
                if fd == control_fd:
                    reason = self._read_control(control)
                    if reason:
                        return reason
                elif fd == relay_fd:
                    if self._from_client(judge):
                        last_activity = now
                elif self._from_peers(fd):
                    last_activity = now
            if now >= next_tick:
                next_tick = now + TICK
                if on_tick is not None and not on_tick():
                    return "stopped"
                if now - last_activity >= idle_timeout:
                    return "idle"

    def _read_control(self, control: socket.socket) -> str:
        """Read and discard what the client sends on the control connection; the
        reason to end at its end of file or error, else ""."""
        try:
            return "" if control.recv(4096) else "eof"
        except BlockingIOError:
            return ""
        except OSError as exc:
            return "reset" if exc.errno in _CONTROL_RESET else "eof"

    def _from_client(self, judge: Judge) -> bool:
        """Relay what the client has sent; True when a datagram went out."""
        counters, view, relay = self.counters, self._view, self.relay
        sent = False
        for _ in range(BATCH):
            try:
                size, source = relay.recvfrom_into(self._buffer)
            except BlockingIOError:
                break
            except OSError:
                continue       # an error queued on the socket; the next datagram may be fine
            if not self._from_the_client(source):
                counters.strangers += 1
                continue
            try:
                header, payload = protocol.parse_udp_datagram(view[:size])
            except ProtocolError:
                counters.malformed += 1
                continue
            if header.frag:
                counters.frag += 1   # RFC 1928 §7: no reassembly, so every fragment is dropped
                continue
            route = self._route(header.host, header.port, judge)
            if route is None:
                counters.refused += 1
                continue
            try:
                route[0].sendto(payload, route[1])
            except OSError:
                counters.failed += 1
                continue
            counters.from_client += 1
            counters.from_client_bytes += len(payload)
            sent = True
        return sent

    def _from_the_client(self, source: tuple) -> bool:
        """True for the client's address and port; learns the port from the first
        datagram when the request did not give it."""
        host, port = source[:2]
        if host.partition("%")[0] != self.client_key:
            return False
        if not self.client_port:
            self.client_port = port
        return port == self.client_port

    def _route(self, host: Host, port: int, judge: Judge) -> _Route | None:
        """Where datagrams to host:port go (None: refused), judged the first time it is
        named."""
        key = (host, port)
        try:
            return self._routes[key]
        except KeyError:
            pass
        verdict = judge(host, port)
        route = None
        if verdict.allowed:
            peer = (_key(verdict.address), port)
            route = (verdict.sock, peer)
            if peer not in self._peers and len(self._peers) >= MAX_DESTINATIONS:
                self._peers.popitem(last=False)
            self._peers[peer] = protocol.build_udp_datagram(verdict.address, port, b"")
        if len(self._routes) >= MAX_DESTINATIONS:
            self._routes.popitem(last=False)
        self._routes[key] = route
        return route

    def _from_peers(self, fd: int) -> bool:
        """Relay the replies waiting on one outbound socket; True when one reached the
        client."""
        sock = self._by_fd[fd]
        counters, view, peers = self.counters, self._view, self._peers
        client = (self.client_key, self.client_port)
        sent = False
        for _ in range(BATCH):
            try:
                size, source = sock.recvfrom_into(view[HEADROOM:])
            except BlockingIOError:
                break
            except OSError:
                continue
            header = peers.get((source[0].partition("%")[0], source[1]))
            if header is None:
                counters.strangers += 1
                continue
            start = HEADROOM - len(header)
            view[start:HEADROOM] = header
            try:
                self.relay.sendto(view[start:HEADROOM + size], client)
            except OSError:
                counters.failed += 1
                continue
            counters.to_client += 1
            counters.to_client_bytes += size
            sent = True
        return sent
