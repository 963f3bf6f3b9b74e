"""socks.conf: parse the client's routing file and decide how each connection goes out.

This module owns the client-side rule language of socks.conf(5), CSTC's

    deny   [*=users]                  dst_addr dst_mask [op dst_port] [: shell-command]
    direct [*=users]                  dst_addr dst_mask [op dst_port] [: shell-command]
    sockd  [@=server1,server2,...] [*=users] dst_addr dst_mask [op dst_port] [: shell-command]

(also ``sockd@server1,server2``), with sockd.conf's extensions (CIDR, IPv6, host-name patterns,
service names; the field grammar is `sockd.grammar`'s, shared with the server) and two options
of a ``sockd`` line: ``proto=4|4a|5`` (the SOCKS version spoken to its servers, default 5) and
``order=random`` (try its servers in a random order rather than as written).  It also owns the
environment the original read: ``SOCKS_CONF`` (the file), ``SOCKS_SERVER`` (the default server,
``host[:port]``).

The decision, `SocksConf.route`, is a pure function of the destination, the port and the user
(and of the caller's ``resolve`` for a destination given by name):

- 127.0.0.1 and 0.0.0.0 (exactly those) always go direct, as in the original;
- otherwise the first matching line wins and no match denies;
- with no file at all, everything goes direct, or through ``SOCKS_SERVER`` when it is set;
- a file that exists but has an error refuses every connection (fail closed): `load` returns a
  `SocksConf` whose decisions all deny and name the error (``FILE:LINE: message``).

What it must not do: open connections or run commands (`hook_command` only expands the line's
command; the socket layer runs it).  It never imports the daemon's I/O modules.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sockd import grammar, hooks
from sockd.grammar import (
    AddressMatch,
    ConfigError,
    FieldError,
    IPAddress,
    Located,
    NamePattern,
    PortTest,
)

DEFAULT_CONF = "/etc/socks.conf"
NETWORKS_FILE = "/etc/networks"
ALWAYS_DIRECT = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("0.0.0.0"))
PROTOCOLS = ("4", "4a", "5")
ORDERS = ("listed", "random")

Resolver = Callable[[str], IPAddress]


class Action(enum.StrEnum):
    DENY = "deny"
    DIRECT = "direct"
    SOCKD = "sockd"


def socks_port() -> int:
    """The port of a server named without one: the ``socks`` tcp service, else 1080."""
    try:
        return socket.getservbyname("socks", "tcp")
    except OSError:
        return 1080


@dataclass(frozen=True)
class Server:
    """A SOCKS server of a ``sockd`` line or of ``SOCKS_SERVER``: a host name or address, and a
    port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Line(Located):
    """One line of socks.conf.  ``servers`` empty means the default server (``SOCKS_SERVER``);
    ``users`` None means any user; ``port`` None any port."""

    action: Action
    servers: tuple[Server, ...]
    users: frozenset[str] | None
    dst: AddressMatch | NamePattern
    port: PortTest | None
    proto: str                          # "4", "4a" or "5"
    order: str                          # "listed" or "random"
    shell_command: str | None
    file: str
    line: int
    text: str


@dataclass(frozen=True)
class Route:
    """How one connection goes out.

    ``action`` is deny, direct or sockd; ``servers`` the servers to try (in the order written,
    or to be shuffled when ``order`` is random); ``proto`` the SOCKS version; ``line`` the line
    that decided (None: no match, no file, always-direct address, or a broken file);
    ``reason`` says why in words, for error messages and test_socks_conf.
    """

    action: Action
    line: Line | None
    reason: str
    servers: tuple[Server, ...] = ()
    proto: str = "5"
    order: str = "listed"

    @property
    def allowed(self) -> bool:
        return self.action is not Action.DENY


