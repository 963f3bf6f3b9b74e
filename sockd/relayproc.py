"""Relay processes (--relay shared): each carries thousands of tunnels with epoll and splice.

Theory of operation
-------------------
With --relay shared, a worker that has sent a session's reply hands the two
sockets and the session's record (sockd.handoff) to a relay process, and goes
back to accept.  The master forks the relay processes (`Fleet`, one per CPU by
default) before the workers, and forks a new one on its tick when one dies:
a relay process that dies loses its own tunnels only, and its lane (with the
hand-offs queued in it) passes to the next.

A relay process drives, for each tunnel, the same two relay directions as a
worker's relay (sockd.relay._Direction: half-close, urgent data inline, byte
counts), from one level-triggered epoll set: a socket is watched for reading
while its direction may read, for writing while the other direction holds
bytes for it, and not at all otherwise.  Pipes come from a pool and go back
as soon as they are empty, so an idle tunnel holds two sockets and no pipe.
Once a second (the tick) it ends the tunnels idle for their --idle-timeout,
writes the byte counts into the tunnels' scoreboard slots and its title:
``sockd: relay [N tunnels, R MB/s]``.  A tunnel's end line is the worker's
(session.log_end), reasons included: eof, reset, idle, stopped.

Signals (handlers only record): TERM (sent by the master once the workers
are gone) ends the process when its last tunnel ends; INT cuts every tunnel
at once, each writing its end line (reason ``stopped``); HUP reopens the log
file.  USR1 needs nothing here: the master reads the tunnels' slots.
"""

import heapq
import logging
import os
import resource
import select
import signal
import socket
import time
from typing import NoReturn

from sockd import handoff, proctitle, relay
from sockd import log as sockd_log
from sockd.handoff import HandoffError, Tunnel
from sockd.scoreboard import Scoreboard
from sockd.session import log_end
from sockd.settings import Settings
from sockd.worker import (
    EXIT_BOOT_ERROR,
    HELD_AT_FORK,
    drop_privileges,
    fork_child,
    run_child,
)

log = logging.getLogger("sockd")

