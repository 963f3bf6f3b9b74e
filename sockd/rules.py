"""sockd.conf: parse, compile and evaluate the access rules.

This module owns the rule language of sockd.conf(5): the classic CSTC line

    action [?=auth] [*=users] src_addr src_mask [dst_addr dst_mask] [op dst_port] [: shell-command]

with its modern extensions (CIDR and IPv6 addresses, ``cmd=``, ``auth=password`` and destination
name patterns), the special ``#NO_IDENTD:`` and ``#BAD_ID:`` lines, and the decision "which line
judges this request".  The fields it shares with sockd.route and socks.conf (addresses, masks,
name patterns, ports, users, the ``: shell-command`` split, reading the file) are `sockd.grammar`'s;
this module re-exports the names its callers used to find here.

What it must not do: open sockets, run commands, or look anything up while judging a request.
Host and network names in rules are resolved once, when the file is loaded, through an injectable
resolver; user files (``*=/etc/goodusers``) are read at load too.  The only name looked up while
judging is the destination of a request that came by name, and only through the caller's
``resolve`` function, at most once, and only when a rule needs the address (a request refused by a
name pattern causes no DNS lookup).

Contract (sockd.conf(5) is the user's version of it):

- First match wins; no match denies.  Every rule keeps ``file:line`` and the text as written, and
  the `Decision` names the rule that made it.
- Fail closed: a line that the original CSTC daemon skipped or read as a broader rule than written
  (a stray token, an unknown word, a bad address or mask, an unreadable user file, a line over
  1023 characters) is a `ConfigError` naming the file, the line and the token.
- Rules are compiled once per load into bitsets (one bit per rule), so judging a request costs a
  few big-integer operations whatever the number of rules.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import ipaddress
import socket  # noqa: F401  (kept: callers and tests reach the resolver's socket as rules.socket)
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockd.grammar import (
    MAX_CONFIG,
    MAX_LINE,
    MAX_USER_FILE,
    OPERATORS,
    AddressMatch,
    ConfigError,
    FieldError,
    IPAddress,
    Located,
    NamePattern,
    PortTest,
    Resolver,
    normalize_hostname,
    parse_address_field,
    parse_destination_field,
    parse_port,
    parse_port_test,
    parse_shell_command,
    parse_user_file,
    parse_users,
    read_config,
    read_regular_file,
    read_user_file,
    resolve_address,
    resolve_name,
    split_line,
    unmapped,
)

NETWORKS_FILE = "/etc/networks"

ACTIONS = {"allow": "allow", "permit": "allow", "deny": "deny"}


class IdentPolicy(enum.Enum):
    """How a permit line uses the client's identd (RFC 1413)."""

    NONE = "n"       # no identd check
    RELAXED = "i"    # deny only when identd names another user
    STRICT = "I"     # deny also when identd cannot be reached


class Command(enum.StrEnum):
    """The request a rule may be restricted to (``cmd=``); equal to the lowercase word."""

    CONNECT = "connect"
    BIND = "bind"
    UDP = "udp"      # SOCKS5 UDP ASSOCIATE


@dataclass(frozen=True)
class Query:
    """One request to judge, as the session saw it.

    ``dst`` is the destination as requested: an address, or a host name (SOCKS4a, SOCKS5 domain).
    ``user`` is the SOCKS4 USERID or the RFC 1929 user name ("" if none); ``authenticated`` is
    True when SOCKS5 username/password authentication succeeded.
    """

    command: Command | str
    src: IPAddress
    user: str
    authenticated: bool
    dst: IPAddress | str
    port: int