class SocksConf:
    """The routing of one process: the lines of a socks.conf (or none), the default server.

    ``error`` is set when the file could not be used: every route then denies, naming it.
    """

    def __init__(self, file: str | None, lines: tuple[Line, ...] = (),
                 default_server: Server | None = None, error: str | None = None,
                 default_server_error: str | None = None) -> None:
        self.file = file
        self.lines = lines
        self.default_server = default_server
        self.error = error
        self.default_server_error = default_server_error

    def __repr__(self) -> str:
        return f"<SocksConf {self.file}: {len(self.lines)} lines>"

    def route(self, dst: IPAddress | str, port: int, user: str,
              resolve: Resolver | None = None) -> Route:
        """The route of a connection to ``dst`` (an address, or a host name as the program gave
        it) port ``port`` for ``user``.  A line with an address destination needs the address of
        a name: ``resolve(name)`` is then called (at most once); a name it cannot resolve
        matches no such line (the proxy may still resolve it)."""
        if self.error is not None:
            return Route(Action.DENY, None, self.error)
        dst = _as_destination(dst)
        if isinstance(dst, (ipaddress.IPv4Address, ipaddress.IPv6Address)) \
                and dst in ALWAYS_DIRECT:
            return Route(Action.DIRECT, None, f"{dst} always goes direct")
        if self.file is None:
            if self.default_server is not None:
                return Route(Action.SOCKD, None, "no socks.conf: through SOCKS_SERVER",
                             (self.default_server,))
            if self.default_server_error is not None:
                return Route(Action.DENY, None, self.default_server_error)
            return Route(Action.DIRECT, None, "no socks.conf: everything goes direct")
        address = _Lazy(dst, resolve)
        for line in self.lines:
            if _matches(line, address, port, user):
                return self._route_of(line)
        return Route(Action.DENY, None, "no match with any line")

    def _route_of(self, line: Line) -> Route:
        if line.action is not Action.SOCKD:
            return Route(line.action, line, f"line {line.line}")
        servers = line.servers
        if not servers:
            if self.default_server is None:
                why = self.default_server_error or "SOCKS_SERVER is not set"
                return Route(Action.DENY, line,
                             f"{line.where}: the line names no server and {why}")
            servers = (self.default_server,)
        return Route(Action.SOCKD, line, f"line {line.line}", servers, line.proto, line.order)


class _Lazy:
    """The destination, and its address resolved on first need."""

    def __init__(self, dst: IPAddress | str, resolve: Resolver | None) -> None:
        self.dst = dst
        self.resolve = resolve
        self._address: IPAddress | None | bool = False

    def address(self) -> IPAddress | None:
        if not isinstance(self.dst, str):
            return self.dst
        if self._address is False:
            try:
                self._address = grammar.unmapped(ipaddress.ip_address(self.resolve(self.dst))) \
                    if self.resolve else None
            except (OSError, LookupError, ValueError, UnicodeError):
                self._address = None
        return self._address  # type: ignore[return-value]


def _matches(line: Line, dst: _Lazy, port: int, user: str) -> bool:
    if line.users is not None and user not in line.users:
        return False
    if line.port is not None and not line.port.passes(port):
        return False
    if isinstance(line.dst, NamePattern):
        return isinstance(dst.dst, str) and line.dst.matches(dst.dst)
    if line.dst.matches_all:
        return True
    address = dst.address()
    return address is not None and line.dst.matches(address)


def _as_destination(dst: IPAddress | str) -> IPAddress | str:
    if isinstance(dst, str):
        try:
            return grammar.unmapped(ipaddress.ip_address(dst.split("%")[0]))
        except ValueError:
            return grammar.normalize_hostname(dst)
    return grammar.unmapped(dst)


# ---------------------------------------------------------------------------------------------
# Loading


def default_resolver(name: str) -> IPAddress:
    """A name in a socks.conf address field: a host, else a network of /etc/networks (IPv4)."""
    return grammar.resolve_name(name, NETWORKS_FILE)


def from_environment(environ: Mapping[str, str] | None = None, *,
                     resolver: Resolver = default_resolver) -> SocksConf:
    """The routing a program gets: the file ``SOCKS_CONF`` names (default /etc/socks.conf) and
    the default server ``SOCKS_SERVER``."""
    env = os.environ if environ is None else environ
    path = env.get("SOCKS_CONF") or DEFAULT_CONF
    server, server_error = None, None
    if env.get("SOCKS_SERVER"):
        try:
            server = parse_server(env["SOCKS_SERVER"])
        except FieldError as e:
            server_error = f"SOCKS_SERVER: {e.message}"
    if not os.path.lexists(path):
        return SocksConf(None, default_server=server, default_server_error=server_error)
    return load(path, default_server=server, resolver=resolver,
                default_server_error=server_error)


