"""The SOCKS 4, 4a and 5 wire codec, sans I/O.

This module owns the byte formats of SOCKS4 (SOCKS4.protocol), SOCKS4a
(SOCKS4A.protocol), SOCKS5 (RFC 1928) and its username/password
subnegotiation (RFC 1929): the server side of one negotiation
(`ServerHandshake`), the SOCKS5 address and UDP datagram formats, and the
client-side builders and reply parser.

It must not do I/O of any kind: it never imports socket or select, never
resolves names, never logs and never reads the clock. Bytes go in, frozen
dataclasses and enums come out; incomplete input gives `NEED_DATA`; a
malformed message raises `ProtocolError`, which carries the exact bytes the
server must send before it closes. Judging a request (rules, ident) and
resolving 4a or SOCKS5 names belong to the caller.

Names on the wire (USERID, host names, RFC 1929 fields) are decoded as
latin-1 so that every byte survives unchanged; escaping them for logs and
commands is the caller's job.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "MAX_NAME",
    "NEED_DATA",
    "AddressType",
    "ClientReplyParser",
    "Command",
    "Event",
    "Host",
    "Method",
    "MethodsOffered",
    "NeedData",
    "ProtocolError",
    "Reply",
    "Request",
    "ServerHandshake",
    "Socks4Reply",
    "Socks5Reply",
    "UdpHeader",
    "UsernamePassword",
    "build_udp_datagram",
    "decode_address",
    "encode_address",
    "parse_udp_datagram",
    "rfc1929_request",
    "socks4_request",
    "socks5_greeting",
    "socks5_request",
]

Host: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address | str
"""A destination: an IP address, or a domain name (str) left for the caller to resolve."""

MAX_NAME = 255
"""Longest USERID, host name or RFC 1929 field, in bytes."""


class Command(enum.IntEnum):
    """CD (SOCKS4) or CMD (RFC 1928 §4)."""

    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class AddressType(enum.IntEnum):
    """ATYP (RFC 1928 §5)."""

    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


class Method(enum.IntEnum):
    """Authentication methods (RFC 1928 §3)."""

    NO_AUTH = 0
    GSSAPI = 1
    USERNAME_PASSWORD = 2
    NO_ACCEPTABLE = 0xFF


class Socks4Reply(enum.IntEnum):
    """CD in a SOCKS4 reply (SOCKS4.protocol)."""

    GRANTED = 90
    REJECTED = 91
    NO_IDENTD = 92
    BAD_ID = 93


class Socks5Reply(enum.IntEnum):
    """REP in a SOCKS5 reply (RFC 1928 §6)."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


@dataclass(frozen=True)
class MethodsOffered:
    """The SOCKS5 greeting: the methods the client can do (RFC 1928 §3)."""

    methods: frozenset[int]


@dataclass(frozen=True)
class UsernamePassword:
    """The RFC 1929 §2 credentials, decoded latin-1."""

    username: str
    password: str


@dataclass(frozen=True)
class Request:
    """A SOCKS4, 4a or 5 request. A 4a request has version 4 and a str host."""

    version: int
    command: Command
    host: Host
    port: int
    userid: str = ""


@dataclass(frozen=True)
class UdpHeader:
    """The header of a SOCKS5 UDP datagram (RFC 1928 §7)."""

    frag: int
    host: Host
    port: int


@dataclass(frozen=True)
class Reply:
    """What a server sent back, as seen by `ClientReplyParser`.

    version is 5 for the method selection and SOCKS5 replies, 1 for the
    RFC 1929 status and 4 for SOCKS4 replies (whatever their VN byte).
    code is the METHOD, STATUS, REP or CD; host and port are 0.0.0.0:0
    where the message carries no address.
    """

    version: int
    code: int
    host: Host
    port: int


