"""The SOCKS5 username/password file (RFC 1929): one `user:password` a line.

`#` starts a comment line; blank lines are skipped.  Errors name FILE:LINE.
The file must be a regular file of at most 16 MiB (`sockd.rules.read_regular_file`).
"""

from sockd.rules import ConfigError, read_regular_file


class PasswordError(ConfigError):
    """A malformed or unreadable password file; str() is FILE:LINE: message (FILE: message
    for the whole file), escaped as the file's Latin-1 bytes."""

    encoding = "latin-1"


def parse(text: str, file: str) -> dict[str, str]:
    users: dict[str, str] = {}
    # split("\n"), not splitlines(): that also splits at \x0b, \x0c, \x1c-\x1e and \x85, which
    # are bytes a password may hold
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise PasswordError(file, number, "expected user:password")
        if len(user.encode("latin-1")) > 255 or len(password.encode("latin-1")) > 255:
            raise PasswordError(file, number, "user or password longer than 255 bytes")
        if user in users:
            raise PasswordError(file, number, f"user '{user}' appears twice")
        users[user] = password
    return users


def load(path: str) -> dict[str, str]:
    """Read *path*; raises PasswordError."""
    try:
        data = read_regular_file(path)
    except ConfigError as e:
        raise PasswordError(e.file, e.line, e.message) from None
    # latin-1, as on the wire (RFC 1929 fields are bytes): every byte compares as itself
    return parse(data.decode("latin-1"), path)
