"""FTP, sans I/O: replies, data-connection addresses, ASCII conversion and the rftp command line.

Owns the parts of the FTP protocol (RFC 959, RFC 2428) that need no socket: reading replies
(multi-line ones included, §4.2), PASV/EPSV answers, PORT/EPRT arguments, the ASCII type's
line ends, and splitting what the user types at the ``ftp>`` prompt.  It must not import
socket.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

MAX_REPLY_LINES = 10000      # a reply longer than this is a broken server


class ProtocolError(Exception):
    """The server said something that is not FTP."""


@dataclass(frozen=True)
class Reply:
    """One server reply: the three-digit *code* and its *lines* (text without CR LF)."""
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def kind(self) -> int:
        """1 preliminary, 2 completed, 3 intermediate, 4 transient error, 5 error."""
        return self.code // 100

    def ok(self) -> bool:
        return self.kind in (1, 2, 3)


class ReplyReader:
    """Feed lines (`feed`); a `Reply` comes back when the last line of one arrives.

    RFC 959 §4.2: ``123-text`` opens a multi-line reply that ends at a line starting
    ``123 ``; lines between are kept whatever they start with."""

    def __init__(self) -> None:
        self._code: int | None = None
        self._lines: list[str] = []

    def feed(self, line: str) -> Reply | None:
        line = line.rstrip("\r\n")
        if self._code is None:
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise ProtocolError(f"not an FTP reply: {line[:80]!r}")
            if line[3:4] == "-":
                self._code = int(line[:3])
                self._lines = [line]
                return None
            return Reply(int(line[:3]), (line,))
        self._lines.append(line)
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("a reply of more than 10000 lines")
        if line.startswith(f"{self._code} ") or line == str(self._code):
            reply = Reply(self._code, tuple(self._lines))
            self._code, self._lines = None, []
            return reply
        return None


_PASV = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\((.)\1\1(\d{1,5})\1\)")


def parse_pasv(reply: Reply) -> tuple[str, int]:
    """(address, port) of a 227 reply (``Entering Passive Mode (h1,h2,h3,h4,p1,p2)``)."""
    match = _PASV.search(reply.text[4:]) if reply.code == 227 else None
    if match is None:
        raise ProtocolError(f"bad PASV reply: {reply.text[:80]!r}")
    numbers = [int(n) for n in match.groups()]
    if any(n > 255 for n in numbers):
        raise ProtocolError(f"bad PASV reply: {reply.text[:80]!r}")
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def parse_epsv(reply: Reply) -> int:
    """The port of a 229 reply (``Entering Extended Passive Mode (|||port|)``, RFC 2428)."""
    match = _EPSV.search(reply.text) if reply.code == 229 else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ProtocolError(f"bad EPSV reply: {reply.text[:80]!r}")
    return int(match.group(2))


def port_command(address: str, port: int) -> str:
    """PORT for an IPv4 address, EPRT (RFC 2428) for IPv6."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return f"EPRT |2|{ip}|{port}|"
        ip = mapped
    return "PORT " + ",".join(str(ip).split(".")) + f",{port >> 8},{port & 0xFF}"


class AsciiDecoder:
    """Network ASCII to local text: CR LF becomes LF, a CR split from its LF by a read
    boundary is held until the next chunk (`feed`, then `end`)."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        return data.replace(b"\r\n", b"\n")

    def end(self) -> bytes:
        held, self._cr = self._cr, False
        return b"\r" if held else b""


def ascii_encode(data: bytes) -> bytes:
    """Local text to network ASCII: every LF (not already after a CR) becomes CR LF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_line(line: str) -> list[str]:
    """The words of an ``ftp>`` command line; quotes group words as in the shell, and a line
    with an unclosed quote is split at blanks."""
    try:
        return shlex.split(line, comments=False)
    except ValueError:
        return line.split()


def command_text(command: str, argument: str | None = None) -> str:
    """A command line to send; refuses a CR or LF in it (one command could become two)."""
    text = command if argument is None else f"{command} {argument}"
    if "\r" in text or "\n" in text:
        raise ValueError("a line break in an FTP command")
    return text
