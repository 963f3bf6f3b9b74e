"""Raw SOCKS 4 and 5 CONNECT requests for the integration tests, with the reply parsed.

Written here, byte by byte, rather than with sockd's own codec, so that a
mistake in the codec cannot hide itself from the tests.
"""

import ipaddress
import socket
import struct

TIMEOUT = 15          # seconds any one connect or read may take


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly *n* bytes, or fewer if the peer closes; raises TimeoutError after TIMEOUT."""
    data = b""
    while len(data) < n and (chunk := sock.recv(n - len(data))):
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    """Everything up to the end of file; raises TimeoutError when a read waits too long."""
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data.extend(chunk)
    return bytes(data)


def socks4_connect(proxy_port: int, host: str, port: int, userid: bytes = b"u",
                   ) -> tuple[socket.socket, int, tuple[str, int]]:
    """SOCKS 4 CONNECT (4a when *host* is a name): the socket, reply code, (DSTIP, DSTPORT)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT)
    try:
        packed = socket.inet_aton(host)
        name = b""
    except OSError:
        packed, name = b"\0\0\0\1", host.encode("latin-1") + b"\0"
    sock.sendall(b"\x04\x01" + struct.pack(">H", port) + packed + userid + b"\0" + name)
    reply = recv_exact(sock, 8)
    assert len(reply) == 8 and reply[0] == 0, reply
    return sock, reply[1], (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[2:4])[0])


def socks5_connect(proxy_port: int, host: str | bytes, port: int, proxy_host: str = "127.0.0.1",
                   ) -> tuple[socket.socket, int, tuple[str, int]]:
    """SOCKS 5 CONNECT, no authentication: the socket, REP, (BND.ADDR, BND.PORT).

    *host* is an IPv4 or IPv6 literal (ATYP 1 or 4) or, as bytes, a domain name.
    """
    sock = socket.create_connection((proxy_host, proxy_port), timeout=TIMEOUT)
    sock.sendall(b"\x05\x01\x00")
    assert recv_exact(sock, 2) == b"\x05\x00"
    if isinstance(host, bytes):
        address = b"\x03" + bytes([len(host)]) + host
    else:
        ip = ipaddress.ip_address(host)
        address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    sock.sendall(b"\x05\x01\x00" + address + struct.pack(">H", port))
    head = recv_exact(sock, 4)
    assert len(head) == 4 and head[0] == 5 and head[2] == 0, head
    if head[3] == 1:
        bound = str(ipaddress.IPv4Address(recv_exact(sock, 4)))
    elif head[3] == 4:
        bound = str(ipaddress.IPv6Address(recv_exact(sock, 16)))
    else:
        raise AssertionError(f"BND.ADDR of type {head[3]} in {head!r}")
    return sock, head[1], (bound, struct.unpack(">H", recv_exact(sock, 2))[0])
