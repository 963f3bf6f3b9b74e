"""One client-side SOCKS negotiation, sans I/O: what to send, and what the replies mean.

This module owns the client's half of SOCKS4, 4a and 5 (RFC 1928) with RFC 1929
username/password, on top of the server's codec (`sockd.protocol`: its request builders and
`ClientReplyParser`; there is no second codec).  A `ClientHandshake` is fed the bytes the server
sends and hands back the bytes to send next; the blocking socket (`clients.sockssocket`) and the
asyncio helper (`clients.aio`) both drive it, each with its own deadline.

Contract: `start` gives the first message; `receive` returns what to send next (possibly
nothing) and sets `reply` when the request's reply has come (and, for BIND, `second` when the
connecting peer's has); a failure reply raises `SocksRefused` carrying the code and its words,
a broken reply `SocksProtocolError`.  It must not do I/O, resolve names or read the clock.
"""

from __future__ import annotations

from clients.errors import SocksProtocolError, SocksRefused, reply_message
from sockd.protocol import (
    NEED_DATA,
    ClientReplyParser,
    Command,
    Host,
    Method,
    ProtocolError,
    Reply,
    Socks4Reply,
    Socks5Reply,
    rfc1929_request,
    socks4_request,
    socks5_greeting,
    socks5_request,
)

COMMAND_NAMES = {Command.CONNECT: "connect", Command.BIND: "bind",
                 Command.UDP_ASSOCIATE: "udp associate"}


class ClientHandshake:
    """The negotiation of one request with one server (``server`` names it in errors)."""

    def __init__(self, version: int, command: Command, host: Host, port: int, *,
                 userid: str = "", username: str | None = None, password: str | None = None,
                 server: str = "") -> None:
        if version not in (4, 5):
            raise ValueError(f"SOCKS version {version}")
        self.version = version
        self.command = Command(command)
        self.host = host
        self.port = port
        self.userid = userid
        self.credentials = (username, password) if username and password is not None else None
        self.server = server
        self.reply: Reply | None = None
        self.second: Reply | None = None
        self._parser = ClientReplyParser(version)
        self._stage = "method" if version == 5 else "reply"

    @property
    def done(self) -> bool:
        """The request's (first) reply has come and granted it."""
        return self.reply is not None

    def start(self) -> bytes:
        """The first message: the SOCKS4 request, or the SOCKS5 greeting."""
        if self.version == 4:
            return socks4_request(self.command, self.host, self.port, self.userid)
        methods = [Method.NO_AUTH]
        if self.credentials is not None:
            methods.append(Method.USERNAME_PASSWORD)
        return socks5_greeting(methods)

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the server; return the bytes to send next (b"" for none)."""
        self._parser.feed(data)
        out = bytearray()
        while self._stage != "done":
            try:
                reply = self._parser.next_reply()
            except ProtocolError as e:
                raise SocksProtocolError(f"{self.server}: {e.reason}", server=self.server) \
                    from None
            if reply is NEED_DATA:
                break
            out += self._step(reply)
        return bytes(out)

    def trailing(self) -> bytes:
        """Bytes that came after the last reply: the first relayed data."""
        return self._parser.trailing()

    def _step(self, reply: Reply) -> bytes:
        if self._stage == "method":
            return self._method(reply)
        if self._stage == "auth":
            if reply.code != 0:
                raise SocksRefused(f"{self.server}: user name or password refused "
                                   f"(status {reply.code})", code=reply.code, server=self.server)
            self._stage = "reply"
            return self._request()
        self._check(reply)
        if self._stage == "reply":
            self.reply = reply
            self._stage = "second" if self.command is Command.BIND else "done"
        else:
            self.second = reply
            self._stage = "done"
        return b""

    def _method(self, reply: Reply) -> bytes:
        if reply.code == Method.NO_AUTH:
            self._stage = "reply"
            return self._request()
        if reply.code == Method.USERNAME_PASSWORD and self.credentials is not None:
            self._stage = "auth"
            return rfc1929_request(*self.credentials)
        if reply.code == Method.NO_ACCEPTABLE:
            hint = "" if self.credentials else " (set SOCKS_USERNAME and SOCKS_PASSWORD?)"
            raise SocksRefused(f"{self.server}: no acceptable authentication method{hint}",
                               server=self.server)
        raise SocksProtocolError(f"{self.server}: the server chose method 0x{reply.code:02x}, "
                                 "which was not offered", server=self.server)

    def _request(self) -> bytes:
        return socks5_request(self.command, self.host, self.port)

    def _check(self, reply: Reply) -> None:
        granted = Socks4Reply.GRANTED if self.version == 4 else Socks5Reply.SUCCEEDED
        if reply.code == granted:
            return
        which = "request" if self._stage == "reply" else "incoming connection"
        message = reply_message(self.version, reply.code)
        raise SocksRefused(f"{self.server}: {COMMAND_NAMES[self.command]} {which} refused: "
                           f"{message} (SOCKS{self.version} reply {reply.code})",
                           code=reply.code, server=self.server)


__all__ = ["ClientHandshake"]