class ProtocolError(Exception):
    """The peer broke the protocol.

    reason is short and fixed text for the log: client bytes appear only as
    hex numbers. reply is the exact bytes the server must send before
    closing, or None to just close.
    """

    def __init__(self, reason: str, reply: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class NeedData(enum.Enum):
    """The type of the NEED_DATA sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


NEED_DATA = NeedData.NEED_DATA
"""Returned by next_event() and next_reply() until more bytes are fed."""

Event: TypeAlias = MethodsOffered | UsernamePassword | Request

_ANY_V4 = ipaddress.IPv4Address(0)
_SOCKS4_HEADER = struct.Struct("!BBH4s")  # VN CD DSTPORT DSTIP, also the reply
_SOCKS4A_MARKER = bytes((0, 0, 0, 1))
_RFC1929_VERSION = 1
_AUTH_SUCCESS = b"\x01\x00"
_AUTH_FAILURE = b"\x01\x01"  # RFC 1929 §2: any status but 00 is failure
_NO_ACCEPTABLE = bytes((5, Method.NO_ACCEPTABLE))
_SOCKS4_COMMANDS = frozenset({Command.CONNECT, Command.BIND})
_SOCKS5_COMMANDS = frozenset(Command)
_ADDRESS_SIZES: dict[int, int] = {AddressType.IPV4: 4, AddressType.IPV6: 16}
_HOST_DECODERS: dict[int, Callable[[bytes], Host]] = {
    AddressType.IPV4: ipaddress.IPv4Address,
    AddressType.IPV6: ipaddress.IPv6Address,
    AddressType.DOMAIN: lambda raw: raw.decode("latin-1"),
}


# ---------------------------------------------------------------- helpers


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range 0..65535")
    return port


def _latin1(text: str, what: str, *, allow_empty: bool = False) -> bytes:
    """Encode a name for the wire; it must fit a length byte (or a NUL-terminated field)."""
    raw = text.encode("latin-1")
    if len(raw) > MAX_NAME or (not raw and not allow_empty):
        raise ValueError(f"{what} must be {int(not allow_empty)}..{MAX_NAME} bytes")
    return raw


def _cstring(text: str, what: str, *, allow_empty: bool = False) -> bytes:
    """A NUL-terminated SOCKS4 field (USERID, 4a host name)."""
    raw = _latin1(text, what, allow_empty=allow_empty)
    if b"\0" in raw:
        raise ValueError(f"{what} must not contain NUL")
    return raw + b"\0"


def _pstring(text: str, what: str) -> bytes:
    """A length-prefixed field (RFC 1928 §5 domain, RFC 1929 §2 fields)."""
    raw = _latin1(text, what)
    return bytes((len(raw),)) + raw


def _is_socks4a_marker(packed: bytes) -> bool:
    # SOCKS4A.protocol: DSTIP 0.0.0.x with x != 0 means "a name follows".
    return packed[:3] == b"\0\0\0" and packed[3] != 0


def _socks4_reply(code: int, host: Host | None, port: int) -> bytes:
    """VN=0 CD DSTPORT DSTIP. Fields with no IPv4 meaning are zeros, not garbage."""
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
        host = host.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    packed = host.packed if isinstance(host, ipaddress.IPv4Address) else bytes(4)
    return _SOCKS4_HEADER.pack(0, code, _check_port(port), packed)


def _socks5_reply(code: int, host: Host | None, port: int) -> bytes:
    """RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT."""
    return bytes((5, code, 0)) + encode_address(_ANY_V4 if host is None else host, port)


_SOCKS4_REJECTED = _socks4_reply(Socks4Reply.REJECTED, None, 0)


def _socks5_failure(code: Socks5Reply) -> bytes:
    return _socks5_reply(code, None, 0)


# ---------------------------------------------------------------- SOCKS5 addresses


def encode_address(host: Host, port: int) -> bytes:
    """RFC 1928 §5: ATYP DST.ADDR DST.PORT. A str host is always sent as a DOMAIN."""
    if isinstance(host, ipaddress.IPv4Address):
        addr = bytes((AddressType.IPV4,)) + host.packed
    elif isinstance(host, ipaddress.IPv6Address):
        addr = bytes((AddressType.IPV6,)) + host.packed
    else:
        addr = bytes((AddressType.DOMAIN,)) + _pstring(host, "domain name")
    return addr + _check_port(port).to_bytes(2, "big")


def decode_address(buf: bytes, offset: int = 0) -> tuple[Host, int, int] | None:
    """Read ATYP DST.ADDR DST.PORT at offset (RFC 1928 §5).

    Returns (host, port, offset after the port), or None if buf stops short.
    Raises ProtocolError as soon as the bytes present are wrong: an unknown
    ATYP (reply REP 08) or an empty domain name (reply REP 01).
    """
    if len(buf) <= offset:
        return None
    atyp, start = buf[offset], offset + 1
    if atyp == AddressType.DOMAIN:
        if len(buf) <= start:
            return None
        size, start = buf[start], start + 1
        if size == 0:
            raise ProtocolError("empty domain name", _socks5_failure(Socks5Reply.GENERAL_FAILURE))
    elif atyp in _ADDRESS_SIZES:
        size = _ADDRESS_SIZES[atyp]
    else:
        raise ProtocolError(
            f"address type 0x{atyp:02x} not supported",
            _socks5_failure(Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED),
        )
    end = start + size
    if len(buf) < end + 2:
        return None
    host = _HOST_DECODERS[atyp](bytes(buf[start:end]))
    return host, int.from_bytes(buf[end : end + 2], "big"), end + 2


# ---------------------------------------------------------------- server-side parsers
#
# Each takes the receive buffer, which starts at the message's first byte,
# and returns (event, bytes used), or None when the message is incomplete.
# Each field is checked as soon as it is complete, in wire order, so the
# outcome never depends on how the bytes were split into reads.


def _take_cstring(buf: bytes, start: int, what: str) -> tuple[str, int] | None:
    """A NUL-terminated name of at most MAX_NAME bytes; fails at byte MAX_NAME + 1."""
    nul = buf.find(b"\0", start, start + MAX_NAME + 1)
    if nul >= 0:
        return bytes(buf[start:nul]).decode("latin-1"), nul + 1
    if len(buf) - start > MAX_NAME:
        # cstc-facts §9.3: CSTC read the USERID with no cap; never buffer unboundedly.
        raise ProtocolError(f"{what} longer than {MAX_NAME} bytes", _SOCKS4_REJECTED)
    return None


def _take_pstring(buf: bytes, start: int, what: str, reply: bytes) -> tuple[str, int] | None:
    """A length-prefixed name of 1..255 bytes (RFC 1929 §2)."""
    if len(buf) <= start:
        return None
    size = buf[start]
    if size == 0:
        raise ProtocolError(f"empty {what}", reply)
    end = start + 1 + size
    if len(buf) < end:
        return None
    return bytes(buf[start + 1 : end]).decode("latin-1"), end


def _socks4_command(code: int) -> Command:
    # SOCKS4.protocol: CD is 1 (CONNECT) or 2 (BIND); SOCKS4 has no UDP.
    if code not in _SOCKS4_COMMANDS:
        raise ProtocolError(f"SOCKS4 command 0x{code:02x} not supported", _SOCKS4_REJECTED)
    return Command(code)


def _parse_socks4_request(buf: bytes) -> tuple[Request, int] | None:
    """VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL] (SOCKS4.protocol, SOCKS4A.protocol)."""
    if len(buf) < 2:
        return None
    command = _socks4_command(buf[1])
    if len(buf) < _SOCKS4_HEADER.size:
        return None
    _, _, port, packed = _SOCKS4_HEADER.unpack_from(buf)
    taken = _take_cstring(buf, _SOCKS4_HEADER.size, "USERID")
    if taken is None:
        return None
    userid, end = taken
    if not _is_socks4a_marker(packed):
        return Request(4, command, ipaddress.IPv4Address(packed), port, userid), end
    taken = _take_cstring(buf, end, "SOCKS4a host name")
    if taken is None:
        return None
    name, end = taken
    if not name:
        raise ProtocolError("empty SOCKS4a host name", _SOCKS4_REJECTED)
    return Request(4, command, name, port, userid), end


def _parse_greeting(buf: bytes) -> tuple[MethodsOffered, int] | None:
    """RFC 1928 §3: VER NMETHODS METHODS."""
    if len(buf) < 2:
        return None
    count = buf[1]
    if count == 0:
        raise ProtocolError("no authentication methods offered", _NO_ACCEPTABLE)
    if len(buf) < 2 + count:
        return None
    return MethodsOffered(frozenset(buf[2 : 2 + count])), 2 + count


def _parse_username_password(buf: bytes) -> tuple[UsernamePassword, int] | None:
    """RFC 1929 §2: VER=1 ULEN UNAME PLEN PASSWD."""
    if not buf:
        return None
    if buf[0] != _RFC1929_VERSION:
        raise ProtocolError(f"RFC 1929 version 0x{buf[0]:02x}", _AUTH_FAILURE)
    user = _take_pstring(buf, 1, "username", _AUTH_FAILURE)
    if user is None:
        return None
    password = _take_pstring(buf, user[1], "password", _AUTH_FAILURE)
    if password is None:
        return None
    return UsernamePassword(user[0], password[0]), password[1]


def _socks5_command(code: int) -> Command:
    if code not in _SOCKS5_COMMANDS:
        raise ProtocolError(
            f"SOCKS5 command 0x{code:02x} not supported",
            _socks5_failure(Socks5Reply.COMMAND_NOT_SUPPORTED),
        )
    return Command(code)


def _parse_socks5_request(buf: bytes) -> tuple[Request, int] | None:
    """RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. RSV is not checked."""
    if not buf:
        return None
    if buf[0] != 5:
        reply = _socks5_failure(Socks5Reply.GENERAL_FAILURE)
        raise ProtocolError(f"SOCKS5 request version 0x{buf[0]:02x}", reply)
    if len(buf) < 2:
        return None
    command = _socks5_command(buf[1])
    address = decode_address(buf, 3)
    if address is None:
        return None
    host, port, end = address
    return Request(5, command, host, port), end


# ---------------------------------------------------------------- the server handshake


class _State(enum.Enum):
    START = "awaiting the first byte"
    SOCKS4_REQUEST = "reading a SOCKS4 request"
    SOCKS5_GREETING = "reading a SOCKS5 greeting"
    CHOOSING_METHOD = "awaiting choose_method()"
    SOCKS5_AUTH = "reading RFC 1929 credentials"
    JUDGING_AUTH = "awaiting auth_result()"
    SOCKS5_REQUEST = "reading a SOCKS5 request"
    REPLYING = "request received"
    CLOSED = "closed"


_Parser: TypeAlias = Callable[[bytes], tuple[Event, int] | None]

# state -> (parser, state after its event)
_STEPS: dict[_State, tuple[_Parser, _State]] = {
    _State.SOCKS4_REQUEST: (_parse_socks4_request, _State.REPLYING),
    _State.SOCKS5_GREETING: (_parse_greeting, _State.CHOOSING_METHOD),
    _State.SOCKS5_AUTH: (_parse_username_password, _State.JUDGING_AUTH),
    _State.SOCKS5_REQUEST: (_parse_socks5_request, _State.REPLYING),
}
_DIALECTS = {4: _State.SOCKS4_REQUEST, 5: _State.SOCKS5_GREETING}
_AFTER_METHOD = {
    Method.NO_AUTH: _State.SOCKS5_REQUEST,
    Method.USERNAME_PASSWORD: _State.SOCKS5_AUTH,
}


class ServerHandshake:
    """Server side of one SOCKS 4/4a/5 negotiation. Owns the receive buffer.

    Feed it what the client sends and call next_event() until it returns a
    Request; answer MethodsOffered with choose_method() and UsernamePassword
    with auth_result() before calling next_event() again. Then send
    reply() (twice for BIND) and hand trailing() to the relay.

    A ProtocolError is final: next_event() raises it again. Calling a method
    in the wrong state is a caller bug and raises RuntimeError.
    """

    def __init__(self, *, allow_socks4: bool = True) -> None:
        self.version: int | None = None
        self._allow_socks4 = allow_socks4
        self._buffer = bytearray()
        self._state = _State.START
        self._offered: frozenset[int] = frozenset()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes. Call next_event() after each feed: it enforces the limits."""
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next complete message, or NEED_DATA. Raises ProtocolError."""
        if self._error is not None:
            raise self._error
        try:
            return self._step()
        except ProtocolError as exc:
            self._close(exc)
            raise

    def choose_method(self, method: Method) -> bytes:
        """Answer the greeting (RFC 1928 §3) with one of the offered methods.

        Only NO_AUTH, USERNAME_PASSWORD (then RFC 1929 follows) and
        NO_ACCEPTABLE (which ends the handshake) are supported.
        """
        self._expect(_State.CHOOSING_METHOD, "choose_method")
        if method == Method.NO_ACCEPTABLE:
            self._close(ProtocolError("no acceptable authentication method"))
            return _NO_ACCEPTABLE
        if method not in _AFTER_METHOD:
            raise ValueError(f"method {method!r} is not supported by this codec")
        if method not in self._offered:
            raise ValueError(f"method {method!r} was not offered by the client")
        self._state = _AFTER_METHOD[Method(method)]
        return bytes((5, method))

    def auth_result(self, ok: bool) -> bytes:
        """Answer the RFC 1929 credentials: 01 00, or 01 01 which ends the handshake."""
        self._expect(_State.JUDGING_AUTH, "auth_result")
        if not ok:
            self._close(ProtocolError("authentication failed"))
            return _AUTH_FAILURE
        self._state = _State.SOCKS5_REQUEST
        return _AUTH_SUCCESS

    def reply(self, code: int, host: Host | None = None, port: int = 0) -> bytes:
        """The reply to the Request; call it twice for BIND.

        SOCKS4: 00 CD PORT IP, with 0.0.0.0 for a host that is not IPv4
        (an IPv4-mapped IPv6 address is unmapped). SOCKS5 (RFC 1928 §6):
        05 REP 00 ATYP ADDR PORT, with IPv4 0.0.0.0 for None.
        """
        self._expect(_State.REPLYING, "reply")
        if self.version == 4:
            return _socks4_reply(_reply_code(code, Socks5Reply, "SOCKS4"), host, port)
        return _socks5_reply(_reply_code(code, Socks4Reply, "SOCKS5"), host, port)

    def failure_reply(self, code5: Socks5Reply) -> bytes:
        """A failure in this version's terms: code5 for SOCKS5, 91 for SOCKS4."""
        if self.version == 4:
            return self.reply(Socks4Reply.REJECTED)
        return self.reply(code5)

    def trailing(self) -> bytes:
        """Bytes the client sent after the Request (pipelined payload), for the relay."""
        self._expect(_State.REPLYING, "trailing")
        return bytes(self._buffer)

    def _step(self) -> Event | NeedData:
        if self._state is _State.START and not self._start():
            return NEED_DATA
        if self._state not in _STEPS:
            raise RuntimeError(f"next_event() called while {self._state.value}")
        parse, next_state = _STEPS[self._state]
        parsed = parse(self._buffer)
        if parsed is None:
            return NEED_DATA
        event, used = parsed
        del self._buffer[:used]
        self._state = next_state
        if isinstance(event, MethodsOffered):
            self._offered = event.methods
        return event

    def _start(self) -> bool:
        """Pick the dialect from the first byte (VN or VER); False if none yet."""
        if not self._buffer:
            return False
        first = self._buffer[0]
        if first not in _DIALECTS:
            raise ProtocolError(f"not a SOCKS request (first byte 0x{first:02x})")
        self.version = first
        if first == 4 and not self._allow_socks4:
            raise ProtocolError("SOCKS4 is not enabled", _SOCKS4_REJECTED)
        self._state = _DIALECTS[first]
        return True

    def _close(self, error: ProtocolError) -> None:
        self._error = error
        self._state = _State.CLOSED

    def _expect(self, state: _State, call: str) -> None:
        if self._state is not state:
            raise RuntimeError(f"{call}() called while {self._state.value}")


