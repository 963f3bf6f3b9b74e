"""SOCKS5 username/password through a running sockd: a sockpasswd-made file, curl and PySocks,
auth=password rules, the method policy, and the growing delay after failed logins."""

import socket
import struct
import subprocess
import sys
import time

import pytest
import socks

from conftest import ROOT, require

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pa55"
RULES = ("permit auth=password *=alice 127.0.0.0/8 127.0.0.0/8\n"
         "deny *=alice 127.0.0.0/8\n"
         "permit 127.0.0.0/8 127.0.0.0/8 eq 9\n"
         "deny 0.0.0.0/0\n")


@pytest.fixture
def passwd(tmp_path):
    path = tmp_path / "sockd.passwd"
    for user, password in (("alice", SECRET), ("bob", "bobs-pw")):
        done = subprocess.run([sys.executable, "-m", "sockd.sockpasswd", "--file", str(path),
                               "add", user], input=f"{password}\n{password}\n", text=True,
                              capture_output=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
    return path


def curl(proxy_port: int, http_port: int, user: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("curl"), "-sS", "--max-time", "20", "--socks5",
                           f"127.0.0.1:{proxy_port}", "--proxy-user", user,
                           f"http://127.0.0.1:{http_port}/hello.txt"],
                          capture_output=True, text=True, timeout=30)


def test_curl_with_the_right_and_a_wrong_password(sockd, passwd, http_server):
    server = sockd(rules=RULES, args=["--passwd", str(passwd)])
    done = curl(server.port, http_server, f"alice:{SECRET}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello through socks\n"
    server.wait_log(r"connected -- Connect from alice\(unknown\)@127\.0\.0\.1:\d+ .*\.conf:1 ")
    wrong = curl(server.port, http_server, "alice:not-it")
    assert wrong.returncode != 0
    server.wait_log(r"error -- authentication failed for user alice \(wrong password "
                    r"\(password file\)\) from host 127\.0\.0\.1:\d+ session=")
    unknown = curl(server.port, http_server, "mallory:whatever")
    assert unknown.returncode != 0
    server.wait_log(r"authentication failed for user mallory \(no such user\)")
    text = server.log() + server.stderr()
    assert SECRET not in text and "not-it" not in text and "whatever" not in text


def test_pysocks_with_username_and_password(sockd, passwd, echo_server):
    server = sockd(rules=RULES.replace("127.0.0.0/8 127.0.0.0/8\n", "127.0.0.0/8 127.0.0.0/8"
                                       "\n", 1), args=["--passwd", str(passwd)])
    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", server.port, username="alice", password=SECRET)
    s.settimeout(20)
    s.connect(("127.0.0.1", echo_server))
    s.sendall(b"authenticated")
    assert s.recv(13) == b"authenticated"
    titles = " ".join(server.titles().values())
    assert "alice@127.0.0.1 connect" in titles and SECRET not in titles
    s.close()
    bad = socks.socksocket()
    bad.set_proxy(socks.SOCKS5, "127.0.0.1", server.port, username="alice", password="nope")
    bad.settimeout(20)
    with pytest.raises(socks.ProxyError):
        bad.connect(("127.0.0.1", echo_server))
    bad.close()


def test_a_password_rule_never_matches_without_authentication(sockd, passwd, echo_server):
    """alice without a password may not pass line 1; the method is username/password whenever
    the client offers it, and no authentication only when that is all it offers."""
    server = sockd(rules=RULES, args=["--passwd", str(passwd)])
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"\x05\x02\x00\x02")             # offers both
        assert s.recv(2) == b"\x05\x02"            # username/password chosen
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        # offers only "no authentication": allowed to negotiate, but no auth=password rule
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                  + struct.pack(">H", echo_server))
        assert s.recv(2) == b"\x05\x00"
        assert s.recv(10)[:2] == b"\x05\x02"
    server.wait_log(r"refused -- Connect from -\(unknown\)@.* rule=.*\.conf:4 session=")


def rfc1929_login(port: int, user: bytes, password: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\x05\x01\x02")
        assert s.recv(2) == b"\x05\x02"
        started = time.monotonic()
        s.sendall(b"\x01" + bytes((len(user),)) + user + bytes((len(password),)) + password)
        status = s.recv(2)
        return status, time.monotonic() - started


def test_failed_logins_from_one_address_wait_longer_and_longer(sockd, passwd):
    server = sockd(rules=RULES, args=["--passwd", str(passwd)])
    waits = []
    for _ in range(4):
        status, waited = rfc1929_login(server.port, b"bob", b"wrong")
        assert status == b"\x01\x01"
        waits.append(waited)
    # lower bounds only (a delay is a behaviour; its upper side is the machine's business):
    # 0.25, 0.5, 1 and 2 s, counted across workers
    assert waits[2] >= 0.9 and waits[3] >= 1.9, waits
    assert rfc1929_login(server.port, b"bob", b"bobs-pw")[0] == b"\x01\x00"
    assert len(server.lines(r"authentication failed for user bob")) == 4
