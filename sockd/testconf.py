"""test_sockd_conf: tell which sockd.conf line judges a request, as CSTC's test program did.

    test_sockd_conf [-i|-I] [-B] [-U ident_user] [-c command] [-a] [-x] [-R route_file]
                    [-C conf_file] user src_addr dst_addr {service|port}

It prints (to standard error, like the original) the request, the line that matches or
``*** No match with any line. Access denied.``, the ``#NO_IDENTD:``/``#BAD_ID:`` line that
applies, the identd verdict, each shell command the daemon would run (expanded, and run only
with ``-x``), and with ``-R`` the route-file check.  Exit status: 1 permit, 0 deny, 2 usage or
configuration error (the original exited 255 for a usage error).  test_sockd_conf(8) is the
user's version of this contract.

This module owns the program only: judging is `sockd.rules`, expansion and running `sockd.hooks`.
"""

from __future__ import annotations

import getopt
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sockd import hooks, route, rules
from sockd.log import escape
from sockd.rules import IdentPolicy

PROG = "test_sockd_conf"
DEFAULT_CONF = "/etc/sockd.conf"
USAGE = (f"usage: {PROG} [-i|-I] [-B] [-U ident_user] [-c connect|bind|udp] [-a] [-x] "
         "[-R route_file] [-C conf_file] user src_addr dst_addr {service|port}")
PERMIT, DENY, TROUBLE = 1, 0, 2

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UsageError(Exception):
    pass


@dataclass
class Options:
    unreachable: bool = False           # -i or -I: identd cannot be reached
    ident_default: IdentPolicy = IdentPolicy.NONE
    bad_id: bool = False                # -B: identd names another user
    ident_answer: str | None = None     # -U: what identd answers
    command: str = "connect"
    authenticated: bool = False
    execute: bool = False
    route_file: str | None = None
    conf_file: str | None = None
    user: str = ""
    src: str = ""
    dst: str = ""
    port: str = ""


def parse_args(argv: list[str]) -> Options:
    try:
        pairs, args = getopt.gnu_getopt(argv, "iIBU:c:axR:C:h",
                                        ["command=", "auth", "execute", "help"])
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    options = Options()
    for flag, value in pairs:
        if flag in ("-i", "-I"):
            options.unreachable = True
            options.ident_default = IdentPolicy(flag[1])
        elif flag == "-B":
            options.bad_id = True
        elif flag == "-U":
            options.ident_answer = value
        elif flag in ("-c", "--command"):
            if value not in {c.value for c in rules.Command}:
                raise UsageError(f"unknown command '{value}' (expected connect, bind or udp)")
            options.command = value
        elif flag in ("-a", "--auth"):
            options.authenticated = True
        elif flag in ("-x", "--execute"):
            options.execute = True
        elif flag == "-R":
            options.route_file = value
        elif flag == "-C":
            options.conf_file = value
        else:
            raise UsageError("")
    if len(args) != 4:
        raise UsageError("expected user src_addr dst_addr {service|port}")
    if options.ident_answer is not None:
        options.unreachable = False     # -i/-I then only choose the policy: identd answers
    options.user, options.src, options.dst, options.port = args
    return options


def main(argv: list[str] | None = None, *, resolver: Callable[[str], Address] | None = None,
         name_of: Callable[[Address], str] | None = None) -> int:
    """Run the program; ``resolver`` (names in the config and the request) and ``name_of``
    (reverse DNS for ``%A``/``%Z``) may be replaced, as the tests do."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        if str(e):
            say(f"{PROG}: {e}")
        say(USAGE)
        return TROUBLE
    tester = Tester(options, resolver or resolve_host, name_of)
    return tester.run()


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve_host(name: str) -> Address:
    """The first address of ``name`` (the system resolver, IPv4 first as gethostbyname did)."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return rules.unmapped(ipaddress.ip_address(infos[0][4][0].split("%")[0]))