def _reply_code(code: int, foreign: type[enum.IntEnum], version: str) -> int:
    """Reject the other version's enum (a caller bug) and out-of-range codes."""
    if isinstance(code, foreign) or not 0 <= code <= 0xFF:
        raise ValueError(f"{code!r} is not a {version} reply code")
    return int(code)


# ---------------------------------------------------------------- UDP (RFC 1928 §7)


def parse_udp_datagram(data: bytes) -> tuple[UdpHeader, bytes]:
    """Split RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA.

    RSV is not checked. FRAG is returned as is: a relay that does not
    reassemble must drop FRAG != 0. Raises ProtocolError(reply=None) on a
    short or malformed header (datagrams get no reply).
    """
    try:
        address = decode_address(data, 3)
    except ProtocolError as exc:
        raise ProtocolError(f"UDP datagram: {exc.reason}") from None
    if address is None:
        raise ProtocolError("UDP datagram: short header")
    host, port, end = address
    return UdpHeader(data[2], host, port), bytes(data[end:])


def build_udp_datagram(host: Host, port: int, payload: bytes, frag: int = 0) -> bytes:
    """The datagram parse_udp_datagram() splits."""
    if not 0 <= frag <= 0xFF:
        raise ValueError(f"FRAG {frag} out of range 0..255")
    return bytes((0, 0, frag)) + encode_address(host, port) + payload


