"""Unit tests for sockd.protocol, the sans-I/O SOCKS 4/4a/5 codec.

Every vector is fed three ways (whole, one byte at a time, and with
pipelined payload after it); every error case checks the exact reply bytes
and that it is raised on the byte that makes the message wrong, no later.
"""

from __future__ import annotations

import ast
import ipaddress
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import protocol
from sockd.protocol import (
    MAX_NAME,
    NEED_DATA,
    ClientReplyParser,
    Command,
    Method,
    MethodsOffered,
    ProtocolError,
    Reply,
    Request,
    ServerHandshake,
    Socks4Reply,
    Socks5Reply,
    UdpHeader,
    UsernamePassword,
    build_udp_datagram,
    decode_address,
    encode_address,
    parse_udp_datagram,
    rfc1929_request,
    socks4_request,
    socks5_greeting,
    socks5_request,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
PAYLOAD = b"GET / HTTP/1.0\r\n\r\n"
REJECTED4 = bytes([0, 91, 0, 0, 0, 0, 0, 0])
AUTH_FAILED = b"\x01\x01"


def s5_failure(code: int) -> bytes:
    return bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])


def negotiate(
    chunks: Iterable[bytes], *, method: Method = Method.NO_AUTH, auth_ok: bool = True, **kw: bool
) -> tuple[list[object], bytes, ServerHandshake]:
    """Drive a ServerHandshake the way a session does, feeding chunks on NEED_DATA.

    The server picks `method` if offered, else NO_ACCEPTABLE. Returns the
    events (stopping after a Request), what the server sent and
    the handshake; unused chunks are fed afterwards so trailing() sees them.
    """
    handshake = ServerHandshake(**kw)
    pending = iter(chunks)
    events: list[object] = []
    sent = b""
    while not events or not isinstance(events[-1], Request):
        event = handshake.next_event()
        if event is NEED_DATA:
            chunk = next(pending, None)
            if chunk is None:
                break
            handshake.feed(chunk)
            continue
        events.append(event)
        if isinstance(event, MethodsOffered):
            offered = method in event.methods
            sent += handshake.choose_method(method if offered else Method.NO_ACCEPTABLE)
        elif isinstance(event, UsernamePassword):
            sent += handshake.auth_result(auth_ok)
    for chunk in pending:
        handshake.feed(chunk)
    return events, sent, handshake


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


FEEDINGS = {
    "whole": lambda wire: [wire],
    "bytewise": bytewise,
    "pipelined": lambda wire: [wire + PAYLOAD],
    "pipelined-bytewise": lambda wire: bytewise(wire + PAYLOAD),
}


def expected_trailing(feeding: str) -> bytes:
    return PAYLOAD if feeding.startswith("pipelined") else b""


# ---------------------------------------------------------------- valid requests

GREETING_NO_AUTH = b"\x05\x01\x00"
GREETING_BOTH = b"\x05\x02\x00\x02"
AUTH_ALICE = b"\x01\x05alice\x06s3cret"

