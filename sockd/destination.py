"""What a client may name as a destination, checked before any rule is consulted.

Owns three pure checks on the judging path (DESIGN.md §3, "What a client may ask
for"; sockd(8), "Destinations"):

- `host_name`: a name from a SOCKS4a or SOCKS5 request must be an ASCII host name
  (letters, digits, ``-``, ``_`` and ``.``; labels of 1 to 63 bytes; at most 253
  bytes, one trailing dot allowed).  Anything else is refused and never resolved:
  the standard library re-encodes a ``str`` with IDNA and cuts it at a NUL, so
  ``local\\xadhost`` or ``localhost\\0.example.com`` would be judged as one name
  and resolved as another.  A valid name is returned unchanged, so the rules
  judge and the resolver receives the very same bytes.
- `means_this_host`: addresses in 0.0.0.0/8 and the unspecified IPv6 address
  (and their IPv4-mapped forms) reach the proxy host itself, past any rule on
  127.0.0.0/8 or ::1.
- `OwnListeners`: a CONNECT to one of sockd's own listeners would nest the proxy
  into itself and let one client hold every worker.

It must not do I/O: whether a name is a numeric address (as the resolver reads
it), resolving, and whether an address is local belong to sockd.resolver.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockd.rules import unmapped

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_NAME = 253                  # RFC 1035 §2.3.4, less the root label's length byte
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z", re.ASCII)
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")     # RFC 1122 §3.2.1.3 (a), (b)


class InvalidName(ValueError):
    """A requested destination name that is not an ASCII host name; str() says why."""


def host_name(name: str) -> str:
    """*name* itself when it is a valid host name, else `InvalidName`.

    The name arrives decoded latin-1 (one character a byte), so a character
    above U+007F is a byte above 0x7F.
    """
    body = name[:-1] if name.endswith(".") else name
    if not body:
        raise InvalidName("empty host name")
    if len(body) > MAX_NAME:
        raise InvalidName(f"host name longer than {MAX_NAME} bytes")
    for label in body.split("."):
        if not _LABEL.match(label):
            raise InvalidName("empty label in host name" if not label
                              else "host name label longer than 63 bytes" if len(label) > 63
                              else "host name with a byte other than a-z 0-9 - _ .")
    return name


def means_this_host(address: IPAddress) -> bool:
    """True for 0.0.0.0/8, ``::`` and their IPv4-mapped forms: as a destination, the
    kernel takes them for this host's own addresses."""
    address = unmapped(address)
    if address.version == 4:
        return address in _THIS_NETWORK
    return address.is_unspecified


@dataclass(frozen=True)
class OwnListeners:
    """The addresses and ports sockd listens on.

    ``exact`` holds listeners bound to one address; ``any_address_ports`` the
    ports of listeners bound to every address (0.0.0.0 or ::), which are
    reached through any local address.
    """

    exact: frozenset[tuple[IPAddress, int]] = frozenset()
    any_address_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, addresses: Iterable[tuple[str, int]]) -> OwnListeners:
        """From ``(host, port)`` pairs as bound; host ``""``, ``0.0.0.0`` or ``::`` is
        every address."""
        exact, wildcard = set(), set()
        for host, port in addresses:
            address = unmapped(ipaddress.ip_address(host.partition("%")[0] or "0.0.0.0"))
            if address.is_unspecified:
                wildcard.add(port)
            else:
                exact.add((address, port))
        return cls(frozenset(exact), frozenset(wildcard))

    def __or__(self, other: OwnListeners) -> OwnListeners:
        return OwnListeners(self.exact | other.exact,
                            self.any_address_ports | other.any_address_ports)

    def reached_by(self, address: IPAddress, port: int,
                   is_local: Callable[[IPAddress], bool]) -> bool:
        """True when connecting to *address*:*port* would reach one of these listeners.

        ``is_local(address)`` is asked only when *port* is a wildcard listener's.
        """
        address = unmapped(address)
        if (address, port) in self.exact:
            return True
        return port in self.any_address_ports and is_local(address)