TICK = 1.0
SMALL_PIPE = 1 << 16        # a tunnel's first pipe; a busy one grows (relay.PIPE_SIZE)
SPARE_PIPES = 64            # empty pipes a relay process keeps
RESERVED_FDS = 256          # descriptors kept for pipes, the log, the lanes
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_READ_EVENTS = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard one (children inherit it);
    returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def tunnels_per_process(fd_limit: int) -> int:
    """Tunnels one relay process can hold with *fd_limit* descriptors: two sockets each."""
    return max(1, (fd_limit - RESERVED_FDS) // 2)


class _Carried:
    """One tunnel in a relay process: its record, sockets, directions and epoll masks."""

    __slots__ = ("client", "client_fd", "down", "last", "masks", "record", "server",
                 "server_fd", "shown", "slot", "up")

    def __init__(self, record: Tunnel, client: socket.socket, server: socket.socket,
                 pipes: relay.PipePool) -> None:
        self.record, self.client, self.server = record, client, server
        self.client_fd, self.server_fd = client.fileno(), server.fileno()
        self.up = relay._Direction(client, server, pipes)
        self.down = relay._Direction(server, client, pipes)
        self.masks = {self.client_fd: 0, self.server_fd: 0}
        self.last = time.monotonic()
        self.slot: int | None = None
        self.shown = (-1, -1)

    def counts(self) -> tuple[int, int]:
        return self.record.from_client + self.up.count, self.record.from_server + self.down.count

    def wanted(self, fd: int) -> int:
        """The epoll events to watch on *fd*: read while its direction may read, write while
        the other direction holds bytes for it."""
        out, into = (self.up, self.down) if fd == self.client_fd else (self.down, self.up)
        return (_IN if out.wants_read else 0) | (_OUT if into.held else 0)


class RelayProcess:
    """One relay process; `run()` is called in the child and never returns."""

    def __init__(self, lane: int, lanes: handoff.Lanes, settings: Settings,
                 board: Scoreboard, listeners: list[socket.socket]) -> None:
        """Runs in the master, before fork: stores values, touches nothing."""
        self.lane = lane
        self.lanes = lanes
        self.settings = settings
        self.board = board
        self.listeners = listeners
        self.master_pid = os.getpid()
        self.tunnels: dict[int, _Carried] = {}      # fd -> tunnel, both fds of each
        self.count = 0
        self.pending: list[int] = []
        self.stopping = False
        self.free_slots: list[int] = []
        self.next_slot = 0
        self.moved = 0          # bytes of the tunnels that have ended
        self.last_moved = 0
        self.next_tick = 0.0
        self.warned_slots = False

    # -- life of the child ------------------------------------------------------

    def run(self) -> NoReturn:
        """Runs in the child: boot, relay, exit (sockd.worker.run_child).  Never returns."""
        run_child("relay process", self.init_process, self.serve_forever)

    def init_process(self) -> None:
        """Runs in the child: signals, what is not ours closed, privileges, epoll, title."""
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        for signum in _SIGNALS:
            signal.signal(signum, self.record_signal)
        for signum in (signal.SIGUSR1, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_AT_FORK)   # see worker.HELD_AT_FORK
        for sock in self.listeners:     # a stopping server's port must close with the master
            sock.close()
        self.inbox = self.lanes.receive_ends[self.lane]
        for sock in self.lanes.send_ends + self.lanes.receive_ends:
            if sock is not self.inbox:
                sock.close()
        drop_privileges(self.settings.user)
        self.pipes = relay.PipePool(SMALL_PIPE, spares=SPARE_PIPES, lend=True)
        self.poller = select.epoll()
        self.poller.register(self.wake_r, _IN)
        self.poller.register(self.inbox.fileno(), _IN)
        self.board.set_high_water(self.lane, 0)
        self.show_title(0.0)

    def record_signal(self, signum, frame) -> None:
        self.pending.append(signum)

    def serve_forever(self) -> None:
        """The loop: wait, serve what is ready, act on signals, tick."""
        inbox = self.inbox.fileno()
        while not (self.stopping and not self.count):
            timeout = max(0.0, self.next_tick - time.monotonic())
            try:
                events = self.poller.poll(timeout)
            except InterruptedError:
                events = []
            for fd, mask in events:
                if fd == inbox:
                    self.take_handoffs()
                elif fd == self.wake_r:
                    self._drain_wakeups()
                elif (tunnel := self.tunnels.get(fd)) is not None:
                    self.serve(tunnel, fd, mask)
            while self.pending:
                self.handle(self.pending.pop(0))
            if time.monotonic() >= self.next_tick:
                self.tick()
        self.take_handoffs()        # none may wait unseen when we leave
        self.cut_all()

    def handle(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            sockd_log.reopen()
        elif signum == signal.SIGTERM:
            self.stopping = True
        elif signum == signal.SIGINT:
            self.stopping = True
            self.cut_all()

    # -- tunnels ------------------------------------------------------------------

    def take_handoffs(self) -> None:
        """Every hand-off waiting in the lane becomes a tunnel."""
        while True:
            try:
                record, client, server = handoff.receive(self.inbox)
            except (BlockingIOError, InterruptedError):
                return
            except HandoffError as exc:
                log.error("error -- relay process %d: %s", os.getpid(), exc)
                continue
            self.start(record, client, server)

    def start(self, record: Tunnel, client: socket.socket, server: socket.socket) -> None:
        for sock in (client, server):
            sock.setblocking(False)
            relay.read_urgent_inline(sock)
        tunnel = _Carried(record, client, server, self.pipes)
        self.tunnels[tunnel.client_fd] = self.tunnels[tunnel.server_fd] = tunnel
        self.count += 1
        tunnel.slot = self.claim_slot()
        if tunnel.slot is not None:
            self.board.hold_tunnel(tunnel.slot, os.getpid(), record.wall_started,
                                   record.source, record.client, record.user, record.what,
                                   record.from_client,
                                   (record.worker_pid, record.worker_session))
        try:
            tunnel.up.preload(record.pending)
            if tunnel.up.held:
                tunnel.up.drain()
        except OSError as exc:
            if exc.errno not in relay._RESET:
                raise
            self.finish(tunnel, "reset")
            return
        self.watch(tunnel)

    def serve(self, tunnel: _Carried, fd: int, events: int) -> None:
        """Move what *events* on *fd* allow, pass half-closes on, end a finished tunnel."""
        tunnel.last = time.monotonic()
        try:
            for d in (tunnel.up, tunnel.down):
                if d.dst == fd and d.held and events & _WRITE_EVENTS:
                    d.drain()
                if d.src == fd and d.wants_read and events & _READ_EVENTS:
                    d.pump()
                d.pass_end()
        except OSError as exc:
            if exc.errno in relay._RESET:
                self.finish(tunnel, "reset")
                return
            raise
        if tunnel.up.done and tunnel.down.done:
            self.finish(tunnel, "eof")
        else:
            self.watch(tunnel)

    def watch(self, tunnel: _Carried) -> None:
        """Bring the epoll set in line with what each socket of *tunnel* waits for."""
        for fd, had in tunnel.masks.items():
            want = tunnel.wanted(fd)
            if want == had:
                continue
            if not had:
                self.poller.register(fd, want)
            elif want:
                self.poller.modify(fd, want)
            else:
                self.poller.unregister(fd)  # nothing to wait for: no HUP may wake us either
            tunnel.masks[fd] = want

    def finish(self, tunnel: _Carried, reason: str) -> None:
        """End *tunnel*: close everything it holds, free its slot, write its end line."""
        for fd, had in tunnel.masks.items():
            if had:
                self.poller.unregister(fd)
            del self.tunnels[fd]
        self.count -= 1
        tunnel.up.close()
        tunnel.down.close()
        tunnel.client.close()
        tunnel.server.close()
        up, down = tunnel.counts()
        self.moved += up + down
        if tunnel.slot is not None:
            self.board.release(tunnel.slot)
            heapq.heappush(self.free_slots, tunnel.slot)
        record = tunnel.record
        log_end("timed-out" if reason == "idle" else "terminated", record.story, up,
                record.client, down, record.dest, record.started, reason)

    def cut_all(self) -> None:
        for tunnel in list({id(t): t for t in self.tunnels.values()}.values()):
            self.finish(tunnel, "stopped")

    def claim_slot(self) -> int | None:
        """The lowest free tunnel slot of our lane (so that scans stop early), or None."""
        span = self.board.lane(self.lane)
        if self.free_slots:
            return heapq.heappop(self.free_slots)
        if self.next_slot < len(span):
            self.next_slot += 1
            self.board.set_high_water(self.lane, self.next_slot)
            return span.start + self.next_slot - 1
        if not self.warned_slots:
            self.warned_slots = True
            log.warning("warning -- relay process %d: no scoreboard slot left; further "
                        "tunnels are carried but not shown", os.getpid())
        return None

    # -- once a second --------------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        elapsed = now - self.next_tick + TICK if self.next_tick else TICK
        self.next_tick = now + TICK
        if os.getppid() != self.master_pid:
            self.stopping = True    # the master is gone: finish what we carry, take no more
        wall = time.time()
        total = self.moved
        for tunnel in list({id(t): t for t in self.tunnels.values()}.values()):
            if now - tunnel.last >= tunnel.record.idle_timeout:
                self.finish(tunnel, "idle")
                continue
            counts = tunnel.counts()
            total += counts[0] + counts[1]
            if tunnel.slot is not None and counts != tunnel.shown:
                tunnel.shown = counts
                self.board.count_bytes(tunnel.slot, wall, *counts)
        rate = max(0, total - self.last_moved) / max(elapsed, 1e-3)
        self.last_moved = total
        self.show_title(rate)

    def show_title(self, rate: float) -> None:
        title = f"sockd: relay [{self.count} tunnels, {rate / 1e6:.1f} MB/s]"
        if title != getattr(self, "_title", None):
            self._title = title
            proctitle.set_title(title)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass


class Fleet:
    """The master's relay processes: forks them, replaces the dead, signals them."""

    def __init__(self, settings: Settings, board: Scoreboard,
                 listeners: list[socket.socket]) -> None:
        """Runs in the master: the lanes are made here, before any fork."""
        self.settings = settings
        self.board = board
        self.listeners = listeners
        self.lanes = handoff.Lanes(settings.relay_count)
        handoff.lanes = self.lanes          # every worker forked from here on inherits them
        self.pids: dict[int, int] = {}      # pid -> lane
        self.stopping = False
        self.failed = False                 # one could not start: the server must stop

    def spawn_missing(self) -> None:
        """Fork a relay process for every lane without one (not once stopping)."""
        if self.stopping:
            return
        for lane in sorted(set(range(len(self.lanes.receive_ends))) - set(self.pids.values())):
            process = RelayProcess(lane, self.lanes, self.settings, self.board, self.listeners)
            self.pids[fork_child(process.run)] = lane

    def reap(self, pid: int, status: int) -> bool:
        """The relay process *pid* has exited: free its lane's slots; False when *pid*
        is not one of ours.  The tick forks its successor, unless it could not start
        (`failed`: the master stops the server)."""
        lane = self.pids.pop(pid, None)
        if lane is None:
            return False
        lost = sum(1 for s in self.board.tunnels() if s.pid == pid)
        self.board.clear_lane(lane)
        if os.WIFSIGNALED(status):
            log.error("error -- relay process %d killed by signal %d (%d tunnels lost)", pid,
                      os.WTERMSIG(status), lost)
        elif os.WEXITSTATUS(status) == EXIT_BOOT_ERROR:
            log.error("error -- relay process %d could not start; stopping the server", pid)
            self.failed = self.stopping = True
        elif os.WEXITSTATUS(status) != 0:
            log.error("error -- relay process %d exited with status %d (%d tunnels lost)",
                      pid, os.WEXITSTATUS(status), lost)
        return True

    def signal(self, signum: int) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Once no worker is left: each relay process leaves when its last tunnel ends."""
        if not self.stopping:
            self.stopping = True
            self.signal(signal.SIGTERM)

    def cut(self) -> None:
        """Cut every tunnel now (INT, the end of --grace): each writes its end line, and
        each process leaves; the master reaps them in its loop."""
        self.stopping = True
        self.signal(signal.SIGINT)

    def halt(self, timeout: float) -> None:
        """Cut every tunnel, wait up to *timeout* seconds for the processes, kill the rest."""
        self.cut()
        deadline = time.monotonic() + timeout
        while self.pids and time.monotonic() < deadline:
            for pid in list(self.pids):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if done:
                    self.reap(pid, status)
            time.sleep(0.01)    # bounded by *timeout*: the tunnels' end lines being written
        self.signal(signal.SIGKILL)
        for pid in list(self.pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.pids.pop(pid, None)

    def status_lines(self) -> None:
        """USR1: one line for the relay processes, one per tunnel they carry."""
        tunnels = self.board.tunnels()
        log.info("status -- %d relay processes, %d tunnels", len(self.pids), len(tunnels))
        for s in tunnels:
            log.info("status -- relay %d: relaying %s@%s %s", s.pid, s.user or "-", s.client,
                     s.destination or "-")