# name: (wire, method chosen, events, bytes the server sends)
REQUESTS = {
    "socks4-connect": (
        b"\x04\x01\x00\x50\x0a\x01\x02\x03alice\x00",
        Method.NO_AUTH,
        [Request(4, Command.CONNECT, V4("10.1.2.3"), 80, "alice")],
        b"",
    ),
    "socks4-bind-empty-userid": (
        b"\x04\x02\x10\x00\xc0\x00\x02\x01\x00",
        Method.NO_AUTH,
        [Request(4, Command.BIND, V4("192.0.2.1"), 4096, "")],
        b"",
    ),
    "socks4-0.0.0.0-is-an-address": (
        b"\x04\x02\x00\x15\x00\x00\x00\x00u\x00",
        Method.NO_AUTH,
        [Request(4, Command.BIND, V4("0.0.0.0"), 21, "u")],
        b"",
    ),
    "socks4-userid-latin1-kept": (
        b"\x04\x01\x00\x50\x0a\x00\x00\x01\xe9\x1b\x7f\x00",
        Method.NO_AUTH,
        [Request(4, Command.CONNECT, V4("10.0.0.1"), 80, "\xe9\x1b\x7f")],
        b"",
    ),
    "socks4a-connect": (
        b"\x04\x01\x01\xbb\x00\x00\x00\x01bob\x00example.com\x00",
        Method.NO_AUTH,
        [Request(4, Command.CONNECT, "example.com", 443, "bob")],
        b"",
    ),
    "socks4a-bind-0.0.0.255": (
        b"\x04\x02\x00\x15\x00\x00\x00\xff\x00ftp.example.org\x00",
        Method.NO_AUTH,
        [Request(4, Command.BIND, "ftp.example.org", 21, "")],
        b"",
    ),
    "socks5-connect-ipv4": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90",
        Method.NO_AUTH,
        [
            MethodsOffered(frozenset({0})),
            Request(5, Command.CONNECT, V4("127.0.0.1"), 8080),
        ],
        b"\x05\x00",
    ),
    "socks5-connect-ipv6": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x04" + V6("2001:db8::1").packed + b"\x00\x16",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0})), Request(5, Command.CONNECT, V6("2001:db8::1"), 22)],
        b"\x05\x00",
    ),
    "socks5-connect-domain": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x03\x0bexample.com\x00\x50",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0})), Request(5, Command.CONNECT, "example.com", 80)],
        b"\x05\x00",
    ),
    "socks5-bind": (
        GREETING_NO_AUTH + b"\x05\x02\x00\x01\xc0\x00\x02\x07\x00\x15",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0})), Request(5, Command.BIND, V4("192.0.2.7"), 21)],
        b"\x05\x00",
    ),
    "socks5-udp-associate": (
        GREETING_NO_AUTH + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0})), Request(5, Command.UDP_ASSOCIATE, V4("0.0.0.0"), 0)],
        b"\x05\x00",
    ),
    "socks5-rsv-nonzero-tolerated": (
        GREETING_NO_AUTH + b"\x05\x01\xaa\x01\x0a\x00\x00\x01\x00\x50",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0})), Request(5, Command.CONNECT, V4("10.0.0.1"), 80)],
        b"\x05\x00",
    ),
    "socks5-duplicate-methods": (
        b"\x05\x03\x00\x00\x80" + b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50",
        Method.NO_AUTH,
        [MethodsOffered(frozenset({0, 0x80})), Request(5, Command.CONNECT, V4("10.0.0.1"), 80)],
        b"\x05\x00",
    ),
    "socks5-rfc1929": (
        GREETING_BOTH + AUTH_ALICE + b"\x05\x01\x00\x03\x04host\x01\xbb",
        Method.USERNAME_PASSWORD,
        [
            MethodsOffered(frozenset({0, 2})),
            UsernamePassword("alice", "s3cret"),
            Request(5, Command.CONNECT, "host", 443),
        ],
        b"\x05\x02\x01\x00",
    ),
    "socks5-rfc1929-255-byte-fields": (
        GREETING_BOTH
        + b"\x01\xff"
        + b"u" * 255
        + b"\xff"
        + b"\xfe" * 255
        + b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50",
        Method.USERNAME_PASSWORD,
        [
            MethodsOffered(frozenset({0, 2})),
            UsernamePassword("u" * 255, "\xfe" * 255),
            Request(5, Command.CONNECT, V4("10.0.0.1"), 80),
        ],
        b"\x05\x02\x01\x00",
    ),
}


@pytest.mark.parametrize("feeding", FEEDINGS)
@pytest.mark.parametrize("name", REQUESTS)
def test_request_vectors(name: str, feeding: str) -> None:
    wire, method, expected, expected_sent = REQUESTS[name]
    events, sent, handshake = negotiate(FEEDINGS[feeding](wire), method=method)
    assert events == expected
    assert sent == expected_sent
    assert handshake.version == wire[0]
    assert handshake.trailing() == expected_trailing(feeding)


@pytest.mark.parametrize("name", REQUESTS)
def test_every_proper_prefix_needs_data(name: str) -> None:
    wire, method, expected, _ = REQUESTS[name]
    events, _, _ = negotiate([wire[:-1]], method=method)
    assert events == expected[:-1]


# ---------------------------------------------------------------- errors

