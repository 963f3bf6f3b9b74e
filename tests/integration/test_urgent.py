"""TCP urgent data through the real sockd: relayed inline, in order, and the stream goes on.

A telnet interrupt or an FTP ABOR is an urgent byte (send(2) with MSG_OOB).
sockd relays it inline (SO_OOBINLINE, as CSTC sockd did): the byte keeps its
place in the stream and neither direction ends at the urgent mark.
"""

import hashlib
import os
import queue
import socket
import socketserver

import pytest
from socks_wire import TIMEOUT, read_all, socks4_connect, socks5_connect

from conftest import serve

pytestmark = pytest.mark.integration


def send_with_urgent_bytes(sock: socket.socket, pieces: list[bytes]) -> bytes:
    """Send *pieces* with an urgent byte before each and one at the end; return all sent."""
    sent = bytearray()
    for piece in [*pieces, b""]:
        assert sock.send(b"!", socket.MSG_OOB) == 1
        sock.sendall(piece)
        sent += b"!" + piece
    return bytes(sent)


def inline(sock: socket.socket) -> socket.socket:
    """Read urgent bytes in the stream (a relay that forwarded urgency would not lose them)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    sock.settimeout(TIMEOUT)
    return sock


class _UrgentAnswerer(socketserver.BaseRequestHandler):
    """Reads to the client's end of file, then answers with urgent bytes of its own."""

    results: queue.Queue

    def handle(self):
        got = read_all(inline(self.request))
        answer = send_with_urgent_bytes(self.request, [b"answer", os.urandom(1 << 20),
                                                       b"end of answer"])
        self.request.shutdown(socket.SHUT_WR)
        self.results.put((got, answer))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("version", [4, 5])
def test_urgent_bytes_arrive_inline_both_ways_and_half_close_still_works(sockd, version):
    handler = type("Answerer", (_UrgentAnswerer,), {"results": queue.Queue()})
    destination = serve(handler)
    server = sockd()
    connect = socks4_connect if version == 4 else socks5_connect
    sock, code, _ = connect(server.port, "127.0.0.1", destination.server_address[1])
    assert code == (90 if version == 4 else 0)
    inline(sock)
    question = send_with_urgent_bytes(sock, [b"question", os.urandom(1 << 20),
                                             b"end of question"])
    sock.shutdown(socket.SHUT_WR)            # our end of file must reach the server...
    answer_got = read_all(sock)              # ...and its answer, urgent bytes and all, come back
    sock.close()
    question_got, answer = handler.results.get(timeout=TIMEOUT)
    destination.shutdown()
    destination.server_close()
    assert (len(question_got), digest(question_got)) == (len(question), digest(question))
    assert (len(answer_got), digest(answer_got)) == (len(answer), digest(answer))
    line = server.wait_log(r"terminated -- Connect")[0]
    assert f"{len(question)} bytes from 127.0.0.1" in line
    assert f"{len(answer)} bytes from 127.0.0.1:{destination.server_address[1]}" in line
    assert "(eof)" in line, line
