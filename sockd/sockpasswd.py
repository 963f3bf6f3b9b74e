"""sockpasswd: add, change, delete, list and convert the users of sockd's password file.

    sockpasswd [--file FILE] add|passwd|del USER
    sockpasswd [--file FILE] list|convert

A new password is read twice: from the terminal without echo, or, when standard input is not a
terminal, as its first two lines.  It never comes from the command line (which `ps` shows).
The file is rewritten atomically (a temporary file in the same directory, written, fsynced and
renamed over the file, then the directory fsynced) with mode 0600; every other line, comments
included, is kept byte for byte.  Exit status: 0 done, 1 refused or failed (one line on
standard error says why), 2 usage error.  sockpasswd(8) is the user's version of this contract.

This module owns the program only: the file format and the hashes are `sockd.passwords`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile

from sockd import passwords
from sockd.log import escape_text
from sockd.rules import ConfigError, read_regular_file

PROG = "sockpasswd"
DONE, FAILED, USAGE = 0, 1, 2
NEEDS_USER = ("add", "passwd", "del")
COMMANDS = NEEDS_USER + ("list", "convert")
MAX_INPUT_LINE = 1024       # bytes read for one password line from a pipe


class Failure(Exception):
    """A refusal or a failure: the one-line reason, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Manage sockd's SOCKS5 password file.")
    p.add_argument("--file", metavar="FILE", default=passwords.DEFAULT_FILE,
                   help=f"the password file (default {passwords.DEFAULT_FILE})")
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("user", nargs="?", help="the user name (add, passwd, del)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)     # exits 2 when wrong
    if args.command in NEEDS_USER and args.user is None:
        parser.error(f"{args.command} needs a user name")
    if args.command not in NEEDS_USER and args.user is not None:
        parser.error(f"{args.command} takes no user name")
    try:
        run(args.command, args.file, None if args.user is None else os.fsencode(args.user))
    except Failure as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted, {args.file} unchanged", file=sys.stderr)
        return FAILED
    return DONE


def run(command: str, path: str, user: bytes | None) -> None:
    """Carry out one command on the file at *path*; raises Failure."""
    shown = escape_text(path)
    if user is not None and (problem := passwords.user_name_problem(user)):
        raise Failure(f"{problem}: {escape_text(os.fsdecode(user))}")
    file = PasswordFile.read(path, missing_ok=command == "add")
    if command == "list":
        for name in file.users():
            sys.stdout.buffer.write(name + b"\n")
        sys.stdout.flush()
        return
    name = escape_text(os.fsdecode(user)) if user is not None else ""
    if command == "convert":
        count = file.convert()
        if count:
            file.write()
        print(f"{PROG}: {shown}: {count} plain-text password{'s' * (count != 1)} converted")
        return
    index = file.find(user)
    if command == "add" and index is not None:
        raise Failure(f"{shown}: user '{name}' already exists (use passwd to change it)")
    if command != "add" and index is None:
        raise Failure(f"{shown}: no user '{name}'")
    if command == "del":
        del file.lines[index]
    else:
        line = entry(user, passwords.ScryptHash.make(read_new_password()))
        if index is None:
            file.lines.append(line)
        else:
            file.lines[index] = line
    file.write()
    done = {"add": f"user '{name}' added", "passwd": f"password of user '{name}' changed",
            "del": f"user '{name}' deleted"}[command]
    print(f"{PROG}: {shown}: {done}")


def entry(user: bytes, hashed: passwords.ScryptHash) -> str:
    return user.decode("utf-8", "surrogateescape") + ":" + str(hashed)


def read_new_password() -> bytes:
    """The new password, typed twice; raises Failure on a mismatch or an unusable password."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ").encode("utf-8", "surrogateescape")
        second = getpass.getpass("Retype new password: ").encode("utf-8", "surrogateescape")
    else:
        first, second = _input_line(), _input_line()
    if first != second:
        raise Failure("the two passwords do not match")
    if not first:
        raise Failure("empty password")
    if len(first) > passwords.MAX_FIELD:
        raise Failure(f"password longer than {passwords.MAX_FIELD} bytes (the RFC 1929 limit)")
    return first


def _input_line() -> bytes:
    line = sys.stdin.buffer.readline(MAX_INPUT_LINE)
    if not line:
        raise Failure("expected the new password twice on standard input, one a line")
    if len(line) == MAX_INPUT_LINE and not line.endswith(b"\n"):
        raise Failure(f"password longer than {passwords.MAX_FIELD} bytes (the RFC 1929 limit)")
    return line.removesuffix(b"\n").removesuffix(b"\r")


class PasswordFile:
    """The lines of a password file as text (UTF-8, surrogateescape: bytes survive)."""

    def __init__(self, path: str, lines: list[str], stat: os.stat_result | None) -> None:
        self.path = path
        self.lines = lines
        self.stat = stat

    @classmethod
    def read(cls, path: str, missing_ok: bool) -> PasswordFile:
        # The file is written where it really is: a link to it stays a link.
        path = os.path.realpath(path)
        if missing_ok and not os.path.lexists(path):
            return cls(path, [], None)
        try:
            data = read_regular_file(path)
            stat = os.stat(path)
        except ConfigError as e:
            raise Failure(str(e)) from None
        except OSError as e:
            raise Failure(f"{escape_text(path)}: {e.strerror}") from None
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        if lines[-1] == "":
            lines.pop()                         # the newline that ends the last line
        return cls(path, lines, stat)

    def entries(self) -> list[tuple[int, str, str]]:
        """(index, user, field) of each line that is not a comment or blank."""
        found = []
        for index, line in enumerate(self.lines):
            if (parts := passwords.split_line(line)) is not None:
                found.append((index, *parts))
        return found

    def users(self) -> list[bytes]:
        return [user.encode("utf-8", "surrogateescape") for _, user, _ in self.entries() if user]

    def find(self, user: bytes) -> int | None:
        text = user.decode("utf-8", "surrogateescape")
        return next((index for index, name, _ in self.entries() if name == text), None)

    def convert(self) -> int:
        """Hash every plain-text password in place; the number hashed.  Refuses (Failure, the
        file unchanged) when the result would not load."""
        count = 0
        for index, user, field in self.entries():
            if user and field and not field.startswith(passwords.PREFIX):
                plain = field.removesuffix("\r").encode("utf-8", "surrogateescape")
                self.lines[index] = entry(user.encode("utf-8", "surrogateescape"),
                                          passwords.ScryptHash.make(plain))
                count += 1
        try:
            passwords.parse("\n".join(self.lines), self.path)
        except passwords.PasswordError as e:
            raise Failure(f"{e} (nothing converted)") from None
        return count

    def write(self) -> None:
        data = "".join(line + "\n" for line in self.lines).encode("utf-8", "surrogateescape")
        try:
            write_atomically(self.path, data, self.stat)
        except OSError as e:
            raise Failure(f"cannot write {escape_text(self.path)}: {e.strerror or e} "
                          "(file unchanged)") from None


def write_atomically(path: str, data: bytes, like: os.stat_result | None) -> None:
    """Replace *path* by a file holding *data*, mode 0600, owned as *like* (when root): either
    the old file or the new one is there at every moment, even after a crash."""
    directory, base = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{base}.", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            if like is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), like.st_uid, like.st_gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    # The rename itself is on disk only once the directory is.
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


if __name__ == "__main__":
    sys.exit(main())
