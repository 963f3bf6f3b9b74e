"""Connections from a trusted load balancer: who is trusted, and reading its PROXY header.

Owns --proxy-protocol at run time: whether a connection comes from a
balancer the administrator trusts (`trusts`), and, for one that does, reading
the PROXY protocol header it must start with, under --negotiate-timeout,
with the log lines for a header that is missing, malformed, truncated or
late (`arrival`).  What comes out is an `Arrival`: the client's real address
and port, and the bytes read after the header, which belong to the SOCKS
negotiation.  The header's bytes belong to sockd.proxyproto (pure); what
the real address is used for (the checks at accept, the rules, hooks, logs,
titles) belongs to the worker and the session.  A header from any other
address is not read here: it reaches the SOCKS codec, which refuses it, and
the session says what it was.

Runs in a worker (or the inetd child), after accept and before the checks at
accept, so that --max-per-source and the source check count real clients.
"""

import ipaddress
import logging
import select
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockd.protocol import NEED_DATA
from sockd.proxyproto import HeaderError, HeaderReader
from sockd.resolver import IPAddress, address_of
from sockd.rules import unmapped
from sockd.session import RECV_SLICE, format_host

log = logging.getLogger("sockd")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Arrival:
    """Who a connection is from, as the session must see it.

    address and port are the client's: from the PROXY header when a trusted
    balancer named one (then balancer is the balancer's ADDR:PORT, for the
    log), else the connection's own peer.  local is True when a trusted
    balancer sent a header that names no client (v2 LOCAL, v1 UNKNOWN: its
    own health check).  preread is what the client sent after the header.
    """

    address: IPAddress
    port: int
    preread: bytes = b""
    balancer: str | None = None
    local: bool = False


def trusts(networks: Iterable[Network], address: IPAddress) -> bool:
    """True when *address* (unmapped) is in one of *networks*."""
    return any(address in network for network in networks if network.version == address.version)


def arrival(conn: socket.socket, peer: tuple, networks: tuple[Network, ...], timeout: float,
            tick: Callable[[], object] = lambda: None) -> Arrival | None:
    """Who *conn* (accepted from *peer*) is from; None when it was closed for want of a
    good PROXY header (logged).  A peer in *networks* must send a header within *timeout*
    seconds; *tick* is called about twice a second while it is awaited."""
    address = address_of(peer[0])
    if not trusts(networks, address):
        return Arrival(address, peer[1])
    balancer = format_host(address, peer[1])
    reader = _read_header(conn, balancer, timeout, tick)
    if reader is None:
        return None
    header = reader.next_event()
    if header.local:
        # proxy-protocol.txt §2.2: the balancer's own connection; use the real endpoints.
        log.debug("balancer %s: a PROXY header naming no client (a health check)", balancer)
        return Arrival(address, peer[1], reader.trailing(), local=True)
    return Arrival(unmapped(header.source[0]), header.source[1], reader.trailing(), balancer)


def _read_header(conn: socket.socket, balancer: str, timeout: float,
                 tick: Callable[[], object]) -> HeaderReader | None:
    """A reader holding the header (and what followed it); None, logged, when the bytes
    are not a header, the balancer hangs up first, or *timeout* runs out."""
    reader = HeaderReader()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if reader.next_event() is not NEED_DATA:
                return reader
        except HeaderError as exc:
            log.info("error -- %s from balancer %s", exc.reason, balancer)
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("timed-out -- PROXY header from balancer %s after %g s", balancer, timeout)
            return None
        try:
            if not select.select([conn], [], [], min(remaining, RECV_SLICE))[0]:
                tick()
                continue
            data = conn.recv(4096)
        except OSError as exc:
            log.info("error -- %s while reading the PROXY header from balancer %s",
                     exc.strerror, balancer)
            return None
        if not data:
            if reader.buffered():
                log.info("error -- truncated PROXY header from balancer %s (%d bytes)",
                         balancer, reader.buffered())
            else:
                # A plain TCP health check: connect, then close.  Not worth a line a second.
                log.debug("balancer %s closed the connection before sending a byte", balancer)
            return None
        reader.feed(data)