# name: (wire that is wrong on its last byte, method chosen, reply, reason fragment)
ERRORS = {
    "not-socks": (b"G", Method.NO_AUTH, None, "first byte 0x47"),
    "zero-first-byte": (b"\x00", Method.NO_AUTH, None, "first byte 0x00"),
    "socks4-command-0": (b"\x04\x00", Method.NO_AUTH, REJECTED4, "SOCKS4 command 0x00"),
    "socks4-udp-associate": (b"\x04\x03", Method.NO_AUTH, REJECTED4, "SOCKS4 command 0x03"),
    "socks4-userid-256": (
        b"\x04\x01\x00\x50\x0a\x00\x00\x01" + b"a" * 256,
        Method.NO_AUTH,
        REJECTED4,
        "USERID longer than 255",
    ),
    "socks4a-host-256": (
        b"\x04\x01\x00\x50\x00\x00\x00\x01u\x00" + b"h" * 256,
        Method.NO_AUTH,
        REJECTED4,
        "SOCKS4a host name longer than 255",
    ),
    "socks4a-empty-host": (
        b"\x04\x01\x00\x50\x00\x00\x00\x07u\x00\x00",
        Method.NO_AUTH,
        REJECTED4,
        "empty SOCKS4a host name",
    ),
    "socks5-nmethods-0": (b"\x05\x00", Method.NO_AUTH, b"\x05\xff", "no authentication methods"),
    "socks5-request-version": (
        GREETING_NO_AUTH + b"\x04",
        Method.NO_AUTH,
        s5_failure(1),
        "SOCKS5 request version 0x04",
    ),
    "socks5-command-0": (
        GREETING_NO_AUTH + b"\x05\x00",
        Method.NO_AUTH,
        s5_failure(7),
        "SOCKS5 command 0x00",
    ),
    "socks5-command-7": (
        GREETING_NO_AUTH + b"\x05\x07",
        Method.NO_AUTH,
        s5_failure(7),
        "SOCKS5 command 0x07",
    ),
    "socks5-atyp-2": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x02",
        Method.NO_AUTH,
        s5_failure(8),
        "address type 0x02",
    ),
    "socks5-atyp-8": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x08",
        Method.NO_AUTH,
        s5_failure(8),
        "address type 0x08",
    ),
    "socks5-empty-domain": (
        GREETING_NO_AUTH + b"\x05\x01\x00\x03\x00",
        Method.NO_AUTH,
        s5_failure(1),
        "empty domain name",
    ),
    "rfc1929-version-5": (
        GREETING_BOTH + b"\x05",
        Method.USERNAME_PASSWORD,
        AUTH_FAILED,
        "RFC 1929 version 0x05",
    ),
    "rfc1929-ulen-0": (
        GREETING_BOTH + b"\x01\x00",
        Method.USERNAME_PASSWORD,
        AUTH_FAILED,
        "empty username",
    ),
    "rfc1929-plen-0": (
        GREETING_BOTH + b"\x01\x01u\x00",
        Method.USERNAME_PASSWORD,
        AUTH_FAILED,
        "empty password",
    ),
}


@pytest.mark.parametrize("name", ERRORS)
def test_error_raised_on_the_offending_byte(name: str) -> None:
    wire, method, reply, _ = ERRORS[name]
    negotiate(bytewise(wire[:-1]), method=method)  # all but the last byte: no error
    with pytest.raises(ProtocolError) as caught:
        negotiate(bytewise(wire), method=method)
    assert caught.value.reply == reply


@pytest.mark.parametrize("name", ERRORS)
def test_error_vectors_fed_whole_with_more_after(name: str) -> None:
    wire, method, reply, reason = ERRORS[name]
    with pytest.raises(ProtocolError) as caught:
        negotiate([wire + b"\x00" * 600], method=method)
    assert caught.value.reply == reply
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_userid_of_255_bytes_is_accepted() -> None:
    wire = b"\x04\x01\x00\x50\x0a\x00\x00\x01" + b"a" * 255 + b"\x00"
    (request,), _, _ = negotiate(bytewise(wire))
    assert request.userid == "a" * 255


