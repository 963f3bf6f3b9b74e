"""A worker process: waits in accept(), serves one client to the end, waits again.

Owns the worker's life after fork: its signals, its privileges, its slot of
the scoreboard and its process title, and the checks made at accept, before
a client costs a negotiation: a client whose address no rule can permit, or
whose address already has --max-per-source sessions, is closed at once.  A
connection from a trusted load balancer (--proxy-protocol) is judged by the
client address its PROXY header names, read first (sockd.balancer).
`Worker.__init__` runs in the master before fork and only stores values;
everything process-wide happens in `init_process`, in the child.  Exit codes
are a protocol with the master (`run_child`, which the relay processes share):
EXIT_OK after a normal retirement, EXIT_BOOT_ERROR when the worker could not
become a worker (the master then halts instead of forking again and again).
"""

import errno
import grp
import logging
import os
import pwd
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import NoReturn

from sockd import balancer, hooks, proctitle
from sockd.failures import LoginFailures
from sockd.log import escape
from sockd.passwords import PasswordTable
from sockd.rules import Ruleset, SourceVerdict
from sockd.scoreboard import Scoreboard, State, source_key
from sockd.session import Session, Status, format_host
from sockd.settings import Settings

log = logging.getLogger("sockd")

EXIT_OK = 0
EXIT_BOOT_ERROR = 3
_ACCEPT_AGAIN = (errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EINTR)
_SICK = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
REPORT_INTERVAL = 10.0      # seconds between two lines about clients refused at accept
# Held (blocked) by the master across fork and released by the child once its own handlers
# are in place: a TERM or INT sent to a worker just forked is then acted on, not recorded
# into the master's handler that the child inherited and lost.
HELD_AT_FORK = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1}


def drop_privileges(user: str | None) -> None:
    """Become *user* (and its primary group) for good; nothing to do without one.

    Raises OSError or KeyError when that is not possible.
    """
    if user is None:
        return
    entry = pwd.getpwnam(user)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    elif os.geteuid() != entry.pw_uid:
        group = grp.getgrgid(os.getegid()).gr_name
        raise PermissionError(f"cannot become user {user} when running as uid "
                              f"{os.geteuid()} (group {group})")


def fork_child(run: Callable[[], NoReturn]) -> int:
    """Fork; the child calls *run* (which never returns), the master gets its pid.  The
    signals of HELD_AT_FORK are held across the fork: the child releases them once its own
    handlers are in place."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_AT_FORK)
    try:
        pid = os.fork()
        if pid == 0:
            run()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return pid


def run_child(what: str, boot: Callable[[], None], serve: Callable[[], None]) -> NoReturn:
    """The life of a child the master forked (a worker, a relay process): *boot*, then
    *serve*, then exit, without ever unwinding into the master's code.

    The exit code is the protocol with the master: EXIT_OK after *serve* returns,
    EXIT_BOOT_ERROR when *boot* failed (the next one would fail the same way: the master
    stops instead of forking again and again), 1 when *serve* raised.  Each failure is one
    log line.
    """
    code = EXIT_OK
    try:
        try:
            boot()
        except Exception as exc:
            log.error("error -- %s cannot start: %s", what, exc)
            code = EXIT_BOOT_ERROR
            return
        serve()
    except BaseException as exc:  # noqa: BLE001 - a child must never unwind into the master
        log.error("error -- %s %d stopped by %s: %s", what, os.getpid(), type(exc).__name__, exc)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


class Reports:
    """Rate limit for one recurring log line: the first at once, then at most one line each
    `interval` seconds, which says how many went unreported in between."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.unreported = 0

    def due(self, now: float) -> int | None:
        """At monotonic time *now*: None when the line must not be written (counted instead);
        else the number of occurrences since the last line that was written."""
        if now - self.last < self.interval:
            self.unreported += 1
            return None
        count, self.unreported, self.last = self.unreported, 0, now
        return count