# ---------------------------------------------------------------- client side


def socks4_request(command: Command, host: Host, port: int, userid: str = "") -> bytes:
    """A SOCKS4 request; a str host makes it SOCKS4a (DSTIP 0.0.0.1, name after USERID)."""
    if command not in _SOCKS4_COMMANDS:
        raise ValueError(f"SOCKS4 has no {command!r}")
    if isinstance(host, str):
        packed, name = _SOCKS4A_MARKER, _cstring(host, "SOCKS4a host name")
    elif isinstance(host, ipaddress.IPv4Address) and not _is_socks4a_marker(host.packed):
        packed, name = host.packed, b""
    else:
        raise ValueError(f"SOCKS4 cannot carry {host} (IPv6, or a 4a marker 0.0.0.x)")
    header = _SOCKS4_HEADER.pack(4, command, _check_port(port), packed)
    return header + _cstring(userid, "USERID", allow_empty=True) + name


def socks5_greeting(methods: Iterable[int]) -> bytes:
    """RFC 1928 §3: 05 NMETHODS METHODS (1..255 methods)."""
    codes = bytes(methods)  # ValueError for a code outside 0..255
    if not 1 <= len(codes) <= 0xFF:
        raise ValueError("a greeting offers 1..255 methods")
    return bytes((5, len(codes))) + codes


