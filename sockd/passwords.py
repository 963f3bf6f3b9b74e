"""The SOCKS5 username/password file (RFC 1929): one `user:password` a line.

`#` starts a comment line; blank lines are skipped.  Errors name FILE:LINE.
"""


class PasswordError(Exception):
    """A malformed password file; str() is FILE:LINE: message."""


def parse(text: str, file: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise PasswordError(f"{file}:{number}: expected user:password")
        if len(user.encode()) > 255 or len(password.encode()) > 255:
            raise PasswordError(f"{file}:{number}: user or password longer than 255 bytes")
        if user in users:
            raise PasswordError(f"{file}:{number}: user {user!r} appears twice")
        users[user] = password
    return users


def load(path: str) -> dict[str, str]:
    """Read *path*; raises PasswordError or OSError."""
    # latin-1, as on the wire (RFC 1929 fields are bytes): every byte compares as itself
    with open(path, encoding="latin-1") as f:
        return parse(f.read(), path)
