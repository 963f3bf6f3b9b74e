"""One client connection, end to end: negotiate, judge, connect, reply, relay, log.

Owns the order of those steps and the session's two log lines (one when the
request is judged, one when the session ends; formats in sockd(8)).  It never
raises for anything a client or a destination does: every such fault ends in
the protocol's error reply or a clean close, and one log line.  The wire
format belongs to sockd.protocol, the judgement to sockd.rules, the byte
moving to sockd.relay; the worker owns the process around it.
"""

import errno
import functools
import ipaddress
import logging
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from sockd import hooks, protocol, relay
from sockd.log import escape
from sockd.protocol import Command, Method, ProtocolError, Request, Socks4Reply, Socks5Reply
from sockd.rules import Decision, IdentPolicy, Query, Ruleset
from sockd.settings import Settings

log = logging.getLogger("sockd")

COMMAND_WORDS = {Command.CONNECT: "connect", Command.BIND: "bind",
                 Command.UDP_ASSOCIATE: "udp"}

# errno of a failed connect -> the SOCKS5 reply that says it (RFC 1928 §6)
_CONNECT_REPLIES = {
    errno.ECONNREFUSED: Socks5Reply.CONNECTION_REFUSED,
    errno.ENETUNREACH: Socks5Reply.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Socks5Reply.HOST_UNREACHABLE,
    errno.ETIMEDOUT: Socks5Reply.HOST_UNREACHABLE,
    errno.EADDRNOTAVAIL: Socks5Reply.HOST_UNREACHABLE,
    errno.EAFNOSUPPORT: Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED,
}


RECV_SLICE = 0.5   # seconds a negotiation read waits before looking at the clock


