"""The RFC 1413 (ident) wire format, sans I/O: the query line and the reply parser.

This module owns the bytes of one ident exchange as the querying side sees
them: the query line (`query_line`), the reply line (`parse_reply`), and the
bounded line reader (`ReplyReader`) that turns whatever the identd sends into
exactly one `IdentAnswer`. Connecting to port 113, the time limit and the
socket belong to `sockd.ident`; what an answer means for a rule belongs to
the session. Like `sockd.protocol`, it never imports socket or select, never
logs and never reads the clock, so every vector is tested without a network.

The contract (RFC 1413 §§3, 6):

- A query is ``<port on the identd's host> , <port on ours>`` CR LF; for sockd
  that is the client's source port, then the port the client connected to.
- A reply is one line, at most `MAX_REPLY` bytes with its CR LF (§3 lets the
  querier abort after 1,000 bytes without an end of line):
  ``ports : USERID : opsys [, charset] : user-id`` or ``ports : ERROR : error``.
- Blanks (space, tab) around the ports, the keywords, the opsys and the
  charset are ignored, keywords are compared without regard to case, and a
  backslash quotes the next character inside a token (§6). Any opsys and
  charset are accepted ("OTHER", "UNIX", "US-ASCII", unknown ones alike).
- The port pair must be the one asked about; a reply about other ports is
  garbage, never an answer.
- The user-id is every byte after the colon that ends the opsys field, up to
  the end of the line: it may hold colons, commas, backslashes, shell
  metacharacters and any high byte, all kept verbatim. Blanks at either end
  are dropped (decision): §6 says a space after the colon belongs to the
  user-id, but real identds write ``: USERID : UNIX : name`` and libident, which
  CSTC sockd used, drops them too; no identd means a name padded with blanks.
  NUL and a CR that does not end the line are kept: the answer is the ident
  user whatever its bytes, escaped for logs and made inert for hooks by the
  caller, never rejected as malformed. A user-id that is empty (after the
  blanks) is garbage: §6 requires at least one octet, and an empty name would
  match a client that claims none.
- User-ids are decoded latin-1, so every byte survives; the reason of a
  no-answer is printable ASCII by construction (an error token that is not
  printable is not copied into it).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sockd.protocol import NEED_DATA, NeedData

__all__ = [
    "MAX_REPLY",
    "AnswerKind",
    "IdentAnswer",
    "ReplyReader",
    "parse_reply",
    "query_line",
]

MAX_REPLY = 1000
"""Longest reply line, CR LF included (RFC 1413 §3)."""

_BLANKS = b" \t"
_PRINTABLE_TOKEN = re.compile(rb"[!-~]{1,64}")  # §6 <token>: 1*64 printable, no space


class AnswerKind(enum.Enum):
    """What the identd's reply amounts to."""

    USER = "user"            # a USERID reply: the identd names the connection's owner
    NO_ANSWER = "no answer"  # anything else: unreachable, silent, ERROR, garbage, too long...


@dataclass(frozen=True)
class IdentAnswer:
    """The outcome of one ident query.

    For USER, user is the user-id (latin-1, verbatim), opsys and charset what
    the identd said (charset "" when absent), reason "". For NO_ANSWER, user is
    None and reason says why, in printable ASCII for the log: ``unreachable
    (Connection refused)``, ``timed out``, ``ERROR : NO-USER``, ``garbage``,
    ``reply for other ports``, ``too long``, ``closed early`` (with the cause when
    the identd reset the connection), or ``failed (...)`` when this host could not
    make the query at all (no socket, cannot bind). Treat it as log text only.
    """

    kind: AnswerKind
    user: str | None = None
    opsys: str = ""
    charset: str = ""
    reason: str = ""

    @classmethod
    def of_user(cls, user: str, opsys: str = "", charset: str = "") -> IdentAnswer:
        return cls(AnswerKind.USER, user=user, opsys=opsys, charset=charset)

    @classmethod
    def no_answer(cls, reason: str) -> IdentAnswer:
        return cls(AnswerKind.NO_ANSWER, reason=reason)

    @property
    def answered(self) -> bool:
        """True when the identd named a user."""
        return self.kind is AnswerKind.USER


_GARBAGE = "garbage"
_OTHER_PORTS = "reply for other ports"
_TOO_LONG = "too long"
_CLOSED_EARLY = "closed early"


def query_line(client_port: int, server_port: int) -> bytes:
    """The query about the connection client_port (on the identd's host) -> server_port."""
    return b"%d , %d\r\n" % (client_port, server_port)


