"""One client connection, end to end: negotiate, check, judge, connect, reply, relay, log.

Owns the order of those steps and the session's log lines (one when the
request is judged, one when the session ends; formats in sockd(8)), which
carry the audit record: the client's address and port, the session id that
ties a session's lines together, the destination as asked and, once known,
the address it resolved to and the outbound local address.  It never raises
for anything a client or a destination does: every such fault ends in the
protocol's error reply or a clean close, and one log line.

The judging path: the destination a client names is checked first
(sockd.destination: a valid host name, not "this host", not one of our own
listeners), and whatever the rules judge is exactly what is used: a numeric
name is judged as the address the C library reads it as, and a real name is
resolved from the very string the rules judged (sockd.resolver), under the
same deadline as the connect.  The wire format belongs to sockd.protocol, the
judgement to sockd.rules, the byte moving to sockd.relay; the worker owns the
process around it.
"""

import dataclasses
import errno
import functools
import ipaddress
import itertools
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from sockd import (
    auth,
    destination,
    failures,
    hooks,
    ident,
    listeners,
    protocol,
    relay,
    resolver,
    udp,
)
from sockd.ftpaudit import Audit
from sockd.handoff import Tunnel, hand_off
from sockd.log import escape
from sockd.passwords import PasswordTable
from sockd.protocol import Command, Method, ProtocolError, Request, Socks4Reply, Socks5Reply
from sockd.proxyproto import SIGNATURE_V2, looks_like_header
from sockd.resolver import ResolveError, ResolveTimeout
from sockd.rules import Decision, IdentPolicy, Query, Ruleset, unmapped
from sockd.scoreboard import source_key
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
# Linux: bind a source address without choosing the port until connect(2), so
# that a route file's source address does not use up ports (ip(7)).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def _timeval(seconds: float) -> bytes:
    """A struct timeval, for SO_RCVTIMEO and SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


class SessionEnd(Exception):
    """Ends a session early; the line to log has been logged already."""


class DestinationRefused(Exception):
    """Refuses one destination of a UDP association; its line has been logged already."""


service_name = functools.lru_cache(maxsize=512)(hooks.service_name)

# Sessions begun by this process: with the pid, the id that ties a session's
# log lines together (a worker's count starts at 1 after fork).
_session_numbers = itertools.count(1)


def format_host(host: protocol.Host, port: int) -> str:
    """host:port, with brackets around IPv6 and client names escaped."""
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]:{port}"
    return f"{escape(str(host))}:{port}"


@functools.lru_cache(maxsize=8)
def configured_listeners(listen: tuple[str, ...]) -> destination.OwnListeners:
    """The listeners of --listen, or the default one (every address, the socks port)."""
    if not listen:
        return destination.OwnListeners(any_address_ports=frozenset({listeners.socks_port()}))
    return destination.OwnListeners.of(listeners.parse_address(text) for text in listen)


def log_end(verdict: str, story: str, from_client: int, client: str, from_server: int,
            dest: str, started: float, reason: str) -> None:
    """The session's end line (sockd(8), LOG LINES), wherever the session ends: in its
    worker, or in a relay process (sockd.relayproc); *started* is time.monotonic()."""
    log.info("%s -- %s: %d bytes from %s, %d bytes from %s, %.3f s (%s)", verdict, story,
             from_client, client, from_server, dest, time.monotonic() - started, reason)


class Status:
    """What a session tells the process around it; the worker overrides these."""

    def negotiating(self, client: str) -> None:
        """The client has connected; its request is not known yet."""

    def identifying(self) -> None:
        """The session waits for the client host's identd."""

    def login_failed(self, address: resolver.IPAddress) -> int:
        """A login from *address* failed; how many did recently, this one included (the
        worker counts across the pool; alone, every failure is the first)."""
        return 1

    def relaying(self, user: str, what: str) -> None:
        """The request is granted and bytes are flowing; *what* is escaped already."""

    def slot_mark(self) -> tuple[int, int]:
        """The pid and session number that the scoreboard slot of this session shows (the
        worker's), passed on with a hand-off; (0, 0) where there is no slot."""
        return 0, 0

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
    passwords: PasswordTable | None = None
    lookup: Callable[[str, float], resolver.IPAddress] = resolver.lookup
    # The client's address (unmapped) and port, as accept(2) gave them or as a trusted load
    # balancer's PROXY header named them (sockd.balancer.Arrival); None: ask the socket.
    remote: tuple[resolver.IPAddress, int] | None = None
    balanced: bool = False      # remote is the client behind a trusted load balancer
    preread: bytes = b""        # what the client sent after a PROXY header

    def __post_init__(self) -> None:
        if self.remote is None:
            host, port = self.sock.getpeername()[:2]
            self.remote = resolver.address_of(host), port
        self.client_addr, self.client_port = self.remote
        self.client = str(self.client_addr)
        self.peer = format_host(self.client_addr, self.client_port)
        self.id = f"{os.getpid()}.{next(_session_numbers)}"
        self.started = time.monotonic()
        self.handshake = protocol.ServerHandshake()
        self.request: Request | None = None
        self.user = ""
        self.ident_user = "unknown"     # what identd said; "unknown" until it has answered
        self.ident_known = False
        self.ident_answer: ident.IdentAnswer | None = None  # UDP: asked once an association
        self.authenticated = False
        self.decision: Decision | None = None
        self.target: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.outbound = ""  # CONNECT: our end of the outbound connection; BIND: where we listen
        self.peer_seen = ""  # BIND: the peer that connected
        self.connect_deadline = 0.0
        self.unsent = b""   # handshake replies held back to go out with the next ones
        self._story: str | None = None
        self._dest: tuple[Request, str] | None = None
        self.handshake.feed(self.preread)
        self._head = self.preread[:len(SIGNATURE_V2)]  # the client's first bytes

    # -- the steps, in order ------------------------------------------------

    def run(self) -> None:
        self.status.negotiating(self.client)
        try:
            self.negotiate()
            if self.request.command == Command.UDP_ASSOCIATE:
                self.associate()   # its DST is the client's source: nothing to judge yet
                return
            self.check_destination()
            self.judge()
            self.check_ident()
            if self.request.command == Command.CONNECT:
                upstream = self.connect()
                self.serve(upstream, upstream.getsockname())
            elif self.request.command == Command.BIND:
                peer = self.accept_peer()
                self.serve(peer, peer.getpeername())
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
        # Urgent bytes the client sends before the relay starts must not be lost.
        relay.read_urgent_inline(self.sock)
        while self.request is None:
            event = self._next_event(deadline)
            if isinstance(event, protocol.MethodsOffered):
                self._choose_method(event)
            elif isinstance(event, protocol.UsernamePassword):
                self._authenticate(event)
            else:
                self.request = event
        self.user = self.request.userid if self.request.version == 4 else self.user

    def check_destination(self) -> None:
        """What no rule may allow: an invalid name, "this host", our own listeners.

        A numeric name (``127.1``) becomes the address the resolver would read
        it as, and is judged as that address.
        """
        host = self.request.host
        if isinstance(host, str):
            try:
                destination.host_name(host)
            except destination.InvalidName as exc:
                log.info("error -- invalid host name '%s' (%s) from host %s session=%s",
                         escape(host), exc, self.peer, self.id)
                self._send(self.handshake.failure_reply(Socks5Reply.HOST_UNREACHABLE))
                raise SessionEnd from None
            self.target = resolver.numeric(host)
        else:
            self.target = unmapped(host)
        self.connect_deadline = time.monotonic() + self.settings.connect_timeout
        if self.target is not None:
            self._check_target(self.target)

    def judge(self) -> None:
        """Apply the rules; a refusal gets its reply and its log line."""
        request = self.request
        query = Query(command=COMMAND_WORDS[request.command], src=self.client_addr,
                      user=self.user, authenticated=self.authenticated,
                      dst=self.target or request.host, port=request.port)
        self.decision = self.rules.evaluate(query, self._resolve)
        self._story = None   # the rule is known now
        if not self.decision.allowed:
            self._run_rule_hook()
            log.info("refused -- %s", self.story())
            self._send(self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
            raise SessionEnd

    def check_ident(self) -> None:
        """RFC 1413 check for rules that ask for it (?=i, ?=I, or -i/-I), as the original's;
        a refusal gets SOCKS4 92 or 93 (SOCKS5 0x02) and ends the session."""
        refusal = self._ident_refusal()
        if refusal is not None:
            self._send(self.handshake.reply(refusal) if self.request.version == 4
                       else self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
            raise SessionEnd

    def _ident_refusal(self) -> Socks4Reply | None:
        """The ident check of the rule that allowed the request: its hooks and log lines,
        and the SOCKS4 code of a refusal, or None when the request goes on.

        An identd that names another user than the client claimed refuses (93) and runs
        #BAD_ID:, whatever the policy.  No answer refuses (92) under a strict policy and
        lets the request through under a relaxed one; #NO_IDENTD: runs either way.  A
        SOCKS5 client without RFC 1929 claims no user: only "no answer" can refuse it.
        identd is asked at most once a session (a UDP association judges many destinations).
        """
        policy = self.decision.ident_policy(IdentPolicy(self.settings.ident))
        if policy is IdentPolicy.NONE:
            self._run_rule_hook()
            return None
        if self.ident_answer is None:
            self.ident_answer = self._ask_identd()
        answer = self.ident_answer
        if answer.answered:
            self.ident_user, self.ident_known, self._story = answer.user, True, None
            claimed = self._claimed_user()
            if claimed is not None and claimed != answer.user:
                self._run_hook(self.rules.bad_id)
                log.info("refused -- %s", self.story())
                log.info("*Alert*: real user is %s, not %s session=%s", escape(answer.user),
                         escape(claimed) or "-", self.id)
                return Socks4Reply.BAD_ID
            self._run_rule_hook()
            return None
        self._run_hook(self.rules.no_identd)
        if policy is IdentPolicy.STRICT:
            log.info("refused -- %s", self.story())
        log.info("cannot connect to identd on %s (%s) session=%s", self.client, answer.reason,
                 self.id)
        if policy is IdentPolicy.STRICT:
            return Socks4Reply.NO_IDENTD
        self._run_rule_hook()
        return None

    def _ask_identd(self) -> ident.IdentAnswer:
        """Ask the client host's identd, from the address the client reached."""
        if self.balanced:
            # The client's identd knows a connection to the balancer, not to us.
            return ident.IdentAnswer.no_answer("behind a load balancer")
        local_addr, local_port = self.local_address
        self.status.identifying()
        return ident.query(self.client, self.client_port, str(local_addr), local_port,
                           self.settings.ident_timeout)

    def _claimed_user(self) -> str | None:
        """Who the client says it is: the SOCKS4 USERID (empty included), the RFC 1929
        user name; None for a SOCKS5 client without username/password."""
        if self.request.version == 4:
            return self.request.userid
        return self.user if self.authenticated else None

    def connect(self) -> socket.socket:
        """Open the outbound connection; a failure gets the matching reply.

        Resolving the name (when the rules did not need to) and connecting
        share one deadline, --connect-timeout.
        """
        target = self.target or self._resolve(self.request.host)
        family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        # connect(2) honours SO_SNDTIMEO: one blocking call, no poll() around it.
        remaining = max(self.connect_deadline - time.monotonic(), 0.001)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(remaining))
        relay.read_urgent_inline(upstream)   # from its first byte on (relay.py)
        try:
            source = self._route_source(target)
            if source is not None:
                upstream.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                upstream.bind((str(source), 0))
            upstream.connect((str(target), self.request.port))
        except (TimeoutError, BlockingIOError):  # EINPROGRESS: the timer ran out
            upstream.close()
            self._time_out("connect()")
        except OSError as exc:
            upstream.close()
            code = _CONNECT_REPLIES.get(exc.errno, Socks5Reply.GENERAL_FAILURE)
            self._fail(code, f"Error code: connect() {exc.strerror}")
        return upstream

    def accept_peer(self) -> socket.socket:
        """BIND: listen, send the first reply, and wait for the expected peer.

        The listening address is the route file's for the expected peer, else
        the address of the interface the client reached (cstc-facts §4).
        Returns the peer's connection; the caller sends the second reply.
        """
        expected = self.target or self._resolve(self.request.host)
        listener = self._listen_for(expected)
        with listener:
            host, port = listener.getsockname()[:2]
            address = resolver.address_of(host)
            self.outbound = format_host(address, port)
            self._story = None
            self._send(self.handshake.reply(self._granted(), address, port))
            self.status.relaying(escape(self.user, 32), f"bind {self.dest()} "
                                 f"({service_name(self.request.port)}) waiting on "
                                 f"{self.outbound}")
            return self._wait_for_peer(listener, expected)

    def serve(self, upstream: socket.socket, bound: tuple) -> None:
        """Reply with *bound* (CONNECT: our end of the outbound connection; BIND: the
        peer's address), then relay until both sides are done."""
        with upstream:
            bound_host, bound_port = bound[:2]
            address = resolver.address_of(bound_host)
            if self.request.command == Command.CONNECT:
                self.outbound = format_host(address, bound_port)
            else:
                self.peer_seen = format_host(address, bound_port)
            self._story = None
            log.info("connected -- %s", self.story())
            self._send(self.handshake.reply(self._granted(), address, bound_port))
            self.status.relaying(escape(self.user, 32),
                                 f"{COMMAND_WORDS[self.request.command]} {self.dest()} "
                                 f"({service_name(self.request.port)})")
            pending = self.handshake.trailing()
            observe = self._ftp_audit()
            # An audited control connection stays here: relay processes have no observer.
            if observe is None and self.settings.relay == "shared" and \
                    hand_off(self.tunnel(pending), self.sock, upstream):
                return      # a relay process carries it on, and writes the end line
            if pending:
                if observe is not None:
                    observe(pending)
                upstream.sendall(pending)
            stats = relay.relay(self.sock, upstream, idle_timeout=self.settings.idle_timeout,
                                on_tick=self.status.tick, observe_client=observe)
        self._log_end("timed-out" if stats.reason == "idle" else "terminated",
                      stats.from_client + len(pending), stats.from_server, stats.reason)

    def _ftp_audit(self) -> Callable[[bytes], None] | None:
        """The relay's observer for a CONNECT to an --ftp-audit port (sockd.ftpaudit)."""
        if self.request.command != Command.CONNECT or \
                self.request.port not in self.settings.ftp_audit:
            return None
        return Audit(self.story)

    def _log_end(self, verdict: str, from_client: int, from_server: int, reason: str) -> None:
        log_end(verdict, self.story(), from_client, self.client, from_server, self.dest(),
                self.started, reason)

    def tunnel(self, pending: bytes) -> Tunnel:
        """The record a relay process needs to carry this session on (--relay shared)."""
        worker_pid, worker_session = self.status.slot_mark()
        return Tunnel(
            session=self.id, story=self.story(), client=self.client, dest=self.dest(),
            user=escape(self.user, 32), what=f"{COMMAND_WORDS[self.request.command]} "
            f"{self.dest()} ({service_name(self.request.port)})",
            source=source_key(self.client_addr), started=self.started,
            wall_started=time.time() - (time.monotonic() - self.started),
            idle_timeout=self.settings.idle_timeout, worker_pid=worker_pid,
            worker_session=worker_session,
            from_client=len(pending), pending=pending)

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

        Cached between the changes that alter it (the decision, a resolved
        address, the outbound connection, an ident answer), which set
        self._story to None.
        """
        if self._story is not None:
            return self._story
        request = self.request
        where = self.decision.where if self.decision else "-"
        story = (f"{COMMAND_WORDS[request.command].capitalize()} from "
                 f"{escape(self.user) or '-'}({escape(self.ident_user)})@{self.peer} "
                 f"to {self.dest()} ({service_name(request.port)}) rule={where} "
                 f"session={self.id}")
        if self.target is not None and self.target != request.host:
            story += f" addr={self.target}"
        if self.outbound:
            story += f" out={self.outbound}"
        if self.peer_seen:
            story += f" peer={self.peer_seen}"
        self._story = story
        return story

    def dest(self) -> str:
        """The destination as the client asked for it, HOST:PORT (host names escaped);
        made once a request (a UDP association judges one request per destination)."""
        if self._dest is None or self._dest[0] is not self.request:
            self._dest = self.request, format_host(self.request.host, self.request.port)
        return self._dest[1]

    def _resolve(self, name: str) -> resolver.IPAddress:
        """The address of the requested name, looked up once, under the connect deadline.

        The rules pass their normalised form of the name; what is looked up is
        the name exactly as the client sent it and the rules judged it
        (sockd.destination has checked it is a plain ASCII host name).
        """
        if self.target is not None:
            return self.target
        try:
            self.target = self.lookup(self.request.host,
                                      self.connect_deadline - time.monotonic())
        except ResolveTimeout:
            self._time_out("getaddrinfo()")
        except ResolveError as exc:
            self._fail(Socks5Reply.HOST_UNREACHABLE, f"Error code: getaddrinfo() {exc}")
        self._story = None
        self._check_target(self.target)
        return self.target

    def _check_target(self, address: resolver.IPAddress) -> None:
        """Refuse a CONNECT to this host's "any" address or to one of our own listeners.

        For BIND the address is the expected peer, where 0.0.0.0 means "not
        known yet" (RFC 1928 §4); neither check applies.
        """
        if self.request.command != Command.CONNECT:
            return
        why = self._target_refusal(address)
        if why is not None:
            self._refuse(why)

    def _target_refusal(self, address: resolver.IPAddress) -> str | None:
        """Why no rule may let traffic go to *address* (CONNECT, a datagram): this host's
        "any" address, or one of our own listeners; None when neither."""
        if destination.means_this_host(address):
            return "destination means this host"
        if self.reaches_own_listener(address):
            return "destination is a listener of this server"
        return None

    def reaches_own_listener(self, address: resolver.IPAddress) -> bool:
        """Would connecting to *address* at the requested port reach one of our listeners:
        those of --listen (or the default), or the port this client reached, on any local
        address (a systemd or inetd socket may listen on every address)?"""
        port = self.request.port
        return (configured_listeners(self.settings.listen).reached_by(address, port,
                                                                      resolver.is_local)
                or (port == self.local_address[1] and resolver.is_local(address)))

    @functools.cached_property
    def local_address(self) -> tuple[resolver.IPAddress, int]:
        """The address and port the client connected to (unmapped)."""
        host, port = self.sock.getsockname()[:2]
        return resolver.address_of(host), port

    def _next_event(self, deadline: float):
        """The next handshake event, reading from the client as needed."""
        while True:
            try:
                event = self.handshake.next_event()
            except ProtocolError as exc:
                reason = exc.reason
                if self.handshake.version is None and looks_like_header(self._head):
                    reason = "PROXY protocol header from an address --proxy-protocol does " \
                             "not trust"
                log.info("error -- %s from host %s session=%s", reason, self.peer, self.id)
                if exc.reply:
                    self._send(exc.reply)
                raise SessionEnd from None
            if event is not protocol.NEED_DATA:
                return event
            data = self._recv(deadline)
            self._head += data[:len(SIGNATURE_V2) - len(self._head)]
            self.handshake.feed(data)

    def _recv(self, deadline: float) -> bytes:
        """Read from the client; the socket's SO_RCVTIMEO slices the wait (negotiate())."""
        if self.unsent:
            self._send(b"")  # the client waits for these before it says more
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                # One slice of the wait is over: look at the clock again, and let
                # the worker close its listeners if it is stopping (TERM).
                self.status.tick()
                continue
            except OSError as exc:
                log.info("error -- %s while negotiating with host %s session=%s",
                         exc.strerror, self.peer, self.id)
                raise SessionEnd from None
            if data:
                return data
            if not self._head:
                # A balancer's TCP health check: connect, then close.  Not worth a line.
                log.debug("client %s closed the connection before sending a byte session=%s",
                          self.peer, self.id)
                raise SessionEnd
            log.info("error -- client %s closed the connection while negotiating session=%s",
                     self.peer, self.id)
            raise SessionEnd
        log.info("timed-out -- negotiation with host %s after %g s session=%s", self.peer,
                 self.settings.negotiate_timeout, self.id)
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
            log.info("error -- %s while replying to host %s session=%s", exc.strerror,
                     self.peer, self.id)
            raise SessionEnd from None

    def _choose_method(self, offer: protocol.MethodsOffered) -> None:
        """Username/password whenever --passwd or --pam is set and the client offers it;
        else no authentication if offered (rules with auth=password never match that)."""
        if self.authenticator.configured and Method.USERNAME_PASSWORD in offer.methods:
            method = Method.USERNAME_PASSWORD
        elif Method.NO_AUTH in offer.methods:
            method = Method.NO_AUTH
        else:
            method = Method.NO_ACCEPTABLE
        self._hold(self.handshake.choose_method(method))
        if method is Method.NO_ACCEPTABLE:
            log.info("error -- no acceptable authentication method from host %s session=%s",
                     self.peer, self.id)
            self._send(b"")
            raise SessionEnd

    def _authenticate(self, credentials: protocol.UsernamePassword) -> None:
        """RFC 1929: the file, then PAM (sockd.auth).  A failure is answered only after a
        delay that grows with the recent failures from the client's address."""
        result = self.authenticator.check(credentials.username, credentials.password)
        self._hold(self.handshake.auth_result(result.ok))
        self.user = credentials.username
        if not result.ok:
            log.info("error -- authentication failed for user %s (%s) from host %s session=%s",
                     escape(credentials.username), result.reason, self.peer, self.id)
            wait = failures.delay(self.status.login_failed(self.client_addr))
            time.sleep(min(wait, max(self.started + self.settings.negotiate_timeout
                                     - time.monotonic(), 0)))
            self._send(b"")
            raise SessionEnd
        self.authenticated = True

    @functools.cached_property
    def authenticator(self) -> auth.Authenticator:
        return auth.Authenticator(self.passwords, self.settings.pam,
                                  timeout=self.settings.negotiate_timeout)

    def _fail(self, code: Socks5Reply, detail: str) -> None:
        log.info("failed -- %s. %s", self.story(), detail)
        self._send(self.handshake.failure_reply(code))
        raise SessionEnd

    def _granted(self) -> int:
        return Socks4Reply.GRANTED if self.request.version == 4 else Socks5Reply.SUCCEEDED

    def _route_source(self, target: resolver.IPAddress) -> resolver.IPAddress | None:
        """The route file's local address for *target*, when one of its family matches."""
        routes = self.rules.routes
        found = routes.lookup(target) if routes is not None else None
        if found is None or found.interface.version != unmapped(target).version:
            return None
        return found.interface

    def _listen_for(self, expected: resolver.IPAddress) -> socket.socket:
        """A listening socket for a BIND: on the route's address for *expected*, else on
        the address the client reached (in *expected*'s family when they differ)."""
        local = self._route_source(expected) if not expected.is_unspecified else None
        if local is None:
            local = self.local_address[0]
            if not expected.is_unspecified and local.version != unmapped(expected).version:
                local = ipaddress.ip_address("::" if expected.version == 6 else "0.0.0.0")
        listener = socket.socket(socket.AF_INET6 if local.version == 6 else socket.AF_INET,
                                 socket.SOCK_STREAM)
        try:
            # The peer's connection inherits it: urgent bytes it sends before the relay
            # starts must not be lost (relay.read_urgent_inline).
            relay.read_urgent_inline(listener)
            listener.bind((str(local), 0))
            listener.listen(4)
        except OSError as exc:
            listener.close()
            self._fail(Socks5Reply.GENERAL_FAILURE, f"Error code: bind() {exc.strerror}")
        return listener

    def _wait_for_peer(self, listener: socket.socket,
                       expected: resolver.IPAddress) -> socket.socket:
        """Accept connections until one comes from *expected* (or, when the expected peer
        is 0.0.0.0 or ::, from an address the rules allow), the client hangs up, or
        --bind-timeout runs out.  Anyone else is closed, logged, and the wait goes on."""
        deadline = time.monotonic() + self.settings.bind_timeout
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        # Not POLLIN: bytes the client sends early wait for the peer; only a hang-up counts.
        poller.register(self.sock, select.POLLRDHUP)
        while (remaining := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(min(remaining, 1.0) * 1000))
            self.status.tick()
            if self.sock.fileno() in events:
                self._log_end("terminated", 0, 0, "client closed while waiting")
                raise SessionEnd
            if listener.fileno() not in events:
                continue
            try:
                conn, address = listener.accept()
            except OSError:
                continue
            peer = resolver.address_of(address[0])
            if self._expected_peer(peer, expected):
                return conn
            conn.close()
            log.info("refused -- %s. Error: connection from wrong host %s",
                     self.story(), format_host(peer, address[1]))
        log.info("timed-out -- %s: no connection after %g s", self.story(),
                 self.settings.bind_timeout)
        self._send(self.handshake.failure_reply(Socks5Reply.HOST_UNREACHABLE))
        raise SessionEnd

    def _expected_peer(self, peer: resolver.IPAddress, expected: resolver.IPAddress) -> bool:
        if not expected.is_unspecified:
            return peer == unmapped(expected)
        # RFC 1928 §4: "not known yet"; the rules judge the peer in its place.
        query = Query(command="bind", src=self.client_addr, user=self.user,
                      authenticated=self.authenticated, dst=peer, port=self.request.port)
        return self.rules.evaluate(query, self._resolve).allowed

    def _refuse(self, why: str) -> None:
        """Refused before any rule: SOCKS5 0x02, SOCKS4 91."""
        log.info("refused -- %s. Error: %s", self.story(), why)
        self._send(self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
        raise SessionEnd

    def _time_out(self, what: str) -> None:
        """Resolving and connecting ran past --connect-timeout."""
        log.info("timed-out -- %s: %s after %g s", self.story(), what,
                 self.settings.connect_timeout)
        self._send(self.handshake.failure_reply(Socks5Reply.HOST_UNREACHABLE))
        raise SessionEnd

    def _run_rule_hook(self) -> None:
        self._run_hook(self.decision.rule)

    def _run_hook(self, line) -> None:
        """Start the shell command of a rule or special line, if it has one."""
        if line is None or not line.shell_command:
            return
        template, request = line.shell_command, self.request
        tokens = hooks.token_values(template, client=self.client_addr, user=self.user,
                                    ident_user=self.ident_user if self.ident_known else None,
                                    command=COMMAND_WORDS[request.command],
                                    dst=request.host, port=request.port, resolved=self.target)
        self.hook_runner.start(hooks.expand(template, tokens), line.where)

    # -- UDP ASSOCIATE --------------------------------------------------------

    def associate(self) -> None:
        """UDP ASSOCIATE: open the relay, reply with its address, relay until the end.

        The request's DST is the client's expected source, not a destination:
        it is neither checked nor judged, and only its port (when not 0) is
        used, as the port the client's datagrams must come from.  The
        association itself is granted to a client that came through
        negotiation (and RFC 1929 authentication, when that method was
        chosen) when some ``udp`` rule could allow it a destination; the rules
        judge each destination, the first time the client sends to it
        (`_judge_datagram`).  The association stays in this worker with --relay
        shared: relay processes carry TCP tunnels only.
        """
        if not self.rules.may_allow("udp", self.client_addr, self.user, self.authenticated):
            log.info("refused -- %s. Error: no rule allows udp for this client", self.story())
            self._send(self.handshake.failure_reply(Socks5Reply.NOT_ALLOWED))
            raise SessionEnd
        local = self.local_address[0]
        if self.balanced:
            # Through a load balancer the client reached the balancer, not us, and datagrams
            # do not pass a TCP balancer: the route file names our address that leads to the
            # client, else the one the balancer reached (sockd(8), Behind a load balancer).
            local = self._route_source(self.client_addr) or local
        try:
            association = udp.Association(local, self.client_addr, self.request.port)
        except OSError as exc:
            self._fail(Socks5Reply.GENERAL_FAILURE, f"Error code: bind() {exc.strerror}")
        with association:
            address, port = association.relay_address
            self.outbound = format_host(address, port)
            self._story = None
            log.info("connected -- %s", self.story())
            self._send(self.handshake.reply(Socks5Reply.SUCCEEDED, address, port))
            self.status.relaying(escape(self.user, 32), f"udp relay {self.outbound}")
            reason = association.run(self.sock,
                                     functools.partial(self._judge_datagram, association),
                                     idle_timeout=self.settings.idle_timeout,
                                     on_tick=self.status.tick)
        n = association.counters
        log.info("%s -- %s: %d datagrams (%d bytes) from %s, %d datagrams (%d bytes) to %s, "
                 "dropped %d frag, %d malformed, %d strangers, %d refused, %d failed, "
                 "%.3f s (%s)", "timed-out" if reason == "idle" else "terminated", self.story(),
                 n.from_client, n.from_client_bytes, self.client, n.to_client,
                 n.to_client_bytes, self.client, n.frag, n.malformed, n.strangers, n.refused,
                 n.failed, time.monotonic() - self.started, reason)

    def _judge_datagram(self, association: udp.Association, host: protocol.Host,
                        port: int) -> udp.Verdict:
        """The verdict on a destination a UDP association sends to for the first time.

        The checks, rules, ident policy, hooks and log line of a CONNECT to
        *host*:*port*, except that a refusal refuses this destination, never
        the association, and no reply is sent.  The session's request,
        decision and target stand for the destination meanwhile, so that
        story() and the hooks tell of it; they are put back afterwards.
        """
        saved = (self.request, self.decision, self.target, self.outbound,
                 self.connect_deadline)
        self.request = dataclasses.replace(self.request, host=host, port=port)
        self.decision, self.target, self.outbound, self._story = None, None, "", None
        self.connect_deadline = time.monotonic() + self.settings.connect_timeout
        try:
            return self._admit_destination(association)
        except DestinationRefused:
            return udp.REFUSED
        finally:
            (self.request, self.decision, self.target, self.outbound,
             self.connect_deadline) = saved
            self._story = None

    def _admit_destination(self, association: udp.Association) -> udp.Verdict:
        """_judge_datagram's steps, in the order check_destination(), judge(),
        check_ident() and connect() take them; DestinationRefused ends them."""
        host = self.request.host
        if isinstance(host, str):
            try:
                destination.host_name(host)
            except destination.InvalidName as exc:
                log.info("error -- invalid host name '%s' (%s) from host %s session=%s",
                         escape(host), exc, self.peer, self.id)
                raise DestinationRefused from None
            self.target = resolver.numeric(host)
        else:
            self.target = unmapped(host)
        if self.target is not None:
            self._check_datagram_target()
        query = Query(command="udp", src=self.client_addr, user=self.user,
                      authenticated=self.authenticated, dst=self.target or host,
                      port=self.request.port)
        self.decision = self.rules.evaluate(query, self._resolve_datagram)
        self._story = None
        if not self.decision.allowed:
            self._run_rule_hook()
            log.info("refused -- %s", self.story())
            raise DestinationRefused
        self._check_datagram_ident(association)
        target = self._resolve_datagram(host)
        try:
            sock = association.outbound_for(target, self._route_source(target))
        except OSError as exc:
            log.info("failed -- %s. Error code: bind() %s", self.story(), exc.strerror)
            raise DestinationRefused from None
        if association.sockets().reached_by(target, self.request.port, resolver.is_local):
            log.info("refused -- %s. Error: destination is a socket of this association",
                     self.story())
            raise DestinationRefused
        self.outbound = format_host(*association.source_towards(sock, target,
                                                                self.request.port))
        self._story = None
        log.info("connected -- %s", self.story())
        return udp.Verdict(target, sock)

    def _check_datagram_ident(self, association: udp.Association) -> None:
        """The ident check for a datagram's destination: a refusal refuses that
        destination only, without a reply."""
        asking = self.ident_answer is None
        refusal = self._ident_refusal()
        if asking and self.ident_answer is not None:
            self.status.relaying(escape(self.user, 32),   # the title before identd
                                 f"udp relay {format_host(*association.relay_address)}")
        if refusal is not None:
            raise DestinationRefused

    def _resolve_datagram(self, name: str) -> resolver.IPAddress:
        """_resolve() for a datagram's destination: a failure refuses the destination."""
        if self.target is not None:
            return self.target
        try:
            self.target = self.lookup(self.request.host,
                                      self.connect_deadline - time.monotonic())
        except ResolveTimeout:
            log.info("timed-out -- %s: getaddrinfo() after %g s", self.story(),
                     self.settings.connect_timeout)
            raise DestinationRefused from None
        except ResolveError as exc:
            log.info("failed -- %s. Error code: getaddrinfo() %s", self.story(), exc)
            raise DestinationRefused from None
        self._story = None
        self._check_datagram_target()
        return self.target

    def _check_datagram_target(self) -> None:
        """_check_target() for a datagram's destination: refused with its line, no reply."""
        why = self._target_refusal(self.target)
        if why is not None:
            log.info("refused -- %s. Error: %s", self.story(), why)
            raise DestinationRefused
