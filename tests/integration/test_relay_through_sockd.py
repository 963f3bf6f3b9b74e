"""Half-closes and large transfers through the real sockd."""

import hashlib
import os
import socket
import socketserver
import threading

import pytest
import relay_modes

from conftest import serve
from test_signals import open_session

pytestmark = pytest.mark.integration
sockd = relay_modes.sockd     # every test here runs in both relay modes


class _AnswerAfterEof(socketserver.BaseRequestHandler):
    """Reads until the client's EOF, then answers with the count and a digest."""

    def handle(self):
        digest, count = hashlib.sha256(), 0
        while data := self.request.recv(65536):
            digest.update(data)
            count += len(data)
        self.request.sendall(f"{count} {digest.hexdigest()}\n".encode())


class _Source(socketserver.BaseRequestHandler):
    """Sends a seeded stream of the size the client asks for, then closes."""

    def handle(self):
        size = int(self.request.recv(64).decode())
        block = hashlib.sha256(b"seed").digest() * 2048
        sent = 0
        while sent < size:
            chunk = block[: size - sent]
            self.request.sendall(chunk)
            sent += len(chunk)


@pytest.mark.parametrize("version", [4, 5])
def test_server_answers_only_after_the_clients_eof(sockd, version):
    answerer = serve(_AnswerAfterEof)
    server = sockd()
    payload = os.urandom(3 << 20)
    if version == 5:
        s = open_session(server.port, answerer.server_address[1])
    else:
        import struct
        s = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        s.sendall(b"\x04\x01" + struct.pack(">H", answerer.server_address[1])
                  + socket.inet_aton("127.0.0.1") + b"u\x00")
        assert s.recv(8)[:2] == b"\x00\x5a"
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)          # our half-close must reach the server...
    answer = b""
    while chunk := s.recv(4096):        # ...and its answer must still come back
        answer += chunk
    s.close()
    assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    line = server.wait_log(r"terminated -- Connect")[0]
    assert f"{len(payload)} bytes from 127.0.0.1, {len(answer)} bytes from 127.0.0.1:" in line
    answerer.shutdown()


def test_large_download_arrives_whole(sockd):
    source = serve(_Source)
    server = sockd()
    size = 200 << 20
    s = open_session(server.port, source.server_address[1])
    s.sendall(str(size).encode())
    got, digest = 0, hashlib.sha256()
    while chunk := s.recv(1 << 20):
        digest.update(chunk)
        got += len(chunk)
    s.close()
    block = hashlib.sha256(b"seed").digest() * 2048
    expected = hashlib.sha256()
    for offset in range(0, size, len(block)):
        expected.update(block[: size - offset])
    assert got == size and digest.digest() == expected.digest()
    source.shutdown()


def test_many_sessions_at_once(sockd, echo_server):
    # twenty sessions from one address: more than the default --max-per-source (8 here)
    server = sockd(args=["--min-spare", "8", "--max-spare", "16", "--max-workers", "32",
                         "--max-per-source", "0"])
    errors = []

    def client(n):
        try:
            with open_session(server.port, echo_server) as s:
                data = os.urandom(100_000)
                s.sendall(data)
                got = b""
                while len(got) < len(data) and (chunk := s.recv(65536)):
                    got += chunk
                assert got == data
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [t for t in threads if t.is_alive()], "clients still waiting after 60 s"
    assert not errors
    assert len(server.wait_log(r"terminated -- Connect", count=20)) == 20
