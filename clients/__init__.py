"""The SOCKS client side: socks.conf routing, client sockets, socksify and test_socks_conf.

The public API (socks.conf(5) and socksify(1) are the user's version):

- `socksocket`: a drop-in `socket.socket` routed by socks.conf (CONNECT, BIND, UDP ASSOCIATE);
- `create_connection`: `socket.create_connection` routed by socks.conf;
- `open_connection` (asyncio): ``(reader, writer)`` through the proxy;
- `configure`: the process's routing (a `SocksConf`, credentials, down time of servers);
- `SocksError`, `SocksRefused`, `SocksTimeout`, `SocksProtocolError`: what a failure raises.

The client side imports the server's pure modules (the shared grammar, the codec, the hook
expansion); the server never imports this package.
"""

from clients.aio import open_connection
from clients.conf import SocksConf
from clients.errors import SocksError, SocksProtocolError, SocksRefused, SocksTimeout
from clients.sockssocket import SocksClient, configure, create_connection, socksocket

__all__ = ["SocksClient", "SocksConf", "SocksError", "SocksProtocolError", "SocksRefused",
           "SocksTimeout", "configure", "create_connection", "open_connection", "socksocket"]