def test_userid_without_nul_raises_at_exactly_256_bytes() -> None:
    handshake = ServerHandshake()
    handshake.feed(b"\x04\x01\x00\x50\x0a\x00\x00\x01" + b"a" * 255)
    assert handshake.next_event() is NEED_DATA
    handshake.feed(b"a")
    with pytest.raises(ProtocolError) as caught:
        handshake.next_event()
    assert caught.value.reply == REJECTED4


def test_socks4a_host_of_255_bytes_is_accepted() -> None:
    wire = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 255 + b"\x00"
    (request,), _, _ = negotiate([wire])
    assert request.host == "h" * 255


@settings(deadline=None)
@given(st.integers(1, 255), st.text(st.characters(min_codepoint=1, max_codepoint=255), min_size=1))
def test_socks4a_marker_is_never_returned_as_a_host(last: int, name: str) -> None:
    name = name[:MAX_NAME]
    wire = bytes([4, 1, 0, 80, 0, 0, 0, last]) + b"\x00" + name.encode("latin-1") + b"\x00"
    (request,), _, _ = negotiate([wire])
    assert request.host == name


def test_socks4_when_disabled_gets_91() -> None:
    handshake = ServerHandshake(allow_socks4=False)
    handshake.feed(b"\x04")
    with pytest.raises(ProtocolError) as caught:
        handshake.next_event()
    assert caught.value.reply == REJECTED4
    assert handshake.version == 4


def test_socks5_still_works_when_socks4_is_disabled() -> None:
    wire = REQUESTS["socks5-connect-ipv4"][0]
    events, _, _ = negotiate([wire], allow_socks4=False)
    assert events[-1] == Request(5, Command.CONNECT, V4("127.0.0.1"), 8080)


def test_error_is_final() -> None:
    handshake = ServerHandshake()
    handshake.feed(b"\x04\x09")
    with pytest.raises(ProtocolError) as first:
        handshake.next_event()
    with pytest.raises(ProtocolError) as again:
        handshake.next_event()
    assert again.value is first.value


def test_reason_never_carries_raw_client_bytes() -> None:
    with pytest.raises(ProtocolError) as caught:
        negotiate([b"\x1b[31m\n"])
    assert caught.value.reason.isprintable() and caught.value.reason.isascii()


# ---------------------------------------------------------------- method and auth answers


def offered(wire: bytes = GREETING_BOTH) -> ServerHandshake:
    handshake = ServerHandshake()
    handshake.feed(wire)
    assert isinstance(handshake.next_event(), MethodsOffered)
    return handshake


def test_no_acceptable_method_ends_the_handshake() -> None:
    handshake = offered()
    assert handshake.choose_method(Method.NO_ACCEPTABLE) == b"\x05\xff"
    handshake.feed(b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50")
    with pytest.raises(ProtocolError) as caught:
        handshake.next_event()
    assert caught.value.reply is None


def test_failed_authentication_ends_the_handshake() -> None:
    handshake = offered(GREETING_BOTH + AUTH_ALICE)
    assert handshake.choose_method(Method.USERNAME_PASSWORD) == b"\x05\x02"
    assert handshake.next_event() == UsernamePassword("alice", "s3cret")
    assert handshake.auth_result(False) == AUTH_FAILED
    with pytest.raises(ProtocolError) as caught:
        handshake.next_event()
    assert caught.value.reply is None


def test_method_not_offered_is_a_caller_bug() -> None:
    handshake = offered(GREETING_NO_AUTH)
    with pytest.raises(ValueError, match="not offered"):
        handshake.choose_method(Method.USERNAME_PASSWORD)


def test_gssapi_is_not_spoken() -> None:
    handshake = offered(b"\x05\x01\x01")
    with pytest.raises(ValueError, match="not supported"):
        handshake.choose_method(Method.GSSAPI)


def test_plain_int_method_is_accepted() -> None:
    assert offered().choose_method(0) == b"\x05\x00"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.choose_method(Method.NO_AUTH),
        lambda h: h.auth_result(True),
        lambda h: h.reply(Socks5Reply.SUCCEEDED),
        lambda h: h.failure_reply(Socks5Reply.GENERAL_FAILURE),
        lambda h: h.trailing(),
    ],
)
def test_calls_out_of_order_raise_runtime_error(call) -> None:
    with pytest.raises(RuntimeError):
        call(ServerHandshake())


