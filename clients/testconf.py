"""test_socks_conf: tell which socks.conf line routes a connection, as CSTC's test code did.

    test_socks_conf [-C conf_file] user dst_addr {service|port}

It prints to standard output the request, the default server (``SOCKS_SERVER``), the line that
matches (``Line N: ...``) or ``*** No match with any line. Access denied.``, and the decision:
direct, denied, or the servers in the order they would be tried.  It honours ``SOCKS_CONF`` and
``SOCKS_SERVER`` exactly as the library does (`clients.conf.from_environment`); ``-C`` names
the file instead.  It never runs a line's shell command: it prints it, expanded.

Exit status: 1 when the connection would go out (direct or through a server), 0 when it is
denied, 2 for a usage or configuration error.  test_socks_conf(1) is the user's version.
"""

from __future__ import annotations

import getopt
import os
import sys

from clients import conf
from clients.conf import Action, Route
from clients.sockssocket import local_address, login_name
from sockd import grammar, hooks

PROG = "test_socks_conf"
USAGE = f"usage: {PROG} [-C conf_file] user dst_addr {{service|port}}"
OUT, DENIED, TROUBLE = 1, 0, 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        pairs, rest = getopt.gnu_getopt(args, "C:h", ["help"])
    except getopt.GetoptError as e:
        return _usage(str(e))
    env = dict(os.environ)
    for flag, value in pairs:
        if flag == "-C":
            env["SOCKS_CONF"] = value
        else:
            return _usage("")
    if len(rest) != 3:
        return _usage("expected user dst_addr {service|port}")
    user, dst, service = rest
    try:
        port = grammar.parse_port(service)
    except grammar.FieldError:
        say(f"{PROG}: Unknown service or illegal port number '{hooks.printable(service)}'",
            sys.stderr)
        return TROUBLE
    routing = conf.from_environment(env)
    if routing.error is not None:
        say(routing.error, sys.stderr)
        return TROUBLE
    say(f"USER:{hooks.printable(user)},  DST:{hooks.printable(dst)}, PORT:{port}")
    say(f"Default SOCKS server: {_default_server(env, routing)}")
    if routing.file is None:
        say(f"No socks.conf ({env.get('SOCKS_CONF') or conf.DEFAULT_CONF} does not exist).")
    route = routing.route(dst, port, user, local_address)
    return report(route, dst, port, user)


def report(route: Route, dst: str, port: int, user: str) -> int:
    """Print the line and the decision; the exit status."""
    line = route.line
    if line is not None:
        say(f"Line {line.line}: {line.text}")
        command = conf.hook_command(line, dst=dst, port=port, user=user, login=login_name())
        if command is not None:
            say(f"Shell command (not run): {command}")
    elif route.action is Action.DENY and route.reason == "no match with any line":
        say("*** No match with any line. Access denied.")
        return DENIED
    if route.action is Action.DENY:
        say(f"Access denied ({route.reason}).")
        return DENIED
    if route.action is Action.DIRECT:
        say("Direct connection." if line is not None else f"Direct connection ({route.reason}).")
        return OUT
    order = "in random order" if route.order == "random" else "in this order"
    servers = ", ".join(str(s) for s in route.servers)
    proto = {"4": "SOCKS4 (4a for a name it cannot resolve)", "4a": "SOCKS4a",
             "5": "SOCKS5"}[route.proto]
    say(f"Through SOCKS server(s) {servers} ({order}), using {proto}.")
    return OUT


def _default_server(env: dict[str, str], routing: conf.SocksConf) -> str:
    if routing.default_server is not None:
        return f"{routing.default_server} (SOCKS_SERVER)"
    if routing.default_server_error is not None:
        return routing.default_server_error
    return "none (SOCKS_SERVER is not set)"


def say(line: str, stream=None) -> None:
    print(line, file=stream or sys.stdout, flush=True)


def _usage(message: str) -> int:
    if message:
        say(f"{PROG}: {message}", sys.stderr)
    say(USAGE, sys.stderr)
    return TROUBLE


if __name__ == "__main__":
    sys.exit(main())
