"""The SOCKS client socket: a drop-in `socket.socket` routed by socks.conf.

This module owns the client's I/O: connecting a socket direct, through a list of sockd servers,
or refusing it, as socks.conf says (`clients.conf`); driving the negotiation
(`clients.handshake`) with a deadline; SOCKS BIND for a socket bound after a connect (the
original's Rbind/Rgetsockname/Raccept); UDP through SOCKS5 UDP ASSOCIATE; `create_connection`.

How a call goes (socks.conf(5) is the user's version):

- ``connect((host, port))``: the route of (host, port, effective user) decides.  Direct: the
  plain connect.  Denied: `SocksRefused`.  Through sockd: the socket's own descriptor is
  connected to the first server of the list that answers (`clients.servers` orders them and
  remembers which are down), then negotiates CONNECT; a host given by name is sent by name
  (SOCKS4a/5: the proxy resolves it) except on a ``proto=4`` line when it resolves here.
  ``getpeername`` then gives the real peer, ``getsockname`` the proxy's outgoing address, and
  ``fileno`` the real descriptor, so select() and poll() work.
- Non-blocking sockets: ``connect`` raises ``BlockingIOError(EINPROGRESS)`` and a helper thread
  negotiates (the original forked a helper); until it is done, a second connect gives EALREADY,
  and ``getsockopt(SO_ERROR)``, send and receive calls wait for it (bounded by the deadline).
  So selectors and asyncio's ``sock_connect`` work unchanged.
- ``bind(("", 0))`` (any address, port 0) on a TCP socket after a connect through sockd is a
  SOCKS BIND to the host and port of that last connect (CSTC's SHORTENED_RBIND): ``getsockname``
  gives the address the proxy listens on (what an FTP PORT command needs), ``listen`` does
  nothing, ``accept`` waits for the second reply and returns a socket whose ``getpeername`` is
  the peer that connected.  A bind to a given port or address stays local: that is a server.
- UDP: ``sendto`` a destination routed through sockd opens one SOCKS5 UDP ASSOCIATE per socket
  (its TCP control connection lives as long as the socket) and wraps datagrams in RFC 1928 §7
  headers; ``recvfrom`` unwraps what comes from the relay.

Every handshake has a deadline: the socket's timeout if it has one, else `HANDSHAKE_TIMEOUT`.
It must not: resolve a destination name the proxy is to resolve, read more bytes of a reply
than the reply holds (the first relayed bytes belong to the program), or route the connections
it makes to the servers themselves.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import select
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from clients import conf as socks_conf
from clients.conf import Action, Route, Server, SocksConf
from clients.errors import SocksError, SocksProtocolError, SocksRefused, SocksTimeout
from clients.handshake import ClientHandshake
from clients.servers import ServerMemory
from sockd.protocol import Command, build_udp_datagram, parse_udp_datagram

# The real things, taken before socksify replaces them in the socket module.
RealSocket = socket.socket
real_create_connection = socket.create_connection

HANDSHAKE_TIMEOUT = 30.0    # seconds for connecting to a server and negotiating, by default
SERVER_CONNECT_TIMEOUT = 10.0   # at most this long for one server's TCP connect
HOOK_TIMEOUT = 30.0         # a line's shell command is killed after this long
_INET = (socket.AF_INET, socket.AF_INET6)


# ---------------------------------------------------------------------------------------------
# The process's routing context


class SocksClient:
    """The routing of a process: socks.conf (re-read when its file changes, as the original
    re-read it on every call), credentials, and the memory of down servers."""

    def __init__(self, *, conf: SocksConf | None = None, environ: Mapping[str, str] | None = None,
                 username: str | None = None, password: str | None = None,
                 down_for: float | None = None, handshake_timeout: float | None = None) -> None:
        self.environ = environ
        self._fixed_conf = conf
        self._conf: SocksConf | None = None
        self._stamp: object = None
        self.username = username
        self.password = password
        self.memory = ServerMemory() if down_for is None else ServerMemory(down_for)
        self.handshake_timeout = handshake_timeout or HANDSHAKE_TIMEOUT
        self._lock = threading.Lock()

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def conf(self) -> SocksConf:
        if self._fixed_conf is not None:
            return self._fixed_conf
        stamp = self._file_stamp()
        with self._lock:
            if self._conf is None or stamp != self._stamp:
                self._conf = socks_conf.from_environment(self.env)
                self._stamp = stamp
            return self._conf

    def _file_stamp(self) -> object:
        path = self.env.get("SOCKS_CONF") or socks_conf.DEFAULT_CONF
        try:
            st = os.stat(path)
        except OSError:
            st = None
        return (path, self.env.get("SOCKS_SERVER"),
                None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino))

    def credentials(self) -> tuple[str | None, str | None]:
        return (self.username or self.env.get("SOCKS_USERNAME"),
                self.password if self.password is not None else self.env.get("SOCKS_PASSWORD"))

    def route(self, host: str, port: int, command: str = "connect") -> Route:
        """The route of a connection to (host, port); runs the deciding line's shell command."""
        route = self.conf().route(host, port, effective_user(), local_address)
        if route.line is not None and route.line.shell_command is not None:
            run_hook(socks_conf.hook_command(route.line, dst=host, port=port,
                                             user=effective_user(), login=login_name(),
                                             command=command, client=socket.gethostname()))
        return route


