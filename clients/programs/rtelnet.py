"""rtelnet: an interactive telnet client whose connection socks.conf routes.

``rtelnet [-e CHAR] host [port]``.  Owns the session loop: one select() over the connection,
standard input and a signal wake-up pipe; the protocol is `telnet_options`' (sans I/O), the
terminal modes `terminal.Modes`'.

How it behaves:
- On a terminal the session starts line by line with local echo; when the server says WILL
  ECHO (a real telnetd does) the terminal goes raw and every key goes to the server as typed
  (RFC 857); WONT ECHO brings line mode back.  The window size follows SIGWINCH (NAWS).
- The escape character (``^]``, ``-e`` changes it, ``-e none`` turns it off) gives the
  ``telnet>`` prompt: close, quit, status, send (brk, ip, ao, ayt, synch, escape, nop), ? or
  help; an empty line goes back to the session.
- In line mode ^C sends IP and ^\\ sends BRK.  IP and AO are followed by the Synch (IAC DM,
  the DM sent as TCP urgent data, RFC 854) and by DO TIMING-MARK; what the server sends before
  its answer is thrown away, as it is output the user asked to stop.  Urgent data from the
  server is read inline (SO_OOBINLINE), so its DM keeps its place in the stream.
- Options are offered first only when the port is the telnet port (as BSD telnet does); on
  other ports rtelnet only answers what the server offers.
- Standard input that is not a terminal is read as lines sent with CR LF (scripts and tests);
  an escape character in it starts a command that runs to the end of its line.  At its end of
  file the sending side is shut down and the session lasts until the server closes.
Messages of rtelnet itself (Trying..., Connected to..., Connection closed...) go to standard
error, so that standard output holds only the session.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys

from clients.programs import net
from clients.programs import telnet_options as t
from clients.programs.terminal import Modes, restored, window_size

PORT = 23
CONNECT_TIMEOUT = 30.0
ESCAPE = 0x1D                # ^]
HELP = """Commands may be abbreviated.  Commands are:

close\t\tclose the connection and exit
quit\t\tclose the connection and exit
status\t\tprint status information
send\t\tsend special characters ('send ?' for more)
?, help\t\tprint this help
"""
SEND_HELP = """brk\t\tsend IAC BRK
ip\t\tsend IAC IP (interrupt process) and the Synch
ao\t\tsend IAC AO (abort output) and the Synch
ayt\t\tsend IAC AYT (are you there)
synch\t\tsend the Synch (IAC DM as urgent data)
escape\t\tsend the escape character
nop\t\tsend IAC NOP
"""


def escape_name(code: int | None) -> str:
    if code is None:
        return "none"
    return "^" + chr(code ^ 0x40) if code < 0x20 or code == 0x7F else chr(code)


def parse_escape(text: str) -> int | None:
    """``^]``, ``^X``, a single character, or ``none``."""
    if text == "none":
        return None
    if len(text) == 2 and text[0] == "^":
        return ord(text[1].upper()) ^ 0x40
    if len(text) == 1:
        return ord(text)
    raise argparse.ArgumentTypeError(f"bad escape character {text!r} (^X, X or none)")


class Closed(Exception):
    """The session is over: the user closed it or the server did."""


class Session:
    """One telnet session over *sock*; `run()` returns the exit status."""

    def __init__(self, sock: socket.socket, host: str, escape: int | None,
                 negotiate: bool = True) -> None:
        self.sock = sock
        self.negotiate = negotiate
        self.host = host
        self.escape = escape
        self.stdin = sys.stdin.fileno()
        self.out = sys.stdout.buffer
        self.interactive = os.isatty(self.stdin)
        self.modes = Modes(self.stdin) if self.interactive else None
        self.telnet = t.TelnetClient(
            terminal=os.environ.get("TERM") if self.interactive else None,
            window=window_size(sys.stdout.fileno()) if self.interactive else None)
        self.stdin_open = True
        self.pending = b""      # rest of a script line after the escape character

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        self.sock.setblocking(True)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old = self._install_signals(wake_w)
        try:
            self._follow_echo()
            if self.negotiate:
                self._send(self.telnet.start())
            while True:
                self._step(wake_r)
        except Closed:
            return 0
        finally:
            self._restore_signals(old)
            os.close(wake_r)
            os.close(wake_w)
            if self.modes is not None:
                self.modes.restore()
            self.sock.close()

    def _step(self, wake_r: int) -> None:
        watched = [self.sock, wake_r] + ([self.stdin] if self.stdin_open else [])
        try:
            ready, _, _ = select.select(watched, [], [])
        except InterruptedError:
            return
        if wake_r in ready:
            self._handle_signals(os.read(wake_r, 64))
        if self.sock in ready:
            self._from_server()
        if self.stdin_open and self.stdin in ready:
            self._from_user()

    def _from_server(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            self._say("Connection closed by foreign host.")
            raise Closed
        result = self.telnet.receive(data)
        if result.data:
            self.out.write(result.data)
            self.out.flush()
        if result.reply:
            self._send(result.reply)
        if any(isinstance(e, t.OptionChanged) and e.option == t.ECHO for e in result.events):
            self._follow_echo()

    def _from_user(self) -> None:
        data = os.read(self.stdin, 4096)
        if not data:
            self.stdin_open = False
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            return
        if self.escape is not None and self.escape in data:
            before, _, after = data.partition(bytes((self.escape,)))
            self._send_typed(before)
            self._escape(after)
        else:
            self._send_typed(data)

    def _send_typed(self, data: bytes) -> None:
        if data:
            raw = self.modes is not None and self.modes.current == "raw"
            self._send(self.telnet.encode(data, lines=not raw))

    def _send(self, data: bytes, flags: int = 0) -> None:
        """Send to the server; nothing once our side is shut (the end of a script), and a
        connection the server has dropped ends the session."""
        if not data or not self.stdin_open and not self.interactive:
            return
        try:
            self.sock.sendall(data, flags)
        except (BrokenPipeError, ConnectionResetError):
            self._say("Connection closed by foreign host.")
            raise Closed from None

    # -- terminal mode and signals -------------------------------------------------------------

    def _follow_echo(self) -> None:
        """Raw when the server echoes, line by line with local echo otherwise."""
        if self.modes is None:
            return
        if self.telnet.remote_echo():
            self.modes.raw()
        else:
            self.modes.lines(self.escape)

    def _install_signals(self, wake_w: int) -> dict:
        """The handlers do nothing: the wake-up pipe carries the signal numbers to the loop."""
        old = {}
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH):
            old[signum] = signal.signal(signum, lambda *_: None)
        return old

    def _restore_signals(self, old: dict) -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in old.items():
            signal.signal(signum, handler)

    def _handle_signals(self, numbers: bytes) -> None:
        for signum in numbers:
            if signum == signal.SIGINT:
                self.send_special("ip")
            elif signum == signal.SIGQUIT:
                self.send_special("brk")
            elif signum == signal.SIGWINCH and self.interactive:
                size = window_size(sys.stdout.fileno())
                if size is not None:
                    self._send(self.telnet.resize(size))

    # -- the telnet> prompt --------------------------------------------------------------------

    def _escape(self, after: bytes) -> None:
        if self.interactive:
            with restored(self.modes):
                self.out.write(b"\r\ntelnet> ")
                self.out.flush()
                line = after  # keys typed ahead, in the same read as the escape character
                if not after.rstrip(b"\r\n") or b"\n" not in after.replace(b"\r", b"\n"):
                    more = os.read(self.stdin, 1024)
                    line += more if more else b"quit"
        else:
            line, _, rest = after.partition(b"\n")
            if rest:
                self._send_typed(rest)
        self.command(line.decode("utf-8", "replace").strip())

    def command(self, line: str) -> None:
        """Run one ``telnet>`` command (raises `Closed` for close and quit)."""
        words = line.split()
        if not words:
            return
        name = _unique(words[0], ("close", "quit", "status", "send", "help", "?"))
        if name in ("close", "quit"):
            self._say("Connection closed.")
            raise Closed
        if name == "status":
            self._status()
        elif name == "send":
            self._send_command(words[1:])
        elif name in ("help", "?"):
            self._print(HELP)
        else:
            self._print("?Invalid command\n")

    def _send_command(self, args: list[str]) -> None:
        names = ("brk", "ip", "ao", "ayt", "synch", "escape", "nop", "?", "help")
        if not args:
            self._print("need at least one argument for 'send' command\n'send ?' for help\n")
            return
        for arg in args:
            name = _unique(arg, names)
            if name in ("?", "help") or name is None:
                if name is None:
                    self._print(f"?Invalid send argument '{arg}'\n")
                self._print(SEND_HELP)
                return
            self.send_special(name)

    def send_special(self, name: str) -> None:
        """brk, ip, ao, ayt, synch, escape or nop, as RFC 854 says to send it."""
        if name == "escape" and self.escape is not None:
            self._send(self.telnet.encode(bytes((self.escape,))))
        elif name == "synch":
            self._synch()
        elif name in ("ip", "ao"):
            # RFC 854: IP and AO are followed by the Synch, so the server finds them even when
            # its input is blocked; DO TM marks where the output we asked to stop ends.
            self._send(self.telnet.command(t.IP if name == "ip" else t.AO))
            self._synch()
            self._send(self.telnet.flush_request())
        else:
            code = {"brk": t.BRK, "ayt": t.AYT, "nop": t.NOP}[name]
            self._send(self.telnet.command(code))

    def _synch(self) -> None:
        """IAC DM with the DM as the urgent byte: the urgent pointer marks the DM (RFC 854)."""
        self._send(bytes((t.IAC,)))
        self._send(bytes((t.DM,)), socket.MSG_OOB)  # the server may be gone already (after IP)

    def _status(self) -> None:
        mode = "character at a time" if self.telnet.remote_echo() else "line by line"
        self._print(f"Connected to {self.host}.\nOperating {mode}.\n"
                    f"Escape character is '{escape_name(self.escape)}'.\n"
                    f"Options: {self.telnet.state()}\n")

    def _print(self, text: str) -> None:
        data = text.encode()
        if self.modes is not None and self.modes.current == "raw":
            data = data.replace(b"\n", b"\r\n")
        self.out.write(data)
        self.out.flush()

    def _say(self, text: str) -> None:
        end = "\r\n" if self.modes is not None and self.modes.current == "raw" else "\n"
        sys.stderr.write(text + end)
        sys.stderr.flush()


def _unique(word: str, names: tuple[str, ...]) -> str | None:
    """The name *word* is, or abbreviates without ambiguity."""
    if word in names:
        return word
    matches = [n for n in names if n.startswith(word)]
    return matches[0] if len(matches) == 1 else None


def port_number(text: str) -> int:
    try:
        return int(text) if text.isdigit() else socket.getservbyname(text, "tcp")
    except OSError:
        raise argparse.ArgumentTypeError(f"unknown port {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtelnet", description="telnet through SOCKS")
    parser.add_argument("-e", dest="escape", type=parse_escape, default=ESCAPE,
                        metavar="CHAR", help="escape character (^]); none turns it off")
    parser.add_argument("host")
    parser.add_argument("port", nargs="?", type=port_number, default=PORT)
    args = parser.parse_args(argv)
    sys.stderr.write(f"Trying {args.host}...\n")
    try:
        sock = net.connect(args.host, args.port, CONNECT_TIMEOUT)
    except OSError as e:
        print(f"rtelnet: {args.host} port {args.port}: {net.reason(e)}", file=sys.stderr)
        return 1
    sys.stderr.write(f"Connected to {args.host}.\n"
                     f"Escape character is '{escape_name(args.escape)}'.\n")
    # Like BSD telnet, offer options only on the telnet port: a line service on another port
    # would take the offers for data.
    return Session(sock, args.host, args.escape, negotiate=args.port == PORT).run()


if __name__ == "__main__":
    sys.exit(main())