def test_next_event_before_choose_method_raises_runtime_error() -> None:
    handshake = offered()
    with pytest.raises(RuntimeError, match="choose_method"):
        handshake.next_event()


def test_next_event_after_the_request_raises_runtime_error() -> None:
    _, _, handshake = negotiate([REQUESTS["socks4-connect"][0]])
    with pytest.raises(RuntimeError):
        handshake.next_event()


# ---------------------------------------------------------------- replies


def requested(name: str) -> ServerHandshake:
    wire, method, _, _ = REQUESTS[name]
    return negotiate([wire], method=method)[2]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((Socks4Reply.GRANTED,), b"\x00\x5a\x00\x00\x00\x00\x00\x00"),
        ((Socks4Reply.GRANTED, V4("192.0.2.9"), 1080), b"\x00\x5a\x04\x38\xc0\x00\x02\x09"),
        ((Socks4Reply.GRANTED, V6("::ffff:192.0.2.9"), 1), b"\x00\x5a\x00\x01\xc0\x00\x02\x09"),
        ((Socks4Reply.GRANTED, V6("2001:db8::1"), 1080), b"\x00\x5a\x04\x38\x00\x00\x00\x00"),
        ((Socks4Reply.GRANTED, "name.example", 80), b"\x00\x5a\x00\x50\x00\x00\x00\x00"),
        ((Socks4Reply.REJECTED,), REJECTED4),
        ((Socks4Reply.NO_IDENTD,), b"\x00\x5c" + bytes(6)),
        ((93,), b"\x00\x5d" + bytes(6)),
    ],
)
def test_socks4_replies(args: tuple, expected: bytes) -> None:
    assert requested("socks4-connect").reply(*args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((Socks5Reply.SUCCEEDED,), b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"),
        ((0, V4("192.0.2.9"), 1080), b"\x05\x00\x00\x01\xc0\x00\x02\x09\x04\x38"),
        (
            (Socks5Reply.SUCCEEDED, V6("2001:db8::1"), 80),
            b"\x05\x00\x00\x04" + V6("2001:db8::1").packed + b"\x00\x50",
        ),
        ((Socks5Reply.SUCCEEDED, "relay", 1), b"\x05\x00\x00\x03\x05relay\x00\x01"),
        ((Socks5Reply.CONNECTION_REFUSED,), s5_failure(5)),
    ],
)
def test_socks5_replies(args: tuple, expected: bytes) -> None:
    assert requested("socks5-connect-ipv4").reply(*args) == expected


def test_bind_gets_two_replies() -> None:
    handshake = requested("socks5-bind")
    first = handshake.reply(Socks5Reply.SUCCEEDED, V4("192.0.2.1"), 40000)
    second = handshake.reply(Socks5Reply.SUCCEEDED, V4("192.0.2.7"), 20)
    assert first == b"\x05\x00\x00\x01\xc0\x00\x02\x01\x9c\x40"
    assert second == b"\x05\x00\x00\x01\xc0\x00\x02\x07\x00\x14"


def test_failure_reply_speaks_the_clients_version() -> None:
    assert requested("socks4a-connect").failure_reply(Socks5Reply.NOT_ALLOWED) == REJECTED4
    v5 = requested("socks5-connect-domain")
    assert v5.failure_reply(Socks5Reply.HOST_UNREACHABLE) == s5_failure(4)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("socks4-connect", Socks5Reply.SUCCEEDED),
        ("socks5-connect-ipv4", Socks4Reply.GRANTED),
        ("socks5-connect-ipv4", 256),
        ("socks4-connect", -1),
    ],
)
def test_wrong_reply_codes_are_caller_bugs(name: str, code: int) -> None:
    with pytest.raises(ValueError):
        requested(name).reply(code)


def test_reply_port_out_of_range() -> None:
    with pytest.raises(ValueError):
        requested("socks4-connect").reply(Socks4Reply.GRANTED, V4("1.2.3.4"), 65536)


# ---------------------------------------------------------------- addresses and UDP

