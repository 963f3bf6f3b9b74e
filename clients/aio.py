"""asyncio: open a stream to a host through the route socks.conf gives it.

This module owns the asyncio driver of the client negotiation (`clients.handshake`), with the
same routing, server order and down-server memory as the blocking socket
(`clients.sockssocket`).  `open_connection` is `asyncio.open_connection` routed by socks.conf.
"""

from __future__ import annotations

import asyncio

from clients.conf import Action
from clients.errors import SocksProtocolError, SocksRefused, SocksTimeout
from clients.handshake import ClientHandshake
from clients.sockssocket import SocksClient, default_client, effective_user, wire_destination
from sockd.protocol import Command


async def open_connection(host: str, port: int, *, client: SocksClient | None = None,
                          timeout: float | None = None, **kwargs
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``(reader, writer)`` connected to (host, port): direct, through the first server of the
    route's list that answers (a host name is resolved by the proxy), or `SocksRefused`.  The
    handshake must end within ``timeout`` seconds (default: the client's handshake timeout);
    other keyword arguments go to `asyncio.open_connection`."""
    owner = client or default_client()
    route = owner.route(host, port)
    if route.action is Action.DENY:
        raise SocksRefused(f"connection to {host}:{port} denied by socks.conf ({route.reason})")
    if route.action is Action.DIRECT:
        return await asyncio.open_connection(host, port, **kwargs)
    limit = timeout or owner.handshake_timeout
    failures: list[str] = []
    for server in owner.memory.order(route.servers, route.order):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(server.host, server.port, **kwargs), limit)
        except (TimeoutError, OSError) as e:
            failures.append(f"{server}: {getattr(e, 'strerror', None) or 'timed out'}")
            owner.memory.mark_down(server)
            continue
        owner.memory.mark_up(server)
        try:
            await asyncio.wait_for(_negotiate(reader, writer, owner, route.proto, str(server),
                                              host, port), limit)
        except TimeoutError:
            writer.close()
            raise SocksTimeout(f"{server}: no SOCKS reply in time", server=str(server)) \
                from None
        except BaseException:
            writer.close()
            raise
        return reader, writer
    raise SocksRefused(f"no SOCKS server reachable for {host}:{port} "
                       f"({'; '.join(failures) or 'no server'})")


async def _negotiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     owner: SocksClient, proto: str, server: str, host: str, port: int) -> None:
    version, dst = wire_destination(proto, host)
    username, password = owner.credentials()
    handshake = ClientHandshake(version, Command.CONNECT, dst, port, userid=effective_user(),
                                username=username, password=password, server=server)
    out = handshake.start()
    while not handshake.done:
        if out:
            writer.write(out)
            await writer.drain()
        try:
            byte = await reader.readexactly(1)   # a reply's bytes only; the rest is the stream's
        except asyncio.IncompleteReadError:
            raise SocksProtocolError(f"{server}: closed the connection during the handshake",
                                     server=server) from None
        out = handshake.receive(byte)


__all__ = ["open_connection"]