@dataclass(frozen=True)
class Rule(Located):
    """One rule line.  ``users`` None means any user; ``commands`` None means every command;
    ``dst`` None means any destination; ``port`` None means any port."""

    action: str                                  # "allow" or "deny"
    ident: IdentPolicy | None                    # the line's ?=, None when absent
    users: frozenset[str] | None
    src: AddressMatch
    dst: AddressMatch | NamePattern | None
    port: PortTest | None
    commands: frozenset[Command] | None
    require_auth: bool                           # auth=password
    shell_command: str | None
    file: str
    line: int
    text: str                                    # the line as written
    index: int = 0                               # position in the ruleset

    @property
    def allows(self) -> bool:
        return self.action == "allow"


@dataclass(frozen=True)
class SpecialLine(Located):
    """A ``#NO_IDENTD:`` or ``#BAD_ID:`` line: the command to run when identd cannot be reached or
    names another user.  Same attribute names as `Rule` for the command and its place."""

    kind: str                                    # "NO_IDENTD" or "BAD_ID"
    shell_command: str
    file: str
    line: int
    text: str


class SourceVerdict(enum.Enum):
    """What the rules can ever say to a client address, whatever it asks
    (`Ruleset.source_verdict`)."""

    MAY_PERMIT = "may-permit"   # some request from this address may be allowed
    HOOK = "hook"               # none can be, but a rule's shell command may run: negotiate
    NEVER = "never"             # none can be, and no shell command runs: close at accept


@dataclass(frozen=True)
class Decision:
    """The verdict on one request.

    ``where`` is the matching rule's ``FILE:LINE``; ``FILE:no-match`` when no line matched; and
    ``default`` for every decision of the embedded default rules.  ``resolved`` is the address
    the destination name was resolved to when evaluation had to resolve it (the server must then
    connect to exactly that address), else None.
    """

    allowed: bool
    rule: Rule | None
    where: str
    resolved: IPAddress | None = None

    def ident_policy(self, default: IdentPolicy) -> IdentPolicy:
        """The ident policy for this request: the line's ``?=``, else the daemon's -i/-I default;
        NONE for a deny or no match (identd is never asked about a request that is refused)."""
        if self.rule is None or not self.allowed:
            return IdentPolicy.NONE
        return self.rule.ident if self.rule.ident is not None else default


# ---------------------------------------------------------------------------------------------
# Loading


def default_resolver(name: str) -> IPAddress:
    """Resolve a host or network name as CSTC's GetAddr did: host first, then /etc/networks.
    Returns an IPv4 address (classic masks are IPv4); raises LookupError when nothing matches."""
    return resolve_name(name, NETWORKS_FILE)


def load(path: str, *, resolver: Resolver = default_resolver) -> Ruleset:
    """Read and compile a rules file; raise the file's first `ConfigError`."""
    ruleset, errors = _load(path, resolver)
    if errors:
        raise errors[0]
    assert ruleset is not None
    return ruleset


def check(path: str, *, resolver: Resolver = default_resolver) -> list[ConfigError]:
    """Every error of a rules file, in line order (empty when the file is good)."""
    return _load(path, resolver)[1]


def parse_text(text: str, file: str = "<string>", *,
               resolver: Resolver = default_resolver) -> Ruleset:
    """Compile rules given as text; raise the first `ConfigError`."""
    ruleset, errors = _parse(text, file, resolver)
    if errors:
        raise errors[0]
    assert ruleset is not None
    return ruleset


def check_text(text: str, file: str = "<string>", *,
               resolver: Resolver = default_resolver) -> list[ConfigError]:
    """Every error of rules given as text."""
    return _parse(text, file, resolver)[1]


DEFAULT_RULES = """\
# The embedded default: only this host may use the server.
allow 127.0.0.0/8
allow ::1
deny 0.0.0.0/0
"""


def default_ruleset() -> Ruleset:
    """The embedded default: allow clients from 127.0.0.0/8 and ::1 to anywhere, deny the rest.
    Its decisions say ``default``."""
    ruleset = parse_text(DEFAULT_RULES, "default", resolver=_no_resolver)
    return Ruleset(ruleset.file, ruleset.rules, None, None, embedded=True)


def _no_resolver(name: str) -> IPAddress:
    raise LookupError(name)








