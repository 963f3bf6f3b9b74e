"""Turning a requested host name into the address sockd connects to.

Owns the name lookups of a session: whether a name is a numeric address (as the
C library reads it: ``127.1``, ``0x7f.1`` and ``2130706433`` are 127.0.0.1),
the lookup of a real name under a deadline, and whether an address is one of
this host's own.

Every name reaches the C library as ASCII bytes, never as a ``str``: a ``str``
would be re-encoded with IDNA on the way, and the name resolved would no longer
be the name judged (sockd.destination checks the name first).  A lookup runs
in a helper thread so that a nameserver that never answers holds the session
only until its deadline; the thread itself ends when the C library's own
timeouts give up (resolv.conf(5): ``timeout``, ``attempts``).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading

from sockd.rules import unmapped

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResolveError(Exception):
    """A requested host name did not resolve; str() is the resolver's reason."""


class ResolveTimeout(ResolveError):
    """The lookup did not finish before the deadline."""


def numeric(name: str) -> IPAddress | None:
    """The address *name* stands for when the C library reads it as a number, else None.

    getaddrinfo(AI_NUMERICHOST) is the very parser a lookup of the name would
    use, so the address judged is the address connected to.
    """
    try:
        infos = socket.getaddrinfo(name.encode("ascii"), None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return _address(infos)


def lookup(name: str, timeout: float) -> IPAddress:
    """The first address of *name*, within *timeout* seconds.

    Raises ResolveError when the name does not resolve, ResolveTimeout when
    the answer does not come in time.
    """
    outcome: list[IPAddress | ResolveError] = []

    def run() -> None:
        try:
            outcome.append(_address(socket.getaddrinfo(name.encode("ascii"), None,
                                                       type=socket.SOCK_STREAM)))
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            outcome.append(ResolveError(getattr(exc, "strerror", None) or str(exc)))

    thread = threading.Thread(target=run, name="resolve", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if not outcome:
        raise ResolveTimeout(f"no answer after {timeout:g} s")
    if isinstance(outcome[0], ResolveError):
        raise outcome[0]
    return outcome[0]


def _address(infos: list) -> IPAddress:
    return address_of(infos[0][4][0])


@functools.lru_cache(maxsize=1024)
def address_of(host: str) -> IPAddress:
    """The address in the host part of a socket address, as the rules see it: a scope
    (``%eth0``) dropped, an IPv4-mapped IPv6 address unmapped.  Cached: a worker meets the
    same few addresses (its clients, its listeners, their destinations) again and again,
    and parsing one costs more than a session's rule decision."""
    return unmapped(ipaddress.ip_address(host.partition("%")[0]))


def is_local(address: IPAddress) -> bool:
    """True when *address* is one of this host's own (loopback, or bindable here)."""
    address = unmapped(address)
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True
