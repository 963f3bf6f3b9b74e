"""socksify running unmodified Python programs (urllib, ftplib passive and active) through
the real sockd, as socks.conf routes them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, free_port, serve_ftp

DST = "127.0.0.2"
SOCKSIFY = [sys.executable, "-m", "clients.socksify"]


def socksify(tmp_path, conf_text: str, program: str, *args: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "socks.conf"
    conf.write_text(conf_text)
    script = tmp_path / "program.py"
    script.write_text(program)
    env = {"PATH": "/usr/bin:/bin", "SOCKS_CONF": str(conf), "PYTHONPATH": str(ROOT)}
    return subprocess.run([*SOCKSIFY, sys.executable, str(script), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


URLLIB = """\
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode(), end="")
"""


@pytest.fixture
def http2(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_text("hello through socks\n")
    port = free_port(DST)
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "-b", DST, str(port), "-d",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    import contextlib
    import socket

    from conftest import wait_until

    def up():
        with contextlib.suppress(OSError), socket.create_connection((DST, port), 1):
            return True
    wait_until(up, 10, "http.server")
    yield port
    proc.kill()
    proc.wait(10)


def test_urllib_through_sockd(sockd, tmp_path, http2):
    server = sockd()
    done = socksify(tmp_path, f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n", URLLIB,
                    f"http://{DST}:{http2}/hello.txt")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello through socks\n"
    server.wait_log(rf"connected -- Connect .*to {DST}:{http2}")


def test_urllib_refused_by_socks_conf(tmp_path, http2):
    done = socksify(tmp_path, "deny 127.0.0.2/32\n", URLLIB, f"http://{DST}:{http2}/hello.txt")
    assert done.returncode != 0
    assert "denied by socks.conf" in done.stderr


FTP = """\
import ftplib, io, sys
host, port, passive = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "passive"
ftp = ftplib.FTP(timeout=20)
ftp.connect(host, port)
ftp.login("user", "secret")
ftp.set_pasv(passive)
got = bytearray()
ftp.retrbinary("RETR down.bin", got.extend)
ftp.storbinary("STOR up.bin", io.BytesIO(bytes(got[::-1])))
ftp.quit()
print(len(got))
"""


@pytest.fixture
def ftp2(tmp_path):
    root = tmp_path / "ftp"
    with serve_ftp(root, DST) as port:
        yield root, port


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_ftplib_through_sockd(sockd, tmp_path, ftp2, mode):
    root, port = ftp2
    payload = bytes(range(256)) * 4000
    (root / "down.bin").write_bytes(payload)
    server = sockd()
    done = socksify(tmp_path, f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n", FTP, DST,
                    str(port), mode)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(payload))
    assert (root / "up.bin").read_bytes() == payload[::-1]
    if mode == "active":
        server.wait_log(r"connected -- Bind ", count=2)


def test_usage():
    done = subprocess.run(SOCKSIFY, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2 and "usage: socksify PROGRAM" in done.stderr