_default = SocksClient()
_last_connect: tuple[str, int] | None = None     # (host, port) of the last proxied connect


def default_client() -> SocksClient:
    return _default


def configure(**settings) -> SocksClient:
    """Replace the process's routing context: ``conf`` (a `SocksConf`), ``environ``,
    ``username``, ``password``, ``down_for``, ``handshake_timeout`` (see `SocksClient`)."""
    global _default
    _default = SocksClient(**settings)
    return _default


def effective_user() -> str:
    """The name of the effective uid: what socks.conf's ``*=`` and SOCKS4's USERID use."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def login_name() -> str:
    try:
        return os.getlogin()
    except OSError:
        try:
            return pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            return str(os.getuid())


def local_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return ipaddress.ip_address(infos[0][4][0].split("%")[0])


def run_hook(command: str | None) -> None:
    """Run an expanded shell command in the background (no terminal, its own session), killed
    after `HOOK_TIMEOUT`; a failure to start it is not the connection's failure."""
    if not command:
        return
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
    except OSError:
        return

    def reap() -> None:
        try:
            proc.wait(HOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            proc.wait()
    threading.Thread(target=reap, name="socks-hook", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Low-level I/O with a deadline, on a non-blocking descriptor


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _wait(sock: RealSocket, *, read: bool, deadline: float) -> None:
    fd = sock.fileno()
    while True:
        r, w, _ = select.select([fd] if read else [], [] if read else [fd], [],
                                _remaining(deadline))
        if r or w:
            return


def _tcp_connect(sock: RealSocket, address: tuple, deadline: float) -> int:
    """Connect the non-blocking ``sock``; 0 or an errno.  TimeoutError past the deadline."""
    err = RealSocket.connect_ex(sock, address)
    if err == errno.ECONNABORTED:      # Linux: the first retry after a refusal says this
        err = RealSocket.connect_ex(sock, address)
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY):
        _wait(sock, read=False, deadline=deadline)
        err = RealSocket.getsockopt(sock, socket.SOL_SOCKET, socket.SO_ERROR)
    return err


def _send_all(sock: RealSocket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = RealSocket.send(sock, view)
        except (BlockingIOError, InterruptedError):
            _wait(sock, read=False, deadline=deadline)
            continue
        view = view[sent:]


def _recv_byte(sock: RealSocket, deadline: float) -> bytes:
    """One byte: replies are read byte by byte so that no relayed byte is taken with them."""
    while True:
        try:
            data = RealSocket.recv(sock, 1)
        except (BlockingIOError, InterruptedError):
            _wait(sock, read=True, deadline=deadline)
            continue
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
        return data


def _negotiate(sock: RealSocket, handshake: ClientHandshake, deadline: float) -> None:
    """Send the handshake and read replies until the request's first reply."""
    out = handshake.start()
    while not handshake.done:
        if out:
            _send_all(sock, out, deadline)
        out = handshake.receive(_recv_byte(sock, deadline))


def _second_reply(sock: RealSocket, handshake: ClientHandshake, deadline: float | None) -> None:
    while handshake.second is None:
        if deadline is None:
            select.select([sock.fileno()], [], [])
            try:
                byte = RealSocket.recv(sock, 1)
            except (BlockingIOError, InterruptedError):
                continue
            if not byte:
                raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
        else:
            byte = _recv_byte(sock, deadline)
        handshake.receive(byte)


# ---------------------------------------------------------------------------------------------
# The socket


@dataclass
class _Proxied:
    """What a socket knows once it went through a server."""

    server: Server
    server_address: tuple
    peer: tuple | None = None            # the real peer (host, port)
    bound: tuple | None = None           # the proxy's address for this connection
    handshake: ClientHandshake | None = None   # a BIND waiting for its second reply


class socksocket(RealSocket):  # noqa: N801 (named like the class it stands in for)
    """A `socket.socket` whose connections follow socks.conf (see the module docstring)."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None, *, client: SocksClient | None = None) -> None:
        super().__init__(family, type, proto, fileno)
        self._client = client
        self._proxied: _Proxied | None = None
        self._route: Route | None = None          # preset by create_connection
        self._pending: threading.Thread | None = None
        self._pending_error: OSError | None = None
        self._udp: _Association | None = None
        self._udp_default: tuple | None = None

    @property
    def socks_client(self) -> SocksClient:
        return self._client or _default

    def _is_tcp(self) -> bool:
        return self.family in _INET and self.type == socket.SOCK_STREAM

    def _is_udp(self) -> bool:
        return self.family in _INET and self.type == socket.SOCK_DGRAM

    # -- connect ------------------------------------------------------------------------------

    def connect(self, address) -> None:
        if self._pending is not None:
            self._connect_again()
            return
        if self._is_udp():
            self._udp_connect(address)
            return
        if not self._is_tcp():
            super().connect(address)
            return
        host, port = _host_port(address)
        route = self._route or self.socks_client.route(host, port)
        self._route = None
        if route.action is Action.DENY:
            raise SocksRefused(f"connection to {host}:{port} denied by socks.conf "
                               f"({route.reason})")
        if route.action is Action.DIRECT:
            super().connect(address)
            return
        if self.gettimeout() == 0.0:
            self._start_background(route, host, port)
        self._through(route, Command.CONNECT, host, port)

    def connect_ex(self, address) -> int:
        try:
            self.connect(address)
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    def _connect_again(self) -> None:
        assert self._pending is not None
        if self._pending.is_alive():
            raise OSError(errno.EALREADY, os.strerror(errno.EALREADY))
        error = self._finish_pending()
        if error is not None:
            raise error
        raise OSError(errno.EISCONN, os.strerror(errno.EISCONN))

    def _start_background(self, route: Route, host: str, port: int) -> None:
        def work() -> None:
            try:
                self._through(route, Command.CONNECT, host, port)
            except OSError as e:
                self._pending_error = e
        self._pending = threading.Thread(target=work, name="socks-connect", daemon=True)
        self._pending.start()
        raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))

    def _finish_pending(self) -> OSError | None:
        """Wait for a non-blocking connect's helper; its error, reported once."""
        if self._pending is None:
            return None
        self._pending.join(self.socks_client.handshake_timeout + SERVER_CONNECT_TIMEOUT)
        if self._pending.is_alive():
            return SocksTimeout("SOCKS handshake still running")
        error, self._pending_error = self._pending_error, None
        self._pending = None
        return error

    def _ready(self) -> None:
        """Before any I/O: a pending non-blocking connect must be done."""
        if self._pending is not None:
            error = self._finish_pending()
            if error is not None:
                raise error

    def _through(self, route: Route, command: Command, host: str, port: int
                 ) -> ClientHandshake:
        """Connect this socket to the first server of ``route`` that answers and negotiate
        ``command``; the granted handshake."""
        global _last_connect
        client = self.socks_client
        timeout = self.gettimeout()
        deadline = time.monotonic() + (timeout if timeout else client.handshake_timeout)
        saved = timeout
        if timeout != 0.0:
            RealSocket.settimeout(self, 0.0)
        try:
            handshake = self._try_servers(route, command, host, port, deadline)
        finally:
            if saved != 0.0 and self.fileno() >= 0:
                RealSocket.settimeout(self, saved)
        if command is Command.CONNECT:
            _last_connect = (host, port)
        return handshake

    def _try_servers(self, route: Route, command: Command, host: str, port: int,
                     deadline: float) -> ClientHandshake:
        client = self.socks_client
        failures: list[str] = []
        renew = False
        for server in client.memory.order(route.servers, route.order):
            try:
                address = self._server_address(server)
            except OSError as e:
                failures.append(f"{server}: {e.strerror or e}")
                client.memory.mark_down(server)
                continue
            if renew:
                self._renew()
                renew = False
            try:
                err = _tcp_connect(self, address, min(deadline, time.monotonic()
                                                      + SERVER_CONNECT_TIMEOUT))
            except TimeoutError:
                err = errno.ETIMEDOUT
                renew = True    # still trying to connect: only a new descriptor stops it
            if err:
                failures.append(f"{server}: {os.strerror(err)}")
                client.memory.mark_down(server)
                if time.monotonic() >= deadline:
                    break
                continue
            client.memory.mark_up(server)
            return self._negotiate_with(server, address, route, command, host, port, deadline)
        raise SocksRefused(f"no SOCKS server reachable for {host}:{port} "
                           f"({'; '.join(failures) or 'no server'})")

    def _negotiate_with(self, server: Server, address: tuple, route: Route, command: Command,
                        host: str, port: int, deadline: float) -> ClientHandshake:
        version, dst = wire_destination(route.proto, host)
        username, password = self.socks_client.credentials()
        handshake = ClientHandshake(version, command, dst, port, userid=effective_user(),
                                    username=username, password=password, server=str(server))
        try:
            _negotiate(self, handshake, deadline)
        except TimeoutError:
            raise SocksTimeout(f"{server}: no SOCKS reply in time", server=str(server)) \
                from None
        except ValueError as e:
            raise SocksProtocolError(f"cannot ask {server} for {host}: {e}",
                                     server=str(server)) from None
        assert handshake.reply is not None
        bound = _reply_address(handshake.reply.host, handshake.reply.port, address, self.family)
        self._proxied = _Proxied(server, address, (host, port), bound)
        return handshake

    def _server_address(self, server: Server) -> tuple:
        infos = socket.getaddrinfo(server.host, server.port, self.family, socket.SOCK_STREAM)
        if not infos:
            raise OSError(errno.EADDRNOTAVAIL, f"no {self.family.name} address")
        return infos[0][4]

    def _renew(self) -> None:
        """A fresh descriptor in place of one whose connect went wrong (the original dup2'd a
        new socket onto the caller's fd too)."""
        fresh = RealSocket(self.family, self.type, self.proto)
        try:
            fresh.setblocking(False)
            os.dup2(fresh.fileno(), self.fileno())
        finally:
            fresh.close()

    # -- addresses ----------------------------------------------------------------------------

    def getpeername(self):
        self._ready()
        if self._proxied is not None and self._proxied.peer is not None:
            return _as_sockaddr(self._proxied.peer, self.family)
        if self._udp_default is not None:
            return _as_sockaddr(self._udp_default, self.family)
        return super().getpeername()

    @property
    def via_proxy(self) -> bool:
        """True when this socket's connection (or BIND) goes through a SOCKS server."""
        return self._proxied is not None

    def getsockname(self):
        self._ready()
        if self._proxied is not None and self._proxied.bound is not None:
            return _as_sockaddr(self._proxied.bound, self.family)
        return super().getsockname()

    def getsockopt(self, level, option, buflen=None):
        if level == socket.SOL_SOCKET and option == socket.SO_ERROR and self._pending:
            error = self._finish_pending()
            if error is not None:
                return error.errno or errno.ECONNREFUSED
        if buflen is None:
            return super().getsockopt(level, option)
        return super().getsockopt(level, option, buflen)

    # -- BIND ---------------------------------------------------------------------------------

    def bind(self, address) -> None:
        if self._is_tcp() and _last_connect is not None and _is_any(address):
            host, port = _last_connect
            route = self.socks_client.route(host, port, "bind")
            if route.action is Action.SOCKD:
                handshake = self._through(route, Command.BIND, host, port)
                assert self._proxied is not None
                self._proxied.peer = None
                self._proxied.handshake = handshake
                return
            if route.action is Action.DENY:
                raise SocksRefused(f"bind for {host}:{port} denied by socks.conf "
                                   f"({route.reason})")
        super().bind(address)

    def listen(self, backlog: int = 0, /) -> None:
        if self._proxied is not None:
            return              # the proxy listens (Rlisten did nothing either)
        super().listen(backlog)

    def accept(self):
        proxied = self._proxied
        if proxied is None or proxied.handshake is None:
            return super().accept()
        handshake = proxied.handshake
        timeout = self.gettimeout()
        saved = timeout
        RealSocket.settimeout(self, 0.0)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                _second_reply(self, handshake, deadline)
            except TimeoutError:
                raise TimeoutError("timed out") from None
        finally:
            RealSocket.settimeout(self, saved)
        assert handshake.second is not None
        peer = _reply_address(handshake.second.host, handshake.second.port,
                              proxied.server_address, self.family)
        conn = type(self)(self.family, self.type, self.proto, fileno=os.dup(self.fileno()),
                          client=self._client)
        conn._proxied = _Proxied(proxied.server, proxied.server_address, peer, proxied.bound)
        conn.settimeout(socket.getdefaulttimeout())
        proxied.handshake = None
        return conn, _as_sockaddr(peer, self.family)

    # -- I/O waits for a pending connect ------------------------------------------------------

    def send(self, *args):
        self._ready()
        if self._udp is not None and self._udp_default is not None:
            flags = args[1] if len(args) > 1 else 0
            return self.sendto(args[0], flags, self._udp_default)
        return super().send(*args)

    def sendall(self, *args):
        self._ready()
        return super().sendall(*args)

    def recv(self, *args):
        self._ready()
        if self._udp is not None:
            return self.recvfrom(*args)[0]
        return super().recv(*args)

    def recv_into(self, buffer, nbytes=0, flags=0):
        self._ready()
        if self._udp is not None:
            data = self.recvfrom(nbytes or len(buffer), flags)[0]
            buffer[:len(data)] = data
            return len(data)
        return super().recv_into(buffer, nbytes, flags)

    # -- UDP ----------------------------------------------------------------------------------

    def sendto(self, data, *args):
        self._ready()
        if not self._is_udp():
            return super().sendto(data, *args)
        flags, address = (0, args[0]) if len(args) == 1 else args
        host, port = _host_port(address)
        route = self.socks_client.route(host, port, "udp")
        if route.action is Action.DENY:
            raise SocksRefused(f"datagram to {host}:{port} denied by socks.conf "
                               f"({route.reason})")
        if route.action is Action.DIRECT:
            return super().sendto(data, flags, address)
        association = self._associate(route)
        packet = build_udp_datagram(_udp_host(host), port, bytes(data))
        super().sendto(packet, flags, association.relay)
        return len(data)

    def recvfrom(self, bufsize, flags=0):
        self._ready()
        if self._udp is None:
            return super().recvfrom(bufsize, flags)
        while True:
            packet, sender = super().recvfrom(bufsize + 262, flags)
            if _same_address(sender, self._udp.relay):
                try:
                    header, payload = parse_udp_datagram(packet)
                except Exception:       # noqa: BLE001 (a malformed datagram is dropped)
                    continue
                if header.frag:
                    continue
                return payload[:bufsize], _as_sockaddr((str(header.host), header.port),
                                                       self.family)
            return packet[:bufsize], sender

    def _udp_connect(self, address) -> None:
        host, port = _host_port(address)
        route = self.socks_client.route(host, port, "udp")
        if route.action is Action.DENY:
            raise SocksRefused(f"datagrams to {host}:{port} denied by socks.conf "
                               f"({route.reason})")
        if route.action is Action.DIRECT:
            super().connect(address)
            return
        self._associate(route)
        self._udp_default = (host, port)

    def _associate(self, route: Route) -> _Association:
        if self._udp is None:
            self._udp = _Association.open(self, route)
        return self._udp

    def close(self) -> None:
        if self._udp is not None:
            self._udp.control.close()
        super().close()


@dataclass
class _Association:
    """A SOCKS5 UDP ASSOCIATE: its TCP control connection and the relay's address."""

    control: socksocket
    relay: tuple

    @classmethod
    def open(cls, sock: socksocket, route: Route) -> _Association:
        if route.proto != "5":
            raise SocksRefused(f"UDP needs SOCKS5, and the socks.conf line says "
                               f"proto={route.proto}")
        control = socksocket(sock.family, socket.SOCK_STREAM, client=sock._client)
        control.settimeout(sock.gettimeout() or None)
        anywhere = "0.0.0.0" if sock.family == socket.AF_INET else "::"
        try:
            control._through(route, Command.UDP_ASSOCIATE, anywhere, 0)
        except BaseException:
            control.close()
            raise
        assert control._proxied is not None
        relay = control._proxied.bound or control._proxied.server_address
        control._proxied.peer = None
        if RealSocket.getsockname(sock)[1] == 0:
            RealSocket.bind(sock, (anywhere, 0))
        return cls(control, _as_sockaddr(relay, sock.family))


# ---------------------------------------------------------------------------------------------
# create_connection


def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                      source_address=None, *, all_errors: bool = False,
                      client: SocksClient | None = None) -> socksocket:
    """Like `socket.create_connection`, routed by socks.conf: a host name the route sends
    through sockd is resolved by the proxy, never here."""
    host, port = address
    owner = client or _default
    route = owner.route(str(host), int(port))
    if route.action is Action.DENY:
        raise SocksRefused(f"connection to {host}:{port} denied by socks.conf ({route.reason})")
    if route.action is Action.SOCKD:
        return _create_through(route, str(host), int(port), timeout, source_address, owner)
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, 0,
                                                               socket.SOCK_STREAM):
        sock = socksocket(family, kind, proto, client=client)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            RealSocket.connect(sock, sockaddr)
            return sock
        except OSError as e:
            errors.append(e)
            sock.close()
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    if all_errors:
        raise ExceptionGroup("create_connection failed", errors)
    raise errors[-1]