def _timeval(seconds: float) -> bytes:
    """A struct timeval, for SO_RCVTIMEO and SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


class SessionEnd(Exception):
    """Ends a session early; the line to log has been logged already."""


class ResolveError(Exception):
    """A requested host name did not resolve."""


service_name = functools.lru_cache(maxsize=512)(hooks.service_name)


def resolve(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first address of *name* (the one sockd connects to)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(getattr(exc, "strerror", None) or str(exc)) from None
    return ipaddress.ip_address(infos[0][4][0].partition("%")[0])


def format_host(host: protocol.Host, port: int) -> str:
    """host:port, with brackets around IPv6 and client names escaped."""
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]:{port}"
    return f"{escape(str(host))}:{port}"


class Status:
    """What a session tells the process around it; the worker overrides these."""

    def negotiating(self, client: str) -> None:
        """The client has connected; its request is not known yet."""

    def relaying(self, user: str, what: str) -> None:
        """The request is granted and bytes are flowing; *what* is escaped already."""

    def tick(self) -> bool:
        """About once a second while relaying; False ends the relay."""
        return True


@dataclass
class Session:
    """Serve one accepted client connection; `run()` returns when it is over.

    Runs in a worker process (or in the inetd child).  The client socket is
    the session's own and is closed by run().
    """

    sock: socket.socket
    settings: Settings
    rules: Ruleset
    hook_runner: hooks.HookRunner
    status: Status
    passwords: dict[str, str] | None = None
    resolver: Callable[[str], object] = resolve

    def __post_init__(self) -> None:
        self.client_addr = ipaddress.ip_address(self.sock.getpeername()[0].partition("%")[0])
        if isinstance(self.client_addr, ipaddress.IPv6Address) and self.client_addr.ipv4_mapped:
            self.client_addr = self.client_addr.ipv4_mapped
        self.client = str(self.client_addr)
        self.started = time.monotonic()
        self.handshake = protocol.ServerHandshake()
        self.request: Request | None = None
        self.user = ""
        self.ident_user = "unknown"
        self.authenticated = False
        self.decision: Decision | None = None
        self.target: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.unsent = b""   # handshake replies held back to go out with the next ones
        self._story: str | None = None

    # -- the steps, in order ------------------------------------------------

    def run(self) -> None:
        self.status.negotiating(self.client)
        try:
            self.negotiate()
            self.judge()
            self.check_ident()
            if self.request.command != Command.CONNECT:
                self.refuse_command()
            upstream = self.connect()
            self.serve(upstream)
        except SessionEnd:
            self._linger()
        finally:
            self.sock.close()

    def negotiate(self) -> None:
        """Read the client's greeting, authentication and request."""
        deadline = self.started + self.settings.negotiate_timeout
        # A blocking recv() that gives up after a slice costs one system call a
        # read, where select() then recv() cost two; the deadline is kept to
        # within one slice.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             _timeval(min(RECV_SLICE, self.settings.negotiate_timeout)))
        while self.request is None:
            event = self._next_event(deadline)
            if isinstance(event, protocol.MethodsOffered):
                self._choose_method(event)
            elif isinstance(event, protocol.UsernamePassword):
                self._authenticate(event)
            else:
                self.request = event
        self.user = self.request.userid if self.request.version == 4 else self.user

    def judge(self) -> None:
        """Apply the rules; a refusal gets its reply and its log line."""
        request = self.request
        query = Query(command=COMMAND_WORDS[request.command], src=self.client_addr,
                      user=self.user, authenticated=self.authenticated,
                      dst=request.host, port=request.port)
        try:
            self.decision = self.rules.evaluate(query, self._resolve)
        except ResolveError as exc:
            self._fail(Socks5Reply.HOST_UNREACHABLE, f"Error code: getaddrinfo() {exc}")
        if not self.decision.allowed:
            self._run_rule_hook()
            self._send(self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
            log.info("refused -- %s", self.story())
            raise SessionEnd

    def check_ident(self) -> None:
        """RFC 1413 check for rules that ask for it (?=i, ?=I, or -i/-I).

        There is no ident client yet, so identd counts as unreachable: a
        strict rule fails closed, a relaxed rule lets the request through.
        """
        policy = self.decision.ident_policy(IdentPolicy(self.settings.ident))
        if policy is IdentPolicy.NONE:
            self._run_rule_hook()
            return
        self._run_hook(self.rules.no_identd)
        if policy is IdentPolicy.STRICT:
            self._send(self.handshake.reply(Socks4Reply.NO_IDENTD)
                       if self.request.version == 4
                       else self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
            log.info("refused -- %s", self.story())
        log.info("cannot connect to identd on %s", self.client)
        if policy is IdentPolicy.STRICT:
            raise SessionEnd
        self._run_rule_hook()

    def refuse_command(self) -> None:
        self._send(self.handshake.failure_reply(Socks5Reply.COMMAND_NOT_SUPPORTED))
        log.info("failed -- %s. Error: command not supported", self.story())
        raise SessionEnd

    def connect(self) -> socket.socket:
        """Open the outbound connection; a failure gets the matching reply."""
        target = self.target or self.request.host
        if isinstance(target, str):
            try:
                target = self.target = self._resolve(target)
            except ResolveError as exc:
                self._fail(Socks5Reply.HOST_UNREACHABLE, f"Error code: getaddrinfo() {exc}")
        family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        # connect(2) honours SO_SNDTIMEO: one blocking call, no poll() around it.
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            _timeval(self.settings.connect_timeout))
        try:
            upstream.connect((str(target), self.request.port))
        except (TimeoutError, BlockingIOError):  # EINPROGRESS: the timer ran out
            upstream.close()
            self._send(self.handshake.failure_reply(Socks5Reply.HOST_UNREACHABLE))
            log.info("timed-out -- %s: connect() after %g s", self.story(),
                     self.settings.connect_timeout)
            raise SessionEnd from None
        except OSError as exc:
            upstream.close()
            code = _CONNECT_REPLIES.get(exc.errno, Socks5Reply.GENERAL_FAILURE)
            self._fail(code, f"Error code: connect() {exc.strerror}")
        return upstream

    def serve(self, upstream: socket.socket) -> None:
        """Reply with the bound address, then relay until both sides are done."""
        with upstream:
            bound_host, bound_port = upstream.getsockname()[:2]
            self._send(self.handshake.reply(
                Socks4Reply.GRANTED if self.request.version == 4 else Socks5Reply.SUCCEEDED,
                ipaddress.ip_address(bound_host.partition("%")[0]), bound_port))
            log.info("connected -- %s", self.story())
            self.status.relaying(escape(self.user, 32), f"connect {self.destination()} "
                                 f"({service_name(self.request.port)})")
            pending = self.handshake.trailing()
            if pending:
                upstream.sendall(pending)
            stats = relay.relay(self.sock, upstream, idle_timeout=self.settings.idle_timeout,
                                on_tick=self.status.tick)
        elapsed = time.monotonic() - self.started
        verdict = "timed-out" if stats.reason == "idle" else "terminated"
        log.info("%s -- %s: %d bytes from %s, %d bytes from %s, %.3f s (%s)", verdict,
                 self.story(), stats.from_client + len(pending), self.client,
                 stats.from_server, self.destination(), elapsed, stats.reason)

    # -- helpers ------------------------------------------------------------

    def _linger(self) -> None:
        """After an error reply: pass our EOF, then read what the client still sends.

        Closing with unread bytes in the socket makes the kernel answer with
        a reset, which can destroy the reply before the client reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1.0
            for _ in range(16):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                    return
                if not self.sock.recv(65536):
                    return
        except OSError:
            return

    def story(self) -> str:
        """The part every session log line shares (sockd(8), LOG LINES).

        Built once the decision is known: nothing in it changes after that (an
        ident answer, when there is an ident client, must reset self._story).
        """
        if self._story is not None and self.decision is not None:
            return self._story
        request = self.request
        where = self.decision.where if self.decision else "-"
        self._story = (f"{COMMAND_WORDS[request.command].capitalize()} from "
                f"{escape(self.user) or '-'}({escape(self.ident_user)})@{self.client} "
                f"to {self.destination()} ({service_name(request.port)}) rule={where}")
        return self._story

    def destination(self) -> str:
        return format_host(self.request.host, self.request.port)

    def _resolve(self, name: str):
        if self.target is None:
            self.target = self.resolver(name)
        return self.target

    def _next_event(self, deadline: float):
        """The next handshake event, reading from the client as needed."""
        while True:
            try:
                event = self.handshake.next_event()
            except ProtocolError as exc:
                if exc.reply:
                    self._send(exc.reply)
                log.info("error -- %s from host %s", exc.reason, self.client)
                raise SessionEnd from None
            if event is not protocol.NEED_DATA:
                return event
            self.handshake.feed(self._recv(deadline))

    def _recv(self, deadline: float) -> bytes:
        """Read from the client; the socket's SO_RCVTIMEO slices the wait (negotiate())."""
        if self.unsent:
            self._send(b"")  # the client waits for these before it says more
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                self.status.tick()
                continue  # one slice of the wait is over; look at the clock again
            except OSError as exc:
                log.info("error -- %s while negotiating with host %s", exc.strerror, self.client)
                raise SessionEnd from None
            if data:
                return data
            log.info("error -- client %s closed the connection while negotiating", self.client)
            raise SessionEnd
        log.info("timed-out -- negotiation with host %s after %g s", self.client,
                 self.settings.negotiate_timeout)
        raise SessionEnd

    def _hold(self, data: bytes) -> None:
        """Send *data* with the next reply: a client that pipelined its request then
        gets the method choice and the request's reply in one segment."""
        self.unsent += data

    def _send(self, data: bytes) -> None:
        data, self.unsent = self.unsent + data, b""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            log.info("error -- %s while replying to host %s", exc.strerror, self.client)
            raise SessionEnd from None

    def _choose_method(self, offer: protocol.MethodsOffered) -> None:
        if self.passwords is not None and Method.USERNAME_PASSWORD in offer.methods:
            method = Method.USERNAME_PASSWORD
        elif Method.NO_AUTH in offer.methods:
            method = Method.NO_AUTH
        else:
            method = Method.NO_ACCEPTABLE
        self._hold(self.handshake.choose_method(method))
        if method is Method.NO_ACCEPTABLE:
            self._send(b"")
            log.info("error -- no acceptable authentication method from host %s", self.client)
            raise SessionEnd

    def _authenticate(self, credentials: protocol.UsernamePassword) -> None:
        expected = (self.passwords or {}).get(credentials.username)
        ok = expected is not None and expected == credentials.password
        self._hold(self.handshake.auth_result(ok))
        self.user = credentials.username
        if not ok:
            self._send(b"")
            log.info("error -- authentication failed for user %s from host %s",
                     escape(credentials.username), self.client)
            raise SessionEnd
        self.authenticated = True

    def _fail(self, code: Socks5Reply, detail: str) -> None:
        self._send(self.handshake.failure_reply(code))
        log.info("failed -- %s. %s", self.story(), detail)
        raise SessionEnd

    def _run_rule_hook(self) -> None:
        self._run_hook(self.decision.rule)

    def _run_hook(self, line) -> None:
        """Start the shell command of a rule or special line, if it has one."""
        if line is None or not line.shell_command:
            return
        template, request = line.shell_command, self.request
        tokens = hooks.token_values(template, client=self.client_addr, user=self.user,
                                    ident_user=None, command=COMMAND_WORDS[request.command],
                                    dst=request.host, port=request.port, resolved=self.target)
        self.hook_runner.start(hooks.expand(template, tokens), line.where)
