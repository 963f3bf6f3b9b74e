"""sockd.route: which local interface address to use for a destination (multi-homed servers).

This module owns the route file of CSTC's multi-homed sockd (cstc-facts.md §4):

    if_addr dst_addr dst_mask

one route a line, first match wins, ``#`` starts a comment anywhere, tabs are blanks.  As in
sockd.conf, names are resolved once at load, and the modern forms ``if_addr 10.0.0.0/8`` and IPv6
addresses and prefixes are accepted.  Unlike CSTC, a line with the wrong number of fields or a bad
address is a `ConfigError` naming the file and line (the original logged it and skipped the line).

It must not open sockets or look anything up after load: `RouteTable.lookup` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from sockd.grammar import Located
from sockd.rules import (
    MAX_LINE,
    AddressMatch,
    ConfigError,
    FieldError,
    IPAddress,
    Resolver,
    default_resolver,
    parse_address_field,
    read_config,
    resolve_address,
    unmapped,
)


@dataclass(frozen=True)
class Route(Located):
    """One line: reach destinations matching ``dst`` from local address ``interface``."""

    interface: IPAddress
    dst: AddressMatch
    file: str
    line: int
    text: str


class RouteTable:
    """The routes of one file, in order."""

    def __init__(self, file: str, routes: tuple[Route, ...]) -> None:
        self.file = file
        self.routes = routes

    def __len__(self) -> int:
        return len(self.routes)

    def lookup(self, address: IPAddress) -> Route | None:
        """The first route whose destination matches ``address``; None when none does."""
        address = unmapped(address)
        for route in self.routes:
            if route.dst.matches(address):
                return route
        return None


def load_routes(path: str, *, resolver: Resolver = default_resolver) -> RouteTable:
    """Read a route file; raise its first `ConfigError`."""
    table, errors = _load(path, resolver)
    if errors:
        raise errors[0]
    assert table is not None
    return table


def check_routes(path: str, *, resolver: Resolver = default_resolver) -> list[ConfigError]:
    """Every error of a route file."""
    return _load(path, resolver)[1]


def parse_routes(text: str, file: str = "<string>", *,
                 resolver: Resolver = default_resolver) -> RouteTable:
    """Routes given as text; raise the first `ConfigError`."""
    table, errors = _parse(text, file, resolver)
    if errors:
        raise errors[0]
    assert table is not None
    return table


def _load(path: str, resolver: Resolver) -> tuple[RouteTable | None, list[ConfigError]]:
    text, errors = read_config(path)
    return (None, errors) if text is None else _parse(text, path, resolver)


def _parse(text: str, file: str, resolver: Resolver) -> tuple[RouteTable | None,
                                                              list[ConfigError]]:
    routes: list[Route] = []
    errors: list[ConfigError] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        try:
            route = _route(line, resolver)
        except FieldError as e:
            errors.append(ConfigError(file, number, e.message))
            continue
        if route is not None:
            interface, dst = route
            routes.append(Route(interface, dst, file, number, line))
    if errors:
        return None, errors
    return RouteTable(file, tuple(routes)), []


def _route(line: str, resolver: Resolver) -> tuple[IPAddress, AddressMatch] | None:
    if len(line) > MAX_LINE:
        raise FieldError(f"line too long ({len(line)} characters, at most {MAX_LINE})")
    tokens = line.split("#", 1)[0].split()
    if not tokens:
        return None
    if len(tokens) < 2:
        raise FieldError(f"interface address '{tokens[0]}' has no destination")
    interface = resolve_address(tokens[0], resolver)
    dst, rest = parse_address_field(tokens[1:], resolver, "destination")
    if rest:
        raise FieldError(f"unexpected '{rest[0]}' after the destination")
    return interface, dst


__all__ = ["Route", "RouteTable", "check_routes", "load_routes", "parse_routes"]