ADDRESSES = [
    (V4("10.0.0.1"), 80, b"\x01\x0a\x00\x00\x01\x00\x50"),
    (V6("::1"), 65535, b"\x04" + bytes(15) + b"\x01\xff\xff"),
    ("a.b", 0, b"\x03\x03a.b\x00\x00"),
    ("\xe9", 1, b"\x03\x01\xe9\x00\x01"),
]


@pytest.mark.parametrize(("host", "port", "wire"), ADDRESSES)
def test_address_vectors(host: protocol.Host, port: int, wire: bytes) -> None:
    assert encode_address(host, port) == wire
    assert decode_address(b"xy" + wire + b"rest", 2) == (host, port, 2 + len(wire))
    for cut in range(len(wire)):
        assert decode_address(wire[:cut]) is None


def test_decode_address_bad_atyp() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_address(b"\x05")
    assert caught.value.reply == s5_failure(8)


@pytest.mark.parametrize(
    ("host", "port"), [("", 1), ("x" * 256, 1), ("\u20ac", 1), (V4("1.2.3.4"), -1)]
)
def test_encode_address_rejects(host: protocol.Host, port: int) -> None:
    with pytest.raises(ValueError):
        encode_address(host, port)


def test_udp_datagram_vectors() -> None:
    wire = b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35" + b"query"
    assert parse_udp_datagram(wire) == (UdpHeader(0, V4("10.0.0.1"), 53), b"query")
    assert build_udp_datagram(V4("10.0.0.1"), 53, b"query") == wire
    fragment = build_udp_datagram("dns.example", 53, b"", frag=0x81)
    assert parse_udp_datagram(fragment) == (UdpHeader(0x81, "dns.example", 53), b"")


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00",
        b"\x00\x00\x00\x07\x0a\x00\x00\x01\x00\x35",
        b"\x00\x00\x00\x03\x00\x00\x35",
    ],
)
def test_bad_udp_datagrams_get_no_reply(wire: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_udp_datagram(wire)
    assert caught.value.reply is None


def test_build_udp_datagram_rejects_bad_frag() -> None:
    with pytest.raises(ValueError):
        build_udp_datagram(V4("1.2.3.4"), 1, b"", frag=256)


# ---------------------------------------------------------------- client builders


def test_client_builders() -> None:
    socks4 = socks4_request(Command.CONNECT, V4("10.1.2.3"), 80, "alice")
    assert socks4 == REQUESTS["socks4-connect"][0]
    socks4a = socks4_request(Command.CONNECT, "example.com", 443, "bob")
    assert socks4a == REQUESTS["socks4a-connect"][0]
    assert socks5_greeting([Method.NO_AUTH, Method.USERNAME_PASSWORD]) == GREETING_BOTH
    assert socks5_request(Command.BIND, V4("192.0.2.7"), 21) == (
        b"\x05\x02\x00\x01\xc0\x00\x02\x07\x00\x15"
    )
    assert rfc1929_request("alice", "s3cret") == AUTH_ALICE


@pytest.mark.parametrize(
    "build",
    [
        lambda: socks4_request(Command.UDP_ASSOCIATE, V4("1.2.3.4"), 1),
        lambda: socks4_request(Command.CONNECT, V6("::1"), 1),
        lambda: socks4_request(Command.CONNECT, V4("0.0.0.9"), 1),
        lambda: socks4_request(Command.CONNECT, "", 1),
        lambda: socks4_request(Command.CONNECT, "a\0b", 1),
        lambda: socks4_request(Command.CONNECT, V4("1.2.3.4"), 1, "x\0"),
        lambda: socks4_request(Command.CONNECT, V4("1.2.3.4"), 1, "x" * 256),
        lambda: socks4_request(Command.CONNECT, V4("1.2.3.4"), 70000),
        lambda: socks5_greeting([]),
        lambda: socks5_greeting(range(256)),
        lambda: socks5_greeting([256]),
        lambda: socks5_request(9, V4("1.2.3.4"), 1),  # type: ignore[arg-type]
        lambda: rfc1929_request("", "p"),
        lambda: rfc1929_request("u", "p" * 256),
    ],
)
def test_client_builders_reject(build) -> None:
    with pytest.raises(ValueError):
        build()


# ---------------------------------------------------------------- client reply parser


def replies(
    version: int, chunks: Iterable[bytes], count: int | None = None
) -> tuple[list[Reply], ClientReplyParser]:
    """Parse up to count replies (a client knows how many it waits for), feeding on NEED_DATA."""
    parser = ClientReplyParser(version)
    pending = iter(chunks)
    got: list[Reply] = []
    while count is None or len(got) < count:
        reply = parser.next_reply()
        if reply is NEED_DATA:
            chunk = next(pending, None)
            if chunk is None:
                break
            parser.feed(chunk)
        else:
            got.append(reply)
    for chunk in pending:
        parser.feed(chunk)
    return got, parser


ANY = V4("0.0.0.0")
CLIENT_VECTORS = {
    "socks5-no-auth": (
        5,
        b"\x05\x00" + b"\x05\x00\x00\x01\xc0\x00\x02\x01\x04\x38",
        [Reply(5, 0, ANY, 0), Reply(5, 0, V4("192.0.2.1"), 1080)],
    ),
    "socks5-auth-bind-two-replies": (
        5,
        b"\x05\x02"
        + b"\x01\x00"
        + b"\x05\x00\x00\x03\x01r\x00\x01"
        + b"\x05\x00\x00\x04"
        + bytes(15)
        + b"\x01\x00\x02",
        [
            Reply(5, 2, ANY, 0),
            Reply(1, 0, ANY, 0),
            Reply(5, 0, "r", 1),
            Reply(5, 0, V6("::1"), 2),
        ],
    ),
    "socks4": (4, b"\x00\x5a\x04\x38\xc0\x00\x02\x01", [Reply(4, 90, V4("192.0.2.1"), 1080)]),
    "socks4-cstc-vn-4": (4, b"\x04\x5c" + bytes(6), [Reply(4, 92, ANY, 0)]),
}


@pytest.mark.parametrize("feeding", FEEDINGS)
@pytest.mark.parametrize("name", CLIENT_VECTORS)
def test_client_reply_vectors(name: str, feeding: str) -> None:
    version, wire, expected = CLIENT_VECTORS[name]
    got, parser = replies(version, FEEDINGS[feeding](wire), len(expected))
    assert got == expected
    assert parser.trailing() == expected_trailing(feeding)


@pytest.mark.parametrize(
    ("version", "wire", "returned"),
    [
        (5, b"\x05\xff", 1),
        (5, b"\x05\x01", 1),
        (5, b"\x05\x02\x01\x01", 2),
        (5, b"\x04\x00", 0),
        (5, b"\x05\x02\x05\x00", 1),
        (5, b"\x05\x00\x04", 1),
        (5, b"\x05\x00\x05\x00\x00\x02", 1),
        (4, b"\x5a", 0),
    ],
)
def test_client_reply_errors(version: int, wire: bytes, returned: int) -> None:
    parser = ClientReplyParser(version)
    parser.feed(wire)
    for _ in range(returned):
        assert isinstance(parser.next_reply(), Reply)
    with pytest.raises(ProtocolError) as caught:
        parser.next_reply()
    assert caught.value.reply is None
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_client_parser_version_must_be_4_or_5() -> None:
    with pytest.raises(ValueError):
        ClientReplyParser(6)


# ---------------------------------------------------------------- properties

latin1_names = st.text(st.characters(min_codepoint=1, max_codepoint=255), min_size=1, max_size=255)
latin1_any = st.text(st.characters(min_codepoint=0, max_codepoint=255), min_size=1, max_size=255)
userids = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=255)
ports = st.integers(0, 65535)
ipv4 = st.builds(V4, st.integers(0, 2**32 - 1))
ipv6 = st.builds(V6, st.integers(0, 2**128 - 1))
socks4_hosts = st.one_of(ipv4.filter(lambda ip: not 0 < int(ip) < 256), latin1_names)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def outcome(chunks: list[bytes], method: Method) -> tuple:
    """Events, bytes sent and trailing data, or the error: for comparing splits."""
    try:
        events, sent, handshake = negotiate(chunks, method=method)
    except ProtocolError as exc:
        assert exc.reason.isascii() and exc.reason.isprintable()
        assert exc.reply is None or isinstance(exc.reply, bytes)
        return ("error", exc.reason, exc.reply)
    done = bool(events) and isinstance(events[-1], Request)
    if done and isinstance(events[-1].host, V4):
        assert not 0 < int(events[-1].host) < 256  # 0.0.0.x is never a host
    return ("ok", events, sent, handshake.trailing() if done else None)


