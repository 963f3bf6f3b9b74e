"""socksify: run an unmodified Python program with its sockets routed by socks.conf.

    socksify PROGRAM [ARGS...]

The program runs with `clients.bootstrap` first on PYTHONPATH: its ``sitecustomize`` calls
`install`, which puts `clients.socksocket` in place of ``socket.socket`` and
`clients.create_connection` in place of ``socket.create_connection`` before the program's first
line, so urllib, http.client, ftplib (passive, and active through SOCKS BIND), smtplib and
asyncio go direct, through sockd or are refused as socks.conf says.  Programs it starts inherit
the environment, so Python children are routed too.  Other programs are not changed by it:
socksify(1) says what to use for them.

Exit status: the program's; 127 when it cannot be started, 2 for a usage error.
"""

from __future__ import annotations

import os
import socket
import sys

import clients
from clients import sockssocket

PROG = "socksify"
USAGE = f"usage: {PROG} PROGRAM [ARGS...]"


def install() -> None:
    """Route this process's new sockets by socks.conf."""
    socket.socket = sockssocket.socksocket          # type: ignore[misc]
    socket.SocketType = sockssocket.socksocket      # type: ignore[misc]
    socket.create_connection = sockssocket.create_connection


def environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the program runs in: PYTHONPATH starts with the bootstrap directory and
    the directory this package lives in."""
    env = dict(os.environ if environ is None else environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(clients.__file__)))
    bootstrap = os.path.join(package_root, "clients", "bootstrap")
    parts = [bootstrap, package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                         if p and p not in (bootstrap, package_root)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        os.execvpe(args[0], args, environment())
    except OSError as e:
        print(f"{PROG}: cannot run {args[0]}: {e.strerror or e}", file=sys.stderr)
        return 127
    return 127      # not reached


if __name__ == "__main__":
    sys.exit(main())
