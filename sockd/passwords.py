"""The SOCKS5 username/password file (RFC 1929) and its scrypt hashes.

This module owns the file format and password hashing: `parse`/`load` turn the file into a
`PasswordTable`, `ScryptHash` makes and checks one hash.  It does no I/O but reading the file
(`sockd.sockpasswd` writes it) and knows nothing of PAM (`sockd.auth` combines the two).

The file: one ``user:hash`` a line, ``#`` starts a comment line, blank lines are skipped; the
hash is ``$scrypt$ln=N,r=R,p=P$SALT$HASH``: scrypt with cost 2**N, block size R and
parallelism P, SALT and HASH in base64 (standard alphabet, no ``=`` padding; the form passlib
writes).  The parameters travel in each hash so they can be raised later.  Errors name
FILE:LINE; a plain-text password line is an error naming ``sockpasswd convert``.  No message
quotes a password or a hash.

Encoding: user names and passwords are bytes, on the wire (RFC 1929 fields) as in the file.  A
user name matches when its bytes in the file equal the bytes the client sent; a password is
hashed as the bytes the client sends.  sockpasswd writes what it is given in UTF-8, which is
what curl and PySocks send, so a non-ASCII name typed at a UTF-8 terminal works with them.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from sockd.rules import ConfigError, read_regular_file

DEFAULT_FILE = "/etc/sockd.passwd"

# scrypt cost: 2**14 with r=8 takes 16 MiB and some 60 ms here (2 cores, 2024): slow for a
# guesser, quick enough for a worker that checks one login at a time.
DEFAULT_LN, DEFAULT_R, DEFAULT_P = 14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
# A hash in the file may ask for more, up to these bounds: a worker must not be made to
# allocate gigabytes or spin for minutes by one line.
MAX_MEMORY = 128 * 1024 * 1024      # 128 * r * 2**ln bytes: ln=17 with r=8, OWASP's advice
MAX_P = 16
MIN_SALT, MIN_HASH, MAX_HASH = 8, 16, 64
MAX_FIELD = 255                     # RFC 1929: ULEN and PLEN are one byte

PREFIX = "$scrypt$"
_PARAMETERS = re.compile(r"ln=([0-9]{1,2}),r=([0-9]{1,3}),p=([0-9]{1,2})")
_EXPECTED = "expected $scrypt$ln=N,r=R,p=P$SALT$HASH"


class PasswordError(ConfigError):
    """A malformed or unreadable password file; str() is FILE:LINE: message (FILE: message
    for the whole file), escaped as the file's UTF-8 bytes."""


class HashError(ValueError):
    """A string that is not a usable ``$scrypt$`` hash; the message quotes nothing of it."""


