"""Ident (RFC 1413) through a running sockd: real oidentd answers, a spoofed answer, and
hostile identds; the replies 92 and 93, #NO_IDENTD: and #BAD_ID:, %U and the log."""

import socket
import struct
import subprocess
import time

import pytest

from conftest import require
from identd import FakeIdentd, oidentd, raw, send, silent

pytestmark = pytest.mark.integration

HOOKS = ("#NO_IDENTD: echo no-identd user=%u ident=%U\n"
         "#BAD_ID: echo bad-id user=%u ident=%U\n")


def rules(flag: str) -> str:
    return (HOOKS + f"permit {flag} 127.0.0.0/8 127.0.0.0/8 : echo allowed ident=%U\n"
            "permit ::1/128 ::1/128\ndeny 0.0.0.0/0\n")


def socks4(port: int, dport: int, userid: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(struct.pack(">BBH", 4, 1, dport) + socket.inet_aton("127.0.0.1")
                  + userid + b"\0")
        reply = s.recv(8)
        assert len(reply) == 8, reply
        return reply[1]


def curl_socks4(proxy_port: int, http_port: int, user: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("curl"), "-sS", "--max-time", "20", "-x",
                           f"socks4://{user}@127.0.0.1:{proxy_port}",
                           f"http://127.0.0.1:{http_port}/hello.txt"],
                          capture_output=True, text=True, timeout=30)


def test_oidentd_confirms_the_user(sockd, http_server, tmp_path):
    server = sockd(rules=rules("?=I"))
    with oidentd(tmp_path, replies={"root": "alice"}):
        done = curl_socks4(server.port, http_server, "alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello through socks\n"
    line = server.wait_log(r"connected -- Connect from alice\(alice\)@127\.0\.0\.1:")[0]
    assert ".conf:3 session=" in line
    server.wait_log(r"hook output -- .*\.conf:3: allowed ident=alice$")


def test_a_spoofed_answer_is_refused_with_93(sockd, http_server, tmp_path):
    server = sockd(rules=rules("?=i"))
    with oidentd(tmp_path, replies={"root": "alice"}):
        done = curl_socks4(server.port, http_server, "bob")
    assert done.returncode != 0
    server.wait_log(r"refused -- Connect from bob\(alice\)@127\.0\.0\.1:\d+ ")
    server.wait_log(r"\*Alert\*: real user is alice, not bob session=\d+\.\d+$")
    server.wait_log(r"hook output -- .*\.conf:2: bad-id user=bob ident=alice$")
    assert not server.lines("allowed ident=")


def test_an_empty_userid_is_a_claim_too(sockd, echo_server, tmp_path):
    """OpenBSD nc -X 4 sends an empty USERID: identd naming anybody is a mismatch (93)."""
    server = sockd(rules=rules("?=i"))
    with oidentd(tmp_path, replies={"root": "alice"}):
        done = subprocess.run([require("nc"), "-X", "4", "-x", f"127.0.0.1:{server.port}",
                               "-w", "10", "127.0.0.1", str(echo_server)], input=b"hi\n",
                              capture_output=True, timeout=30)
    assert done.returncode != 0 and done.stdout == b""
    server.wait_log(r"\*Alert\*: real user is alice, not - session=")


def test_reply_93_on_the_wire(sockd, echo_server, tmp_path):
    server = sockd(rules=rules("?=I"))
    with oidentd(tmp_path, replies={"root": "alice"}):
        assert socks4(server.port, echo_server, b"mallory") == 93
        assert socks4(server.port, echo_server, b"alice") == 90


def test_socks5_without_a_user_needs_only_an_answer(sockd, echo_server, tmp_path):
    socks = pytest.importorskip("socks")
    server = sockd(rules=rules("?=I"))
    with oidentd(tmp_path, replies={"root": "carol"}):
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", server.port)
        s.settimeout(20)
        s.connect(("127.0.0.1", echo_server))
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        s.close()
    server.wait_log(r"connected -- Connect from -\(carol\)@127\.0\.0\.1:")


@pytest.mark.parametrize("behaviour, reason", [
    (silent, r"timed out"),
    (raw(b"\x00\xff garbage\r\n"), r"garbage"),
    (send(b"ERROR : HIDDEN-USER"), r"ERROR : HIDDEN-USER"),
    (raw(b"x" * 5000), r"too long"),
])
def test_strict_refuses_with_92_when_identd_does_not_answer(sockd, echo_server, behaviour,
                                                            reason):
    server = sockd(rules=rules("?=I"), args=["--ident-timeout", "1"])
    with FakeIdentd(behaviour, port=113) as identd:
        started = time.monotonic()
        assert socks4(server.port, echo_server, b"alice") == 92
        assert time.monotonic() - started < 10      # a bound, not a speed claim
        assert identd.queries and identd.queries[0].endswith(b"\r\n")
    server.wait_log(rf"cannot connect to identd on 127\.0\.0\.1 \({reason}\) session=")
    server.wait_log(r"hook output -- .*\.conf:1: no-identd user=alice ident=unknown$")
    assert server.lines(r"refused -- Connect from alice\(unknown\)")


def test_relaxed_goes_on_when_identd_is_unreachable(sockd, echo_server):
    server = sockd(rules=rules("?=i"))
    assert socks4(server.port, echo_server, b"alice") == 90
    server.wait_log(r"cannot connect to identd on 127\.0\.0\.1 \(unreachable \(Connection "
                    r"refused\)\) session=")
    server.wait_log(r"no-identd user=alice ident=unknown$")
    server.wait_log(r"allowed ident=unknown$")


def test_the_query_names_the_client_port_and_ours(sockd, echo_server):
    server = sockd(rules=rules("?=I"))
    with FakeIdentd(send(b"USERID : UNIX : alice"), port=113) as identd:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            client_port = s.getsockname()[1]
            s.sendall(struct.pack(">BBH", 4, 1, echo_server) + socket.inet_aton("127.0.0.1")
                      + b"alice\0")
            assert s.recv(8)[1] == 90
    assert identd.queries[0] == f"{client_port} , {server.port}\r\n".encode() or \
        identd.queries[0].replace(b" ", b"") == f"{client_port},{server.port}\r\n".encode()
    assert identd.peers[0][0] == "127.0.0.1"


def test_a_hostile_ident_answer_runs_nothing(sockd, echo_server, tmp_path):
    """Whatever bytes identd names, they are the ident user: escaped in the log, inert in
    hooks, never run."""
    victim = tmp_path / "pwned"
    hostile = f"$(touch {victim});`touch {victim}`;\x1b[31m\\ ../../x".encode()
    server = sockd(rules=rules("?=I"))
    with FakeIdentd(send(b"USERID : UNIX : " + hostile), port=113):
        assert socks4(server.port, echo_server, b"alice") == 93
    line = server.wait_log(r"\*Alert\*: real user is ")[0]
    assert "\x1b" not in line and "\\x1b" in line and "\\x20" in line
    hook = server.wait_log(r"hook output -- .*bad-id user=alice ident=")[0]
    assert "$" not in hook and "`" not in hook and "/" not in hook.split("ident=")[1]
    server.wait_log(r"hook done -- ")
    assert not victim.exists()
