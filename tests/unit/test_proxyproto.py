"""Unit tests for sockd.proxyproto, the sans-I/O PROXY protocol v1/v2 parser.

Every vector is fed three ways (whole, one byte at a time, and with the
client's first SOCKS bytes after it); every error case checks its reason and
that it is raised on the byte that makes the header wrong, no later.
"""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import proxyproto
from sockd.protocol import NEED_DATA
from sockd.proxyproto import (
    SIGNATURE_V2,
    V1_MAX,
    HeaderError,
    HeaderReader,
    ProxyHeader,
    build_v1,
    build_v2,
    looks_like_header,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
SOCKS = b"\x05\x01\x00"          # what a client sends after the header


def read(chunks) -> tuple[ProxyHeader | None, bytes | None]:
    """Feed *chunks* one by one until the header is read: (header, trailing()), or
    (None, None) when the bytes ran out first.  Raises HeaderError."""
    reader = HeaderReader()
    pending = list(chunks)
    while True:
        event = reader.next_event()
        if event is not NEED_DATA:
            for chunk in pending:
                reader.feed(chunk)
            return event, reader.trailing()
        if not pending:
            return None, None
        reader.feed(pending.pop(0))


def ways(wire: bytes):
    """The three feedings: whole, byte by byte, with trailing bytes."""
    yield [wire], b""
    yield [wire[i : i + 1] for i in range(len(wire))], b""
    yield [wire + SOCKS], SOCKS


A4 = (V4("192.0.2.10"), 40312)
B4 = (V4("198.51.100.1"), 1080)
A6 = (V6("2001:db8::10"), 40312)
B6 = (V6("2001:db8::1"), 1080)

GOOD = {
    "v1-tcp4": (b"PROXY TCP4 192.0.2.10 198.51.100.1 40312 1080\r\n", ProxyHeader(1, A4, B4)),
    "v1-tcp6": (b"PROXY TCP6 2001:db8::10 2001:db8::1 40312 1080\r\n", ProxyHeader(1, A6, B6)),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    "v1-unknown-with-junk": (b"PROXY UNKNOWN ffff::1 what ever\r\n", ProxyHeader(1, None, None)),
    "v1-port-0": (b"PROXY TCP4 192.0.2.10 198.51.100.1 0 65535\r\n",
                  ProxyHeader(1, (A4[0], 0), (B4[0], 65535))),
    "v1-longest": (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                   b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                   ProxyHeader(1, (V6(2**128 - 1), 65535), (V6(2**128 - 1), 65535))),
    "v2-tcp4": (SIGNATURE_V2 + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 10, 198, 51, 100, 1])
                + (40312).to_bytes(2, "big") + (1080).to_bytes(2, "big"), ProxyHeader(2, A4, B4)),
    "v2-tcp6": (build_v2(A6, B6), ProxyHeader(2, A6, B6)),
    "v2-tlvs-skipped": (build_v2(A4, B4, tlvs=b"\x01\x00\x02h2\x04\x00\x00"),
                        ProxyHeader(2, A4, B4)),
    "v2-local": (SIGNATURE_V2 + b"\x20\x00\x00\x00", ProxyHeader(2, None, None)),
    "v2-local-with-addresses": (SIGNATURE_V2 + b"\x20\x11\x00\x0c" + bytes(12),
                                ProxyHeader(2, None, None)),
    "v2-unspec": (SIGNATURE_V2 + b"\x21\x00\x00\x00", ProxyHeader(2, None, None)),
    "v2-unix": (SIGNATURE_V2 + b"\x21\x31\x00\xd8" + bytes(216), ProxyHeader(2, None, None)),
}


@pytest.mark.parametrize("name", sorted(GOOD))
@pytest.mark.parametrize("feeding", [0, 1, 2], ids=["whole", "bytewise", "trailing"])
def test_good_headers(name: str, feeding: int) -> None:
    wire, expected = GOOD[name]
    chunks, after = list(ways(wire))[feeding]
    assert read(chunks) == (expected, after)