class Worker(Status):
    """One worker; `run()` is called in the child and never returns."""

    def __init__(self, index: int, generation: int, listeners: list[socket.socket],
                 settings: Settings, rules: Ruleset, board: Scoreboard,
                 passwords: PasswordTable | None, failures: LoginFailures) -> None:
        """Runs in the master, before fork: stores values, touches nothing."""
        self.index = index
        self.generation = generation
        self.listeners = listeners
        self.settings = settings
        self.rules = rules
        self.board = board
        self.passwords = passwords
        self.failures = failures
        self.master_pid = os.getpid()
        self.stopping = False
        self.cut = False                # INT: end the session now, with its closing line
        self.served = 0
        self.client = ""
        self.waiting = False            # the listeners are in our epoll's wait set
        self.unpermitted = Reports()
        self.over_cap = Reports()
        self.accept_failures = Reports()

    # -- life of the child ----------------------------------------------------

    def run(self) -> NoReturn:
        """Runs in the child: boot, serve, exit.  Never returns."""
        run_child("worker", self.init_process, self.serve_forever)

    def init_process(self) -> None:
        """Runs in the child: signals, privileges, the wait set, the title."""
        signal.signal(signal.SIGTERM, self._record_stop)
        signal.signal(signal.SIGINT, self._record_cut)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_AT_FORK)   # see HELD_AT_FORK
        drop_privileges(self.settings.user)
        self.hook_runner = hooks.HookRunner(logger=log)
        self.poller = select.epoll()
        self.poller.register(self.wake_r, select.EPOLLIN)
        self._join_wait_set()
        self.board.set_state(self.index, State.IDLE)
        proctitle.set_title("sockd: idle")

    def _record_stop(self, signum, frame) -> None:
        self.stopping = True

    def _record_cut(self, signum, frame) -> None:
        # The relay sees it on its next tick (within a second), returns, and the session
        # writes its closing line; the master kills a worker not relaying after a moment.
        self.stopping = self.cut = True

    def serve_forever(self) -> None:
        """Wait for a client, serve it, until told to stop or retired."""
        while not self.stopping and self.served < self.settings.max_requests:
            events = self.poller.poll(1.0)
            if self.stopping:
                # Told to stop while we slept: leave the wait set before anything else.  A
                # client the kernel woke us for at that very moment is not accepted here
                # (after a reload it is the new rules' to judge); the rearm below, in
                # another worker, or a new worker joining the wait set, finds it.
                self._stop_listening()
                break
            if os.getppid() != self.master_pid:
                log.info("worker %d: the master is gone; exiting", os.getpid())
                return
            self.board.heartbeat(self.index, time.time())
            if not events:
                self.hook_runner.reap()     # hooks of the last session may finish while idle
                self._rearm()
            for fd, _ in events:
                if fd == self.wake_r:
                    self._drain_wakeups()
                elif self.accept_one(fd):
                    break   # one client per wake-up; see _rearm for any other listener
        if not self.stopping:
            log.info("worker %d retiring after %d sessions", os.getpid(), self.served)

    def accept_one(self, fd: int) -> bool:
        """Accept a client on the listener *fd* and serve it; False when there was none."""
        listener = next(s for s in self.listeners if s.fileno() == fd)
        try:
            conn, peer = listener.accept()
        except OSError as exc:
            if exc.errno in _SICK:
                # Out of descriptors or memory: once an interval, not at every failure.
                unreported = self.accept_failures.due(time.monotonic())
                if unreported is not None:
                    log.error("error -- accept(): %s (%d more since the last report)",
                              exc.strerror, unreported)
                time.sleep(0.1)
            elif exc.errno == errno.EINVAL:
                # The master has shut the listeners down (sockd.listeners.stop): we are
                # stopping, and our SIGTERM is on its way.  Wait for it without them.
                self._leave_wait_set()
            elif exc.errno not in _ACCEPT_AGAIN:
                raise
            return False
        arrival = balancer.arrival(conn, peer, self.settings.proxy_protocol,
                                   self.settings.negotiate_timeout, self.tick)
        if arrival is None:
            conn.close()
        elif self.admit(conn, arrival):
            self.serve(conn, arrival)
        return True

    def admit(self, conn: socket.socket, arrival: balancer.Arrival) -> bool:
        """The checks at accept (sockd(8), Processes), on the real client's address.  A
        client let in has its session recorded in the scoreboard; one refused is closed
        without a reply, and the reason logged, rate-limited (not at all for a balancer's
        own health check, logged by sockd.balancer at debug level).  Cheap: a few
        big-integer operations for the rules, a scan of the scoreboard for the cap."""
        address, port = arrival.address, arrival.port
        if self.rules.source_verdict(address) is SourceVerdict.NEVER:
            conn.close()
            unreported = None if arrival.local else self.unpermitted.due(time.monotonic())
            if unreported is not None:
                log.info("refused -- client %s at accept: no rule can permit this source "
                         "(%d more since the last report)", format_host(address, port),
                         unreported)
            return False
        # Race-safe across workers: record our session first, then count.  Two workers that
        # race for the last place may both refuse; neither can let in one too many.
        source = source_key(address)
        self.board.begin_session(self.index, self.served + 1, time.time(), str(address), source)
        cap = self.settings.per_source_cap
        others = self.board.sessions_from(source) - 1 if cap else 0
        if cap and others >= cap:
            self.board.withdraw_session(self.index, self.served)
            conn.close()
            unreported = None if arrival.local else self.over_cap.due(time.monotonic())
            if unreported is not None:
                log.info("refused -- client %s at accept: %d sessions already from %s "
                         "(--max-per-source %d; %d more since the last report)",
                         format_host(address, port), others, address, cap, unreported)
            return False
        return True

    def serve(self, conn: socket.socket, arrival: balancer.Arrival) -> None:
        """One session, with the scoreboard and title kept true around it."""
        self.served += 1
        # The client's address comes from accept(2) or its PROXY header: making the session
        # asks the socket nothing, so a client already gone fails in run(), not here.
        session = Session(conn, self.settings, self.rules, self.hook_runner, self,
                          self.passwords, remote=(arrival.address, arrival.port),
                          balanced=arrival.balancer is not None, preread=arrival.preread)
        try:
            session.run()
        except Exception as exc:
            log.error("error -- internal error serving host %s: %s: %s", session.client,
                      type(exc).__name__, escape(str(exc)))
        self.hook_runner.reap()
        self.board.end_session(self.index, time.time(), 0, 0)
        proctitle.set_title("sockd: idle")

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _join_wait_set(self) -> None:
        """Wait on every listener.  EPOLLEXCLUSIVE: a new client wakes one idle worker, not
        the herd; and joining looks at the listener at once, so a client already waiting in
        the listen queue wakes us."""
        for sock in self.listeners:
            self.poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.waiting = True

    def _leave_wait_set(self) -> None:
        if self.waiting:
            for sock in self.listeners:
                try:
                    self.poller.unregister(sock.fileno())
                except (OSError, ValueError):
                    pass
            self.waiting = False

    def _rearm(self) -> None:
        """After a quiet second: leave and join the wait set again (EPOLL_CTL_MOD is not
        allowed with EPOLLEXCLUSIVE).  A wake-up is given to one waiter only; when that
        worker could not take the client (it was told to stop at that moment, or it was
        woken for two listeners at once and took one), the client would wait in the
        listen queue for the next one to arrive.  Joining looks at the listener, so an idle
        worker finds such a client within a second."""
        self._leave_wait_set()
        self._join_wait_set()

    def _stop_listening(self) -> None:
        """Let go of the listening sockets, so a stopping server stops accepting."""
        self._leave_wait_set()
        for sock in self.listeners:
            sock.close()
        self.listeners = []

    # -- Status: what the session tells us ------------------------------------

    def negotiating(self, client: str) -> None:
        # admit() has begun the session in the scoreboard; this is how the session names it.
        self.client = client
        self.board.set_client(self.index, client)
        proctitle.set_title(f"sockd: {client} negotiating")

    def login_failed(self, address) -> int:
        return self.failures.record(address, time.time())

    def identifying(self) -> None:
        proctitle.set_title(f"sockd: {self.client} asking identd")

    def relaying(self, user: str, what: str) -> None:
        self.board.set_request(self.index, user, what)
        who = f"{user}@{self.client}" if user else self.client
        proctitle.set_title(f"sockd: {who} {what}")

    def slot_mark(self) -> tuple[int, int]:
        return os.getpid(), self.served

    def tick(self) -> bool:
        self.board.heartbeat(self.index, time.time())
        if self.stopping and self.listeners:
            self._stop_listening()
        self.hook_runner.reap()
        return not self.cut