def _create_through(route: Route, host: str, port: int, timeout, source_address,
                    client: SocksClient) -> socksocket:
    families = []
    for server in route.servers:
        for info in socket.getaddrinfo(server.host, server.port, 0, socket.SOCK_STREAM):
            if info[0] in _INET and info[0] not in families:
                families.append(info[0])
    sock = socksocket(families[0] if families else socket.AF_INET, socket.SOCK_STREAM,
                      client=client)
    try:
        if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
            sock.settimeout(timeout)
        if source_address:
            RealSocket.bind(sock, source_address)
        sock._route = route
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------------------------
# Addresses


def _host_port(address) -> tuple[str, int]:
    host, port = address[0], address[1]
    if isinstance(host, bytes):
        host = host.decode("idna")
    return str(host), int(port)


def wire_destination(proto: str, host: str):
    """The SOCKS version and the destination as sent: an address, or a name (4a, 5)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        address = None
    if proto == "5":
        return 5, address if address is not None else host
    if address is not None:
        if address.version != 4:
            raise SocksProtocolError(f"SOCKS4 cannot carry the IPv6 address {address}")
        return 4, address
    if proto == "4":
        # A plain SOCKS4 line: resolve here when we can, else let the proxy (4a).
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
            return 4, ipaddress.IPv4Address(infos[0][4][0])
        except (OSError, IndexError):
            pass
    return 4, host


def _udp_host(host: str):
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host


def _reply_address(host, port: int, server_address: tuple, family: int) -> tuple:
    """A reply's address; an unspecified one (0.0.0.0, ::) means the server's own."""
    if isinstance(host, str):
        return (host, port)
    if host.is_unspecified:
        return (server_address[0], port)
    if family == socket.AF_INET6 and host.version == 4:
        return (f"::ffff:{host}", port)
    return (str(host), port)


def _as_sockaddr(address: tuple, family: int) -> tuple:
    host, port = address[0], address[1]
    if family == socket.AF_INET6:
        return (host, port, 0, 0)
    return (host, port)


def _same_address(a: tuple, b: tuple) -> bool:
    try:
        return (ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])) and a[1] == b[1]
    except ValueError:
        return a[:2] == b[:2]


def _is_any(address) -> bool:
    """``("", 0)``, ``("0.0.0.0", 0)``, ``("::", 0)``: a socket for whatever comes, the way an
    FTP client's data socket is made; a given port or address is a local server."""
    host, port = address[0], address[1]
    return port == 0 and host in ("", "0.0.0.0", "::", b"")


__all__ = ["HANDSHAKE_TIMEOUT", "RealSocket", "SocksClient", "SocksError", "configure",
           "create_connection", "default_client", "effective_user", "socksocket"]
