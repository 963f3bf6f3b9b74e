"""The field grammar shared by sockd.conf, sockd.route and socks.conf; reading their files.

This module owns what the server's rules (`sockd.rules`, `sockd.route`) and the client's routing
(`clients.conf`) spell the same way: addresses and masks (dotted quads, host and network names
resolved through the caller's resolver, CIDR prefixes, IPv6), destination host-name patterns,
``op port`` tests (numbers or service names), ``*=`` user lists and user files, the split of a line
into its fields and its ``: shell-command``, and the bounded reading of a configuration file.

Fail closed: every bad field raises `FieldError` with a message that quotes it; the file's parser
adds the file and the line (`ConfigError`).  What it must not do: judge a request, run a command,
or import anything of the daemon's I/O or of the client side.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass

from sockd.log import escape_text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], IPAddress]

MAX_LINE = 1023                 # sockd.conf(5): "Lines ... may be up to 1023 characters long"
MAX_USER_FILE = 10 * 1024 * 1024
MAX_CONFIG = 16 * 1024 * 1024   # the largest rules, route or password file sockd reads
OPERATORS = ("eq", "neq", "lt", "le", "gt", "ge")


class ConfigError(Exception):
    """An error in a rules file; ``str(e)`` is ``FILE:LINE: message`` (``FILE: message`` when the
    error concerns the whole file, then ``line`` is None).

    ``str(e)`` is escaped whole (`sockd.log.escape_text`, the file's bytes as read in
    ``encoding``): a message quotes tokens of the file, and a control byte or invalid UTF-8 in
    one must reach neither the terminal nor the log (where an undecodable one made the syslog
    line vanish).  ``file`` and ``message`` keep the raw text.
    """

    encoding = "utf-8"

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return escape_text(f"{self.file}: {self.message}", self.encoding)
        return escape_text(f"{self.file}:{self.line}: {self.message}", self.encoding)

    def __reduce__(self):
        return (type(self), (self.file, self.line, self.message))


class Located:
    """A line of one of these files that knows where it was read: its ``file`` and ``line``
    (fields of the dataclass that inherits this)."""

    file: str
    line: int

    @property
    def where(self) -> str:
        """``FILE:LINE``, as log lines and test_sockd_conf name a rule."""
        return f"{self.file}:{self.line}"


class FieldError(Exception):
    """A bad field; the loader turns it into a `ConfigError` with the file and line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AddressMatch:
    """An address condition: ``(address & mask) == (value & mask)``, netmask style.

    A zero mask (``0.0.0.0 0.0.0.0``, ``0.0.0.0/0``, ``::/0``) matches every address of both
    families and every destination name: the classic "every host on the Internet".
    """

    version: int
    value: int          # already masked
    mask: int
    text: str           # as written, e.g. "10.0.0.0 255.0.0.0" or "10.0.0.0/8"

    @property
    def matches_all(self) -> bool:
        return self.mask == 0

    def matches(self, address: IPAddress) -> bool:
        if self.mask == 0:
            return True
        address = unmapped(address)
        return address.version == self.version and int(address) & self.mask == self.value


@dataclass(frozen=True)
class NamePattern:
    """A destination host-name pattern: ``www.example.com`` exactly, ``.example.com`` the zone
    (the apex ``example.com`` and every name under it).  Only requests that came by name match."""

    name: str           # lowercase, no leading or trailing dot
    zone: bool

    @property
    def text(self) -> str:
        return "." + self.name if self.zone else self.name

    def matches(self, hostname: str) -> bool:
        hostname = normalize_hostname(hostname)
        if hostname == self.name:
            return True
        return self.zone and hostname.endswith("." + self.name)


@dataclass(frozen=True)
class PortTest:
    """``op port``: a test on the destination port."""

    op: str
    port: int

    def passes(self, port: int) -> bool:
        return _OP_FUNCTIONS[self.op](port, self.port)


_OP_FUNCTIONS: dict[str, Callable[[int, int], bool]] = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}


def read_config(path: str) -> tuple[str | None, list[ConfigError]]:
    """The text of a configuration file, or the error that says why it cannot be read."""
    try:
        data = read_regular_file(path)
    except ConfigError as e:
        return None, [e]
    return data.decode("utf-8", "surrogateescape"), []


