"""The client library (clients.socksocket, create_connection, open_connection) against the real
sockd and against Dante's danted: CONNECT in SOCKS4, 4a and 5, BIND, UDP, username/password,
socks.conf decisions, failover over a server list, non-blocking connect and asyncio.

Destinations are loopback addresses other than 127.0.0.1 (which socks.conf always sends
direct) or ``localhost``; every server started here allows loopback destinations only.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import sys
import threading

import pytest
from dante import Dante

import clients
from clients import conf
from clients.sockssocket import SocksClient, socksocket
from conftest import ROOT, _EchoHandler, free_port, serve

DST = "127.0.0.2"


@pytest.fixture
def echo2():
    server = serve(_EchoHandler, DST)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def dante(tmp_path):
    server = Dante(tmp_path)
    yield server
    server.stop()


def client_for(text: str, **kwargs) -> SocksClient:
    return SocksClient(conf=conf.parse_text(text), **kwargs)


def echo_through(client: SocksClient, port: int, host: str = DST, payload: bytes = b"ping"):
    with socksocket(client=client) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(100)
        return got, s.getpeername()


@pytest.mark.parametrize("proto", ["4", "4a", "5"])
def test_connect_through_sockd(sockd, echo2, proto):
    server = sockd()
    client = client_for(f"sockd @=127.0.0.1:{server.port} proto={proto} 127.0.0.0/8\n")
    got, peer = echo_through(client, echo2)
    assert got == b"ping" and peer == (DST, echo2)
    server.wait_log(rf"connected -- Connect .*to {DST}:{echo2}")


def test_connect_by_name_is_resolved_by_the_proxy(sockd, echo2):
    server = sockd()
    client = client_for(f"sockd @=127.0.0.1:{server.port} .test.invalid\n"
                        f"sockd @=127.0.0.1:{server.port} .localhost\n")
    with socksocket(socket.AF_INET, client=client) as s:
        s.settimeout(10)
        # sockd resolves it; the refusal (nothing listens there) proves the name went through.
        with pytest.raises(clients.SocksRefused) as caught:
            s.connect(("localhost", free_port()))
    assert caught.value.code in (4, 5)
    server.wait_log(r"localhost")


def test_socks4_refusal_carries_code_91(sockd, echo2):
    server = sockd(rules="permit 127.0.0.0/8 127.0.0.3/32\ndeny 0.0.0.0/0\n")
    client = client_for(f"sockd @=127.0.0.1:{server.port} proto=4 127.0.0.0/8\n")
    with pytest.raises(clients.SocksRefused) as caught:
        echo_through(client, echo2)
    assert caught.value.code == 91 and "request rejected or failed" in str(caught.value)
    assert isinstance(caught.value, ConnectionRefusedError)


def test_deny_and_no_match_refuse_without_a_server(echo2):
    client = client_for("deny 127.0.0.2/32\nsockd @=127.0.0.1:1 127.0.0.9/32\n")
    with pytest.raises(clients.SocksRefused, match="denied by socks.conf"):
        echo_through(client, echo2)
    with pytest.raises(clients.SocksRefused, match="no match"):
        echo_through(client, echo2, host="127.0.0.3")


def test_direct_and_always_direct(echo_server, echo2):
    client = client_for("direct 127.0.0.2/32\ndeny 0.0.0.0/0\n")
    assert echo_through(client, echo2)[0] == b"ping"
    # 127.0.0.1 goes direct whatever the file says.
    assert echo_through(client, echo_server, host="127.0.0.1")[0] == b"ping"


def test_failover_skips_a_down_server_and_remembers_it(sockd, echo2):
    server = sockd()
    down = free_port()
    client = client_for(f"sockd @=127.0.0.1:{down},127.0.0.1:{server.port} 127.0.0.0/8\n")
    assert echo_through(client, echo2)[0] == b"ping"
    assert client.memory.is_down(conf.Server("127.0.0.1", down))
    assert client.memory.order([conf.Server("127.0.0.1", down),
                                conf.Server("127.0.0.1", server.port)]) == \
        [conf.Server("127.0.0.1", server.port)]
    assert echo_through(client, echo2)[0] == b"ping"


def test_every_server_down_is_refused(echo2):
    client = client_for(f"sockd @=127.0.0.1:{free_port()},127.0.0.1:{free_port()} "
                        "127.0.0.0/8\n")
    with pytest.raises(clients.SocksRefused, match="no SOCKS server reachable"):
        echo_through(client, echo2)


def test_a_broken_socks_conf_refuses_everything(tmp_path, echo2):
    path = tmp_path / "socks.conf"
    path.write_text("direct 127.0.0.0/8\nsockd 127.0.0.0 255.0.0.0 eq\n")
    client = SocksClient(environ={"SOCKS_CONF": str(path)})
    with pytest.raises(clients.SocksRefused, match=rf"{path}:2: operator 'eq' has no port"):
        echo_through(client, echo2)


def test_no_file_goes_direct_or_through_socks_server(sockd, tmp_path, echo2):
    missing = str(tmp_path / "none.conf")
    assert echo_through(SocksClient(environ={"SOCKS_CONF": missing}), echo2)[0] == b"ping"
    server = sockd()
    client = SocksClient(environ={"SOCKS_CONF": missing,
                                  "SOCKS_SERVER": f"127.0.0.1:{server.port}"})
    assert echo_through(client, echo2)[0] == b"ping"
    server.wait_log(rf"connected -- Connect .*to {DST}:{echo2}")


def test_username_password_through_sockd(sockd, tmp_path, echo2):
    pw = tmp_path / "sockd.passwd"
    done = subprocess.run([sys.executable, "-m", "sockd.sockpasswd", "--file", str(pw), "add",
                           "alice"], input="s3cret\ns3cret\n", text=True, capture_output=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    server = sockd(rules="permit auth=password 127.0.0.0/8 127.0.0.0/8\ndeny 0.0.0.0/0\n",
                   args=["--passwd", str(pw)])
    text = f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n"
    assert echo_through(client_for(text, username="alice", password="s3cret"), echo2)[0] \
        == b"ping"
    with pytest.raises(clients.SocksRefused):
        echo_through(client_for(text, username="alice", password="wrong"), echo2)
    with pytest.raises(clients.SocksRefused) as caught:      # sockd: no login, no rule
        echo_through(client_for(text), echo2)
    assert caught.value.code == 2


def bind_round_trip(client: SocksClient, echo_port: int) -> None:
    import clients.sockssocket as ss
    with socksocket(client=client) as control:
        control.settimeout(10)
        control.connect((DST, echo_port))
        with socksocket(client=client) as listener:
            listener.settimeout(10)
            listener.bind(("", 0))
            listener.listen(1)
            address = listener.getsockname()
            assert address[1] != 0
            with ss.RealSocket() as peer:
                peer.settimeout(10)
                peer.bind((DST, 0))
                peer.connect(address)
                peer.sendall(b"from the peer")
                conn, peer_address = listener.accept()
                with conn:
                    assert peer_address == peer.getsockname()
                    assert conn.getpeername() == peer.getsockname()
                    assert conn.recv(100) == b"from the peer"
                    conn.sendall(b"back")
                    assert peer.recv(100) == b"back"


@pytest.mark.parametrize("proto", ["4", "5"])
def test_bind_through_sockd(sockd, echo2, proto):
    server = sockd()
    bind_round_trip(client_for(f"sockd @=127.0.0.1:{server.port} proto={proto} 127.0.0.0/8\n"),
                    echo2)
    server.wait_log(r"connected -- Bind ")


def test_nonblocking_connect_with_a_selector(sockd, echo2):
    server = sockd()
    client = client_for(f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n")
    with socksocket(client=client) as s, selectors.DefaultSelector() as sel:
        s.setblocking(False)
        assert s.connect_ex((DST, echo2)) == 115           # EINPROGRESS
        sel.register(s, selectors.EVENT_WRITE)
        assert sel.select(10)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        s.send(b"nb")
        sel.modify(s, selectors.EVENT_READ)
        assert sel.select(10)
        assert s.recv(10) == b"nb"
        assert s.getpeername() == (DST, echo2)


def test_asyncio_open_connection_and_sock_connect(sockd, echo2):
    server = sockd()
    client = client_for(f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n")

    async def main():
        reader, writer = await clients.open_connection(DST, echo2, client=client, timeout=10)
        writer.write(b"async")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"async"
        writer.close()
        # asyncio's own sock_connect on the drop-in socket (non-blocking connect).
        loop = asyncio.get_running_loop()
        s = socksocket(client=client)
        s.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(s, (DST, echo2)), 10)
        await loop.sock_sendall(s, b"loop")
        assert await asyncio.wait_for(loop.sock_recv(s, 10), 10) == b"loop"
        s.close()
    asyncio.run(main())
    server.wait_log(rf"connected -- Connect .*to {DST}:{echo2}", count=2)


# -- Dante --------------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["4", "4a", "5"])
def test_connect_through_dante(dante, echo2, proto):
    client = client_for(f"sockd @=127.0.0.1:{dante.port} proto={proto} 127.0.0.0/8\n")
    assert echo_through(client, echo2) == (b"ping", (DST, echo2))


def test_create_connection_through_dante_with_failover(dante, echo2):
    client = client_for(f"sockd @=127.0.0.1:{free_port()},127.0.0.1:{dante.port} "
                        "127.0.0.0/8\n")
    with clients.create_connection((DST, echo2), 10, client=client) as s:
        s.sendall(b"dante")
        assert s.recv(10) == b"dante"


@pytest.mark.parametrize("proto", ["4", "5"])
def test_bind_through_dante(dante, echo2, proto):
    bind_round_trip(client_for(f"sockd @=127.0.0.1:{dante.port} proto={proto} 127.0.0.0/8\n"),
                    echo2)


def udp_echo(host: str):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(30)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                data, sender = sock.recvfrom(65535)
            except OSError:
                return
            sock.sendto(b"echo:" + data, sender)
    threading.Thread(target=run, daemon=True).start()
    return sock, stop


def test_udp_through_dante(dante):
    echo, stop = udp_echo(DST)
    try:
        client = client_for(f"sockd @=127.0.0.1:{dante.port} 127.0.0.0/8\n")
        with socksocket(socket.AF_INET, socket.SOCK_DGRAM, client=client) as s:
            s.settimeout(10)
            s.sendto(b"dgram", (DST, echo.getsockname()[1]))
            data, sender = s.recvfrom(100)
            assert data == b"echo:dgram" and sender == (DST, echo.getsockname()[1])
    finally:
        stop.set()
        echo.close()


def test_udp_through_sockd(sockd):
    """The library's UDP ASSOCIATE against our own server: datagrams out and back, wrapped
    and unwrapped, and the association logged."""
    echo, stop = udp_echo(DST)
    server = sockd()
    try:
        client = client_for(f"sockd @=127.0.0.1:{server.port} 127.0.0.0/8\n")
        with socksocket(socket.AF_INET, socket.SOCK_DGRAM, client=client) as s:
            s.settimeout(10)
            for n in range(3):
                s.sendto(b"dgram%d" % n, (DST, echo.getsockname()[1]))
                data, sender = s.recvfrom(100)
                assert data == b"echo:dgram%d" % n and sender == (DST, echo.getsockname()[1])
    finally:
        stop.set()
        echo.close()
    line = server.wait_log(r"terminated -- Udp from ")[0]
    assert " 3 datagrams (18 bytes) from 127.0.0.1, 3 datagrams (33 bytes) to 127.0.0.1" in line