def load(path: str, *, default_server: Server | None = None,
         resolver: Resolver = default_resolver,
         default_server_error: str | None = None) -> SocksConf:
    """Read socks.conf; a file with errors gives a `SocksConf` that denies everything, its
    ``error`` the first ``FILE:LINE: message``."""
    errors = check(path, resolver=resolver)
    if errors:
        return SocksConf(path, (), default_server, str(errors[0]), default_server_error)
    text, _ = grammar.read_config(path)
    assert text is not None
    lines, _ = _parse(text, path, resolver)
    return SocksConf(path, tuple(lines), default_server, None, default_server_error)


def check(path: str, *, resolver: Resolver = default_resolver) -> list[ConfigError]:
    """Every error of a socks.conf, in line order."""
    text, errors = grammar.read_config(path)
    if text is None:
        return errors
    return _parse(text, path, resolver)[1]


def parse_text(text: str, file: str = "<string>", *, default_server: Server | None = None,
               resolver: Resolver = default_resolver) -> SocksConf:
    """socks.conf given as text; raise its first `ConfigError`."""
    lines, errors = _parse(text, file, resolver)
    if errors:
        raise errors[0]
    return SocksConf(file, tuple(lines), default_server)


def check_text(text: str, file: str = "<string>", *,
               resolver: Resolver = default_resolver) -> list[ConfigError]:
    return _parse(text, file, resolver)[1]


def _parse(text: str, file: str, resolver: Resolver) -> tuple[list[Line], list[ConfigError]]:
    lines: list[Line] = []
    errors: list[ConfigError] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        try:
            line = parse_line(raw, file, number, resolver)
        except FieldError as e:
            errors.append(ConfigError(file, number, e.message))
            continue
        if line is not None:
            lines.append(line)
    return lines, errors


# A server list: names or IPv4 addresses with an optional :port, IPv6 in brackets.
_SERVER = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::[0-9]+)?"
_SERVER_LIST_WORD = re.compile(rf"(?:sockd@|@=)(?:{_SERVER}(?:,{_SERVER})*)?")
_PLACEHOLDER = "\x00servers\x00"


def parse_line(text: str, file: str, number: int, resolver: Resolver) -> Line | None:
    """One line of socks.conf; None for a blank or comment line; `FieldError` if bad."""
    if len(text) > grammar.MAX_LINE:
        raise FieldError(f"line too long ({len(text)} characters, at most {grammar.MAX_LINE})")
    protected, server_word = _protect_server_list(text)
    tokens, command = grammar.split_line(protected)
    tokens = [server_word if t.endswith(_PLACEHOLDER) and server_word else t for t in tokens]
    if not tokens and command is None:
        return None
    if not tokens:
        raise FieldError("missing action before ':' (expected deny, direct or sockd)")
    action, servers, rest = _action(tokens)
    options = _LineOptions(action, servers)
    while rest and "=" in rest[0]:
        options.take(rest.pop(0))
    dst, rest = grammar.parse_destination_field(rest, resolver)
    if dst is None:
        raise FieldError("missing destination address" + (f" before '{rest[0]}'" if rest else ""))
    port = grammar.parse_port_test(rest)
    shell = None if command is None else grammar.parse_shell_command(command)
    return Line(action, options.servers or (), options.users, dst, port, options.proto,
                options.order, shell, file, number, text)


def _protect_server_list(text: str) -> tuple[str, str | None]:
    """A server list may hold ``host:port``: hide its colons from the ``:`` that starts the
    shell command (a server list never holds a shell command)."""
    for match in re.finditer(r"[^ \t]+", text.split("#", 1)[0]):
        word = match.group()
        if _SERVER_LIST_WORD.fullmatch(word) and ":" in word:
            head = "sockd@" if word.startswith("sockd@") else "@="
            return text[:match.start()] + head + _PLACEHOLDER + text[match.end():], word
    return text, None


