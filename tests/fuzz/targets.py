"""The fuzz targets: one function per parser, taking any bytes.

Each returns quietly when the parser did what its contract says (a result, or the module's
own error) and raises anything else: an unexpected exception escapes, a broken invariant is
an AssertionError.  The functions need no fuzzer: tests/fuzz/test_corpus.py replays the
corpus through them in `make test`; scripts/fuzz.py runs them under atheris (`make fuzz`).

The first byte of an input often chooses options (a method, how the stream is cut), so that
one corpus file stands for one whole run of the parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

from clients import conf
from sockd import ftpaudit, identwire, passwords, protocol, proxyproto, route, rules
from sockd.grammar import ConfigError
from sockd.protocol import (
    NEED_DATA,
    ClientReplyParser,
    Method,
    MethodsOffered,
    ProtocolError,
    Request,
    ServerHandshake,
    UsernamePassword,
)

NAMES = {"proxy.test": "192.0.2.1", "gateway.test": "192.0.2.1", "v6.test": "2001:db8::1",
         "loopback": "127.0.0.0"}


def resolver(name: str):
    """Load-time resolver: a fixed table (no DNS in a fuzzer), LookupError for the rest."""
    return ipaddress.ip_address(NAMES[name])


def chunks(data: bytes, step: int) -> list[bytes]:
    """*data* cut every *step* bytes (0: whole)."""
    if step == 0:
        return [data]
    return [data[i:i + step] for i in range(0, len(data), step)] or [b""]


def _text(data: bytes) -> str:
    """Bytes as the config readers decode a file."""
    return data.decode("utf-8", "surrogateescape")


def _one_line(message: str) -> None:
    assert message.isprintable(), f"error message not one printable line: {message!r}"


# ---------------------------------------------------------------------------------------------
# The SOCKS codec

def _server_run(pieces: list[bytes], method: Method, auth_ok: bool, allow_socks4: bool):
    handshake = ServerHandshake(allow_socks4=allow_socks4)
    pending = iter(pieces)
    events: list[object] = []
    sent = b""
    try:
        while not events or not isinstance(events[-1], Request):
            event = handshake.next_event()
            if event is NEED_DATA:
                piece = next(pending, None)
                if piece is None:
                    break
                handshake.feed(piece)
                continue
            events.append(event)
            if isinstance(event, MethodsOffered):
                offered = method in event.methods
                sent += handshake.choose_method(method if offered else Method.NO_ACCEPTABLE)
            elif isinstance(event, UsernamePassword):
                sent += handshake.auth_result(auth_ok)
    except ProtocolError as exc:
        _one_line(exc.reason)
        assert exc.reason.isascii()
        assert exc.reply is None or isinstance(exc.reply, bytes)
        return ("error", exc.reason, exc.reply, events, sent)
    for piece in pending:
        handshake.feed(piece)
    done = bool(events) and isinstance(events[-1], Request)
    if done:
        request = events[-1]
        # the reply for any request encodes (a server answers every request it parsed)
        handshake.reply(0 if request.version == 5 else 90)
    return ("ok", events, sent, handshake.trailing() if done else None)


def socks_server(data: bytes) -> None:
    """ServerHandshake: events or ProtocolError, the same whether fed whole or in pieces."""
    if not data:
        return
    flags, stream = data[0], data[1:]
    method = Method.USERNAME_PASSWORD if flags & 1 else Method.NO_AUTH
    auth_ok, allow4, step = bool(flags & 2), not flags & 4, flags >> 3
    whole = _server_run([stream], method, auth_ok, allow4)
    cut = _server_run(chunks(stream, step), method, auth_ok, allow4)
    assert whole == cut, (whole, cut)


def socks_client(data: bytes) -> None:
    """ClientReplyParser (the client side): replies or ProtocolError."""
    if not data:
        return
    version = 4 if data[0] & 1 else 5
    parser = ClientReplyParser(version)
    parser.feed(data[1:])
    try:
        for _ in range(3):
            if parser.next_reply() is NEED_DATA:
                break
    except ProtocolError as exc:
        _one_line(exc.reason)


def udp_header(data: bytes) -> None:
    """parse_udp_datagram: a header and payload that build back, or ProtocolError."""
    try:
        header, payload = protocol.parse_udp_datagram(data)
    except ProtocolError as exc:
        assert exc.reply is None
        _one_line(exc.reason)
        return
    rebuilt = protocol.build_udp_datagram(header.host, header.port, payload, header.frag)
    again = protocol.parse_udp_datagram(rebuilt)
    assert again == (header, payload), (again, header, payload)


# ---------------------------------------------------------------------------------------------
# PROXY protocol, ident, FTP

def proxy_header(data: bytes) -> None:
    """HeaderReader: a header or HeaderError, the same however the bytes come."""
    if not data:
        return
    step, stream = data[0] >> 2, data[1:]

    def run(pieces: list[bytes]) -> tuple:
        reader = proxyproto.HeaderReader()
        try:
            for n, piece in enumerate(pieces):
                reader.feed(piece)
                header = reader.next_event()
                if header is not NEED_DATA:
                    for rest in pieces[n + 1:]:
                        reader.feed(rest)
                    return ("header", header, reader.trailing())
        except proxyproto.HeaderError as exc:
            _one_line(str(exc))
            return ("error", str(exc))
        return ("need",)
    whole, cut = run([stream]), run(chunks(stream, step))
    assert whole == cut, (whole, cut)


def ident_reply(data: bytes) -> None:
    """parse_reply and ReplyReader: an answer whatever the identd sends; never an error."""
    if len(data) < 2:
        return
    client_port, server_port = 1 + data[0] * 200, 1 + data[1] * 250
    answer = identwire.parse_reply(data[2:], client_port, server_port)
    assert isinstance(answer, identwire.IdentAnswer)
    reader = identwire.ReplyReader(client_port, server_port)
    for piece in chunks(data[2:], 7):
        reader.feed(piece)
        if reader.next_answer() is not NEED_DATA:
            break
    reader.feed_eof()
    assert isinstance(reader.next_answer(), identwire.IdentAnswer)


def ftp_commands(data: bytes) -> None:
    """CommandReader: the same commands however the stream is cut; never an error."""
    if not data:
        return
    step, stream = data[0] >> 3, data[1:]

    def run(pieces: list[bytes]) -> list[object]:
        reader = ftpaudit.CommandReader()
        events = []
        for piece in pieces:
            reader.feed(piece)
            while (event := reader.next_event()) is not NEED_DATA:
                events.append(event)
        return events
    assert run([stream]) == run(chunks(stream, step))


# ---------------------------------------------------------------------------------------------
# Configuration files

def _config(check: Callable[[], list[ConfigError]], parse: Callable[[], object],
            file: str, text: str) -> object | None:
    errors = check()
    lines = len(text.split("\n"))
    for error in errors:
        assert str(error).startswith(f"{file}:") and 1 <= error.line <= lines, str(error)
        _one_line(str(error))
    try:
        result = parse()
    except ConfigError as error:
        assert errors and str(error) == str(errors[0]), (str(error), errors)
        return None
    assert not errors, errors
    return result


def sockd_conf(data: bytes) -> None:
    """rules.check_text / parse_text: ConfigErrors naming FILE:LINE; a ruleset decides."""
    text = _text(data)
    ruleset = _config(lambda: rules.check_text(text, "f.conf", resolver=resolver),
                      lambda: rules.parse_text(text, "f.conf", resolver=resolver),
                      "f.conf", text)
    if ruleset is not None:
        query = rules.Query(rules.Command.CONNECT, ipaddress.ip_address("10.0.0.1"), "alice",
                            False, "www.example.com", 80)
        ruleset.evaluate(query, lambda name: ipaddress.ip_address("192.0.2.7"))


def socks_conf(data: bytes) -> None:
    """clients.conf.check_text / parse_text; a good file routes."""
    text = _text(data)
    routing = _config(lambda: conf.check_text(text, "s.conf", resolver=resolver),
                      lambda: conf.parse_text(text, "s.conf", resolver=resolver),
                      "s.conf", text)
    if routing is not None:
        routing.route("192.0.2.7", 80, "alice", resolver)
        routing.route("www.example.com", 443, "bob", resolver)


def sockd_route(data: bytes) -> None:
    """route.parse_routes: a table or a ConfigError naming FILE:LINE."""
    text = _text(data)
    try:
        table = route.parse_routes(text, "r.route", resolver=resolver)
    except ConfigError as error:
        _one_line(str(error))
        assert str(error).startswith("r.route:")
        return
    table.lookup(ipaddress.ip_address("192.0.2.7"))


_PASSWORD_WORDING = Path(passwords.__file__).read_text(encoding="utf-8")


def password_file(data: bytes) -> None:
    """passwords.parse: a table or a PasswordError that quotes no hash field."""
    text = _text(data)
    try:
        table = passwords.parse(text, "p.passwd")
    except passwords.PasswordError as error:
        _one_line(str(error))
        assert str(error).startswith("p.passwd:")
        line = text.split("\n")[error.line - 1].removesuffix("\r")
        user, _, field = line.partition(":")
        # (a field that is a piece of the messages' own wording, or of the user name that
        # they do quote, proves nothing)
        if len(field) >= 8 and field not in _PASSWORD_WORDING and field not in user:
            assert field not in str(error), "a message quotes a password field"
        return
    assert len(table.users()) <= text.count("\n") + 1


TARGETS: dict[str, Callable[[bytes], None]] = {
    "socks_server": socks_server,
    "socks_client": socks_client,
    "udp_header": udp_header,
    "proxy_header": proxy_header,
    "ident_reply": ident_reply,
    "ftp_commands": ftp_commands,
    "sockd_conf": sockd_conf,
    "socks_conf": socks_conf,
    "sockd_route": sockd_route,
    "password_file": password_file,
}
