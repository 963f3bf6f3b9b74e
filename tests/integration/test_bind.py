"""BIND through a running sockd: SOCKS 4 and 5, two replies, only the expected peer,
timeouts, denials, a client that hangs up, and active-mode FTP against a real FTP server."""

import contextlib
import ftplib
import hashlib
import os
import socket
import struct
import time

import pytest
import relay_modes

from conftest import serve_ftp, wait_until

pytestmark = pytest.mark.integration
sockd = relay_modes.sockd     # every test here runs in both relay modes

ARGS = ["--min-spare", "1", "--max-spare", "2", "--max-workers", "4", "--bind-timeout", "10"]


class Bind:
    """The client side of one SOCKS BIND request, spoken by hand."""

    def __init__(self, proxy_port: int, version: int, peer: str, port: int,
                 user: bytes = b"binder") -> None:
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
        if version == 4:
            self.sock.sendall(struct.pack(">BBH", 4, 2, port) + socket.inet_aton(peer)
                              + user + b"\0")
        else:
            family = socket.AF_INET6 if ":" in peer else socket.AF_INET
            atyp = 4 if family == socket.AF_INET6 else 1
            self.sock.sendall(b"\x05\x01\x00" + bytes((5, 2, 0, atyp))
                              + socket.inet_pton(family, peer) + struct.pack(">H", port))
            assert self._read(2) == b"\x05\x00"

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def reply(self) -> tuple[int, str, int]:
        """(code, address, port) of the next reply."""
        if self.version == 4:
            raw = self._read(8)
            assert len(raw) == 8, raw
            return raw[1], socket.inet_ntoa(raw[4:]), struct.unpack(">H", raw[2:4])[0]
        head = self._read(4)
        assert len(head) == 4 and head[0] == 5, head
        size, family = (4, socket.AF_INET) if head[3] == 1 else (16, socket.AF_INET6)
        rest = self._read(size + 2)
        return head[1], socket.inet_ntop(family, rest[:size]), struct.unpack(">H", rest[-2:])[0]

    def close(self) -> None:
        self.sock.close()


