"""The FTP audit (FACIST): which files a relayed FTP control connection works on.

Two parts, one floor apart:

- `CommandReader`, sans I/O: fed the client-to-server half of an FTP control
  connection (RFC 959 §4.1) in whatever pieces it arrives, it gives back the
  commands, one `FtpCommand` per line, or one `AuditEnd` when it can read no
  further.  The control connection is a telnet connection (RFC 959 §4.1.1,
  RFC 854), so telnet command sequences (IAC ...: the IP and SYNCH a client
  sends before ABOR, option negotiation, subnegotiation) are skipped and IAC
  IAC stands for the byte 255.  A line is ended by LF (CR LF on the wire; a
  bare LF is read as the end of a line too, as servers do).  A line longer
  than MAX_LINE bytes, or an AUTH command (RFC 2228: what follows is TLS or
  otherwise protected, whether or not the server agreed), ends the reading:
  the reader holds at most MAX_LINE bytes and never raises.  It never imports
  socket, never logs and never reads the clock.

- `Audit`, the relay's observer for one audited session (sockd.relay,
  relay(observe_client=...)): it feeds the reader what the client sent and
  writes the `ftp --` log lines (formats in sockd(8), LOG LINES): one for each
  RETR, STOR, STOU, APPE, DELE, RNFR, RNTO, MKD and RMD, naming the FTP user
  (the argument of the last USER; PASS and ACCT arguments are never kept), and
  one when the audit stops.  The session's story() supplies the SOCKS user,
  the client, the server and the session id.

The bytes themselves are the relay's: nothing here changes, holds back or
reorders what reaches the server.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sockd.log import escape
from sockd.protocol import NEED_DATA, NeedData

log = logging.getLogger("sockd")

MAX_LINE = 4096
"""Longest command line read, CR LF excluded; a longer one ends the audit."""

NAME_LIMIT = 1024
"""Characters of a file name kept in a log line, before escaping (sockd.log.escape)."""

AUDITED = frozenset({"RETR", "STOR", "STOU", "APPE", "DELE", "RNFR", "RNTO", "MKD", "RMD"})
"""The commands that name a file or directory read, written, renamed or removed."""

# Telnet (RFC 854): the bytes that begin and shape a command sequence.
IAC, SE, SB, WILL, WONT, DO, DONT = 255, 240, 250, 251, 252, 253, 254
_OPTION_VERBS = frozenset({WILL, WONT, DO, DONT})


@dataclass(frozen=True)
class FtpCommand:
    """One command line: the verb in upper case and the rest of the line as sent.

    The argument is decoded as latin-1, so every byte survives unchanged;
    escaping it for a log line is the caller's job.
    """

    verb: str
    argument: str


@dataclass(frozen=True)
class AuditEnd:
    """The reader can go no further in this stream; *reason* says why, in words.

    Either "AUTH MECHANISM: the control connection is protected from here on"
    (the mechanism escaped) or "command line longer than MAX_LINE bytes".
    """

    reason: str


Event = FtpCommand | AuditEnd


class _Telnet(enum.Enum):
    """Where the reader is in the telnet layer (RFC 854)."""

    DATA = "data"
    IAC = "after IAC"
    OPTION = "after IAC WILL/WONT/DO/DONT"
    SUB = "in a subnegotiation"
    SUB_IAC = "after IAC in a subnegotiation"


class CommandReader:
    """Reads FTP commands from the client's side of a control connection.

    Call feed() with each piece of the stream, then next_event() until it
    returns NEED_DATA.  After an AuditEnd, feed() ignores what it is given
    and next_event() returns NEED_DATA for ever.
    """

    def __init__(self) -> None:
        self._line = bytearray()        # the current line, telnet sequences removed
        self._telnet = _Telnet.DATA
        self._events: deque[Event] = deque()
        self.ended = False

    def feed(self, data: bytes) -> None:
        """Read *data*: the next bytes the client sent, in order."""
        if self.ended:
            return
        text = data if self._telnet is _Telnet.DATA and IAC not in data \
            else self._without_telnet(data)
        start = 0
        while not self.ended:
            end = text.find(b"\n", start)
            if end < 0:
                self._line += text[start:]
                if len(self._line) > MAX_LINE + 1:      # + 1: a CR may end it yet
                    self._end(f"command line longer than {MAX_LINE} bytes")
                return
            self._line += text[start:end]
            self._take_line()
            start = end + 1

    def next_event(self) -> Event | NeedData:
        """The next command, or the end of the audit, or NEED_DATA."""
        return self._events.popleft() if self._events else NEED_DATA

    def _take_line(self) -> None:
        line = self._line[:-1] if self._line.endswith(b"\r") else self._line
        self._line = bytearray()
        if len(line) > MAX_LINE:
            self._end(f"command line longer than {MAX_LINE} bytes")
            return
        verb, _, argument = bytes(line).decode("latin-1").partition(" ")
        command = FtpCommand(verb.upper(), argument)
        if command.verb == "AUTH":
            # RFC 2228 §3: after AUTH come TLS records (RFC 4217) or protected
            # commands; whether the server agreed is in its reply, which we do
            # not read, so the audit ends here either way and says so.
            mechanism = escape(argument.strip(), 64) or "-"
            self._end(f"AUTH {mechanism}: the control connection is protected from here on")
            return
        self._events.append(command)

    def _end(self, reason: str) -> None:
        self._events.append(AuditEnd(reason))
        self.ended = True
        self._line = bytearray()

    def _without_telnet(self, data: bytes) -> bytes:
        """*data* with telnet command sequences left out, IAC IAC as one 255 byte.

        The state carries over between calls: a sequence may be split anywhere.
        """
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            state = self._telnet
            if state is _Telnet.DATA:
                j = data.find(IAC, i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                i, self._telnet = j + 1, _Telnet.IAC
                continue
            byte = data[i]
            i += 1
            if state is _Telnet.IAC:
                if byte == IAC:
                    out.append(IAC)
                    self._telnet = _Telnet.DATA
                elif byte in _OPTION_VERBS:
                    self._telnet = _Telnet.OPTION
                elif byte == SB:
                    self._telnet = _Telnet.SUB
                else:                   # IP, DM, AO, AYT, NOP ...: two bytes in all
                    self._telnet = _Telnet.DATA
            elif state is _Telnet.OPTION:
                self._telnet = _Telnet.DATA
            elif state is _Telnet.SUB:
                if byte == IAC:
                    self._telnet = _Telnet.SUB_IAC
            else:                       # SUB_IAC: IAC SE ends it, IAC IAC is data in it
                self._telnet = _Telnet.DATA if byte == SE else _Telnet.SUB
        return bytes(out)


class Audit:
    """The observer of one audited control connection: reads, and logs what it read.

    *story* is the session's story() (sockd.session), called for each line.
    Calling the Audit with the client's bytes is all the relay does.
    """

    def __init__(self, story: Callable[[], str]) -> None:
        self.story = story
        self.reader = CommandReader()
        self.ftp_user: str | None = None

    def __call__(self, data: bytes) -> None:
        reader = self.reader
        if reader.ended:
            return
        reader.feed(data)
        while (event := reader.next_event()) is not NEED_DATA:
            self.record(event)

    def record(self, event: Event) -> None:
        """Log an audited command or the end of the audit; keep track of USER."""
        if isinstance(event, AuditEnd):
            log.info("ftp -- %s: audit stopped: %s", self.story(), event.reason)
            return
        verb = event.verb
        if verb == "USER":
            self.ftp_user = event.argument
        elif verb == "REIN":            # RFC 959 §4.1.1: back to before USER
            self.ftp_user = None
        elif verb in AUDITED:
            user = "-" if self.ftp_user is None else escape(self.ftp_user) or "-"
            log.info("ftp -- %s: USER %s %s %s", self.story(), user, verb,
                     escape(event.argument, NAME_LIMIT) or "-")