def read_regular_file(path: str, limit: int = MAX_CONFIG) -> bytes:
    """The bytes of a configuration file, which must be a regular file of at most ``limit``
    bytes; else `ConfigError` (``FILE: message``).

    ``-c /dev/zero`` must not fill the memory, nor a FIFO hang the server (at start or on HUP):
    the file is opened non-blocking, checked with fstat (the file opened, not a name that may
    change), and read up to ``limit + 1`` bytes.  Symbolic links are followed: a linked
    configuration file is normal.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror or e}") from None
    except ValueError:
        raise ConfigError(path, None, "cannot read: bad file name") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(path, None, f"not a regular file ({_file_kind(mode)})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(limit + 1 - size, 1 << 20))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError(path, None, f"larger than {limit} bytes")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "of an unknown kind"


def parse_address_field(tokens: list[str], resolver: Resolver,
                        what: str = "source") -> tuple[AddressMatch, list[str]]:
    """An address field at the head of ``tokens``: ``addr mask`` (a dotted quad or a name
    resolved now, and a dotted-quad mask), a CIDR prefix, or an IPv6 address or prefix.
    Returns it with the tokens that follow."""
    if not tokens:
        raise FieldError(f"missing {what} address")
    single = single_token_address(tokens[0])
    if single is not None:
        refuse_ipv6_mask(tokens)
        return single, tokens[1:]
    if len(tokens) < 2:
        raise FieldError(f"{what} address '{tokens[0]}' has no mask")
    return address_pair(tokens[0], tokens[1], resolver), tokens[2:]


def address_pair(address_token: str, mask_token: str, resolver: Resolver) -> AddressMatch:
    mask = _quad(mask_token)
    if mask is None:
        raise FieldError(f"bad mask '{mask_token}' (expected a dotted quad)")
    address = resolve_address(address_token, resolver)
    if address.version != 4:
        raise FieldError(f"'{address_token}' resolves to {address}, not an IPv4 address to mask")
    return AddressMatch(4, int(address) & mask, mask, f"{address_token} {mask_token}")


def resolve_address(token: str, resolver: Resolver) -> IPAddress:
    """A literal IPv4 or IPv6 address, or a host or network name resolved by ``resolver``."""
    if re.fullmatch(r"[0-9.]+", token):
        number = _quad(token)
        if number is None:
            raise FieldError(f"bad address '{token}'")
        return ipaddress.IPv4Address(number)
    if ":" in token:
        try:
            address = ipaddress.IPv6Address(token)
        except ValueError:
            raise FieldError(f"bad address '{token}'") from None
        if address.ipv4_mapped is not None:
            raise FieldError(_mapped_message(token, address.ipv4_mapped, None))
        return address
    if not HOSTNAME.fullmatch(token):
        raise FieldError(f"bad address '{token}'")
    try:
        return unmapped(ipaddress.ip_address(resolver(token)))
    except (OSError, LookupError, ValueError):
        raise FieldError(f"cannot resolve '{token}'") from None


def parse_user_file(text: str) -> set[str]:
    """User ids of a user file: separated by blanks, tabs or commas; ``#`` starts a comment."""
    users: set[str] = set()
    for line in text.splitlines():
        users.update(u for u in re.split(r"[ \t,]+", line.split("#", 1)[0]) if u)
    return users


def parse_users(value: str, read_user_file: Callable[[str], set[str]]) -> frozenset[str] | None:
    if value == "":
        return None             # CSTC: an empty *= means all users
    users: set[str] = set()
    for entry in value.split(","):
        if entry == "":
            raise FieldError(f"empty entry in '*={value}'")
        if entry.startswith("/"):
            users |= read_user_file(entry)
        else:
            users.add(entry)
    return frozenset(users)


def parse_port_test(tokens: list[str]) -> PortTest | None:
    if not tokens:
        return None
    op = tokens[0]
    if op not in OPERATORS:
        raise FieldError(f"unknown operator '{op}' (expected eq, neq, lt, le, gt or ge)")
    if len(tokens) < 2:
        raise FieldError(f"operator '{op}' has no port")
    if len(tokens) > 2:
        raise FieldError(f"unexpected '{tokens[2]}' after the port test")
    return PortTest(op, parse_port(tokens[1]))


