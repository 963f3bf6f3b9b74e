"""rfinger: the finger client (RFC 1288) whose connection socks.conf routes.

``rfinger [-l] [-p port] [user][@host]``: one query line (``/W user`` with -l, the RFC's
verbose form), the server's answer on standard output, exit 1 with one line on standard error
when the server cannot be reached.  The host is the part after the last ``@``, so
``user@host1@host2`` asks host2 to forward the query to host1 (RFC 1288 §2.5.1); no ``@``
asks localhost.
"""

from __future__ import annotations

import argparse
import sys

from clients.programs.query import QueryFailed, ask
from clients.programs.terminal import AnswerWriter

PORT = 79


def parse_target(target: str) -> tuple[str, str]:
    """(query, host) of ``[user][@host]``: split at the last ``@``."""
    user, at, host = target.rpartition("@")
    if not at:
        return target, "localhost"
    return user, host or "localhost"


def query_line(user: str, long: bool) -> bytes:
    """The RFC 1288 query line without its CR LF."""
    text = f"/W {user}".rstrip() if long else user
    return text.encode("utf-8", "surrogateescape")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rfinger", description="finger through SOCKS")
    parser.add_argument("-l", action="store_true", help="long output (sends /W)")
    parser.add_argument("-p", "--port", type=int, default=PORT, help="server port (79)")
    parser.add_argument("target", nargs="?", default="", metavar="[user][@host]")
    args = parser.parse_args(argv)
    user, host = parse_target(args.target)
    if any(c in user for c in "\r\n"):
        print("rfinger: a query may not hold a line break", file=sys.stderr)
        return 2
    try:
        ask(host, args.port, query_line(user, args.l), AnswerWriter(sys.stdout.buffer))
    except QueryFailed as e:
        print(f"rfinger: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
