"""Real clients through the real sockd: curl, OpenBSD netcat, ncat and PySocks."""

import socket
import subprocess

import pytest
import socks  # PySocks

from conftest import require

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("option", ["--socks4", "--socks4a", "--socks5", "--socks5-hostname"])
def test_curl(sockd, http_server, option):
    server = sockd()
    out = subprocess.run(
        [require("curl"), "-sS", "--max-time", "10", option, f"127.0.0.1:{server.port}",
         f"http://127.0.0.1:{http_server}/hello.txt"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello through socks\n"
    line = server.wait_log(r"terminated -- Connect")[0]
    assert f"to 127.0.0.1:{http_server}" in line
    assert "rule=" in line and ".conf:2" in line


def test_curl_by_name_resolved_by_the_server(sockd, http_server):
    server = sockd()
    out = subprocess.run(
        [require("curl"), "-sS", "--max-time", "10", "--socks4a", f"127.0.0.1:{server.port}",
         f"http://localhost:{http_server}/hello.txt"],
        capture_output=True, text=True, timeout=20)
    # localhost may resolve to ::1 first, where nothing listens: either way the
    # name reached sockd and was judged by the rules, never 0.0.0.x.
    line = server.wait_log(r"(connected|failed) -- Connect")[0]
    assert f"to localhost:{http_server}" in line
    assert "0.0.0." not in server.log()
    if "connected" in line:
        assert (out.returncode, out.stdout) == (0, "hello through socks\n"), out.stderr
    else:
        # Refused by the proxy: CURLE_PROXY (97), or CURLE_COULDNT_CONNECT (7)
        # from a curl older than 7.73.
        assert "Connection refused" in line
        assert out.returncode in (7, 97) and out.stdout == "", out.stderr


@pytest.mark.parametrize("version", ["4", "5"])
def test_openbsd_netcat(sockd, echo_server, version):
    server = sockd()
    out = subprocess.run(
        [require("nc.openbsd"), "-N", "-w", "5", "-X", version, "-x", f"127.0.0.1:{server.port}",
         "127.0.0.1", str(echo_server)],
        input=b"ping over netcat\n", capture_output=True, timeout=20)
    assert out.stdout == b"ping over netcat\n", out.stderr


@pytest.mark.parametrize("kind", ["socks4", "socks5"])
def test_ncat(sockd, http_server, kind):
    server = sockd()
    request = b"GET /hello.txt HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    out = subprocess.run(
        [require("ncat"), "--proxy", f"127.0.0.1:{server.port}", "--proxy-type", kind,
         "127.0.0.1", str(http_server)], input=request, capture_output=True, timeout=20)
    assert out.stdout.endswith(b"hello through socks\n"), out.stderr


@pytest.mark.parametrize("kind, rdns", [(socks.SOCKS4, False), (socks.SOCKS4, True),
                                        (socks.SOCKS5, False), (socks.SOCKS5, True)])
def test_pysocks(sockd, echo_server, kind, rdns):
    server = sockd()
    s = socks.socksocket()
    s.set_proxy(kind, "127.0.0.1", server.port, rdns=rdns, username="alice")
    s.settimeout(10)
    s.connect(("127.0.0.1", echo_server))
    s.sendall(b"x" * 100_000)
    got = b""
    while len(got) < 100_000:
        got += s.recv(65536)
    s.close()
    assert got == b"x" * 100_000


def test_ipv6_listener_and_destination(sockd, tmp_path):
    from conftest import _EchoHandler, free_port, serve
    echo6 = serve(_EchoHandler, "::1")
    port6 = free_port("::1")
    server = sockd(args=["-l", f"[::1]:{port6}"])
    s = socks.socksocket(socket.AF_INET6)
    s.set_proxy(socks.SOCKS5, "::1", port6)
    s.settimeout(10)
    s.connect(("::1", echo6.server_address[1]))
    s.sendall(b"over six")
    assert s.recv(100) == b"over six"
    s.close()
    echo6.shutdown()
    assert server.wait_log(r"connected -- Connect from -\(unknown\)@\[::1\]:\d+ to \[::1\]")