def _action(tokens: list[str]) -> tuple[Action, tuple[Server, ...] | None, list[str]]:
    first, rest = tokens[0], tokens[1:]
    if first.startswith("sockd@"):
        return Action.SOCKD, parse_server_list(first.removeprefix("sockd@")), rest
    try:
        return Action(first), None, rest
    except ValueError:
        raise FieldError(f"unknown action '{first}' (expected deny, direct or sockd)") from None


class _LineOptions:
    """The ``key=value`` words between the action and the destination."""

    def __init__(self, action: Action, servers: tuple[Server, ...] | None) -> None:
        self.action = action
        self.seen: set[str] = {"@"} if servers is not None else set()
        self.servers = servers
        self.users: frozenset[str] | None = None
        self.proto = "5"
        self.order = "listed"

    def take(self, token: str) -> None:
        key, value = token.split("=", 1)
        if key not in ("@", "*", "proto", "order"):
            raise FieldError(f"unknown keyword '{key}=' (expected @=, *=, proto= or order=)")
        if key in self.seen:
            raise FieldError(f"'{key}=' given twice" if key != "@" or "@=" in token
                             else "a server list given twice")
        self.seen.add(key)
        if key != "*" and self.action is not Action.SOCKD:
            raise FieldError(f"'{key}=' on a {self.action} line (only sockd lines take it)")
        if key == "@":
            self.servers = parse_server_list(value)
        elif key == "*":
            self.users = grammar.parse_users(value, grammar.read_user_file)
        elif key == "proto":
            if value not in PROTOCOLS:
                raise FieldError(f"unknown protocol 'proto={value}' (expected 4, 4a or 5)")
            self.proto = value
        else:
            if value not in ORDERS:
                raise FieldError(f"unknown order 'order={value}' (expected listed or random)")
            self.order = value


def parse_server_list(text: str) -> tuple[Server, ...]:
    """``server1,server2,...``; empty means the default server."""
    if text == "":
        return ()
    return tuple(parse_server(entry) for entry in text.split(","))


def parse_server(text: str) -> Server:
    """``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``; the port defaults to the
    ``socks`` service, else 1080.  `FieldError` if malformed."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?|([A-Za-z0-9_.-]+)(?::([0-9]+))?",
                         text)
    if match is None:
        raise FieldError(f"bad server '{text}' (expected host, host:port or [ipv6]:port)")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FieldError(f"bad server address '{text}'") from None
    elif not grammar.HOSTNAME.fullmatch(host):
        raise FieldError(f"bad server '{text}'")
    port = socks_port() if port_text is None else int(port_text)
    if not 1 <= port <= 65535:
        raise FieldError(f"server port out of range in '{text}' (1-65535)")
    return Server(host, port)


# ---------------------------------------------------------------------------------------------
# Hooks


def hook_command(line: Line, *, dst: IPAddress | str, port: int, user: str, login: str,
                 command: str = "connect", resolved: IPAddress | None = None,
                 client: str = "") -> str | None:
    """The line's shell command with its ``%`` tokens expanded and made inert as sockd does
    (`sockd.hooks.expand`); None when the line has none.  In a client, ``%u`` is the name of
    the effective uid and ``%U`` the login name (cstc-facts §1.4); ``%A``/``%a`` this host."""
    if line.shell_command is None:
        return None
    values = {
        "a": client, "A": client, "c": command, "p": str(os.getpid()), "s": str(port),
        "S": hooks.service_name(port), "u": user, "U": login,
        "z": str(resolved if resolved is not None else dst), "Z": str(dst),
    }
    return hooks.expand(line.shell_command, values)


__all__ = [
    "ALWAYS_DIRECT", "Action", "DEFAULT_CONF", "Line", "Route", "Server", "SocksConf", "check",
    "check_text", "default_resolver", "from_environment", "hook_command", "load", "parse_line",
    "parse_server", "parse_server_list", "parse_text", "socks_port",
]
