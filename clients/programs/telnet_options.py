"""Telnet, sans I/O: the command parser and the option negotiation of a telnet client.

Owns the byte-level protocol: splitting what the server sends into data and commands
(RFC 854), negotiating options without loops (RFC 854's rules, with the Q method of RFC 1143
reduced to what a client that never changes its mind needs), the sub-negotiations we take part
in (TERMINAL-TYPE, RFC 1091; NAWS, RFC 1073), and encoding what the user types (IAC doubled,
CR followed by NUL or LF, RFC 854 "NVT"). It must not import socket or touch a terminal: bytes in,
bytes and events out.

What we accept:
- from the server (``WILL``): ECHO (RFC 857: the server echoes, we go character at a time) and
  SUPPRESS-GO-AHEAD (RFC 858); everything else gets ``DONT``;
- for ourselves (``DO``): SUPPRESS-GO-AHEAD, TERMINAL-TYPE when we know the terminal, NAWS
  when we know the window; everything else, TIMING-MARK included, gets ``WONT``.
An option already in the asked state gets no answer (RFC 854: "do not acknowledge a request to
enter a mode you are already in"), so two parties can never loop.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

IAC, DONT, DO, WONT, WILL, SB, GA, EL, EC, AYT, AO, IP, BRK, DM, NOP, SE = (
    255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 242, 241, 240)
ECHO, SGA, STATUS, TM, TTYPE, NAWS, LINEMODE = 1, 3, 5, 6, 24, 31, 34
TTYPE_IS, TTYPE_SEND = 0, 1
MAX_SUBNEGOTIATION = 4096       # bytes of one SB ... SE we keep; more is cut off

OPTION_NAMES = {0: "BINARY", ECHO: "ECHO", SGA: "SUPPRESS-GO-AHEAD", STATUS: "STATUS",
                TM: "TIMING-MARK", TTYPE: "TERMINAL-TYPE", NAWS: "NAWS", 32: "TSPEED",
                33: "LFLOW", LINEMODE: "LINEMODE", 35: "XDISPLOC", 36: "OLD-ENVIRON",
                37: "AUTHENTICATION", 38: "ENCRYPT", 39: "NEW-ENVIRON"}
COMMAND_NAMES = {DONT: "DONT", DO: "DO", WONT: "WONT", WILL: "WILL"}


def option_name(option: int) -> str:
    return OPTION_NAMES.get(option, str(option))


class Q(enum.Enum):
    """The state of one side of an option (RFC 1143 §7, without the queue bit)."""
    NO = "no"
    YES = "yes"
    WANTNO = "wantno"
    WANTYES = "wantyes"


@dataclass(frozen=True)
class Command:
    """A telnet command other than negotiation, seen in the server's stream (e.g. DM, GA)."""
    code: int


@dataclass(frozen=True)
class OptionChanged:
    """An option took effect or ended: *side* is "him" (the server's) or "us"."""
    side: str
    option: int
    enabled: bool


@dataclass(frozen=True)
class TimingMark:
    """The server answered our DO TIMING-MARK: output flushing since then can stop."""


@dataclass
class Output:
    """What one `TelnetClient.receive` gives: *data* for the screen, *reply* for the server,
    *events* (Command, OptionChanged, TimingMark) in the order they came."""
    data: bytes = b""
    reply: bytes = b""
    events: list = field(default_factory=list)


class _State(enum.Enum):
    DATA = 0
    IAC = 1
    NEGOTIATE = 2
    SB = 3
    SB_IAC = 4
    CR = 5