class Tester:
    """One run: load, judge, report.  Each step says what it found on standard error."""

    def __init__(self, options: Options, resolver: Callable[[str], Address],
                 name_of: Callable[[Address], str] | None) -> None:
        self.options = options
        self.resolver = resolver
        self.name_of = name_of
        self.runner = hooks.HookRunner(max_running=4, timeout=30, logger=_stderr_logger())

    def run(self) -> int:
        try:
            query = self.query()
            ruleset = self.load_rules()
            routes = self.load_routes()
        except UsageError as e:
            say(f"{PROG}: {e}")
            return TROUBLE
        except rules.ConfigError:
            return TROUBLE
        self.show_request(query)
        try:
            decision = ruleset.evaluate(query, self.resolver)
        except (OSError, LookupError, ValueError) as e:
            say(f"Cannot resolve {query.dst}: {_reason(e)}. Access denied.")
            return DENY
        verdict = self.judge(ruleset, query, decision)
        if verdict == PERMIT and routes is not None:
            verdict = self.check_route(routes, query, decision)
        self.runner.wait()
        return verdict

    # -- loading ------------------------------------------------------------------------------

    def query(self) -> rules.Query:
        options = self.options
        try:
            port = rules.parse_port(options.port)
        except rules.FieldError:
            raise UsageError(f"Unknown service or illegal port number '{options.port}'") from None
        src = self.address(options.src)
        try:
            dst: Address | str = rules.unmapped(ipaddress.ip_address(options.dst))
        except ValueError:
            dst = options.dst                   # a request by name (SOCKS4a, SOCKS5 domain)
        return rules.Query(options.command, src, options.user, options.authenticated, dst, port)

    def address(self, text: str) -> Address:
        try:
            return rules.unmapped(ipaddress.ip_address(text))
        except ValueError:
            pass
        try:
            return rules.unmapped(ipaddress.ip_address(self.resolver(text)))
        except (OSError, LookupError, ValueError) as e:
            raise UsageError(f"cannot resolve '{text}': {_reason(e)}") from None

    def load_rules(self) -> rules.Ruleset:
        path = self.options.conf_file
        if path is None and not os.path.exists(DEFAULT_CONF):
            say(f"No {DEFAULT_CONF}: using the embedded default rules.")
            return rules.default_ruleset()
        path = path or DEFAULT_CONF
        return _report_errors(rules.check(path, resolver=self.resolver),
                              lambda: rules.load(path, resolver=self.resolver))

    def load_routes(self) -> route.RouteTable | None:
        path = self.options.route_file
        if path is None:
            return None
        return _report_errors(route.check_routes(path, resolver=self.resolver),
                              lambda: route.load_routes(path, resolver=self.resolver))

    # -- judging ------------------------------------------------------------------------------

    def show_request(self, query: rules.Query) -> None:
        user, dst = hooks.printable(query.user), hooks.printable(str(query.dst))
        say(f"USER:{user},  SRC:{query.src},  DST:{dst}, PORT:{query.port}")
        if query.command != "connect" or query.authenticated:
            auth = "password" if query.authenticated else "none"
            say(f"COMMAND:{query.command},  AUTH:{auth}")

    def judge(self, ruleset: rules.Ruleset, query: rules.Query, decision: rules.Decision) -> int:
        """The original's Validate in TEST mode: the line, then identd as simulated."""
        if decision.resolved is not None:
            say(f"({query.dst} resolved to {decision.resolved})")
        rule = decision.rule
        if rule is None:
            say("*** No match with any line. Access denied.")
            return DENY
        say(f"Line {rule.line}: {rule.text}")
        policy = decision.ident_policy(self.options.ident_default)
        if not decision.allowed or policy is IdentPolicy.NONE:
            self.shell(rule, query, decision, ident_user=None)
            return PERMIT if decision.allowed else DENY
        answer = self.options.ident_answer
        if answer is not None and answer != query.user:
            # the daemon's rule: a USERID answer that is not the claimed user refuses
            self.shell(ruleset.bad_id, query, decision, ident_user=answer)
            say(f"Access denied: real user is {escape(answer)}, not {escape(query.user) or '-'}.")
            return DENY
        if answer is not None:
            self.shell(rule, query, decision, ident_user=answer)
            return PERMIT
        if self.options.bad_id:
            self.shell(ruleset.bad_id, query, decision, ident_user="unknown")
            say("Access denied: bad user-id.")
            return DENY
        if self.options.unreachable:
            self.shell(ruleset.no_identd, query, decision, ident_user=None)
            if policy is IdentPolicy.STRICT:
                say("Access denied: cannot verify user-id.")
                return DENY
            self.shell(rule, query, decision, ident_user=None)
            return PERMIT
        self.shell(rule, query, decision, ident_user=query.user)
        return PERMIT

    def shell(self, line: rules.Rule | rules.SpecialLine | None, query: rules.Query,
              decision: rules.Decision, ident_user: str | None) -> None:
        """Show the command the daemon would run for ``line``, and run it with -x."""
        if line is None or line.shell_command is None:
            return
        if isinstance(line, rules.SpecialLine):
            say(f"Line {line.line}: {line.text}")
        tokens = hooks.token_values(
            line.shell_command, client=query.src, user=query.user, ident_user=ident_user,
            command=str(query.command), dst=query.dst, port=query.port,
            resolved=decision.resolved, pid=os.getpid(), name_of=self.name_of)
        command = hooks.expand(line.shell_command, tokens)
        if not self.options.execute:
            say(f"Shell command (not run; -x runs it): {command}")
            return
        say(f"Shell command: {command}")
        self.runner.start(command, line.where)
        self.runner.wait()

    def check_route(self, routes: route.RouteTable, query: rules.Query,
                    decision: rules.Decision) -> int:
        say(f"==== Checking routing file ({routes.file})...")
        target = decision.resolved or query.dst
        if isinstance(target, str):
            try:
                target = self.address(target)
            except UsageError as e:
                say(f"{PROG}: {e}")
                return DENY
        found = routes.lookup(target)
        if found is None:
            say(f"***Cannot find appropriate interface to communicate with {target}")
            return DENY
        say(f"Line {found.line}: {found.text}")
        return PERMIT


def _report_errors(errors: list[rules.ConfigError], load):
    """Print every error of a file (FILE:LINE: message) and raise the first; else load it."""
    for error in errors:
        say(str(error))
    if errors:
        raise errors[0]
    return load()


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _SayHandler(logging.Handler):
    """Log records to the standard error of the moment (as `say` writes)."""

    def emit(self, record: logging.LogRecord) -> None:
        say(self.format(record))


def _stderr_logger() -> logging.Logger:
    """The "sockd" logger printing to standard error, so -x shows the daemon's hook lines."""
    logger = logging.getLogger("sockd")
    if not any(isinstance(h, _SayHandler) for h in logger.handlers):
        logger.addHandler(_SayHandler())
    logger.setLevel(logging.INFO)
    return logger


if __name__ == "__main__":
    sys.exit(main())
