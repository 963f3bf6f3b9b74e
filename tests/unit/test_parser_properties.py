"""Hostile input, the parsers the other unit tests leave without a property: socks.conf,
sockd.route, the password file, the UDP header and bytes decoded as an address, mutated SOCKS
handshakes, and sockd.conf's two entry points agreeing.  For each: nothing but the module's
own error is ever raised, every error names FILE:LINE on one printable line, and what is
written the way the man page says reads back the same.

(The SOCKS codec's random bytes and round trips, the PROXY header, the ident reply and the
FTP command reader have theirs in test_protocol.py, test_proxyproto.py, test_ident.py and
test_ftpaudit.py; the fuzzer, tests/fuzz, drives all of them.)
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_protocol import REQUESTS, negotiate, split
from test_rules import TOKENS as RULE_TOKENS
from test_rules import resolver as rules_resolver

from clients import conf
from clients.conf import Action
from sockd import passwords, protocol, route, rules
from sockd.grammar import ConfigError
from sockd.passwords import PasswordError, ScryptHash
from sockd.protocol import Method, ProtocolError

SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])

NAMES = {"proxy.test": "192.0.2.1", "inside.test": "10.1.1.1", "v6.test": "2001:db8::1"}


def resolver(name: str):
    """Load-time resolver of these tests: a fixed table, LookupError for anything else."""
    return ipaddress.ip_address(NAMES[name])


def texts(tokens: list[str]):
    """Files made of lines of *tokens*, or of any text at all."""
    line = st.one_of(st.lists(st.sampled_from(tokens), max_size=12).map(" ".join),
                     st.text(max_size=80))
    return st.lists(line, max_size=8).map("\n".join)


def assert_well_formed(errors: list[ConfigError], file: str, text: str) -> None:
    """Every error names the file and a line of it, on one printable line."""
    count = len(text.split("\n"))
    for error in errors:
        message = str(error)
        assert message.startswith(f"{file}:"), message
        assert 1 <= error.line <= count, (error.line, count)
        assert message.isprintable(), message


# ---------------------------------------------------------------------------------------------
# socks.conf

SOCKS_CONF_TOKENS = [
    "deny", "direct", "sockd", "Sockd", "sockd@", "sockd@p1,p2:1081", "sockd@[::1]:1080",
    "@=", "@=p1", "@=p1:1081,[::1]:1082", "@=a,,b", "@=:80", "@=[x]", "*=", "*=alice",
    "*=alice,bob", "*=/nonexistent", "proto=4", "proto=4a", "proto=5", "proto=6",
    "order=random", "order=listed", "order=x", "x=y", "10.0.0.0", "255.0.0.0", "0.0.0.0",
    "0.0.0.0/0", "10.0.0.0/8", "10.0.0.1/33", "::1", "2001:db8::/32", "::/0", "proxy.test",
    "nosuch.test", ".example.com", "example.com.", "eq", "neq", "lt", "le", "gt", "ge", "80",
    "http", "nosuchservice", "65536", "-1", ":", ": echo %u %Z %z", "#", "é", "\x00", "\t",
    "\r",
]


@SETTINGS
@given(texts(SOCKS_CONF_TOKENS))
def test_socks_conf_raises_only_config_errors(text):
    errors = conf.check_text(text, "s.conf", resolver=resolver)
    assert_well_formed(errors, "s.conf", text)
    try:
        routing = conf.parse_text(text, "s.conf", resolver=resolver)
    except ConfigError as error:
        assert errors and str(error) == str(errors[0])
        return
    assert not errors
    for dst in ("10.1.2.3", "www.example.com", "2001:db8::5"):
        assert routing.route(dst, 80, "alice", resolver).action in set(Action)


ipv4_nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                      st.integers(0, 2**32 - 1), st.integers(0, 32))
ipv6_nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                      st.integers(0, 2**128 - 1), st.integers(0, 128))
PORT_OPS = {"eq": int.__eq__, "neq": int.__ne__, "lt": int.__lt__, "le": int.__le__,
            "gt": int.__gt__, "ge": int.__ge__}


def written(net) -> str:
    """A network as socks.conf and sockd.route write it: the classic pair for IPv4 (when
    the mask is not zero: 0.0.0.0 0.0.0.0 is the classic "any"), a prefix for IPv6."""
    if net.version == 4 and net.prefixlen:
        return f"{net.network_address} {net.netmask}"
    return str(net)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["deny", "direct", "sockd"]), ipv4_nets | ipv6_nets,
                          st.none() | st.tuples(st.sampled_from(sorted(PORT_OPS)),
                                                st.integers(0, 65535)),
                          st.none() | st.sampled_from(["alice", "alice,bob", "bob"])),
                min_size=1, max_size=6),
       st.integers(0, 2**32 - 1), st.integers(1, 65535),
       st.sampled_from(["alice", "bob", "carol"]))
def test_socks_conf_lines_read_back_and_route_as_written(lines, address, port, user):
    text = "\n".join(
        " ".join(w for w in (action if action != "sockd" else "sockd @=proxy.test:1081",
                             users and f"*={users}", written(net),
                             port_test and f"{port_test[0]} {port_test[1]}") if w)
        for action, net, port_test, users in lines)
    routing = conf.parse_text(text, "s.conf", resolver=resolver)
    assert [line.action.value for line in routing.lines] == [a for a, *_ in lines]
    for n, line in enumerate(routing.lines, 1):
        assert line.line == n and line.text == text.split("\n")[n - 1]
    dst = ipaddress.IPv4Address(address)

    def matches(net, port_test, users) -> bool:
        # a zero mask matches every address of both families (socks.conf(5), sockd.conf(5))
        return (net.prefixlen == 0 or (dst in net if net.version == 4 else False)) \
            and (port_test is None or PORT_OPS[port_test[0]](port, port_test[1])) \
            and (users is None or user in users.split(","))
    expected = next((n for n, (_, net, pt, us) in enumerate(lines, 1) if matches(net, pt, us)),
                    None)
    got = routing.route(dst, port, user, resolver)
    if dst in conf.ALWAYS_DIRECT:
        assert got.action is Action.DIRECT      # whatever the file says
        return
    assert (got.line.line if got.line else None) == expected, (text, got)


# ---------------------------------------------------------------------------------------------
# sockd.route

ROUTE_TOKENS = ["10.0.0.1", "192.0.2.1", "::1", "fe80::1", "proxy.test", "nosuch.test",
                "10.0.0.0", "255.0.0.0", "0.0.0.0", "255.255.255.255", "10.0.0.0/8",
                "2001:db8::/32", "::ffff:10.0.0.1", "1.2.3", "256.0.0.0", "/", "#", "# x",
                "é", "\x00", "x", "-", "0x10.0.0.0"]


@SETTINGS
@given(texts(ROUTE_TOKENS))
def test_sockd_route_raises_only_config_errors(text):
    try:
        table = route.parse_routes(text, "r.route", resolver=resolver)
    except ConfigError as error:
        assert_well_formed([error], "r.route", text)
        return
    for address in ("10.1.2.3", "2001:db8::5", "127.0.0.1"):
        found = table.lookup(ipaddress.ip_address(address))
        assert found is None or isinstance(found, route.Route)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 2**32 - 2), ipv4_nets), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1))
def test_routes_read_back_and_the_first_match_wins(entries, address):
    text = "\n".join(f"{ipaddress.IPv4Address(i)} {written(net)}" for i, net in entries)
    table = route.parse_routes(text, "r.route", resolver=resolver)
    assert [(int(r.interface), r.line) for r in table.routes] == \
        [(i, n) for n, (i, _) in enumerate(entries, 1)]
    dst = ipaddress.IPv4Address(address)
    expected = next((n for n, (_, net) in enumerate(entries, 1) if dst in net), None)
    found = table.lookup(dst)
    assert (found.line if found else None) == expected
    mapped = ipaddress.IPv6Address(f"::ffff:{dst}")      # an IPv4-mapped client: its IPv4
    assert (table.lookup(mapped) or None) == found


# ---------------------------------------------------------------------------------------------
# The password file

FAST = dict(ln=1, r=1, p=1)            # cheap parameters: the format, not the cost, is tested
A_HASH = str(ScryptHash.make(b"pw", **FAST))
PASSWORD_TOKENS = ["alice", "bob", "é", "#", " ", ":", "::", "$scrypt$", A_HASH,
                   A_HASH.replace("ln=1", "ln=40"), A_HASH.replace("p=1", "p=0"),
                   A_HASH[:-4], A_HASH + "$", "$scrypt$ln=1,r=1,p=1$$", "plain-secret",
                   "\r", "\x00", "\t"]


def password_texts():
    line = st.one_of(
        st.lists(st.sampled_from(PASSWORD_TOKENS), max_size=5).map("".join),
        st.text(max_size=80))
    return st.lists(line, max_size=6).map("\n".join)


@SETTINGS
@given(password_texts())
def test_the_password_file_raises_only_password_errors(text):
    try:
        table = passwords.parse(text, "p.passwd")
    except PasswordError as error:
        assert_well_formed([error], "p.passwd", text)
        return
    for user in table.users():
        assert table.verify(user, b"not the password") in (True, False)


@SETTINGS
@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=4, max_size=40)
       .filter(lambda s: ":" not in s and not s.startswith("$") and s.strip()),
       st.sampled_from(["alice", "bob"]))
def test_no_error_quotes_what_may_be_a_password(secret, user):
    """A plain-text password (a file not yet converted) is never in the message."""
    assume(not secret.startswith("$scrypt$"))
    # A secret that is part of the message's own words (" scr" of "scrypt") is no leak.
    with pytest.raises(PasswordError) as plain:
        passwords.parse(f"# users\n{user}:xxxx\n", "p.passwd")
    assume(secret not in str(plain.value) and secret.strip() not in str(plain.value))
    text = f"# users\n{user}:{secret}\n"
    with pytest.raises(PasswordError) as caught:
        passwords.parse(text, "p.passwd")
    assert secret not in str(caught.value) and secret.strip() not in str(caught.value)


user_names = st.binary(min_size=1, max_size=40).filter(
    lambda u: passwords.user_name_problem(u) is None and b":" not in u
    and not u.lstrip().startswith(b"#") and u.strip() == u and b"\n" not in u
    and b"\r" not in u)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.filter_too_much])
@given(st.lists(st.tuples(user_names, st.binary(max_size=40)), min_size=1, max_size=4,
                unique_by=lambda e: e[0]))
def test_the_password_file_round_trips(entries):
    """Lines as sockpasswd writes them (user:hash, the name as its UTF-8 or raw bytes) read
    back: the users in order, each password verifies, another does not."""
    lines = [f"{user.decode('utf-8', 'surrogateescape')}:{ScryptHash.make(pw, **FAST)}"
             for user, pw in entries]
    text = "# sockd passwords\n" + "\n".join(lines) + "\n"
    table = passwords.parse(text, "p.passwd")
    assert table.users() == [user for user, _ in entries]
    for user, pw in entries:
        assert table.verify(user, pw) is True
        assert table.verify(user, pw + b"x") is False
    assert table.verify(b"\xffnobody\xff", b"x") is None


# ---------------------------------------------------------------------------------------------
# The SOCKS codec: what test_protocol.py does not already throw at it

@SETTINGS
@given(st.binary(max_size=300))
def test_udp_header_raises_only_protocol_error(data):
    try:
        header, payload = protocol.parse_udp_datagram(data)
    except ProtocolError as exc:
        assert exc.reply is None and exc.reason.isascii() and exc.reason.isprintable()
        return
    assert data.endswith(payload)
    assert protocol.build_udp_datagram(header.host, header.port, payload, header.frag)[2:] \
        == data[2:] or isinstance(header.host, str)


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 10))
def test_decode_address_gives_an_address_none_or_protocol_error(data, offset):
    try:
        got = protocol.decode_address(data, offset)
    except ProtocolError as exc:
        assert exc.reason.isascii() and exc.reason.isprintable()
        return
    if got is not None:
        host, port, end = got
        assert offset < end <= len(data) and 0 <= port <= 65535


VALID = [wire for wire, _, _, _ in REQUESTS.values()]
AUTH = (b"\x05\x01\x02" + b"\x01\x05alice\x06secret" + b"\x05\x01\x00\x03\x07example\x00\x50")


@st.composite
def mutated(draw):
    """A valid handshake with a few bytes flipped, inserted, deleted or repeated."""
    data = bytearray(draw(st.sampled_from([*VALID, AUTH])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def outcome(chunks: list[bytes], method: Method) -> tuple:
    """Events, bytes sent and trailing data, or the error (test_protocol.outcome, but a
    SOCKS 5 request may name 0.0.0.x: only SOCKS 4a's marker is never a host)."""
    try:
        events, sent, handshake = negotiate(chunks, method=method)
    except ProtocolError as exc:
        assert exc.reason.isascii() and exc.reason.isprintable()
        assert exc.reply is None or isinstance(exc.reply, bytes)
        return ("error", exc.reason, exc.reply)
    done = bool(events) and isinstance(events[-1], protocol.Request)
    if done and events[-1].version == 4 and isinstance(events[-1].host, ipaddress.IPv4Address):
        assert not 0 < int(events[-1].host) < 256
    return ("ok", events, sent, handshake.trailing() if done else None)


@SETTINGS
@given(mutated(), st.lists(st.integers(0, 400), max_size=6),
       st.sampled_from([Method.NO_AUTH, Method.USERNAME_PASSWORD]))
def test_mutated_handshakes_raise_only_protocol_error_however_split(data, cuts, method):
    assert outcome(split(data, cuts), method) == outcome([data], method)


# ---------------------------------------------------------------------------------------------
# sockd.conf: its two entry points agree (test_rules.py has the raise-only property)

@SETTINGS
@given(texts(RULE_TOKENS))
def test_rules_check_and_parse_agree_and_errors_are_one_line(text):
    errors = rules.check_text(text, "p.conf", resolver=rules_resolver)
    assert_well_formed(errors, "p.conf", text)
    lines = [e.line for e in errors]
    assert lines == sorted(lines)
    try:
        rules.parse_text(text, "p.conf", resolver=rules_resolver)
    except ConfigError as error:
        assert errors and str(error) == str(errors[0])
    else:
        assert not errors
