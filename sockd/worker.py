"""A worker process: waits in accept(), serves one client to the end, waits again.

Owns the worker's life after fork: its signals, its privileges, its slot of
the scoreboard and its process title.  `Worker.__init__` runs in the master
before fork and only stores values; everything process-wide happens in
`init_process`, in the child.  Exit codes are a protocol with the master:
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

from sockd import hooks, proctitle
from sockd.log import escape
from sockd.rules import Ruleset
from sockd.scoreboard import Scoreboard, State
from sockd.session import Session, Status
from sockd.settings import Settings

log = logging.getLogger("sockd")

EXIT_OK = 0
EXIT_BOOT_ERROR = 3
_ACCEPT_AGAIN = (errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EINTR)
_SICK = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


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


class Worker(Status):
    """One worker; `run()` is called in the child and never returns."""

    def __init__(self, index: int, generation: int, listeners: list[socket.socket],
                 settings: Settings, rules: Ruleset, board: Scoreboard,
                 passwords: dict[str, str] | None) -> None:
        """Runs in the master, before fork: stores values, touches nothing."""
        self.index = index
        self.generation = generation
        self.listeners = listeners
        self.settings = settings
        self.rules = rules
        self.board = board
        self.passwords = passwords
        self.master_pid = os.getpid()
        self.stopping = False
        self.served = 0
        self.client = ""

    # -- life of the child ----------------------------------------------------

    def run(self) -> None:
        """Runs in the child: boot, serve, exit.  Never returns."""
        code = EXIT_OK
        try:
            try:
                self.init_process()
            except Exception as exc:
                log.error("error -- worker cannot start: %s", exc)
                code = EXIT_BOOT_ERROR
                return
            self.serve_forever()
        except BaseException as exc:  # noqa: BLE001 - a worker must never unwind into the master
            log.error("error -- worker %d stopped by %s: %s", os.getpid(),
                      type(exc).__name__, exc)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def init_process(self) -> None:
        """Runs in the child: signals, privileges, the wait set, the title."""
        signal.signal(signal.SIGTERM, self._record_stop)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        drop_privileges(self.settings.user)
        self.hook_runner = hooks.HookRunner(logger=log)
        self.poller = select.epoll()
        for sock in self.listeners:
            # EPOLLEXCLUSIVE: a new client wakes one idle worker, not the herd.
            self.poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.poller.register(self.wake_r, select.EPOLLIN)
        self.board.set_state(self.index, State.IDLE)
        proctitle.set_title("sockd: idle")

    def _record_stop(self, signum, frame) -> None:
        self.stopping = True

    def serve_forever(self) -> None:
        """Wait for a client, serve it, until told to stop or retired."""
        while not self.stopping and self.served < self.settings.max_requests:
            events = self.poller.poll(1.0)
            if os.getppid() != self.master_pid:
                log.info("worker %d: the master is gone; exiting", os.getpid())
                return
            self.board.heartbeat(self.index, time.time())
            for fd, _ in events:
                if fd == self.wake_r:
                    self._drain_wakeups()
                elif not self.stopping:
                    self.accept_one(fd)
        if not self.stopping:
            log.info("worker %d retiring after %d sessions", os.getpid(), self.served)

    def accept_one(self, fd: int) -> None:
        listener = next(s for s in self.listeners if s.fileno() == fd)
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            if exc.errno in _SICK:
                log.error("error -- accept(): %s", exc.strerror)
                time.sleep(0.1)
            elif exc.errno not in _ACCEPT_AGAIN:
                raise
            return
        self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        """One session, with the scoreboard and title kept true around it."""
        self.served += 1
        try:
            session = Session(conn, self.settings, self.rules, self.hook_runner, self,
                              self.passwords)
        except OSError:
            conn.close()  # the client left before we could ask who it was
            return
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

    def _stop_listening(self) -> None:
        """Let go of the listening sockets, so a stopping server stops accepting."""
        for sock in self.listeners:
            try:
                self.poller.unregister(sock.fileno())
            except (OSError, ValueError):
                pass
            sock.close()
        self.listeners = []

    # -- Status: what the session tells us ------------------------------------

    def negotiating(self, client: str) -> None:
        self.client = client
        self.board.begin_session(self.index, self.served, time.time(), client)
        proctitle.set_title(f"sockd: {client} negotiating")

    def relaying(self, user: str, what: str) -> None:
        self.board.set_request(self.index, user, what)
        who = f"{user}@{self.client}" if user else self.client
        proctitle.set_title(f"sockd: {who} {what}")

    def tick(self) -> bool:
        self.board.heartbeat(self.index, time.time())
        if self.stopping and self.listeners:
            self._stop_listening()
        self.hook_runner.reap()
        return True