def _load(path: str, resolver: Resolver) -> tuple[Ruleset | None, list[ConfigError]]:
    text, errors = read_config(path)
    return (None, errors) if text is None else _parse(text, path, resolver)


def _parse(text: str, file: str, resolver: Resolver) -> tuple[Ruleset | None, list[ConfigError]]:
    parser = _Parser(file, resolver)
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            parser.feed(number, line.removesuffix("\r"))
        except FieldError as e:
            parser.errors.append(ConfigError(file, number, e.message))
    if parser.errors:
        return None, parser.errors
    return Ruleset(file, tuple(parser.rules), parser.specials.get("NO_IDENTD"),
                   parser.specials.get("BAD_ID")), []


class _Parser:
    """Reads a file line by line; `feed` raises `FieldError` for a bad line."""

    def __init__(self, file: str, resolver: Resolver) -> None:
        self.file = file
        self.resolver = resolver
        self.rules: list[Rule] = []
        self.specials: dict[str, SpecialLine] = {}
        self.errors: list[ConfigError] = []

    def feed(self, number: int, line: str) -> None:
        if len(line) > MAX_LINE:
            # The original's fgets split such a line and read its tail as another rule.
            raise FieldError(f"line too long ({len(line)} characters, at most {MAX_LINE})")
        for kind in ("NO_IDENTD", "BAD_ID"):
            if line.startswith(f"#{kind}:"):
                self._special(kind, number, line)
                return
        tokens, command = split_line(line)
        if not tokens and command is None:
            return
        self.rules.append(self._rule(tokens, command, number, line))

    def _special(self, kind: str, number: int, line: str) -> None:
        if kind in self.specials:
            first = self.specials[kind].line
            raise FieldError(f"second #{kind}: line (the first is line {first})")
        command = parse_shell_command(line[len(kind) + 2:])
        self.specials[kind] = SpecialLine(kind, command, self.file, number, line)

    def _rule(self, tokens: list[str], command: str | None, number: int, line: str) -> Rule:
        if not tokens:
            raise FieldError("missing action before ':' (expected allow, permit or deny)")
        action = ACTIONS.get(tokens[0])
        if action is None:
            raise FieldError(f"unknown action '{tokens[0]}' (expected allow, permit or deny)")
        rest = tokens[1:]
        options = _Options()
        while rest and "=" in rest[0]:
            options.take(rest.pop(0), read_user_file)
        src, rest = parse_address_field(rest, self.resolver, "source")
        dst, rest = parse_destination_field(rest, self.resolver)
        port = parse_port_test(rest)
        return Rule(action=action, ident=options.ident, users=options.users, src=src, dst=dst,
                    port=port, commands=options.commands, require_auth=options.require_auth,
                    shell_command=None if command is None else parse_shell_command(command),
                    file=self.file, line=number, text=line, index=len(self.rules))


