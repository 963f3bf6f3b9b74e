"""The address a success reply carries is the proxy's real outbound socket.

RFC 1928 §6: BND.ADDR and BND.PORT are the address the server assigned to
connect to the target; SOCKS 4 puts them in DSTIP and DSTPORT.  The
destination records the peer of the connection it accepted, which is that
very socket, so a reply carrying 0.0.0.0:0 (or any other address) fails here.
"""

import ipaddress
import queue
import socketserver

import pytest
from socks_wire import TIMEOUT, recv_exact, socks4_connect, socks5_connect

from conftest import free_port, serve

pytestmark = pytest.mark.integration


def recording_server(host: str):
    """An echo server on *host* that puts the peer address of each connection in a queue."""
    peers: queue.Queue = queue.Queue()

    class Recorder(socketserver.BaseRequestHandler):
        def handle(self):
            peers.put(self.client_address[:2])
            while data := self.request.recv(65536):
                self.request.sendall(data)

    return serve(Recorder, host), peers


@pytest.mark.parametrize("version, host", [(4, "127.0.0.1"), (4, "127.0.0.2"),
                                           (5, "127.0.0.1"), (5, "127.0.0.2")])
def test_bound_address_is_the_outbound_socket(sockd, version, host):
    destination, peers = recording_server(host)
    server = sockd()
    connect = socks4_connect if version == 4 else socks5_connect
    sock, code, bound = connect(server.port, host, destination.server_address[1])
    with sock:
        assert code == (90 if version == 4 else 0)
        assert bound == peers.get(timeout=TIMEOUT)
        assert ipaddress.ip_address(bound[0]).is_loopback and bound[1] != 0
        sock.sendall(b"still relayed")
        assert recv_exact(sock, 13) == b"still relayed"
    destination.shutdown()
    destination.server_close()


def test_bound_address_of_an_ipv6_destination(sockd):
    """ATYP 4 in, ATYP 4 out: BND.ADDR is the IPv6 outbound socket, [::1]:port."""
    destination, peers = recording_server("::1")
    port6 = free_port("::1")
    server = sockd(args=["-l", f"[::1]:{port6}"])      # the rules let ::1 reach ::1
    sock, code, bound = socks5_connect(port6, "::1", destination.server_address[1],
                                       proxy_host="::1")
    with sock:
        assert code == 0
        assert bound == peers.get(timeout=TIMEOUT)
        assert bound[0] == "::1" and bound[1] != 0
        sock.sendall(b"over six")
        assert recv_exact(sock, 8) == b"over six"
    server.wait_log(r"connected -- Connect .*@\[::1\]:")
    destination.shutdown()
    destination.server_close()
