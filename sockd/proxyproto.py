"""The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt), sans I/O.

A load balancer that relays a client's TCP connection to sockd first sends
one header naming the client's real address and port.  This module owns the
byte formats of that header: `HeaderReader` parses it incrementally (fed
whole, byte by byte, or with the client's first SOCKS bytes after it) and
`build_v1` / `build_v2` write one (for tests and the benchmark).

It must not do I/O of any kind: it never imports socket or select, never
logs and never reads the clock.  Incomplete input gives `NEED_DATA` (the
codec's sentinel); a malformed header raises `HeaderError`, whose reason is
short fixed text with client bytes shown only as hex numbers.  Which
addresses may send a header, and the deadline for it, belong to the caller
(sockd.balancer).

Version 1 is one text line, ``PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT``
and CRLF, 107 bytes at most (spec §2.1).  Version 2 is binary: a 12-byte
signature, the version and command, the family and transport, a 16-bit
length, the addresses, and TLVs, which are skipped (spec §2.2).  A v2 LOCAL
command (the balancer's own health check) and a v1 UNKNOWN line, or a v2
family other than IPv4/IPv6, carry no client address: the header's `source`
is None and the receiver uses the connection's own addresses (spec §2.2:
"the receiver must ... use the real connection endpoints").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeAlias

from sockd.protocol import NEED_DATA, NeedData

__all__ = [
    "SIGNATURE_V2",
    "V1_MAX",
    "Address",
    "HeaderError",
    "HeaderReader",
    "ProxyHeader",
    "build_v1",
    "build_v2",
    "looks_like_header",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Address: TypeAlias = tuple[IPAddress, int]
"""An address and a port."""

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
"""The first 12 bytes of every version 2 header (spec §2.2)."""
V1_PREFIX = b"PROXY "
V1_MAX = 107
"""Longest version 1 line, CRLF included (spec §2.1)."""

_V2_FIXED = 16                          # signature, ver/cmd, fam/proto, length
_V2_VERSION = 0x2
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_INET, _V2_INET6, _V2_UNIX = 0x0, 0x1, 0x2, 0x3
_V2_STREAM, _V2_DGRAM = 0x1, 0x2
# family -> (bytes of the address block, size of one address)
_V2_ADDRESSES = {_V2_INET: (12, 4), _V2_INET6: (36, 16), _V2_UNIX: (216, 0)}
_V1_FAMILIES = {"TCP4": ipaddress.IPv4Address, "TCP6": ipaddress.IPv6Address}


class HeaderError(Exception):
    """The bytes are not a valid PROXY header; reason is short ASCII for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header.  source and destination are None when the header names no client
    (v2 LOCAL, v1 UNKNOWN, a v2 family other than IPv4 or IPv6): use the connection's own."""

    version: int
    source: Address | None
    destination: Address | None

    @property
    def local(self) -> bool:
        """True when the header carries no client address (the balancer's own connection)."""
        return self.source is None


def looks_like_header(data: bytes) -> bool:
    """True when *data* starts with a whole v1 prefix (``PROXY ``) or v2 signature."""
    return data.startswith(V1_PREFIX) or data.startswith(SIGNATURE_V2)


class HeaderReader:
    """Reads one PROXY header from the start of a connection.  Owns the receive buffer.

    Feed it bytes and call next_event() until it returns a ProxyHeader; then
    trailing() is what followed the header (the client's first SOCKS bytes).
    Every byte is checked as soon as it arrives, so the outcome never depends
    on how the bytes were split.  A HeaderError is final: next_event() raises
    it again.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: ProxyHeader | None = None
        self._error: HeaderError | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes; bytes after a complete header are kept for trailing()."""
        self._buffer += data

    def buffered(self) -> int:
        """How many bytes have been fed and not yet returned as a header."""
        return len(self._buffer)

    def next_event(self) -> ProxyHeader | NeedData:
        """The header, or NEED_DATA.  Raises HeaderError."""
        if self._error is not None:
            raise self._error
        if self._header is not None:
            return self._header
        try:
            parsed = _parse(self._buffer)
        except HeaderError as exc:
            self._error = exc
            raise
        if parsed is None:
            return NEED_DATA
        self._header, used = parsed
        del self._buffer[:used]
        return self._header

    def trailing(self) -> bytes:
        """The bytes after the header.  Calling it before the header is a caller bug."""
        if self._header is None:
            raise RuntimeError("trailing() called before the header was read")
        return bytes(self._buffer)


