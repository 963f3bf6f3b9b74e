"""rwhois: the whois client (RFC 3912) whose connection socks.conf routes.

``rwhois [-h server] [-p port] query``: the query words joined by spaces as one line to the
server (default `SERVER`, which answers for every top-level domain and address block and
names the server to ask next), the answer on standard output, exit 1 with one line on standard
error when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import sys

from clients.programs.query import QueryFailed, ask
from clients.programs.terminal import AnswerWriter

SERVER = "whois.iana.org"
PORT = 43


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rwhois", description="whois through SOCKS",
                                     add_help=False)
    parser.add_argument("-h", "--host", default=SERVER, help=f"server ({SERVER})")
    parser.add_argument("-p", "--port", type=int, default=PORT, help="server port (43)")
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("query", nargs="+")
    args = parser.parse_args(argv)
    text = " ".join(args.query)
    if any(c in text for c in "\r\n"):
        print("rwhois: a query may not hold a line break", file=sys.stderr)
        return 2
    try:
        ask(args.host, args.port, text.encode("utf-8", "surrogateescape"),
            AnswerWriter(sys.stdout.buffer))
    except QueryFailed as e:
        print(f"rwhois: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
