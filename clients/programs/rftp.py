"""rftp: an interactive FTP client in the spirit of BSD ftp, whose connections socks.conf routes.

``rftp [-n] [-v] [-i] [--fascist | --no-fascist] [--syslog-address PATH] [host [port]]``.

Owns the two layers above the pure protocol (`ftp_commands`): `Control`, the control
connection and the data connections it opens (passive: EPSV or PASV, then a connection to the
port given, made to the host the user named so that it is routed like the control connection;
active: a listener from `net.listen_for`, which is a SOCKS BIND when the control connection
went through sockd, announced with PORT or EPRT); and `Shell`, the ``ftp>`` commands.

Commands come from the terminal with an ``ftp>`` prompt, or from standard input when it is not
a terminal (scripts: login questions are answered by the next lines too).  Every transferred
file is logged to syslog (`fascist`) unless ``--no-fascist``.  Progress: a bar with bytes,
rate and ETA when standard output is a terminal, or hash marks when asked (``hash``).  The exit
status is 0 when every command succeeded, 1 when one failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import getpass
import glob
import ipaddress
import netrc
import os
import pwd
import shutil
import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO

from clients.programs import net
from clients.programs.fascist import Logger
from clients.programs.ftp_commands import (
    AsciiDecoder,
    ProtocolError,
    Reply,
    ReplyReader,
    ascii_encode,
    command_text,
    parse_epsv,
    parse_pasv,
    port_command,
    split_line,
)
from clients.programs.progress import HashMarks, Progress, human

PORT = 21
CONNECT_TIMEOUT = 30.0
CONTROL_TIMEOUT = 120.0     # seconds the server may take to answer a command
DATA_TIMEOUT = 120.0        # seconds a data connection may stay silent
BLOCK = 65536
MAX_LINE = 8192


class FtpError(Exception):
    """A command failed; the text is the one line shown to the user, unless *shown* (the
    server's reply that says so is on the screen already)."""

    def __init__(self, text: str, shown: bool = False) -> None:
        super().__init__(text)
        self.shown = shown


def _refused(reply: Reply) -> FtpError:
    # every 4xx/5xx reply is printed as it comes (`Shell.show_reply`)
    return FtpError(reply.lines[-1], shown=True)


class Control:
    """The control connection to one FTP server; *show* gets every reply (to print it)."""

    def __init__(self, host: str, port: int, show: Callable[[Reply], None]) -> None:
        self.host = host
        self.port = port
        self.show = show
        try:
            self.sock = net.connect(host, port, CONNECT_TIMEOUT)
        except OSError as e:
            raise FtpError(f"{host} port {port}: {net.reason(e)}") from None
        self.sock.settimeout(CONTROL_TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.reader = ReplyReader()
        self.welcome = self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def reply(self) -> Reply:
        try:
            while True:
                line = self.file.readline(MAX_LINE)
                if not line:
                    raise FtpError("connection closed by the server")
                reply = self.reader.feed(line.decode("utf-8", "surrogateescape"))
                if reply is not None:
                    self.show(reply)
                    return reply
        except ProtocolError as e:
            raise FtpError(str(e)) from None
        except OSError as e:
            raise FtpError(f"control connection: {net.reason(e)}") from None

    def send(self, text: str) -> None:
        try:
            self.sock.sendall(text.encode("utf-8", "surrogateescape") + b"\r\n")
        except OSError as e:
            raise FtpError(f"control connection: {net.reason(e)}") from None

    def command(self, command: str, argument: str | None = None) -> Reply:
        try:
            self.send(command_text(command, argument))
        except ValueError as e:
            raise FtpError(str(e)) from None
        return self.reply()

    def expect(self, command: str, argument: str | None = None, kinds: tuple = (2,)) -> Reply:
        reply = self.command(command, argument)
        if reply.kind not in kinds:
            raise _refused(reply) if reply.kind >= 4 else FtpError(reply.lines[-1])
        return reply

    def _peer_is_ipv6(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return ipaddress.ip_address(self.sock.getpeername()[0]).version == 6
        return False

    def open_data(self, command: str, argument: str | None, passive: bool) -> socket.socket:
        """Open a data connection and send *command*; returns the connection once the server
        has answered 1xx."""
        if passive:
            if self._peer_is_ipv6():
                port = parse_epsv(self.expect("EPSV"))
            else:
                port = parse_pasv(self.expect("PASV"))[1]
            try:
                data = net.connect(self.host, port, CONNECT_TIMEOUT)
            except OSError as e:
                raise FtpError(f"data connection to {self.host} port {port}: "
                               f"{net.reason(e)}") from None
            try:
                self.expect(command, argument, kinds=(1,))
            except BaseException:
                data.close()
                raise
            return data
        try:
            listener = net.listen_for(self.sock)
        except OSError as e:
            raise FtpError(f"data connection: {net.reason(e)}") from None
        with listener:
            address = listener.getsockname()
            self.expect(port_command(address[0], address[1]))
            self.expect(command, argument, kinds=(1,))
            try:
                data, _ = listener.accept()
            except OSError as e:
                raise FtpError(f"data connection: {net.reason(e)}") from None
        return data


class Shell:
    """The ``ftp>`` commands over at most one `Control` connection."""

    def __init__(self, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.out = stdout
        self.interactive = stdin.isatty()
        self.verbose = args.verbose or self.interactive
        self.autologin = not args.n
        self.prompting = not args.i
        self.passive = True
        self.binary = True
        self.hash_size: int | None = None
        self.progress = True
        self.fascist = Logger(args.fascist, args.syslog_address)
        self.control: Control | None = None
        self.failures = 0
        self.done = False
        self.local_user = _local_user()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        while not self.done:
            line = self.read_line("ftp> ")
            if line is None:
                break
            self.execute(line)
        self.close_connection()
        return 1 if self.failures else 0

    def read_line(self, prompt: str) -> str | None:
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                self.out.write("\n")
                return None
        line = self.stdin.readline()
        return line.rstrip("\r\n") if line else None

    def execute(self, line: str) -> bool:
        """Run one command line; False (and a failure counted) when it failed."""
        words = split_line(line)
        if not words:
            return True
        name = _unique(words[0], COMMANDS)
        if name is None:
            ambiguous = sum(n.startswith(words[0]) for n in COMMANDS) > 1
            self.say("?Ambiguous command" if ambiguous else "?Invalid command")
            self.failures += 1
            return False
        try:
            getattr(self, "do_" + COMMANDS[name])(words[1:])
            return True
        except FtpError as e:
            if not e.shown:
                self.say(str(e))
        except OSError as e:
            self.say(f"local: {net.reason(e)}")
        except KeyboardInterrupt:
            self.say("interrupted")
        self.failures += 1
        return False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def show_reply(self, reply: Reply) -> None:
        if self.verbose or reply.kind >= 4:
            self.say(reply.text)

    def connected(self) -> Control:
        if self.control is None:
            raise FtpError("Not connected.")
        return self.control

    # -- connection and login ------------------------------------------------------------------

    def do_open(self, args: list[str]) -> None:
        if self.control is not None:
            raise FtpError(f"Already connected to {self.control.host}, use close first.")
        if not args:
            line = self.read_line("(to) ")
            args = split_line(line or "")
            if not args:
                raise FtpError("usage: open host [port]")
        host = args[0]
        port = _port(args[1]) if len(args) > 1 else PORT
        self.control = Control(host, port, self.show_reply)
        if self.control.welcome.kind != 2:
            self.close_connection()
            raise FtpError("the server refused the connection")
        if self.verbose:
            self.say(f"Connected to {host}.")
        if self.autologin:
            user, password, account = self.netrc_entry(host)
            self.login(user, password, account)

    def netrc_entry(self, host: str) -> tuple[str | None, str | None, str | None]:
        """(login, password, account) from ~/.netrc for *host* (or its default entry)."""
        try:
            entry = netrc.netrc().authenticators(host)
        except FileNotFoundError:
            return None, None, None
        except (netrc.NetrcParseError, OSError) as e:
            self.say(f"rftp: ~/.netrc: {e}")
            return None, None, None
        if entry is None:
            return None, None, None
        login, account, password = entry
        return login or None, password, account or None

    def login(self, user: str | None = None, password: str | None = None,
              account: str | None = None) -> None:
        control = self.connected()
        if user is None:
            answer = self.read_line(f"Name ({control.host}:{self.local_user}): ")
            user = (answer or "").strip() or self.local_user
        reply = control.command("USER", user)
        if reply.code == 331:
            if password is None:
                password = self.ask_password(user)
            reply = control.command("PASS", password)
        if reply.code == 332:
            if account is None:
                account = self.read_line("Account: ") or ""
            reply = control.command("ACCT", account)
        if reply.kind != 2:
            raise FtpError("Login failed.")
        if self.binary:
            control.expect("TYPE", "I")

    def ask_password(self, user: str) -> str:
        """The password, echoed for anonymous logins (an e-mail address, CSTC's rftp did so)."""
        if not self.interactive or user in ("anonymous", "ftp"):
            return self.read_line("Password: ") or ""
        return getpass.getpass("Password: ")

    def do_user(self, args: list[str]) -> None:
        if not args:
            line = self.read_line("(username) ")
            args = split_line(line or "")
            if not args:
                raise FtpError("usage: user username [password [account]]")
        self.login(args[0], *(args[1:3]))

    def close_connection(self) -> None:
        if self.control is not None:
            with contextlib.suppress(FtpError):
                self.control.command("QUIT")
            self.control.close()
            self.control = None

    def do_close(self, args: list[str]) -> None:
        self.connected()
        self.close_connection()

    def do_quit(self, args: list[str]) -> None:
        self.close_connection()
        self.done = True

    # -- settings ------------------------------------------------------------------------------

    def _toggle(self, current: bool, args: list[str], name: str) -> bool:
        value = (not current) if not args else args[0] == "on"
        if args and args[0] not in ("on", "off"):
            raise FtpError(f"usage: {name} [on|off]")
        return value

    def do_passive(self, args: list[str]) -> None:
        self.passive = self._toggle(self.passive, args, "passive")
        self.say(f"Passive mode: {'on' if self.passive else 'off'}.")

    def do_prompt(self, args: list[str]) -> None:
        self.prompting = self._toggle(self.prompting, args, "prompt")
        self.say(f"Interactive mode: {'on' if self.prompting else 'off'}.")

    def do_verbose(self, args: list[str]) -> None:
        self.verbose = self._toggle(self.verbose, args, "verbose")
        self.say(f"Verbose mode: {'on' if self.verbose else 'off'}.")

    def do_progress(self, args: list[str]) -> None:
        self.progress = self._toggle(self.progress, args, "progress")
        self.say(f"Progress bar: {'on' if self.progress else 'off'}.")

    def do_hash(self, args: list[str]) -> None:
        if args and args[0].isdigit() and int(args[0]) > 0:
            self.hash_size = int(args[0])
        elif args and args[0] not in ("on", "off"):
            raise FtpError("usage: hash [on|off|size]")
        else:
            on = (self.hash_size is None) if not args else args[0] == "on"
            self.hash_size = 1024 if on else None
        if self.hash_size:
            self.say(f"Hash mark printing on ({self.hash_size} bytes/hash mark).")
        else:
            self.say("Hash mark printing off.")

    def _type(self, binary: bool) -> None:
        if self.control is not None:
            self.control.expect("TYPE", "I" if binary else "A")
        self.binary = binary

    def do_binary(self, args: list[str]) -> None:
        self._type(True)

    def do_ascii(self, args: list[str]) -> None:
        self._type(False)

    def do_status(self, args: list[str]) -> None:
        where = f"Connected to {self.control.host}." if self.control else "Not connected."
        onoff = {True: "on", False: "off"}
        self.say(f"{where}\nMode: {'passive' if self.passive else 'active'}; "
                 f"type: {'binary' if self.binary else 'ascii'}; "
                 f"verbose: {onoff[self.verbose]}; prompting: {onoff[self.prompting]}; "
                 f"hash: {self.hash_size or 'off'}; "
                 f"fascist logging: {onoff[self.fascist.enabled]}")

    def do_help(self, args: list[str]) -> None:
        self.say("Commands may be abbreviated.  Commands are:\n" + "  ".join(sorted(COMMANDS)))

    # -- remote directories --------------------------------------------------------------------

    def do_cd(self, args: list[str]) -> None:
        if len(args) != 1:
            raise FtpError("usage: cd remote-directory")
        self.connected().expect("CWD", args[0])

    def do_pwd(self, args: list[str]) -> None:
        reply = self.connected().expect("PWD")
        if not self.verbose:
            self.say(reply.text)

    def do_lcd(self, args: list[str]) -> None:
        os.chdir(os.path.expanduser(args[0] if args else "~"))
        self.say(f"Local directory now {os.getcwd()}")

    def do_ls(self, args: list[str]) -> None:
        self._listing("NLST", args)

    def do_dir(self, args: list[str]) -> None:
        self._listing("LIST", args)

    def _listing(self, command: str, args: list[str]) -> None:
        data = self._receive(command, args[0] if args else None)
        self.out.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
        self.out.flush()

    def _receive(self, command: str, argument: str | None) -> bytes:
        control = self.connected()
        chunks = []
        with control.open_data(command, argument, self.passive) as data:
            data.settimeout(DATA_TIMEOUT)
            while chunk := data.recv(BLOCK):
                chunks.append(chunk)
        reply = control.reply()
        if reply.kind != 2:
            raise _refused(reply)
        return b"".join(chunks)

    # -- transfers -----------------------------------------------------------------------------

    def do_get(self, args: list[str]) -> None:
        if not args or len(args) > 2:
            raise FtpError("usage: get remote-file [local-file]")
        self.get(args[0], args[1] if len(args) > 1 else os.path.basename(args[0]))

    def do_put(self, args: list[str]) -> None:
        if not args or len(args) > 2:
            raise FtpError("usage: put local-file [remote-file]")
        self.put(args[0], args[1] if len(args) > 1 else os.path.basename(args[0]))

    def do_mget(self, args: list[str]) -> None:
        if not args:
            raise FtpError("usage: mget remote-files")
        failed = 0
        for pattern in args:
            for name in self.remote_names(pattern):
                if self.confirm("mget", name):
                    failed += not self._one(self.get, name, os.path.basename(name))
        if failed:
            raise FtpError(f"mget: {failed} file(s) not transferred")

    def remote_names(self, pattern: str) -> list[str]:
        """The remote files *pattern* names: a pattern with wildcards is matched here against a
        listing of its directory (many servers, pyftpdlib among them, do not expand NLST
        patterns), a plain name is itself."""
        if not glob.has_magic(pattern):
            return [pattern]
        directory, _, base = pattern.rpartition("/")
        listing = self._receive("NLST", directory or None).decode("utf-8", "surrogateescape")
        names = [n.strip("\r").rpartition("/")[2] for n in listing.split("\n")]
        return [f"{directory}/{n}" if directory else n
                for n in sorted(fnmatch.filter(filter(None, names), base))]

    def do_mput(self, args: list[str]) -> None:
        if not args:
            raise FtpError("usage: mput local-files")
        failed = 0
        for pattern in args:
            names = sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]
            for name in names:
                if os.path.isfile(name) and self.confirm("mput", name):
                    failed += not self._one(self.put, name, os.path.basename(name))
                elif not os.path.isfile(name):
                    self.say(f"local: {name}: not a regular file")
                    failed += 1
        if failed:
            raise FtpError(f"mput: {failed} file(s) not transferred")

    def _one(self, transfer: Callable[[str, str], None], source: str, target: str) -> bool:
        try:
            transfer(source, target)
            return True
        except FtpError as e:
            if not e.shown:
                self.say(str(e))
        except OSError as e:
            self.say(f"local: {net.reason(e)}")
        return False

    def confirm(self, what: str, name: str) -> bool:
        """Ask about one file of mget/mput, when prompting is on and there is a terminal."""
        if not (self.prompting and self.interactive):
            return True
        answer = self.read_line(f"{what} {name}? ")
        return answer is None or not answer.strip().lower().startswith("n")

    def _meter(self, total: int | None):
        if self.hash_size:
            return HashMarks(self.out, self.hash_size)
        if self.progress and self.out.isatty():
            width = shutil.get_terminal_size((80, 24)).columns
            return Progress(self.out, total, width)
        return None

    def remote_size(self, remote: str) -> int | None:
        """The size the server gives with SIZE (RFC 3659), only for the bar."""
        if not (self.progress and self.out.isatty()) or self.hash_size:
            return None
        with contextlib.suppress(FtpError):
            reply = self.connected().command("SIZE", remote)
            if reply.code == 213 and reply.lines[-1][4:].strip().isdigit():
                return int(reply.lines[-1][4:].strip())
        return None

    def get(self, remote: str, local: str) -> None:
        control = self.connected()
        total = self.remote_size(remote)
        if self.verbose:
            self.say(f"local: {local} remote: {remote}")
        with open(local, "wb") as f:
            self._transfer("get", remote, total, control,
                           lambda data: self._download(data, f))

    def put(self, local: str, remote: str) -> None:
        control = self.connected()
        if self.verbose:
            self.say(f"local: {local} remote: {remote}")
        with open(local, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            self._transfer("put", remote, total, control,
                           lambda data: self._upload(data, f))

    def _transfer(self, direction: str, remote: str, total: int | None, control: Control,
                  move: Callable[[socket.socket], object]) -> None:
        """Open the data connection, move the bytes, read the final reply, log to syslog."""
        command = "RETR" if direction == "get" else "STOR"
        started = time.monotonic()
        self.moved = 0
        self.meter = self._meter(total)
        complete = False
        try:
            with control.open_data(command, remote, self.passive) as data:
                data.settimeout(DATA_TIMEOUT)
                try:
                    move(data)
                except OSError as e:
                    self.say(f"data connection: {net.reason(e)}")
            if self.meter is not None:
                self.meter.finish()
            reply = control.reply()
            complete = reply.kind == 2
            if not complete:
                raise _refused(reply)
        finally:
            if self.moved or complete:
                self.fascist.transfer(self.local_user, control.host, direction, remote,
                                      self.moved, complete)
        elapsed = max(time.monotonic() - started, 1e-6)
        if self.verbose:
            verb = "received" if direction == "get" else "sent"
            self.say(f"{self.moved} bytes {verb} in {elapsed:.2f} secs "
                     f"({human(self.moved / elapsed)}/s)")

    def _count(self, n: int) -> None:
        self.moved += n
        if self.meter is not None:
            self.meter.update(n)

    def _download(self, data: socket.socket, f) -> None:
        decoder = None if self.binary else AsciiDecoder()
        while chunk := data.recv(BLOCK):
            self._count(len(chunk))
            f.write(chunk if decoder is None else decoder.feed(chunk))
        if decoder is not None:
            f.write(decoder.end())

    def _upload(self, data: socket.socket, f) -> None:
        while chunk := f.read(BLOCK):
            if not self.binary:
                # a CR LF split across two reads stays CR LF: ascii_encode leaves it alone
                chunk = ascii_encode(chunk)
            data.sendall(chunk)
            self._count(len(chunk))


COMMANDS = {name: name for name in (
    "open", "user", "ls", "dir", "cd", "pwd", "lcd", "get", "put", "mget", "mput", "binary",
    "ascii", "passive", "hash", "prompt", "verbose", "progress", "status", "close", "quit",
    "help")}
COMMANDS.update({"bye": "quit", "exit": "quit", "?": "help", "recv": "get", "send": "put",
                 "image": "binary", "disconnect": "close"})


def _unique(word: str, names) -> str | None:
    if word in names:
        return word
    matches = [n for n in names if n.startswith(word)]
    return matches[0] if len(matches) == 1 else None


def _port(text: str) -> int:
    try:
        port = int(text) if text.isdigit() else socket.getservbyname(text, "tcp")
    except OSError:
        raise FtpError(f"unknown port {text!r}") from None
    if not 0 < port < 65536:
        raise FtpError(f"bad port {text!r}")
    return port


def _local_user() -> str:
    """The name of the real uid: who ran rftp, for the FASCIST log (not $USER, which anyone
    can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rftp", description="FTP through SOCKS")
    parser.add_argument("-n", action="store_true", help="no auto-login")
    parser.add_argument("-v", dest="verbose", action="store_true", help="verbose")
    parser.add_argument("-i", action="store_true", help="no prompting on mget/mput")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fascist", dest="fascist", action="store_true", default=True,
                       help="log every transfer to syslog (the default)")
    group.add_argument("--no-fascist", dest="fascist", action="store_false",
                       help="do not log transfers")
    parser.add_argument("--syslog-address", metavar="PATH", default=None,
                        help="syslog socket for transfer lines ($RFTP_SYSLOG, else /dev/log)")
    parser.add_argument("host", nargs="?")
    parser.add_argument("port", nargs="?")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shell = Shell(args, sys.stdin, sys.stdout)
    if shell.interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing for input())
    if args.host is not None:
        try:
            shell.do_open([args.host] + ([args.port] if args.port else []))
        except FtpError as e:
            shell.failures += 1
            if shell.control is None:
                # no connection: one line on standard error; a script has nothing to run on
                print(f"rftp: {e}", file=sys.stderr)
                if not shell.interactive:
                    return 1
            else:
                shell.say(str(e))
    try:
        return shell.run()
    except KeyboardInterrupt:
        shell.say("")
        return 1


if __name__ == "__main__":
    sys.exit(main())