class TelnetClient:
    """The client side of one telnet connection.

    *terminal* is the terminal type to report (None refuses TERMINAL-TYPE); *window* is
    (columns, rows) to report (None refuses NAWS).  `start()` gives the opening offers;
    `receive(data)` parses what the server sent; `encode(text)` prepares what the user typed;
    `interrupt()`, `abort_output()`, `synch()` and friends give the bytes of the user's
    special keys.
    """

    def __init__(self, terminal: str | None = None,
                 window: tuple[int, int] | None = None) -> None:
        self.terminal = terminal
        self.window = window
        self.him: dict[int, Q] = {}
        self.us: dict[int, Q] = {}
        self._state = _State.DATA
        self._verb = 0
        self._sb = bytearray()
        self.flushing = False

    # -- what we want --------------------------------------------------------------------------

    def _accept_him(self, option: int) -> bool:
        return option in (ECHO, SGA)

    def _accept_us(self, option: int) -> bool:
        return (option == SGA or (option == TTYPE and self.terminal is not None)
                or (option == NAWS and self.window is not None))

    def start(self) -> bytes:
        """The offers a client opens with: DO SGA (RFC 858) and, when known, WILL NAWS."""
        out = self._ask_him(SGA, True)
        if self.window is not None:
            out += self._ask_us(NAWS, True)
        return out

    def remote_echo(self) -> bool:
        """The server echoes what we send (go character at a time)."""
        return self.him.get(ECHO) is Q.YES

    def state(self) -> str:
        """The negotiated options, for the `status` command."""
        parts = [f"{'remote' if side == 'him' else 'local'} {option_name(o)}"
                 for side, table in (("him", self.him), ("us", self.us))
                 for o, q in sorted(table.items()) if q is Q.YES]
        return ", ".join(parts) or "none"

    # -- asking --------------------------------------------------------------------------------

    def _ask_him(self, option: int, enable: bool) -> bytes:
        return _ask(self.him, option, enable, DO, DONT)

    def _ask_us(self, option: int, enable: bool) -> bytes:
        return _ask(self.us, option, enable, WILL, WONT)

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> Output:
        """Parse *data* from the server; state carries over between calls, so a command split
        across two reads is seen whole."""
        out = Output()
        text = bytearray()
        for byte in data:
            state = self._state
            if state is _State.DATA:
                if byte == IAC:
                    self._state = _State.IAC
                else:
                    if byte == 13:
                        self._state = _State.CR
                    if not self.flushing:
                        text.append(byte)
            elif state is _State.CR:
                # RFC 854: CR NUL is a bare carriage return; the NUL is not data.
                self._state = _State.DATA
                if byte == IAC:
                    self._state = _State.IAC
                elif byte != 0 and not self.flushing:
                    text.append(byte)
            elif state is _State.IAC:
                self._iac(byte, text, out)
            elif state is _State.NEGOTIATE:
                self._state = _State.DATA
                out.reply += self._negotiate(self._verb, byte, out.events)
            elif state is _State.SB:
                if byte == IAC:
                    self._state = _State.SB_IAC
                elif len(self._sb) < MAX_SUBNEGOTIATION:
                    self._sb.append(byte)
            else:   # SB_IAC
                if byte == SE:
                    self._state = _State.DATA
                    out.reply += self._subnegotiation(bytes(self._sb))
                    self._sb.clear()
                else:
                    # IAC IAC is a data 255; anything else ends a broken SB (RFC 855).
                    self._state = _State.SB
                    if byte == IAC and len(self._sb) < MAX_SUBNEGOTIATION:
                        self._sb.append(IAC)
        out.data = bytes(text)
        return out

    def _iac(self, byte: int, text: bytearray, out: Output) -> None:
        if byte == IAC:
            self._state = _State.DATA
            if not self.flushing:
                text.append(IAC)
        elif byte in (WILL, WONT, DO, DONT):
            self._state = _State.NEGOTIATE
            self._verb = byte
        elif byte == SB:
            self._state = _State.SB
            self._sb.clear()
        else:
            self._state = _State.DATA
            if byte == DM:
                self.flushing = False
            out.events.append(Command(byte))

    def _negotiate(self, verb: int, option: int, events: list) -> bytes:
        if option == TM and verb in (WILL, WONT) and self.flushing:
            self.flushing = False
            events.append(TimingMark())
            return b""
        if option == TM and verb == DO:
            # RFC 860 lets us refuse.  Saying WILL (BSD telnet does) makes telnetd take us for
            # a "kludge linemode" client and turn SGA off, which we do not implement.
            return bytes((IAC, WONT, TM))
        if verb in (WILL, WONT):
            return self._answer(self.him, option, verb == WILL, self._accept_him(option),
                                (DO, DONT), "him", events)
        return self._answer(self.us, option, verb == DO, self._accept_us(option),
                            (WILL, WONT), "us", events)

    def _answer(self, table: dict[int, Q], option: int, enable: bool, acceptable: bool,
                verbs: tuple[int, int], side: str, events: list) -> bytes:
        """RFC 1143 §7 for one received WILL/WONT (side "him") or DO/DONT (side "us")."""
        yes, no = verbs
        q = table.get(option, Q.NO)
        reply = b""
        if enable:
            if q is Q.NO:
                if not acceptable:
                    return bytes((IAC, no, option))
                table[option] = Q.YES
                reply = bytes((IAC, yes, option))
            elif q is Q.WANTYES:
                table[option] = Q.YES
            elif q is Q.WANTNO:
                table[option] = Q.NO    # "DONT answered by WILL": an error; stay off
                return b""
            else:
                return b""
            events.append(OptionChanged(side, option, True))
            if side == "us" and option == NAWS:
                reply += self.naws()
            return reply
        if q in (Q.YES, Q.WANTNO, Q.WANTYES):
            was_yes = q is Q.YES
            table[option] = Q.NO
            if was_yes:
                reply = bytes((IAC, no, option))
                events.append(OptionChanged(side, option, False))
        return reply

    def _subnegotiation(self, body: bytes) -> bytes:
        if (len(body) >= 2 and body[0] == TTYPE and body[1] == TTYPE_SEND
                and self.us.get(TTYPE) is Q.YES and self.terminal is not None):
            name = self.terminal.upper().encode("ascii", "replace")
            return bytes((IAC, SB, TTYPE, TTYPE_IS)) + quote(name) + bytes((IAC, SE))
        return b""

    # -- sending -------------------------------------------------------------------------------

    def naws(self) -> bytes:
        """The window size sub-negotiation (RFC 1073), when NAWS is on."""
        if self.us.get(NAWS) is not Q.YES or self.window is None:
            return b""
        columns, rows = (max(0, min(v, 0xFFFF)) for v in self.window)
        return bytes((IAC, SB, NAWS)) + quote(struct.pack(">HH", columns, rows)) \
            + bytes((IAC, SE))

    def resize(self, window: tuple[int, int]) -> bytes:
        self.window = window
        return self.naws()

    def encode(self, typed: bytes, *, lines: bool = False) -> bytes:
        """What the user typed, as NVT bytes: IAC doubled; a CR becomes CR NUL (the Return key
        in a raw terminal), and with *lines* a LF becomes CR LF (a line read from a file or a
        cooked terminal)."""
        typed = typed.replace(b"\xff", b"\xff\xff")
        if lines:
            return typed.replace(b"\r\n", b"\n").replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
        return typed.replace(b"\r", b"\r\0")

    def command(self, code: int) -> bytes:
        return bytes((IAC, code))

    def flush_request(self) -> bytes:
        """DO TIMING-MARK, asked after IP or AO: the server's answer marks the point where the
        output it threw away ends, and we drop what comes before it (`flushing`)."""
        self.flushing = True
        return bytes((IAC, DO, TM))


def _ask(table: dict[int, Q], option: int, enable: bool, yes: int, no: int) -> bytes:
    """RFC 1143: ask to turn *option* on or off on one side (*table*: his or ours), with that
    side's verbs (DO/DONT for his, WILL/WONT for ours); nothing when the option is already
    so or a question about it is pending."""
    q = table.get(option, Q.NO)
    if enable and q is Q.NO:
        table[option] = Q.WANTYES
        return bytes((IAC, yes, option))
    if not enable and q is Q.YES:
        table[option] = Q.WANTNO
        return bytes((IAC, no, option))
    return b""


def quote(data: bytes) -> bytes:
    """*data* with IAC doubled, for inside a sub-negotiation."""
    return data.replace(b"\xff", b"\xff\xff")

