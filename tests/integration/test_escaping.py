"""Client strings reach the log and ps(1) only escaped, through the real sockd.

A SOCKS 4 USERID and a requested host name are the client's own bytes.
sockd writes every byte that is not printable ASCII, and the space, as \\xNN
(sockd(8), LOG LINES), so that a client can neither forge a log line nor
split a field, and a terminal showing the log or ps(1) runs no escape code.
"""

import re
import socket
import struct
from pathlib import Path

import pytest
from socks_wire import TIMEOUT, read_all, recv_exact, socks4_connect

from conftest import wait_until

pytestmark = pytest.mark.integration

# A newline, an ANSI escape sequence, a space and two bytes above 0x7F...
HOSTILE_USERID = b"evil\nuser\x1b[31m x\xff\xe9"
# ...and how sockd must show them (written out here, not computed by sockd's escape()).
ESCAPED_USERID = rb"evil\x0auser\x1b[31m\x20x\xff\xe9"

STAMP = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d sockd\[\d+\]: ")


def assert_clean_log(path: Path) -> bytes:
    """Every log line is one whole line of printable ASCII, as sockd wrote it."""
    text = path.read_bytes()
    assert text.endswith(b"\n")
    for line in text[:-1].split(b"\n"):
        assert STAMP.match(line), f"a line sockd did not start: {line!r}"
        assert all(0x20 <= b < 0x7F for b in line), f"a raw byte in {line!r}"
    # The file handler writes non-ASCII as \xNN itself, so bytes above 0x7F
    # cannot tell here whether sockd escaped them; the title test can.
    return text


def raw_title(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")


def test_a_hostile_userid_is_escaped_in_the_title_and_the_log(sockd, echo_server):
    server = sockd()
    sock, code, _ = socks4_connect(server.port, "127.0.0.1", echo_server,
                                   userid=HOSTILE_USERID)
    with sock:
        assert code == 90
        sock.sendall(b"ping")
        assert recv_exact(sock, 4) == b"ping"

        def busy_title():
            for pid in server.children():
                try:
                    title = raw_title(pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if f" connect 127.0.0.1:{echo_server} ".encode() in title:
                    return title
            return None
        title = wait_until(busy_title, TIMEOUT, "the busy worker's title")
        assert all(0x20 <= b < 0x7F for b in title), title
        # The user is one word of the title: "sockd: USER@CLIENT connect ...".
        assert re.fullmatch(rb"sockd: " + re.escape(ESCAPED_USERID)
                            + rb"@127\.0\.0\.1\S* connect 127\.0\.0\.1:\d+ \(\S+\)", title), title
    server.wait_log(r"terminated -- Connect from ")
    text = assert_clean_log(server.log_path)
    lines = [line for line in text.split(b"\n") if b"Connect from " in line]
    assert len(lines) == 2, lines                     # connected, terminated
    for line in lines:
        # The user stays one field, escaped, right where the format puts it.
        assert re.search(rb"Connect from " + re.escape(ESCAPED_USERID)
                         + rb"\S*@127\.0\.0\.1", line), line
    assert b"evil user" not in text and b"user\\x1b[31m x" not in text


@pytest.mark.parametrize("name, escaped", [
    (b"local\nhost", rb"local\x0ahost"),
    (b"a b.c", rb"a\x20b.c"),
    (b"ev\x1b[2Jil\r.example", rb"ev\x1b[2Jil\x0d.example"),
    (b"caf\xe9\x00.example", rb"caf\xe9\x00.example"),
])
def test_a_hostile_host_name_is_logged_only_escaped(sockd, echo_server, name, escaped):
    server = sockd()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(name)]) + name
                     + struct.pack(">H", echo_server))
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)               # whatever the answer, the session ends
    # Whichever line the request produces (refused, failed or error), it
    # names the host escaped, and nothing of it is raw.
    server.wait_log(re.escape(escaped.decode()))
    text = assert_clean_log(server.log_path)
    assert name not in text