def socks5_request(command: Command, host: Host, port: int) -> bytes:
    """RFC 1928 §4: 05 CMD 00 ATYP DST.ADDR DST.PORT."""
    return bytes((5, Command(command), 0)) + encode_address(host, port)


def rfc1929_request(username: str, password: str) -> bytes:
    """RFC 1929 §2: 01 ULEN UNAME PLEN PASSWD, latin-1, each 1..255 bytes."""
    fields = _pstring(username, "username") + _pstring(password, "password")
    return bytes((_RFC1929_VERSION,)) + fields


def _client_error(reason: str) -> ProtocolError:
    return ProtocolError(f"server reply: {reason}")


def _parse_method_reply(buf: bytes) -> tuple[Reply, int] | None:
    """RFC 1928 §3: 05 METHOD."""
    if len(buf) < 2:
        return None
    if buf[0] != 5:
        raise _client_error(f"method selection version 0x{buf[0]:02x}")
    return Reply(5, buf[1], _ANY_V4, 0), 2


def _parse_auth_reply(buf: bytes) -> tuple[Reply, int] | None:
    """RFC 1929 §2: 01 STATUS."""
    if len(buf) < 2:
        return None
    if buf[0] != _RFC1929_VERSION:
        raise _client_error(f"RFC 1929 status version 0x{buf[0]:02x}")
    return Reply(1, buf[1], _ANY_V4, 0), 2