def parse_reply(line: bytes, client_port: int, server_port: int) -> IdentAnswer:
    """Parse one reply line (with or without its CR LF) to the query about these ports.

    Never raises for any bytes: whatever is not a USERID reply about the ports
    asked is a NO_ANSWER with its reason.
    """
    line = _strip_eol(line)
    ports, rest = _token(line)
    if rest is None:
        return IdentAnswer.no_answer(_GARBAGE)
    pair = _port_pair(ports)
    if pair is None:
        return IdentAnswer.no_answer(_GARBAGE)
    if pair != (client_port, server_port):
        return IdentAnswer.no_answer(_OTHER_PORTS)
    keyword, rest = _token(rest)
    keyword = keyword.upper()
    if keyword == b"ERROR":
        return IdentAnswer.no_answer(_error_reason(rest or b""))
    if keyword != b"USERID" or rest is None:
        return IdentAnswer.no_answer(_GARBAGE)
    return _userid(rest)


def _strip_eol(line: bytes) -> bytes:
    """The line without its LF and the CR before it; a lone CR inside stays."""
    end = line.find(b"\n")
    if end >= 0:
        line = line[:end]
    return line[:-1] if line.endswith(b"\r") else line


def _token(text: bytes) -> tuple[bytes, bytes | None]:
    """Split at the first colon not quoted by a backslash (§6): (token unquoted and
    stripped of blanks, what follows the colon), or (whole text, None) without a colon."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == 0x5C and i + 1 < len(text):   # backslash quotes the next character
            out.append(text[i + 1])
            i += 2
            continue
        if c == 0x3A:
            return bytes(out).strip(_BLANKS), text[i + 1:]
        out.append(c)
        i += 1
    return bytes(out).strip(_BLANKS), None


def _port_pair(text: bytes) -> tuple[int, int] | None:
    first, comma, second = text.partition(b",")
    if not comma:
        return None
    ports = []
    for field in (first, second):
        field = field.strip(_BLANKS)
        if not (1 <= len(field) <= 5 and field.isdigit()):
            return None
        ports.append(int(field))
    return ports[0], ports[1]


def _error_reason(rest: bytes) -> str:
    """``ERROR : <error-type>`` when the type is a printable §6 token, else ``ERROR``."""
    error = _token(rest)[0]
    if _PRINTABLE_TOKEN.fullmatch(error):
        return "ERROR : " + error.decode("ascii")
    return "ERROR"


def _userid(rest: bytes) -> IdentAnswer:
    opsys_field, user = _token(rest)
    if user is None:
        return IdentAnswer.no_answer(_GARBAGE)
    opsys, _, charset = opsys_field.partition(b",")
    user = user.strip(_BLANKS)
    if not user:
        return IdentAnswer.no_answer(_GARBAGE)
    return IdentAnswer.of_user(user.decode("latin-1"), opsys.strip(_BLANKS).decode("latin-1"),
                               charset.strip(_BLANKS).decode("latin-1"))


class ReplyReader:
    """Collects the identd's bytes until one answer is known.

    feed() what arrives, feed_eof() when the identd closes; next_answer() is
    NEED_DATA until a line is complete (at its LF), the bound is passed
    (MAX_REPLY bytes without a LF: too long) or the stream ended. A stream
    that ends after a line without its CR LF is parsed as that line: some
    identds close instead of ending the line, and what they sent is whole
    if it parses. Bytes after the first line are ignored.
    """

    def __init__(self, client_port: int, server_port: int) -> None:
        self.ports = (client_port, server_port)
        self._buffer = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        # Keep one byte past the bound: enough to know that it was passed.
        room = MAX_REPLY + 1 - len(self._buffer)
        if room > 0:
            self._buffer += data[:room]

    def feed_eof(self) -> None:
        self._eof = True

    def next_answer(self) -> IdentAnswer | NeedData:
        end = self._buffer.find(b"\n", 0, MAX_REPLY)
        if end >= 0:
            return parse_reply(bytes(self._buffer[:end + 1]), *self.ports)
        if len(self._buffer) >= MAX_REPLY:
            return IdentAnswer.no_answer(_TOO_LONG)
        if not self._eof:
            return NEED_DATA
        answer = parse_reply(bytes(self._buffer), *self.ports)
        if answer.answered or answer.reason.startswith("ERROR"):
            return answer
        return IdentAnswer.no_answer(_CLOSED_EARLY)
