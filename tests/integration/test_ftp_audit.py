"""sockd's FTP audit against a real FTP server (pyftpdlib) on loopback.

The client is Python's ftplib with its control connection made through
SOCKS, and its passive data connections as SOCKS CONNECTs to the address
PASV gave: binary files go both ways and are checked by sha256, and the
`ftp --` lines are read from sockd's log file and from a real syslog
daemon (rsyslogd).  sockd audits the server's port, named by --ftp-audit.
"""

import ftplib
import hashlib
import io
import os
import re
import socket
import struct

import pytest
from test_syslog import rsyslog  # noqa: F401 (a fixture)

from conftest import serve_ftp, wait_until

pytestmark = pytest.mark.integration

ARGS = ["--min-spare", "2", "--max-spare", "4", "--max-workers", "8"]
FTP_USER, FTP_PASSWORD = "ftpuser", "pa55-never-logged"


@pytest.fixture
def ftp_server(tmp_path):
    """A pyftpdlib server on 127.0.0.1 with one user; yields (root, port)."""
    root = tmp_path / "ftp"
    with serve_ftp(root, "127.0.0.1", FTP_USER, FTP_PASSWORD) as port:
        yield root, port


def socks_connect(proxy_port: int, host: str, port: int, user: bytes) -> socket.socket:
    """A SOCKS4 CONNECT with USERID *user*; the connected socket."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
    s.sendall(struct.pack(">BBH", 4, 1, port) + socket.inet_aton(host) + user + b"\0")
    reply = b""
    while len(reply) < 8:
        chunk = s.recv(8 - len(reply))
        assert chunk, "sockd closed before its reply"
        reply += chunk
    assert reply[1] == 90, reply
    return s


class SocksFTP(ftplib.FTP):
    """ftplib in passive mode, every connection a SOCKS CONNECT through sockd."""

    def __init__(self, proxy_port: int, user: bytes = b"alice") -> None:
        super().__init__(timeout=15)
        self.proxy_port, self.socks_user = proxy_port, user

    def connect_through(self, host: str, port: int) -> str:
        s = socks_connect(self.proxy_port, host, port, self.socks_user)
        self.host, self.port, self.sock, self.af = host, port, s, s.family
        self.file = s.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd, rest=None):
        host, port = self.makepasv()
        conn = socks_connect(self.proxy_port, host, port, self.socks_user)
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            resp = self.sendcmd(cmd)
            if resp[0] == "2":
                resp = self.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn, ftplib.parse150(resp) if resp[:3] == "150" else None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ftp_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ftp -- " in line]


def session_of(line: str) -> str:
    return re.search(r" session=(\S+)", line)[1]


def transfer_files(ftp: SocksFTP, root) -> None:
    """Log in, move binary files both ways (checked by sha256), and touch names."""
    ftp.login(FTP_USER, FTP_PASSWORD)
    payload = os.urandom(3 * 1024 * 1024 + 11)
    (root / "down.bin").write_bytes(payload)
    got = bytearray()
    ftp.retrbinary("RETR down.bin", got.extend)
    assert digest(got) == digest(payload)
    upload = os.urandom(2 * 1024 * 1024 + 5)
    ftp.storbinary("STOR up load.bin", io.BytesIO(upload))
    wait_until(lambda: (root / "up load.bin").exists()
               and (root / "up load.bin").stat().st_size == len(upload), 10, "the upload")
    assert digest((root / "up load.bin").read_bytes()) == digest(upload)
    ftp.storbinary("APPE up load.bin", io.BytesIO(b"tail"))
    ftp.mkd("dir")
    ftp.rename("up load.bin", "dir/caf\u00e9.bin")
    ftp.delete("dir/caf\u00e9.bin")
    ftp.rmd("dir")
    ftp.quit()


AUDITED = ["RETR down.bin", "STOR up\\x20load.bin", "APPE up\\x20load.bin", "MKD dir",
           "RNFR up\\x20load.bin", "RNTO dir/caf\\xc3\\xa9.bin", "DELE dir/caf\\xc3\\xa9.bin",
           "RMD dir"]


def check_audit(lines: list[str], log_text: str, ftp_port: int) -> None:
    """The ftp lines name the files in order, the users and the server; one session."""
    story = (rf"ftp -- Connect from alice\(unknown\)@127\.0\.0\.1:\d+ to "
             rf"127\.0\.0\.1:{ftp_port} \(\S+\) rule=\S+ session=\S+.*: USER {FTP_USER} ")
    assert len(lines) == len(AUDITED), lines
    for line, what in zip(lines, AUDITED, strict=True):
        assert re.search(story + re.escape(what) + "$", line), line
    sessions = {session_of(line) for line in lines}
    assert len(sessions) == 1
    control = [line for line in log_text.splitlines()
               if re.search(rf"connected -- Connect .* to 127\.0\.0\.1:{ftp_port} ", line)]
    assert [session_of(line) for line in control] == list(sessions)
    assert FTP_PASSWORD not in log_text


def test_passive_transfers_are_audited_in_the_log_file(sockd, ftp_server):
    root, ftp_port = ftp_server
    server = sockd(args=[*ARGS, "--ftp-audit", str(ftp_port)])
    ftp = SocksFTP(server.port)
    ftp.connect_through("127.0.0.1", ftp_port)
    transfer_files(ftp, root)
    server.wait_log(rf"terminated -- Connect .* to 127\.0\.0\.1:{ftp_port} ")
    check_audit(ftp_lines(server.log()), server.log(), ftp_port)
    # The data connections (CONNECTs to the PASV ports) are relayed and not audited.
    data = server.wait_log(r"terminated -- Connect from alice", count=4)
    assert len(data) == 1 + 3      # the control connection; RETR, STOR, APPE


def test_audit_lines_reach_syslog(sockd, ftp_server, rsyslog):  # noqa: F811
    sock, out = rsyslog
    root, ftp_port = ftp_server
    server = sockd(args=[*ARGS, "--ftp-audit", f"{ftp_port},ftp", "--log", "syslog",
                         "--syslog-address", str(sock)])
    ftp = SocksFTP(server.port)
    ftp.connect_through("127.0.0.1", ftp_port)
    transfer_files(ftp, root)

    def audited():
        text = out.read_text() if out.exists() else ""
        return text if len(ftp_lines(text)) >= len(AUDITED) and \
            re.search(rf"terminated -- Connect .* to 127\.0\.0\.1:{ftp_port} ", text) else None
    text = wait_until(audited, 15, "the ftp lines in syslog")
    lines = ftp_lines(text)
    assert all(line.startswith("daemon.info sockd[") for line in lines)
    check_audit(lines, text, ftp_port)


def test_auth_tls_stops_the_audit_and_the_relay_goes_on(sockd, ftp_server):
    root, ftp_port = ftp_server
    (root / "after.bin").write_bytes(b"\x00\xff" * 5000)
    server = sockd(args=[*ARGS, "--ftp-audit", str(ftp_port)])
    ftp = SocksFTP(server.port)
    ftp.connect_through("127.0.0.1", ftp_port)
    ftp.login(FTP_USER, FTP_PASSWORD)
    with pytest.raises(ftplib.error_perm):      # this server has no TLS: it says so
        ftp.sendcmd("AUTH TLS")
    got = bytearray()
    ftp.retrbinary("RETR after.bin", got.extend)
    assert bytes(got) == b"\x00\xff" * 5000
    ftp.quit()
    server.wait_log(rf"terminated -- Connect .* to 127\.0\.0\.1:{ftp_port} ")
    lines = ftp_lines(server.log())
    assert len(lines) == 1, lines
    assert re.search(r"ftp -- Connect from alice.* session=\S+.*: audit stopped: AUTH TLS: "
                     r"the control connection is protected from here on$", lines[0])


def test_abort_with_urgent_data_reaches_the_server_and_the_audit_goes_on(sockd, ftp_server):
    """ftplib's abort() sends ABOR with its last byte urgent: relayed inline, in order."""
    root, ftp_port = ftp_server
    (root / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    (root / "small.bin").write_bytes(b"small")
    server = sockd(args=[*ARGS, "--ftp-audit", str(ftp_port)])
    ftp = SocksFTP(server.port)
    ftp.connect_through("127.0.0.1", ftp_port)
    ftp.login(FTP_USER, FTP_PASSWORD)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    assert conn.recv(65536)
    reply = ftp.abort()
    conn.close()
    assert reply[:3] in ("426", "225", "226"), reply
    if reply[:3] == "426":
        assert ftp.getresp()[:3] in ("225", "226")
    got = bytearray()
    ftp.retrbinary("RETR small.bin", got.extend)
    assert bytes(got) == b"small"
    ftp.quit()
    server.wait_log(rf"terminated -- Connect .* to 127\.0\.0\.1:{ftp_port} ")
    assert [line.rsplit(": ", 1)[1] for line in ftp_lines(server.log())] == \
        [f"USER {FTP_USER} RETR big.bin", f"USER {FTP_USER} RETR small.bin"]


def test_other_ports_and_an_empty_list_are_not_audited(sockd, ftp_server):
    root, ftp_port = ftp_server
    for args in (["--ftp-audit="], []):         # off; the default (21) is not this port
        server = sockd(args=[*ARGS, *args])
        ftp = SocksFTP(server.port)
        ftp.connect_through("127.0.0.1", ftp_port)
        transfer_files(ftp, root)
        server.wait_log(rf"terminated -- Connect .* to 127\.0\.0\.1:{ftp_port} ")
        assert ftp_lines(server.log()) == []