class _Options:
    """The ``key=value`` words between the action and the source address."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.ident: IdentPolicy | None = None
        self.users: frozenset[str] | None = None
        self.commands: frozenset[Command] | None = None
        self.require_auth = False

    def take(self, token: str, read_user_file: Callable[[str], set[str]]) -> None:
        key, value = token.split("=", 1)
        if key not in ("?", "*", "cmd", "auth"):
            raise FieldError(f"unknown keyword '{key}=' (expected ?=, *=, cmd= or auth=)")
        if key in self.seen:
            raise FieldError(f"'{key}=' given twice")
        self.seen.add(key)
        if key == "?":
            self.ident = _ident(value)
        elif key == "*":
            self.users = parse_users(value, read_user_file)
        elif key == "cmd":
            self.commands = _commands(value)
        elif value != "password":
            raise FieldError(f"unknown authentication '{value}' in 'auth=' (expected password)")
        else:
            self.require_auth = True


def _ident(value: str) -> IdentPolicy:
    if value == "":
        return IdentPolicy.NONE
    try:
        return IdentPolicy(value)
    except ValueError:
        raise FieldError(f"bad ?= value '{value}' (expected I, i, n or nothing)") from None




def _commands(value: str) -> frozenset[Command]:
    commands = set()
    for word in value.split(","):
        try:
            commands.add(Command(word))
        except ValueError:
            raise FieldError(f"unknown command '{word}' in 'cmd={value}' "
                             "(expected connect, bind or udp)") from None
    return frozenset(commands)






























# ---------------------------------------------------------------------------------------------
# Evaluation


class Ruleset:
    """The compiled rules of one file.  Immutable; `evaluate` is a pure function of the query
    (and of the caller's ``resolve`` for a destination that came by name)."""

    def __init__(self, file: str, rules: tuple[Rule, ...], no_identd: SpecialLine | None = None,
                 bad_id: SpecialLine | None = None, *, embedded: bool = False) -> None:
        self.file = file
        self.rules = tuple(r if r.index == i else dataclasses.replace(r, index=i)
                           for i, r in enumerate(rules))
        self.no_identd = no_identd
        self.bad_id = bad_id
        self.embedded = embedded
        self.routes = None     # the sockd.route table in force with these rules (sockd.route)
        self._index = _Index(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<Ruleset {self.file}: {len(self.rules)} rules>"

    def evaluate(self, query: Query, resolve: Resolver) -> Decision:
        """Judge ``query``: the first rule that matches decides; no match denies.

        ``resolve(name)`` is called at most once, and only when the first rule that could still
        match has an address destination and the request came by name; its exceptions propagate.
        """
        index = self._index
        src = unmapped(ipaddress.ip_address(query.src) if isinstance(query.src, str)
                        else query.src)
        candidates = (index.src.lookup(src) & index.commands[Command(query.command)]
                      & (index.all if query.authenticated else index.no_auth)
                      & index.users.get(query.user, index.any_user)
                      & index.ports.lookup(query.port))
        dst = _as_address(query.dst)
        if not isinstance(dst, str):
            return self._decide(candidates & (index.any_dst | index.dst.lookup(dst)), None)
        by_name = candidates & (index.any_dst | index.names.lookup(dst))
        need_address = candidates & index.addressed_dst
        if need_address and _lowest(need_address) < _lowest(by_name):
            resolved = unmapped(resolve(dst))
            by_name |= need_address & index.dst.lookup(resolved)
            return self._decide(by_name, resolved)
        return self._decide(by_name, None)

    def source_verdict(self, address: IPAddress | str) -> SourceVerdict:
        """Judge a client address before it has said anything: can any request from it be allowed?

        The rules whose source matches ``address`` are taken in order: an allow rule reached
        means `MAY_PERMIT`; a deny rule that matches every request from the address (any
        destination, any port, any user, every command, no ``auth=``) ends the walk, as does the
        end of the rules.  Then the verdict is `HOOK` when a rule reached carries a shell command
        (the administrator asked to hear about such requests: they are negotiated and refused as
        usual), else `NEVER`.  Conservative: `NEVER` only when `evaluate` would deny every
        request from ``address`` without running a hook.  An IPv4-mapped IPv6 address is judged
        as its IPv4 address.  Costs a few big-integer operations, like `evaluate`.
        """
        index = self._index
        src = unmapped(ipaddress.ip_address(address) if isinstance(address, str) else address)
        matching = index.src.lookup(src)
        first_allow = _lowest(matching & index.allows)
        first_stop = _lowest(matching & index.stops)
        if first_allow < first_stop:
            return SourceVerdict.MAY_PERMIT
        if first_stop < len(self.rules):
            matching &= (2 << first_stop) - 1       # the rules reached: up to the stop
        return SourceVerdict.HOOK if matching & index.hooks else SourceVerdict.NEVER

    def may_allow(self, command: Command | str, src: IPAddress | str, user: str,
                  authenticated: bool) -> bool:
        """Can any request with this command, from this client and user, be allowed, whatever
        its destination and port?  True when an allow rule that could match comes before a
        deny rule matching every destination and port.  Pure, a few big-integer operations;
        used to refuse a UDP association that no destination could ever pass."""
        index = self._index
        src = unmapped(ipaddress.ip_address(src) if isinstance(src, str) else src)
        candidates = (index.src.lookup(src) & index.commands[Command(command)]
                      & (index.all if authenticated else index.no_auth)
                      & index.users.get(user, index.any_user))
        stops = candidates & index.any_dst & index.ports.none & ~index.allows
        return _lowest(candidates & index.allows) < _lowest(stops)

    def _decide(self, candidates: int, resolved: IPAddress | None) -> Decision:
        if not candidates:
            where = "default" if self.embedded else f"{self.file}:no-match"
            return Decision(False, None, where, resolved)
        rule = self.rules[_lowest(candidates)]
        return Decision(rule.allows, rule, "default" if self.embedded else rule.where, resolved)


def _as_address(dst: IPAddress | str) -> IPAddress | str:
    if isinstance(dst, str):
        try:
            return unmapped(ipaddress.ip_address(dst))
        except ValueError:
            return normalize_hostname(dst)
    return unmapped(dst)


def _lowest(bits: int) -> int:
    """Index of the lowest set bit (the first rule); a huge number when there is none."""
    return (bits & -bits).bit_length() - 1 if bits else 1 << 62


class _Index:
    """The rules as bitsets: for each condition, which rules it lets through.  Bit i is rule i,
    so the lowest bit of the AND of all conditions is the first matching rule."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        def having(test: Callable[[Rule], bool]) -> int:
            return _union(1 << r.index for r in rules if test(r))

        def addressed(r: Rule) -> bool:
            return isinstance(r.dst, AddressMatch) and not r.dst.matches_all

        self.all = (1 << len(rules)) - 1
        self.src = _AddressIndex((r.src, 1 << r.index) for r in rules)
        self.dst = _AddressIndex((r.dst, 1 << r.index) for r in rules if addressed(r))
        self.addressed_dst = having(addressed)
        self.any_dst = having(lambda r: r.dst is None or
                              (isinstance(r.dst, AddressMatch) and r.dst.matches_all))
        self.names = _NameIndex((r.dst, 1 << r.index) for r in rules
                                if isinstance(r.dst, NamePattern))
        self.commands = {c: having(lambda r, c=c: r.commands is None or c in r.commands)
                         for c in Command}
        self.no_auth = having(lambda r: not r.require_auth)
        self.any_user = having(lambda r: r.users is None)
        self.users: dict[str, int] = {}
        for rule in rules:
            for user in rule.users or ():
                self.users[user] = self.users.get(user, self.any_user) | 1 << rule.index
        self.ports = _PortIndex(rules)
        # For source_verdict: allow rules, deny rules that match every request from their
        # source, and rules with a shell command.
        self.allows = having(lambda r: r.allows)
        self.stops = having(lambda r: not r.allows and _matches_every_request(r))
        self.hooks = having(lambda r: r.shell_command is not None)


def _matches_every_request(rule: Rule) -> bool:
    """True when ``rule`` matches every request from an address its source matches."""
    any_dst = rule.dst is None or (isinstance(rule.dst, AddressMatch) and rule.dst.matches_all)
    any_port = rule.port is None or (rule.port.op, rule.port.port) in (("ge", 0), ("le", 65535))
    every_command = rule.commands is None or rule.commands >= frozenset(Command)
    return any_dst and any_port and every_command and rule.users is None \
        and not rule.require_auth


def _union(bits: Iterable[int]) -> int:
    total = 0
    for bit in bits:
        total |= bit
    return total


class _AddressIndex:
    """Address conditions grouped by (family, mask): one dict lookup per distinct mask."""

    def __init__(self, entries: Iterable[tuple[AddressMatch, int]]) -> None:
        self.any = 0
        groups: dict[tuple[int, int], dict[int, int]] = {}
        for match, bit in entries:
            if match.matches_all:
                self.any |= bit
                continue
            table = groups.setdefault((match.version, match.mask), {})
            table[match.value] = table.get(match.value, 0) | bit
        self.groups = [(version, mask, table) for (version, mask), table in groups.items()]

    def lookup(self, address: IPAddress) -> int:
        bits = self.any
        number, version = int(address), address.version
        for group_version, mask, table in self.groups:
            if group_version == version:
                bits |= table.get(number & mask, 0)
        return bits


class _NameIndex:
    """Name patterns: exact names and zones, looked up by each suffix of the requested name."""

    def __init__(self, entries: Iterable[tuple[NamePattern, int]]) -> None:
        self.exact: dict[str, int] = {}
        self.zones: dict[str, int] = {}
        for pattern, bit in entries:
            table = self.zones if pattern.zone else self.exact
            table[pattern.name] = table.get(pattern.name, 0) | bit

    def lookup(self, name: str) -> int:
        bits = self.exact.get(name, 0)
        if self.zones:
            labels = name.split(".")
            for i in range(len(labels)):
                bits |= self.zones.get(".".join(labels[i:]), 0)
        return bits


class _PortIndex:
    """Port tests: eq/neq by dict, lt/le/gt/ge by sorted thresholds with cumulative unions."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.none = _union(1 << r.index for r in rules if r.port is None)
        by_op: dict[str, dict[int, int]] = {op: {} for op in OPERATORS}
        for rule in rules:
            if rule.port is not None:
                table = by_op[rule.port.op]
                table[rule.port.port] = table.get(rule.port.port, 0) | 1 << rule.index
        self.eq = by_op["eq"]
        self.neq = by_op["neq"]
        self.neq_all = _union(self.neq.values())
        # lt v / le v pass for ports below v (resp. up to v): unions over thresholds from the top.
        self.upper = {op: _Thresholds(by_op[op], from_top=True) for op in ("lt", "le")}
        self.lower = {op: _Thresholds(by_op[op], from_top=False) for op in ("gt", "ge")}

    def lookup(self, port: int) -> int:
        return (self.none | self.eq.get(port, 0) | (self.neq_all & ~self.neq.get(port, 0))
                | self.upper["lt"].union_above(port) | self.upper["le"].union_above(port - 1)
                | self.lower["gt"].union_below(port) | self.lower["ge"].union_below(port + 1))


class _Thresholds:
    """Sorted port values with the union of rule bits from each end."""

    def __init__(self, table: dict[int, int], *, from_top: bool) -> None:
        self.values = sorted(table)
        unions, total = [], 0
        order = reversed(self.values) if from_top else self.values
        for value in order:
            total |= table[value]
            unions.append(total)
        self.unions = unions[::-1] if from_top else unions

    def union_above(self, port: int) -> int:
        """Rules whose value is greater than ``port``."""
        i = bisect.bisect_right(self.values, port)
        return self.unions[i] if i < len(self.values) else 0

    def union_below(self, port: int) -> int:
        """Rules whose value is less than ``port``."""
        i = bisect.bisect_left(self.values, port)
        return self.unions[i - 1] if i > 0 else 0


__all__ = [
    "ACTIONS", "MAX_CONFIG", "MAX_USER_FILE", "read_config", "read_regular_file",
    "AddressMatch", "Command", "ConfigError", "DEFAULT_RULES", "Decision",
    "FieldError", "IdentPolicy", "MAX_LINE", "NamePattern", "OPERATORS", "PortTest", "Query",
    "Rule", "Ruleset", "SpecialLine", "check", "check_text", "default_resolver",
    "default_ruleset", "load", "normalize_hostname", "parse_address_field", "parse_port",
    "SourceVerdict", "parse_text", "parse_user_file", "resolve_address", "split_line", "unmapped",
]