# Random bytes mixed with real protocol pieces and NULs, so that the inputs
# get past the first byte into every state, not just the first checks.
PIECES = [
    b"\x00",
    b"\x04\x01\x00\x50\x00\x00\x00\x01",
    b"\x05\x01\x00",
    b"\x05\x02\x00\x02",
    b"\x01\x01u\x01p",
    b"\x05\x01\x00\x01",
    b"\x05\x03\x00\x03\x04",
    *(wire for wire, *_ in REQUESTS.values()),
]
junk = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(PIECES)), max_size=8).map(
    b"".join
)


@settings(deadline=None, max_examples=300)
@given(
    junk,
    st.lists(st.integers(0, 1000), max_size=8),
    st.sampled_from([Method.NO_AUTH, Method.USERNAME_PASSWORD]),
)
def test_random_bytes_raise_only_protocol_error(data: bytes, cuts: list[int], method: Method):
    """Any input ends in events or a ProtocolError, the same however it is split."""
    assert outcome(split(data, cuts), method) == outcome([data], method)


@settings(deadline=None)
@given(st.binary(max_size=300), st.integers(4, 5))
def test_client_parser_raises_only_protocol_error(data: bytes, version: int) -> None:
    try:
        replies(version, [data])
    except ProtocolError as exc:
        assert exc.reply is None