def parse_port(token: str) -> int:
    """A port number (0-65535) or a tcp service name of /etc/services; `FieldError` if neither."""
    if token.isascii() and token.isdigit():
        port = int(token)
        if port > 65535:
            raise FieldError(f"port '{token}' out of range (0-65535)")
        return port
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9._+-]*", token):
        try:
            return socket.getservbyname(token, "tcp")
        except OSError:
            pass
    raise FieldError(f"unknown service or bad port '{token}'")


def parse_shell_command(text: str) -> str:
    command = text.replace("\t", " ").strip()
    if not command:
        raise FieldError("empty shell command after ':'")
    if not any(c.isascii() and c.isalnum() for c in command):
        # The original refused such commands when it came to run them.
        raise FieldError(f"shell command '{command}' has no letters or digits")
    return command


def split_line(line: str) -> tuple[list[str], str | None]:
    """Split a rule line into its fields and its shell command (None when there is no ``:``).

    As in CSTC: a ``#`` before the command starts a comment, the first ``:`` starts the command,
    tabs are blanks.  One modern exception: a field that is an IPv6 address or prefix keeps its
    colons (``::1``, ``2001:db8::/32``).
    """
    if ":" not in line and "#" not in line:
        return [t for t in line.replace("\t", " ").split(" ") if t], None
    tokens: list[str] = []
    for match in re.finditer(r"[^ \t]+", line):
        chunk = match.group()
        word = chunk.split("#", 1)[0]
        colon = word.find(":")
        if colon >= 0 and not _is_ipv6_token(word):
            if colon:
                tokens.append(word[:colon])
            return tokens, line[match.start() + colon + 1:]
        if word:
            tokens.append(word)
        if len(word) < len(chunk):
            break
    return tokens, None


def _is_ipv6_token(word: str) -> bool:
    """Looks like an IPv6 address or prefix (two colons or more, hex digits, dots for an
    embedded IPv4, an optional /prefix): its colons do not start a shell command."""
    return _IPV6_LIKE.fullmatch(word) is not None


_IPV6_LIKE = re.compile(r"[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(/[0-9]*)?")


HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(\.(?!-)[A-Za-z0-9_-]{1,63})*\.?")


def _quad(token: str) -> int | None:
    """A strict dotted quad as an integer (no octal, no short forms), else None.  inet_pton
    rather than ipaddress: loading a 10,000-line file parses some 30,000 of them."""
    if not token.isascii():
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, token), "big")
    except (OSError, ValueError):
        return None


def is_dotted_quad(token: str) -> bool:
    return _quad(token) is not None


def single_token_address(token: str) -> AddressMatch | None:
    """A CIDR prefix (``10.0.0.0/8``, ``2001:db8::/32``) or a lone IPv6 address (a /128);
    None for anything that is not one field on its own.  inet_pton rather than ipaddress, which
    is ten times slower: a big file has thousands of these."""
    if "/" not in token and ":" not in token:
        return None
    address, slash, length = token.partition("/")
    version, bits = (6, 128) if ":" in address else (4, 32)
    try:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        number = int.from_bytes(socket.inet_pton(family, address), "big")
    except (OSError, ValueError):
        raise FieldError(f"bad address '{token}'") from None
    if not slash:
        length = str(bits)
    if not (length.isascii() and length.isdigit() and int(length) <= bits):
        raise FieldError(f"bad address '{token}'")
    prefix = int(length)
    if version == 6 and prefix >= 96 and number >> 32 == 0xFFFF:
        raise FieldError(_mapped_message(token, ipaddress.IPv4Address(number & 0xFFFFFFFF),
                                         prefix - 96))
    mask = (1 << bits) - (1 << (bits - prefix))
    if number & ~mask:
        # Not a broader rule than written: 10.0.0.1/8 may have meant 10.0.0.1/32.
        network = ipaddress.ip_network((number & mask, prefix) if version == 4 else
                                       (ipaddress.IPv6Address(number & mask), prefix))
        raise FieldError(f"host bits set in '{token}' (did you mean {network}?)")
    return AddressMatch(version, number, mask, token)


def _mapped_message(token: str, ipv4: ipaddress.IPv4Address, prefix: int | None) -> str:
    """An IPv4-mapped address (::ffff:0:0/96) in a rule is refused rather than read as IPv4:
    ``::ffff:0.0.0.0/96`` became ``0.0.0.0/0``, whose zero mask matches every IPv6 client too.
    Clients and destinations in that form are still judged as IPv4 (`unmapped`)."""
    ipv4_form = f"{ipv4}" if prefix is None else f"{ipv4}/{prefix}"
    return f"IPv4-mapped address '{token}': write the IPv4 form {ipv4_form} instead"


