"""The judging path, property-tested through a real Session over a loopback TCP pair.

Whatever bytes a client sends as a destination name, a name that is looked up
is byte for byte the name that was judged, and both are the bytes on the wire.
"""

import contextlib
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockd import destination, hooks, resolver, rules
from sockd.session import Session, Status
from sockd.settings import Settings

# The first rule has an address destination, so judging a name needs its address.
RULES = "deny 0.0.0.0/0 10.0.0.0/8\ndeny 0.0.0.0/0 .example.com\ndeny 0.0.0.0/0\n"


class SpyRules(rules.Ruleset):
    """The real rules, remembering every query they judge."""

    def __init__(self) -> None:
        real = rules.parse_text(RULES, "spy")
        super().__init__(real.file, real.rules)
        self.judged: list[rules.Query] = []

    def evaluate(self, query, resolve):
        self.judged.append(query)
        return super().evaluate(query, resolve)


@contextlib.contextmanager
def tcp_pair():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    with client, server:
        yield client, server


def run_session(request: bytes):
    """Serve one request; returns (reply bytes, names looked up, queries judged)."""
    looked_up: list[str] = []
    spy = SpyRules()

    def lookup(name: str, timeout: float):
        looked_up.append(name)
        return rules.ipaddress.IPv4Address("127.0.0.1")

    with tcp_pair() as (client, server):
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        session = Session(server, Settings(negotiate_timeout=5, connect_timeout=5), spy,
                          hooks.HookRunner(), Status(), lookup=lookup)
        session.run()
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    return reply, looked_up, spy.judged


def socks5(name: bytes) -> bytes:
    return (b"\x05\x01\x00\x05\x01\x00\x03" + bytes((len(name),)) + name
            + struct.pack(">H", 80))


def socks4a(name: bytes) -> bytes:
    return struct.pack(">BBH", 4, 1, 80) + b"\0\0\0\x01user\0" + name + b"\0"


names = st.one_of(
    st.binary(min_size=1, max_size=255),
    st.text(alphabet="abcXYZ019-_.\x00\xad\u00e9\u3002\uff0e ", min_size=1, max_size=40)
    .map(lambda t: t.encode("utf-8")[:255]).filter(bool),
    st.from_regex(rb"\A[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}\.?\Z"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, version=st.sampled_from([4, 5]))
def test_the_name_looked_up_is_the_name_judged_and_sent(name, version):
    if version == 4:
        name = name.split(b"\0", 1)[0] or b"x"   # a 4a name ends at its first NUL
    reply, looked_up, judged = run_session(socks5(name) if version == 5 else socks4a(name))
    wire = name.decode("latin-1")
    try:
        destination.host_name(wire)
        valid = True
    except destination.InvalidName:
        valid = False
    if not valid:
        assert looked_up == [] and judged == []
        assert reply[-10:-8] == b"\x05\x04" if version == 5 else reply[-8:-6] == b"\x00\x5b"
        return
    if resolver.numeric(wire) is None:
        assert looked_up == [wire]               # the first rule needs the address
    else:
        assert looked_up == []                   # a number is never looked up
    for looked in looked_up:
        assert looked == wire                    # exactly the bytes sent
        assert judged and judged[0].dst == looked  # exactly what the rules judged
        assert looked.encode("ascii") == name    # no codec can change it on the way


def test_invalid_bytes_are_never_looked_up():
    for name in (b"localhost\0.example.com", b"local\xadhost", b"a b", b"-" * 64 + b".x",
                 b"a" * 254, b"a..b", b".", b"\xff"):
        reply, looked_up, judged = run_session(socks5(name))
        assert looked_up == [] and judged == [], name
        assert reply == b"\x05\x00" + b"\x05\x04\x00\x01" + bytes(6), name


def test_a_numeric_name_is_judged_as_an_address_and_never_looked_up():
    for name in (b"127.1", b"0x7f.0.0.1", b"2130706433"):
        reply, looked_up, judged = run_session(socks5(name))
        assert looked_up == []
        assert judged[0].dst == rules.ipaddress.IPv4Address("127.0.0.1")
