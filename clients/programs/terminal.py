"""What the client programs write to a terminal, and the terminal modes rtelnet switches.

Owns `for_terminal` (network text made safe to show: a server's escape sequences must not
reprogram the user's terminal, RFC 1288 §3.3) and `Modes` (saving, changing and restoring the
termios settings of a terminal).  It must not read the network.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import tty
from typing import BinaryIO

_KEEP = {"\t", "\n"}


def for_terminal(data: bytes) -> bytes:
    """*data* as shown on a terminal: CR LF becomes LF, a C0 or C1 control character, ESC and
    DEL become caret notation (``^[``, ``^?``) or ``\\x9b``, bytes that are not UTF-8 become
    ``\\xNN``; tab and newline stay.  Text bytes are never dropped, only written visibly."""
    text = data.replace(b"\r\n", b"\n").decode("utf-8", "surrogateescape")
    out = []
    for c in text:
        code = ord(c)
        if c in _KEEP or (0x20 <= code < 0x7F) or (code > 0x9F and not 0xDC80 <= code <= 0xDCFF):
            out.append(c)
        elif code < 0x20 or code == 0x7F:
            out.append("^" + chr(code ^ 0x40))
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(f"\\x{code:02x}")
    return "".join(out).encode("utf-8")


class AnswerWriter:
    """Writes a server's answer to *stream* as it comes: raw bytes to a file or pipe, through
    `for_terminal` to a terminal (a CR LF split across two reads is kept whole)."""

    def __init__(self, stream: BinaryIO, is_terminal: bool | None = None) -> None:
        self.stream = stream
        self.terminal = stream.isatty() if is_terminal is None else is_terminal
        self._held = b""

    def write(self, data: bytes) -> None:
        if not self.terminal:
            self.stream.write(data)
        else:
            data = self._held + data
            self._held = b"\r" if data.endswith(b"\r") else b""
            self.stream.write(for_terminal(data[:len(data) - len(self._held)]))
        self.stream.flush()

    def close(self) -> None:
        if self._held:
            self.stream.write(for_terminal(self._held))
            self._held = b""
        self.stream.flush()


class Modes:
    """The termios settings of the terminal on *fd*: `raw()` for character-at-a-time
    sessions, `lines(escape)` for line-by-line ones (the escape character ends a read as a
    newline does: BSD telnet's VEOL trick), `restore()` back to what the user had."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)
        self.current = "original"
        self.escape: int | None = None

    def raw(self) -> None:
        if self.current != "raw":
            tty.setraw(self.fd, termios.TCSANOW)
            self.current = "raw"

    def lines(self, escape: int | None) -> None:
        if self.current != "lines":
            attrs = termios.tcgetattr(self.fd)
            attrs[3] |= termios.ICANON | termios.ECHO | termios.ISIG
            attrs[6] = list(self.saved[6])
            if escape is not None:
                attrs[6][termios.VEOL] = bytes((escape,))
            self.escape = escape
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            self.current = "lines"

    def restore(self) -> None:
        if self.current != "original":
            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
            self.current = "original"


@contextlib.contextmanager
def restored(modes: Modes | None):
    """Run the block with the user's own terminal settings, then put the mode back."""
    if modes is None:
        yield
        return
    before = modes.current
    modes.restore()
    try:
        yield
    finally:
        if before == "raw":
            modes.raw()
        elif before == "lines":
            modes.lines(modes.escape)


def window_size(fd: int) -> tuple[int, int] | None:
    """(columns, rows) of the terminal on *fd*, or None."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.columns, size.lines


def stdout_binary() -> BinaryIO:
    return sys.stdout.buffer