def refuse_ipv6_mask(tokens: list[str]) -> None:
    """``2001:db8:: ffff:ffff::`` is a classic pair written in IPv6: refuse it rather than read
    two host addresses."""
    if len(tokens) < 2 or "/" in tokens[0] or ":" not in tokens[1]:
        return
    try:
        mask = int(ipaddress.IPv6Address(tokens[1]))
    except ValueError:
        return
    ones = bin(mask).count("1")
    if mask == ((1 << ones) - 1) << (128 - ones):
        raise FieldError(f"an IPv6 address takes a /prefix, not a mask: "
                         f"write {tokens[0]}/{ones}, not '{tokens[0]} {tokens[1]}'")


def parse_name_pattern(token: str) -> NamePattern:
    zone = token.startswith(".")
    name = token[1:] if zone else token
    if not HOSTNAME.fullmatch(name):
        raise FieldError(f"bad host name pattern '{token}'")
    return NamePattern(normalize_hostname(name), zone)


def parse_destination_field(tokens: list[str], resolver: Resolver
                            ) -> tuple[AddressMatch | NamePattern | None, list[str]]:
    """A destination at the head of ``tokens``: an ``addr mask`` pair, a CIDR prefix, an IPv6
    address or prefix, or a host-name pattern (``www.example.com``, ``.example.com``); None when
    ``tokens`` is empty or starts with an operator.  Returns it with the tokens that follow."""
    if not tokens or tokens[0] in OPERATORS:
        return None, tokens
    first = tokens[0]
    single = single_token_address(first)
    if single is not None:
        refuse_ipv6_mask(tokens)
        return single, tokens[1:]
    if first.startswith("."):
        return parse_name_pattern(first), tokens[1:]
    if len(tokens) >= 2 and is_dotted_quad(tokens[1]):
        return address_pair(first, tokens[1], resolver), tokens[2:]
    if re.fullmatch(r"[0-9.]+", first):
        raise FieldError(f"destination address '{first}' has no mask")
    if "." not in first:
        raise FieldError(f"'{first}' is neither an operator nor a destination (a host name "
                         "pattern has a dot; a single-label name needs a mask)")
    return parse_name_pattern(first), tokens[1:]


def read_user_file(path: str) -> set[str]:
    """The user ids of the user file ``path`` (a ``*=/path`` entry); `FieldError` if it cannot
    be read."""
    # The same bounded, non-blocking reader as the rules file: a FIFO or /dev/zero named
    # in *= must not hang or fill the server either.
    try:
        data = read_regular_file(path, MAX_USER_FILE)
    except ConfigError as e:
        message = e.message
        if message.startswith("cannot read: "):
            raise FieldError(f"cannot read user file '{path}': "
                             f"{message.removeprefix('cannot read: ')}") from None
        if message.startswith("not a regular file"):
            raise FieldError(f"user file '{path}' is not a regular file") from None
        raise FieldError(f"user file '{path}' is {message}") from None
    return parse_user_file(data.decode("utf-8", "surrogateescape"))


def resolve_name(name: str, networks_file: str) -> IPAddress:
    """Resolve a host or network name as CSTC's GetAddr did: host first, then the networks(5)
    file.  Returns an IPv4 address (classic masks are IPv4); raises LookupError when nothing
    matches."""
    try:
        return ipaddress.IPv4Address(socket.gethostbyname(name))
    except OSError:
        pass
    network = _network_by_name(name, networks_file)
    if network is None:
        raise LookupError(f"unknown host or network {name!r}")
    return network


def _network_by_name(name: str, path: str) -> ipaddress.IPv4Address | None:
    """getnetbyname(3) on networks(5): ``name number [aliases]``; ``10.1`` means 10.1.0.0."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name in (fields[0], *fields[2:]):
            parts = fields[1].split(".")
            try:
                return ipaddress.IPv4Address(".".join(parts + ["0"] * (4 - len(parts))))
            except ValueError:
                return None
    return None


def normalize_hostname(name: str) -> str:
    return name.lower().removesuffix(".")


def unmapped(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:10.1.2.3``, what a dual-stack socket reports) as IPv4."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
