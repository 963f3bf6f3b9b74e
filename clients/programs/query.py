"""One question, one answer: the connection rfinger and rwhois make.

Owns `ask`: connect through `clients.programs.net`, send one line, copy everything the server
sends until it closes to an `AnswerWriter`.  Failures become `QueryFailed` with a one-line
reason naming the server; printing and exit codes belong to the programs.
"""

from __future__ import annotations

from clients.programs import net
from clients.programs.terminal import AnswerWriter

CONNECT_TIMEOUT = 30.0      # seconds to reach the server (or the proxy)
IDLE_TIMEOUT = 60.0         # seconds the server may stay silent before we give up


class QueryFailed(Exception):
    """Why a query failed, as one line: ``whois.example port 43: Connection refused``."""


def ask(host: str, port: int, line: bytes, out: AnswerWriter, *,
        idle: float = IDLE_TIMEOUT) -> int:
    """Send *line* (CR LF added) to (host, port), write the whole answer to *out*; return the
    number of bytes received."""
    where = f"{host} port {port}"
    try:
        sock = net.connect(host, port, CONNECT_TIMEOUT)
    except OSError as e:
        raise QueryFailed(f"{where}: {net.reason(e)}") from None
    received = 0
    with sock:
        sock.settimeout(idle)
        try:
            sock.sendall(line + b"\r\n")
            while data := sock.recv(65536):
                received += len(data)
                out.write(data)
        except OSError as e:
            raise QueryFailed(f"{where}: {net.reason(e)}") from None
        finally:
            out.close()
    return received