def connect_from(source: str, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((address, port))
    return s


def granted(version: int) -> int:
    return 90 if version == 4 else 0


@pytest.mark.parametrize("version", [4, 5])
def test_bind_accepts_only_the_expected_peer_and_relays(sockd, version):
    server = sockd(args=ARGS)
    b = Bind(server.port, version, "127.0.0.1", 2121)
    code, address, port = b.reply()
    assert code == granted(version) and address == "127.0.0.1" and port > 0
    wait_until(lambda: any("bind 127.0.0.1:2121" in t and "waiting" in t
                           for t in server.titles().values()), 5, "a bind title")
    # a stranger is closed and logged, and the wait goes on
    stranger = connect_from("127.0.0.2", address, port)
    assert stranger.recv(10) == b""
    stranger.close()
    server.wait_log(r"refused -- Bind from binder\(unknown\)@127\.0\.0\.1:\d+ to "
                    r"127\.0\.0\.1:2121 .*Error: connection from wrong host 127\.0\.0\.2:\d+"
                    if version == 4 else r"Error: connection from wrong host 127\.0\.0\.2:")
    peer = connect_from("127.0.0.1", address, port)
    code, peer_address, peer_port = b.reply()
    assert (code, peer_address, peer_port) == (granted(version), *peer.getsockname())
    # relayed both ways, urgent data included, with half-close
    peer.sendall(b"from the peer")
    assert b._read(13) == b"from the peer"
    b.sock.sendall(b"from the client")
    got = b""
    while len(got) < 15:
        got += peer.recv(100)
    assert got == b"from the client"
    b.sock.shutdown(socket.SHUT_WR)
    assert peer.recv(10) == b""
    peer.sendall(b"after half-close")
    assert b._read(16) == b"after half-close"
    peer.close()
    assert b.sock.recv(10) == b""
    b.close()
    line = server.wait_log(r"terminated -- Bind ")[0]
    assert f"out=127.0.0.1:{port} peer=127.0.0.1:{peer_port}:" in line
    assert "15 bytes from 127.0.0.1, 29 bytes from 127.0.0.1:2121" in line


@pytest.mark.parametrize("version", [4, 5])
def test_bind_times_out(sockd, version):
    server = sockd(args=[*ARGS, "--bind-timeout", "1"])
    b = Bind(server.port, version, "127.0.0.1", 21)
    assert b.reply()[0] == granted(version)
    started = time.monotonic()
    assert b.reply()[0] == (91 if version == 4 else 4)
    assert time.monotonic() - started < 8
    assert b.sock.recv(10) == b""
    b.close()
    server.wait_log(r"timed-out -- Bind .*: no connection after 1 s$")


@pytest.mark.parametrize("version", [4, 5])
def test_bind_refused_by_the_rules(sockd, version):
    rules = ("deny cmd=bind 127.0.0.0/8\npermit 127.0.0.0/8 127.0.0.0/8\n"
             "deny 0.0.0.0/0\n")
    server = sockd(rules=rules, args=ARGS)
    b = Bind(server.port, version, "127.0.0.1", 21)
    assert b.reply()[0] == (91 if version == 4 else 2)
    b.close()
    line = server.wait_log(r"refused -- Bind ")[0]
    assert ".conf:1 session=" in line


def test_a_client_hanging_up_ends_the_wait_at_once(sockd):
    server = sockd(args=[*ARGS, "--bind-timeout", "60"])
    b = Bind(server.port, 5, "127.0.0.1", 21)
    assert b.reply()[0] == 0
    b.close()
    line = server.wait_log(r"terminated -- Bind ", timeout=5)[0]
    assert line.endswith("(client closed while waiting)")


def test_an_unknown_peer_is_judged_by_the_rules(sockd):
    """An expected peer of 0.0.0.0 is "not known yet": each incoming connection is judged by
    the rules in its place."""
    rules = ("deny cmd=bind 127.0.0.0/8 127.0.0.3/32\npermit cmd=bind 127.0.0.0/8 0.0.0.0/0\n"
             "permit 127.0.0.0/8 127.0.0.0/8\ndeny 0.0.0.0/0\n")
    server = sockd(rules=rules, args=ARGS)
    b = Bind(server.port, 5, "0.0.0.0", 21)
    code, address, port = b.reply()
    assert code == 0
    refused = connect_from("127.0.0.3", address, port)
    assert refused.recv(10) == b""
    refused.close()
    peer = connect_from("127.0.0.2", address, port)
    assert b.reply()[1:] == peer.getsockname()
    peer.close()
    b.close()
    server.wait_log(r"wrong host 127\.0\.0\.3:")


def test_bind_listens_where_the_route_file_says(sockd, tmp_path):
    """sockd.route chooses the BIND address for the expected peer; connect sources too."""
    routes = tmp_path / "sockd.route"
    routes.write_text("127.0.0.3 127.0.0.1 255.255.255.255\n127.0.0.2 127.0.0.0/8\n")
    server = sockd(args=[*ARGS, "--route", str(routes)])
    b = Bind(server.port, 4, "127.0.0.1", 21)
    code, address, port = b.reply()
    assert (code, address) == (90, "127.0.0.3")
    peer = connect_from("127.0.0.1", address, port)
    assert b.reply()[0] == 90
    peer.close()
    b.close()
    # an outgoing CONNECT to 127.0.0.5 leaves from 127.0.0.2, as the destination sees
    with socket.create_server(("127.0.0.5", 0)) as dest:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
            c.sendall(struct.pack(">BBH", 4, 1, dest.getsockname()[1])
                      + socket.inet_aton("127.0.0.5") + b"x\0")
            reply = c.recv(8)
            assert reply[1] == 90 and socket.inet_ntoa(reply[4:]) == "127.0.0.2"
            dest.settimeout(10)
            conn, peer_address = dest.accept()
            conn.close()
            assert peer_address[0] == "127.0.0.2"


# -- active-mode FTP through BIND, against a real FTP server (pyftpdlib) --------------------------


@pytest.fixture
def ftp_server(tmp_path):
    root = tmp_path / "ftp"
    with serve_ftp(root) as port:
        yield root, port


class SocksActiveFTP(ftplib.FTP):
    """ftplib in active mode, its data connection coming back through SOCKS BIND."""

    def __init__(self, proxy_port: int, version: int) -> None:
        super().__init__(timeout=15)
        self.proxy_port, self.version = proxy_port, version
        self.set_pasv(False)

    def connect_through(self, host: str, port: int) -> str:
        s = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=15)
        if self.version == 4:
            s.sendall(struct.pack(">BBH", 4, 1, port) + socket.inet_aton(host) + b"ftp\0")
            assert s.recv(8)[1] == 90
        else:
            s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton(host)
                      + struct.pack(">H", port))
            assert s.recv(2) == b"\x05\x00" and s.recv(10)[1] == 0
        self.host, self.port, self.sock, self.af = host, port, s, s.family
        self.file = s.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def makeport(self):
        b = Bind(self.proxy_port, self.version, self.host, self.port)
        code, address, port = b.reply()
        assert code == granted(self.version)
        self.sendport(address, port)
        ftp = self

        class Pending:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def accept(self):
                code, peer, peer_port = b.reply()
                assert code == granted(ftp.version), code
                return b.sock, (peer, peer_port)

        return Pending()


@pytest.mark.parametrize("version", [4, 5])
def test_active_ftp_through_bind(sockd, ftp_server, tmp_path, version):
    root, port = ftp_server
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (root / "down.bin").write_bytes(payload)
    server = sockd(args=ARGS)
    ftp = SocksActiveFTP(server.port, version)
    ftp.connect_through("127.0.0.1", port)
    ftp.login("user", "secret")
    got = bytearray()
    ftp.retrbinary("RETR down.bin", got.extend)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    upload = os.urandom(2 * 1024 * 1024 + 3)
    with contextlib.closing(__import__("io").BytesIO(upload)) as f:
        ftp.storbinary("STOR up.bin", f)
    wait_until(lambda: (root / "up.bin").exists()
               and (root / "up.bin").stat().st_size == len(upload), 10, "the upload")
    assert hashlib.sha256((root / "up.bin").read_bytes()).digest() == \
        hashlib.sha256(upload).digest()
    ftp.quit()
    server.wait_log(r"terminated -- Bind ", count=2)