# ---------------------------------------------------------------- parsing
#
# Each parser takes the buffer from the header's first byte and returns
# (header, bytes used), or None when it needs more.


def _parse(buf: bytearray) -> tuple[ProxyHeader, int] | None:
    if not buf:
        return None
    if buf[0] == V1_PREFIX[0]:
        _expect_prefix(buf, V1_PREFIX, "v1")
        return _parse_v1(buf)
    if buf[0] == SIGNATURE_V2[0]:
        _expect_prefix(buf, SIGNATURE_V2, "v2")
        return _parse_v2(buf)
    raise HeaderError(f"no PROXY header (first byte 0x{buf[0]:02x})")


def _expect_prefix(buf: bytearray, prefix: bytes, version: str) -> None:
    """The bytes present must agree with *prefix*, up to its length."""
    seen = bytes(buf[: len(prefix)])
    if not prefix.startswith(seen):
        at = next(i for i, (a, b) in enumerate(zip(seen, prefix, strict=False)) if a != b)
        raise HeaderError(f"bad PROXY {version} signature (byte {at} is 0x{seen[at]:02x})")


def _parse_v1(buf: bytearray) -> tuple[ProxyHeader, int] | None:
    """``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n`` (§2.1)."""
    newline = buf.find(b"\n", 0, V1_MAX)
    _check_v1_line(buf, newline if newline >= 0 else min(len(buf), V1_MAX))
    if newline < 0:
        if len(buf) >= V1_MAX:
            raise HeaderError(f"PROXY v1 header longer than {V1_MAX} bytes")
        return None
    if buf[newline - 1] != ord("\r"):
        raise HeaderError("PROXY v1 header line does not end in CRLF")
    fields = bytes(buf[len(V1_PREFIX) : newline - 1]).decode("ascii").split(" ")
    if fields[0] == "UNKNOWN":
        # §2.1: with UNKNOWN the rest of the line is to be ignored.
        return ProxyHeader(1, None, None), newline + 1
    family = _V1_FAMILIES.get(fields[0])
    if family is None:
        raise HeaderError("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 5:
        raise HeaderError(f"PROXY v1 header has {len(fields) + 1} fields, not 6")
    source = _v1_address(family, fields[1], fields[3], "source")
    destination = _v1_address(family, fields[2], fields[4], "destination")
    return ProxyHeader(1, source, destination), newline + 1


def _check_v1_line(buf: bytearray, end: int) -> None:
    """Bytes after ``PROXY `` up to *end*: printable ASCII, and a CR only as the last byte
    present (an LF must follow it).  Checked on every feed, so a bad byte fails at once."""
    for index in range(len(V1_PREFIX), end):
        byte = buf[index]
        if byte == 0x0D:
            if index + 1 < end:
                raise HeaderError("PROXY v1 header has a CR not followed by LF")
        elif not 0x20 <= byte < 0x7F:
            raise HeaderError(f"PROXY v1 header holds byte 0x{byte:02x}")


def _v1_address(family, host: str, port: str, what: str) -> Address:
    try:
        if "%" in host:     # ipaddress reads a scope id; a header has no use for one
            raise ValueError(host)
        address = family(host)
    except ValueError:
        raise HeaderError(f"PROXY v1 {what} address is not {_family_name(family)}") from None
    return address, _v1_port(port, what)


def _v1_port(text: str, what: str) -> int:
    # §2.1: a decimal number 0..65535; leading zeros are not allowed.
    if not text.isascii() or not text.isdigit() or len(text) > 5 or \
            (len(text) > 1 and text[0] == "0") or int(text) > 0xFFFF:
        raise HeaderError(f"PROXY v1 {what} port is not a number 0..65535")
    return int(text)


def _family_name(family) -> str:
    return "IPv4" if family is ipaddress.IPv4Address else "IPv6"


def _parse_v2(buf: bytearray) -> tuple[ProxyHeader, int] | None:
    """Signature, ver/cmd, fam/proto, length, addresses, TLVs (§2.2)."""
    if len(buf) <= 12:
        return None
    version, command = buf[12] >> 4, buf[12] & 0x0F
    if version != _V2_VERSION:
        raise HeaderError(f"PROXY v2 version {version} is not 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise HeaderError(f"PROXY v2 command 0x{command:x} is not LOCAL or PROXY")
    if len(buf) <= 13:
        return None
    family, transport = buf[13] >> 4, buf[13] & 0x0F
    if family > _V2_UNIX or transport > _V2_DGRAM:
        raise HeaderError(f"PROXY v2 family and transport 0x{buf[13]:02x} are not known")
    if len(buf) < _V2_FIXED:
        return None
    length = int.from_bytes(buf[14:16], "big")
    block = _V2_ADDRESSES.get(family, (0, 0))[0]
    if command == _V2_PROXY and length < block:
        raise HeaderError(f"PROXY v2 length {length} is too short for its addresses")
    end = _V2_FIXED + length
    if len(buf) < end:
        return None
    if command == _V2_LOCAL or family not in (_V2_INET, _V2_INET6):
        # §2.2: LOCAL is the balancer's own connection; UNSPEC and UNIX carry no address
        # sockd can judge.  Either way the rest of the block is skipped.
        return ProxyHeader(2, None, None), end
    size = _V2_ADDRESSES[family][1]
    kind = ipaddress.IPv4Address if family == _V2_INET else ipaddress.IPv6Address
    start = _V2_FIXED
    source_host = kind(bytes(buf[start : start + size]))
    destination_host = kind(bytes(buf[start + size : start + 2 * size]))
    ports = start + 2 * size
    source_port = int.from_bytes(buf[ports : ports + 2], "big")
    destination_port = int.from_bytes(buf[ports + 2 : ports + 4], "big")
    # The TLVs after the addresses (up to `end`) are skipped: sockd uses none of them.
    return ProxyHeader(2, (source_host, source_port), (destination_host, destination_port)), end


# ---------------------------------------------------------------- building


def build_v1(source: Address | None, destination: Address | None = None) -> bytes:
    """A version 1 line; ``PROXY UNKNOWN`` when *source* is None."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    if destination is None or source[0].version != destination[0].version:
        raise ValueError("source and destination must be of one family")
    family = "TCP4" if source[0].version == 4 else "TCP6"
    line = (f"PROXY {family} {source[0]} {destination[0]} "
            f"{_port(source[1])} {_port(destination[1])}\r\n")
    return line.encode("ascii")


def build_v2(source: Address | None, destination: Address | None = None, *,
             tlvs: bytes = b"") -> bytes:
    """A version 2 header: PROXY over TCP, or LOCAL when *source* is None.  *tlvs* are
    appended after the addresses as they are (the caller encodes them)."""
    if source is None:
        return SIGNATURE_V2 + bytes((0x20 | _V2_LOCAL, 0)) + len(tlvs).to_bytes(2, "big") + tlvs
    if destination is None or source[0].version != destination[0].version:
        raise ValueError("source and destination must be of one family")
    family = _V2_INET if source[0].version == 4 else _V2_INET6
    body = (source[0].packed + destination[0].packed + _port(source[1]).to_bytes(2, "big")
            + _port(destination[1]).to_bytes(2, "big") + tlvs)
    if len(body) > 0xFFFF:
        raise ValueError("PROXY v2 header longer than 65535 bytes")
    return (SIGNATURE_V2 + bytes((0x20 | _V2_PROXY, family << 4 | _V2_STREAM))
            + len(body).to_bytes(2, "big") + body)


def _port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range 0..65535")
    return port
