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
import struct
from pathlib import Path

import pytest
import relay_modes
from socks_wire import TIMEOUT, read_all, recv_exact, socks4_connect, socks5_connect

from conftest import serve, wait_until

pytestmark = pytest.mark.integration
sockd = relay_modes.sockd     # every test here runs in both relay modes


def send_with_urgent_bytes(sock: socket.socket, pieces: list[bytes]) -> bytes:
    """Send *pieces*, each followed by an urgent byte; return all that was sent.

    The last urgent byte comes right before the caller's FIN: the relay meets
    the urgent mark and the end of file at once.
    """
    sent = bytearray()
    for piece in pieces:
        sock.sendall(piece)
        assert sock.send(b"!", socket.MSG_OOB) == 1
        sent += piece + b"!"
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



def syn_sent_to(port: int) -> bool:
    """Whether some socket of this network namespace is in SYN_SENT towards *port*."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "02" and int(fields[2].split(":")[1], 16) == port:
            return True
    return False


def test_urgent_bytes_that_come_before_the_reply_are_kept(sockd):
    """The client's socket reads urgent data inline from the start, not once the relay runs.

    A second urgent mark arriving while the first urgent byte is still unread
    makes the kernel drop that byte, unless the socket reads urgent data
    inline (tcp_check_urg()).  sockd is held in connect() (the destination's
    accept queue is full, so its first SYN is dropped) while the client sends
    two urgent bytes after its request.
    """
    deaf = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = socket.create_connection(deaf.getsockname(), timeout=TIMEOUT)   # queue full
    server = sockd()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        inline(sock)
        sock.sendall(b"\x04\x01" + struct.pack(">H", deaf.getsockname()[1])
                     + socket.inet_aton("127.0.0.1") + b"u\0")
        wait_until(lambda: syn_sent_to(deaf.getsockname()[1]), TIMEOUT, "sockd's connect()")
        sock.send(b"!", socket.MSG_OOB)          # the first byte after the request...
        sock.sendall(b"question")
        sock.send(b"#", socket.MSG_OOB)          # ...and a second mark before it is read
        sent = b"!question#"
        sock.shutdown(socket.SHUT_WR)
        deaf.settimeout(TIMEOUT)
        deaf.accept()[0].close()                 # room for sockd's next SYN
        filler.close()
        conn, _ = deaf.accept()
        with inline(conn):
            got = read_all(conn)
        assert recv_exact(sock, 8)[:2] == b"\x00\x5a"
        assert read_all(sock) == b""
    deaf.close()
    assert got == sent