@dataclass(frozen=True)
class ScryptHash:
    """One salted scrypt hash and its parameters."""

    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def make(cls, password: bytes, ln: int = DEFAULT_LN, r: int = DEFAULT_R,
             p: int = DEFAULT_P) -> ScryptHash:
        """A new hash of *password* with a random salt."""
        salt = os.urandom(SALT_BYTES)
        return cls(ln, r, p, salt, _scrypt(password, salt, ln, r, p, HASH_BYTES))

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        """The hash written as *text*; raises HashError."""
        if not text.startswith(PREFIX):
            raise HashError(_EXPECTED)
        fields = text[len(PREFIX):].split("$")
        if len(fields) != 3 or not (match := _PARAMETERS.fullmatch(fields[0])):
            raise HashError(f"malformed scrypt hash ({_EXPECTED})")
        ln, r, p = (int(x) for x in match.groups())
        if not (1 <= ln <= 31 and 1 <= r and 1 <= p <= MAX_P and 128 * r << ln <= MAX_MEMORY):
            raise HashError(f"scrypt parameters out of bounds (ln 1-31, r at least 1, "
                            f"p 1-{MAX_P}, 128*r*2**ln at most {MAX_MEMORY >> 20} MiB)")
        salt, digest = _b64decode(fields[1]), _b64decode(fields[2])
        if salt is None or digest is None:
            raise HashError("salt or hash is not base64")
        if len(salt) < MIN_SALT:
            raise HashError(f"salt shorter than {MIN_SALT} bytes")
        if not MIN_HASH <= len(digest) <= MAX_HASH:
            raise HashError(f"hash not {MIN_HASH} to {MAX_HASH} bytes long")
        return cls(ln, r, p, salt, digest)

    def __str__(self) -> str:
        return (f"{PREFIX}ln={self.ln},r={self.r},p={self.p}"
                f"${_b64encode(self.salt)}${_b64encode(self.digest)}")

    def __repr__(self) -> str:
        return f"ScryptHash(ln={self.ln}, r={self.r}, p={self.p})"

    def matches(self, password: bytes) -> bool:
        """True if *password* hashes to this hash; the comparison is constant-time."""
        computed = _scrypt(password, self.salt, self.ln, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    # maxmem: OpenSSL's default (32 MiB) is below what ln=15 needs; allow the 128*r*N of the
    # parameters (p runs one block after another) plus slack for the rest of the state.
    memory = 128 * r << ln
    return hashlib.scrypt(password, salt=salt, n=1 << ln, r=r, p=p, dklen=length,
                          maxmem=2 * memory + (1 << 20))


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes | None:
    if not text or not text.isascii():
        return None
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except binascii.Error:
        return None


class PasswordTable:
    """The users of a password file and their hashes (read-only once built)."""

    def __init__(self, hashes: dict[bytes, ScryptHash]) -> None:
        self._hashes = dict(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, user: str | bytes) -> bool:
        return _wire(user) in self._hashes

    def __repr__(self) -> str:
        return f"PasswordTable({len(self._hashes)} users)"

    def users(self) -> list[bytes]:
        """The user names, in file order."""
        return list(self._hashes)

    def verify(self, user: str | bytes, password: str | bytes) -> bool | None:
        """True if *password* is *user*'s, False if not, None if the file does not list *user*.

        *user* and *password* are the RFC 1929 fields: bytes, or the str the protocol module
        decodes them to (latin-1, each byte one character).  Takes one scrypt's time when the
        user is listed, none when not (`sockd.auth` evens that out)."""
        stored = self._hashes.get(_wire(user))
        if stored is None:
            return None
        return stored.matches(_wire(password))


def _wire(field: str | bytes) -> bytes:
    """The bytes of an RFC 1929 field (sockd.protocol decodes fields latin-1)."""
    return field.encode("latin-1") if isinstance(field, str) else field


def user_name_problem(user: bytes) -> str | None:
    """Why *user* cannot be a name in the file, or None: empty, longer than 255 bytes, a ``:``,
    a control character (C0, DEL, or C1 as UTF-8), or a leading ``#`` (a comment line)."""
    if not user:
        return "empty user name"
    if len(user) > MAX_FIELD:
        return f"user name longer than {MAX_FIELD} bytes"
    if b":" in user:
        return "':' in user name"
    text = user.decode("utf-8", "surrogateescape")
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in text):
        return "control character in user name"
    if text.lstrip().startswith("#"):
        return "user name starts with '#'"
    return None


def split_line(line: str) -> tuple[str, str] | None:
    """(user, hash field) of a file line, or None for a comment or blank line.  The user is
    empty when the line has no ``:``."""
    line = line.removesuffix("\r")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    user, sep, field = line.partition(":")
    return (user, field) if sep else ("", field)


def parse(text: str, file: str) -> PasswordTable:
    """The table of *text*, the file *file* decoded UTF-8 with surrogateescape; raises
    PasswordError on the first bad line."""
    hashes: dict[bytes, ScryptHash] = {}
    # split("\n"), not splitlines(): that also splits at \x0b, \x0c, \x1c-\x1e and \x85
    for number, line in enumerate(text.split("\n"), 1):
        entry = split_line(line)
        if entry is None:
            continue
        user_text, field = entry
        if not user_text or not field:
            raise PasswordError(file, number, "expected user:$scrypt$... (see sockpasswd(8))")
        user = user_text.encode("utf-8", "surrogateescape")
        if problem := user_name_problem(user):
            raise PasswordError(file, number, problem)
        if user in hashes:
            raise PasswordError(file, number, f"user '{user_text}' appears twice")
        if not field.startswith(PREFIX):
            raise PasswordError(file, number, f"user '{user_text}': not a scrypt hash (a "
                                f"plain-text password?): convert the file with "
                                f"'sockpasswd --file {file} convert'")
        try:
            hashes[user] = ScryptHash.parse(field)
        except HashError as e:
            raise PasswordError(file, number, f"user '{user_text}': {e}") from None
    return PasswordTable(hashes)


def load(path: str) -> PasswordTable:
    """Read and parse *path*; raises PasswordError."""
    try:
        data = read_regular_file(path)
    except ConfigError as e:
        raise PasswordError(e.file, e.line, e.message) from None
    return parse(data.decode("utf-8", "surrogateescape"), path)
