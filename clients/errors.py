"""The exceptions of the client library: what a caller can act on when a connection fails.

Every one is an `OSError` with a meaningful ``errno`` (so code written for plain sockets keeps
working) and a SOCKS-specific attribute or two:

- `SocksRefused` (a `ConnectionRefusedError`, ECONNREFUSED, as the original's Rconnect set):
  socks.conf denied the connection, no server of the list could be reached, or a server
  answered with a failure code; ``code`` is the reply code (SOCKS4 CD 91-93, SOCKS5 REP 1-8, or
  None when no server said it), ``server`` the server that said it.
- `SocksTimeout` (a `TimeoutError`, ETIMEDOUT): a handshake did not finish by its deadline.
- `SocksProtocolError` (EPROTO): the server broke the protocol, or offered no method we can do.
"""

from __future__ import annotations

import errno

# The original client's messages for SOCKS4 refusals (cstc-facts §3.4: 92 and 93 went to
# standard error in these words).
SOCKS4_MESSAGES = {
    91: "request rejected or failed",
    92: "Error: SOCKS proxy server cannot connect to identd on your machine.",
    93: "Error: user-id does not agree with the one reported by identd on your machine.",
}

# RFC 1928 §6.
SOCKS5_MESSAGES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def reply_message(version: int, code: int) -> str:
    """The words for a failure reply code."""
    table = SOCKS4_MESSAGES if version == 4 else SOCKS5_MESSAGES
    return table.get(code, f"unknown reply code {code}")


class SocksError(OSError):
    """Base class: a connection through socks.conf or a SOCKS server failed."""

    code: int | None = None
    server: str | None = None


class SocksRefused(SocksError, ConnectionRefusedError):
    """Refused by socks.conf, by every server of the list being down, or by a server's reply."""

    def __init__(self, message: str, *, code: int | None = None,
                 server: str | None = None) -> None:
        super().__init__(errno.ECONNREFUSED, message)
        self.code = code
        self.server = server


class SocksTimeout(SocksError, TimeoutError):
    """A handshake passed its deadline."""

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(errno.ETIMEDOUT, message)
        self.server = server


class SocksProtocolError(SocksError):
    """The server sent what the protocol does not allow, or wants a method we cannot do."""

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(errno.EPROTO, message)
        self.server = server


__all__ = ["SOCKS4_MESSAGES", "SOCKS5_MESSAGES", "SocksError", "SocksProtocolError",
           "SocksRefused", "SocksTimeout", "reply_message"]