@settings(deadline=None)
@given(
    st.sampled_from([Command.CONNECT, Command.BIND]),
    socks4_hosts,
    ports,
    userids,
    st.lists(st.integers(0, 600), max_size=6),
)
def test_socks4_round_trip(command, host, port, userid, cuts) -> None:
    wire = socks4_request(command, host, port, userid)
    events, _, handshake = negotiate(split(wire + PAYLOAD, cuts))
    assert events == [Request(4, command, host, port, userid)]
    assert handshake.trailing() == PAYLOAD


@settings(deadline=None)
@given(
    st.sampled_from(list(Command)),
    st.one_of(ipv4, ipv6, latin1_any),
    ports,
    st.none() | st.tuples(latin1_names, latin1_names),
    st.lists(st.integers(0, 900), max_size=6),
)
def test_socks5_round_trip(command, host, port, credentials, cuts) -> None:
    if credentials is None:
        method, wire = Method.NO_AUTH, socks5_greeting([Method.NO_AUTH])
    else:
        method = Method.USERNAME_PASSWORD
        wire = socks5_greeting([method]) + rfc1929_request(*credentials)
    wire += socks5_request(command, host, port)
    events, _, handshake = negotiate(split(wire + PAYLOAD, cuts), method=method)
    assert events[-1] == Request(5, command, host, port)
    if credentials is not None:
        assert events[1] == UsernamePassword(*credentials)
    assert handshake.trailing() == PAYLOAD


@settings(deadline=None)
@given(st.one_of(ipv4, ipv6, latin1_any), ports, st.integers(0, 255))
def test_server_reply_round_trips_through_the_client_parser(host, port, code) -> None:
    handshake = requested("socks5-connect-ipv4")
    got, _ = replies(5, [b"\x05\x00", handshake.reply(code, host, port)], 2)
    assert got[-1] == Reply(5, code, host, port)


@settings(deadline=None)
@given(st.one_of(ipv4, ipv6, latin1_any), ports, st.binary(max_size=64), st.integers(0, 255))
def test_udp_round_trip(host, port, payload, frag) -> None:
    datagram = build_udp_datagram(host, port, payload, frag)
    assert parse_udp_datagram(datagram) == (UdpHeader(frag, host, port), payload)


# ---------------------------------------------------------------- the sans-I/O contract


def test_codec_imports_no_io_modules() -> None:
    tree = ast.parse(Path(protocol.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"socket", "select", "selectors", "asyncio", "os", "io", "ssl"}


def test_need_data_is_a_named_sentinel() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert ServerHandshake().next_event() is NEED_DATA
    assert ClientReplyParser(4).next_reply() is NEED_DATA