def _parse_socks4_reply(buf: bytes) -> tuple[Reply, int] | None:
    """VN CD DSTPORT DSTIP; VN is 0, or 4 from CSTC's 92/93 replies (cstc-facts §5.1)."""
    if buf and buf[0] not in (0, 4):
        raise _client_error(f"SOCKS4 reply version 0x{buf[0]:02x}")
    if len(buf) < _SOCKS4_HEADER.size:
        return None
    _, code, port, packed = _SOCKS4_HEADER.unpack_from(buf)
    return Reply(4, code, ipaddress.IPv4Address(packed), port), _SOCKS4_HEADER.size


def _parse_socks5_reply(buf: bytes) -> tuple[Reply, int] | None:
    """RFC 1928 §6: 05 REP RSV ATYP BND.ADDR BND.PORT."""
    if buf and buf[0] != 5:
        raise _client_error(f"SOCKS5 reply version 0x{buf[0]:02x}")
    try:
        address = decode_address(buf, 3)
    except ProtocolError as exc:
        raise _client_error(exc.reason) from None
    if address is None:
        return None
    host, port, end = address
    return Reply(5, buf[1], host, port), end


class ClientReplyParser:
    """Client side: parses what a SOCKS server sends back, in protocol order.

    version=5: first the method selection, Reply(5, METHOD, 0.0.0.0, 0);
    if METHOD is USERNAME_PASSWORD, then the RFC 1929 status,
    Reply(1, STATUS, 0.0.0.0, 0); then request replies, as many as come
    (BIND sends two). version=4: request replies only.

    The parser follows the sequence itself, so pipelined replies work.
    After a method of NO_ACCEPTABLE (or one it cannot follow, e.g. GSSAPI)
    or a failed status, that Reply is returned and the next call raises
    ProtocolError (reply=None). Reply codes of request replies are the
    caller's to judge.
    """

    def __init__(self, version: int = 5) -> None:
        if version not in (4, 5):
            raise ValueError(f"SOCKS version {version}")
        self._buffer = bytearray()
        self._parse = _parse_method_reply if version == 5 else _parse_socks4_reply
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    def next_reply(self) -> Reply | NeedData:
        """The next complete reply, or NEED_DATA. Raises ProtocolError."""
        if self._error is not None:
            raise self._error
        try:
            parsed = self._parse(self._buffer)
        except ProtocolError as exc:
            self._error = exc
            raise
        if parsed is None:
            return NEED_DATA
        reply, used = parsed
        del self._buffer[:used]
        self._advance(reply)
        return reply

    def trailing(self) -> bytes:
        """Bytes received after the last parsed reply (relayed data)."""
        return bytes(self._buffer)

    def _advance(self, reply: Reply) -> None:
        """Pick the parser for what the server sends next."""
        if self._parse is _parse_method_reply:
            if reply.code == Method.NO_AUTH:
                self._parse = _parse_socks5_reply
            elif reply.code == Method.USERNAME_PASSWORD:
                self._parse = _parse_auth_reply
            else:
                self._error = _client_error(f"method 0x{reply.code:02x}, cannot go on")
        elif self._parse is _parse_auth_reply:
            self._parse = _parse_socks5_reply
            if reply.code != 0:
                self._error = _client_error(f"authentication failed (0x{reply.code:02x})")
