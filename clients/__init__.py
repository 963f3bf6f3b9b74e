"""The SOCKS client side: socks.conf routing, client sockets, socksify and the r* programs."""