def test_a_v1_line_of_107_bytes_is_the_longest():
    assert len(GOOD["v1-longest"][0]) < V1_MAX
    wire = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
    assert len(wire) == V1_MAX and read([wire]) == (ProxyHeader(1, None, None), b"")
    with pytest.raises(HeaderError, match="longer than 107"):
        read([wire[:-2] + b"xx\r\n"])


# name -> (bytes, reason pattern).  The last byte is the one that makes it wrong.
BAD = {
    "socks5": (b"\x05", r"no PROXY header \(first byte 0x05\)"),
    "http": (b"G", r"first byte 0x47"),
    "v1-bad-prefix": (b"PROXZ", r"bad PROXY v1 signature \(byte 4 is 0x5a\)"),
    "v1-lowercase": (b"p", r"no PROXY header \(first byte 0x70\)"),
    "v1-no-space": (b"PROXY\t", r"bad PROXY v1 signature \(byte 5 is 0x09\)"),
    "v1-control-byte": (b"PROXY TCP4 1\x00", r"holds byte 0x00"),
    "v1-high-byte": (b"PROXY TCP4 \xc3", r"holds byte 0xc3"),
    "v1-bare-cr": (b"PROXY TCP4\rX", r"CR not followed by LF"),
    "v1-bare-lf": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", r"does not end in CRLF"),
    "v1-too-long": (b"PROXY " + b"A" * (V1_MAX - 6), r"longer than 107 bytes"),
    "v1-udp": (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", r"not TCP4, TCP6 or UNKNOWN"),
    "v1-few-fields": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", r"has 5 fields, not 6"),
    "v1-many-fields": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", r"has 7 fields, not 6"),
    "v1-double-space": (b"PROXY TCP4  1.2.3.4 5.6.7.8 1\r\n", r"source address is not IPv4"),
    "v1-v6-as-tcp4": (b"PROXY TCP4 ::1 ::1 1 2\r\n", r"source address is not IPv4"),
    "v1-v4-as-tcp6": (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", r"destination address is not IPv6"),
    "v1-leading-zero-ip": (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", r"source address"),
    "v1-scope-id": (b"PROXY TCP6 fe80::1%lo ::1 1 2\r\n", r"source address is not IPv6"),
    "v1-name": (b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", r"source address is not IPv4"),
    "v1-port-range": (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", r"source port is not"),
    "v1-port-sign": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", r"destination port is not"),
    "v1-port-zero-pad": (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", r"source port is not"),
    "v1-empty": (b"PROXY \r\n", r"not TCP4, TCP6 or UNKNOWN"),
    "v2-bad-signature": (SIGNATURE_V2[:6] + b"X", r"bad PROXY v2 signature \(byte 6 is 0x58\)"),
    "v2-version-1": (SIGNATURE_V2 + b"\x11", r"PROXY v2 version 1 is not 2"),
    "v2-command": (SIGNATURE_V2 + b"\x22", r"command 0x2 is not LOCAL or PROXY"),
    "v2-family": (SIGNATURE_V2 + b"\x21\x41", r"family and transport 0x41"),
    "v2-transport": (SIGNATURE_V2 + b"\x21\x13", r"family and transport 0x13"),
    "v2-short-inet": (SIGNATURE_V2 + b"\x21\x11\x00\x0b", r"length 11 is too short"),
    "v2-short-inet6": (SIGNATURE_V2 + b"\x21\x21\x00\x0c", r"length 12 is too short"),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("feeding", [0, 1, 2], ids=["whole", "bytewise", "trailing"])
def test_bad_headers(name: str, feeding: int) -> None:
    wire, reason = BAD[name]
    chunks, _ = list(ways(wire))[feeding]
    with pytest.raises(HeaderError, match=reason) as caught:
        read(chunks)
    assert caught.value.reason.isascii() and caught.value.reason.isprintable()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_headers_fail_on_their_last_byte_not_before(name: str) -> None:
    wire, _ = BAD[name]
    assert read([wire[:-1]]) == (None, None)


def test_an_error_is_final():
    reader = HeaderReader()
    reader.feed(b"X")
    for _ in range(2):
        with pytest.raises(HeaderError, match="first byte 0x58"):
            reader.next_event()


def test_trailing_before_the_header_is_a_caller_bug():
    with pytest.raises(RuntimeError):
        HeaderReader().trailing()


def test_the_header_is_returned_once_read_and_later_bytes_kept():
    reader = HeaderReader()
    reader.feed(build_v1(A4, B4))
    header = reader.next_event()
    reader.feed(b"more")
    assert reader.next_event() == header and reader.trailing() == b"more"


def test_truncated_headers_need_data():
    for wire, _ in GOOD.values():
        for cut in range(len(wire)):
            assert read([wire[:cut]]) == (None, None)


def test_looks_like_header():
    assert looks_like_header(b"PROXY TCP4 ")
    assert looks_like_header(SIGNATURE_V2 + b"\x21")
    assert not looks_like_header(b"PROX")
    assert not looks_like_header(SIGNATURE_V2[:11])
    assert not looks_like_header(b"\x05\x01\x00")


def test_builders_refuse_what_they_cannot_write():
    with pytest.raises(ValueError):
        build_v1(A4, B6)
    with pytest.raises(ValueError):
        build_v2(A4, None)
    with pytest.raises(ValueError):
        build_v1((A4[0], 70000), B4)
    with pytest.raises(ValueError):
        build_v2(A4, B4, tlvs=bytes(70000))


# ---------------------------------------------------------------- properties

ports = st.integers(0, 65535)
ipv4 = st.builds(V4, st.integers(0, 2**32 - 1))
ipv6 = st.builds(V6, st.integers(0, 2**128 - 1))
pairs = st.one_of(st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
                  st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)))
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(
    lambda items: b"".join(bytes([kind]) + len(v).to_bytes(2, "big") + v for kind, v in items))
cuts = st.lists(st.integers(0, 400), max_size=8)


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({0, len(data), *(c % (len(data) + 1) for c in points)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False)]


@settings(deadline=None)
@given(pairs, st.binary(max_size=40), cuts)
def test_v1_round_trip(pair, after, points) -> None:
    source, destination = pair
    wire = build_v1(source, destination)
    assert len(wire) <= V1_MAX
    assert read(split(wire + after, points)) == (ProxyHeader(1, source, destination), after)


@settings(deadline=None)
@given(pairs, tlvs, st.binary(max_size=40), cuts)
def test_v2_round_trip(pair, extensions, after, points) -> None:
    source, destination = pair
    wire = build_v2(source, destination, tlvs=extensions)
    assert read(split(wire + after, points)) == (ProxyHeader(2, source, destination), after)


@settings(deadline=None)
@given(st.sampled_from([build_v1(None), build_v2(None)]), st.binary(max_size=40), cuts)
def test_headers_without_a_client_round_trip(wire, after, points) -> None:
    header, trailing = read(split(wire + after, points))
    assert header.local and header.destination is None and trailing == after


def outcome(chunks: list[bytes]):
    try:
        return ("ok", *read(chunks))
    except HeaderError as exc:
        assert exc.reason.isascii() and exc.reason.isprintable()
        return ("error", exc.reason)


# Random bytes mixed with real pieces, so that inputs get past the signatures.
PIECES = [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n", b" ", b"1.2.3.4", b"::1",
          b"65535", SIGNATURE_V2, b"\x21\x11\x00\x0c", b"\x20\x00\x00\x00", b"\x21\x21\x00\x24"]
junk = st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(PIECES)), max_size=10).map(
    b"".join)


@settings(deadline=None, max_examples=400)
@given(junk, cuts)
def test_random_bytes_raise_only_header_error_the_same_however_split(data, points) -> None:
    assert outcome(split(data, points)) == outcome([data])


def test_parser_imports_no_io_modules() -> None:
    tree = ast.parse(Path(proxyproto.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "select", "selectors", "asyncio", "os", "io", "ssl",
                           "logging", "time"}
