"""The master process: keeps a pool of preforked workers and answers signals.

Theory of operation
-------------------
The master binds the listeners (the CLI does, before we get here), then only
watches.  Its loop wakes at least once a second (the tick) or when a signal
arrives, and reads like this: dispatch the recorded signals, reap the workers
that exited, then, once per tick, plan the pool (sockd.pool) and apply the plan.

Signal handlers only record the signal; `handle_<name>()` acts on it in the
loop:

* HUP re-reads the rules and the password file.  A broken file keeps the
  rules in force and says why.  A good one starts a new *generation*: new
  workers serve with the new rules, and the workers of older generations are
  asked (SIGTERM) to finish the session they are serving and leave.  Until
  they have left they still count against --max-workers: the pool never
  holds more workers than that, whatever their generation.
* TERM stops accepting within a second (every process closes its listeners),
  lets the sessions in flight finish for up to --grace seconds, then cuts
  the rest as INT does, and exits 0.
* INT stops at once: it cuts the sessions in flight (SIGINT to each worker,
  whose relay returns on its next tick, so that each session writes its
  closing line), waits CUT_WAIT seconds for the workers, kills what is
  left, and exits 0.  A second INT kills at once.
* USR1 logs one status line.

With --relay shared the master also forks the relay processes (sockd.relayproc,
`Fleet`) before the first workers, and a new one on its tick for each that
died.  HUP makes them reopen the log; TERM lets them carry their tunnels on
until the workers are gone, then each leaves with its last tunnel; INT and
the end of --grace cut their tunnels (SIGINT, each tunnel writes its closing
line) along with the workers' sessions, within the same CUT_WAIT.

A worker or relay process exiting with EXIT_BOOT_ERROR means such processes
cannot start at all (a bad --user, say): the master stops with exit status 3
rather than fork again and again.  The scoreboard slots of the workers are written by the master
only at spawn and reap.
"""

import gc
import logging
import os
import select
import signal
import socket
import time

from sockd import listeners, pool, proctitle, relayproc, route, rules, scoreboard
from sockd import log as sockd_log
from sockd import passwords as passwd_file
from sockd.failures import LoginFailures
from sockd.notify import Notifier
from sockd.passwords import PasswordTable
from sockd.scoreboard import Scoreboard, ScoreboardError, Slot, State
from sockd.settings import Settings
from sockd.worker import EXIT_BOOT_ERROR, Worker, fork_child

log = logging.getLogger("sockd")

EXIT_OK = 0
EXIT_WORKERS_FAILED = 3
TICK = 1.0
CUT_WAIT = 2 * TICK     # seconds a cut worker has to write its session's closing line
_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGCHLD)


def load_rules(settings: Settings) -> rules.Ruleset:
    """The rules in force for *settings*: the file, or the embedded default, with the
    route table of --route (None without one), so that a reload replaces both at once.

    Raises rules.ConfigError.
    """
    routes = route.load_routes(settings.route) if settings.route else None
    ruleset = rules.load(settings.config) if settings.uses_config_file \
        else rules.default_ruleset()
    ruleset.routes = routes
    return ruleset


def census(slots: list[Slot], generation: int) -> tuple[int, int]:
    """(spare, total) for pool.plan: the idle workers of *generation*, counting those still
    booting (they will be idle in a moment, as Apache counts them), and every live worker of
    every generation, busy old ones included (they hold a place under --max-workers)."""
    spare = sum(1 for s in slots if s.generation == generation
                and s.state in (State.IDLE, State.STARTING))
    return spare, len(slots)


def make_scoreboard(size: int, lanes: int = 0, per_lane: int = 0) -> Scoreboard:
    """The scoreboard in its file for `sockd --status` (sockd.scoreboard), or, when that
    cannot be made (not root, say), in memory only, with a warning.  *lanes* of *per_lane*
    tunnel slots follow the workers' *size* slots (--relay shared)."""
    try:
        return Scoreboard.create(size, scoreboard.path_for(os.getpid()), time.time(),
                                 lanes, per_lane)
    except ScoreboardError as exc:
        log.warning("warning -- no scoreboard file, sockd --status cannot see this server: %s",
                    exc)
        return Scoreboard(size, lanes, per_lane)


class Master:
    """The preforking master (gunicorn's Arbiter, Apache's prefork MPM)."""

    def __init__(self, settings: Settings, ruleset: rules.Ruleset,
                 listeners: list[socket.socket], passwords: PasswordTable | None) -> None:
        self.settings = settings
        self.rules = ruleset
        self.listeners = listeners
        self.passwords = passwords
        self.limits = pool.Limits(settings.min_spare, settings.max_spare, settings.max_workers)
        self.fd_limit = relayproc.raise_fd_limit()
        self.tunnel_room = relayproc.tunnels_per_process(self.fd_limit)
        self.board = make_scoreboard(2 * settings.max_workers, settings.relay_count,
                                     self.tunnel_room if settings.relay_count else 0)
        self.fleet = relayproc.Fleet(settings, self.board, listeners) \
            if settings.relay_count else None
        self.failures = LoginFailures()
        self.notifier = Notifier()     # before any fork: takes NOTIFY_SOCKET out of environ
        self.workers: dict[int, tuple[int, int]] = {}   # pid -> (slot, generation)
        self.generation = 1
        self.spawn_rate = 1
        self.warned = False
        self.pending: list[int] = []
        self.stop_deadline: float | None = None
        self.cut_deadline: float | None = None
        self.exit_code: int | None = None
        self.served_by_gone = 0
        self.next_tick = 0.0

    # -- the loop -----------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        self.init_signals()
        sockd_log.start_writer()
        self.log_rules_in_force()
        self.log_capacity()
        self.show_title()  # setproctitle's one-time set-up happens here, not in every worker
        gc.collect()
        gc.freeze()  # what the master built stays shared with the workers, page for page
        if self.fleet is not None:
            self.fleet.spawn_missing()      # first: the workers inherit the lanes
        self.spawn_workers(self.settings.min_spare)
        self.notifier.send("READY=1", f"MAINPID={os.getpid()}", "STATUS=serving")
        try:
            while self.exit_code is None:
                self.sleep()
                self.dispatch_signals()
                self.reap_workers()
                if self.stop_deadline is not None:
                    self.check_drained()
                elif time.monotonic() >= self.next_tick:
                    self.next_tick = time.monotonic() + TICK
                    self.maintain_pool()
                self.show_title()
        finally:
            self.board.remove()     # workers never come here: they end in os._exit
        return self.exit_code

    def init_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        for signum in _SIGNALS:
            signal.signal(signum, self.record_signal)

    def record_signal(self, signum, frame) -> None:
        self.pending.append(signum)

    def sleep(self) -> None:
        """Wait for a signal or the next tick, whichever comes first."""
        timeout = max(0.0, self.next_tick - time.monotonic()) if not self.pending else 0
        try:
            if select.select([self.wake_r], [], [], min(timeout, TICK))[0]:
                while os.read(self.wake_r, 512):
                    pass
        except (BlockingIOError, InterruptedError):
            pass

    def dispatch_signals(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            name = signal.Signals(signum).name[3:].lower()
            getattr(self, f"handle_{name}")()

    # -- signals ----------------------------------------------------------------

    def handle_chld(self) -> None:
        """Nothing: the loop reaps after every wake-up."""

    def handle_hup(self) -> None:
        sockd_log.reopen()  # first: after log rotation, every line from here on is in the new file
        if self.fleet is not None:
            self.fleet.signal(signal.SIGHUP)    # they reopen it too; their tunnels go on
        if self.stop_deadline is not None:
            log.info("reload ignored -- the server is stopping")
            return
        try:
            new_rules = load_rules(self.settings)
            new_passwords = passwd_file.load(self.settings.passwd) \
                if self.settings.passwd else None
        except (rules.ConfigError, passwd_file.PasswordError) as exc:
            log.error("error -- reload failed, the rules in force stay: %s", exc)
            return
        except OSError as exc:
            log.error("error -- reload failed, the rules in force stay: %s", exc)
            return
        self.notifier.send("RELOADING=1")
        self.rules, self.passwords = new_rules, new_passwords
        self.generation += 1
        self.board.set_generation(self.generation)
        log.info("reloaded -- generation %d", self.generation)
        self.log_rules_in_force()
        self.signal_workers(signal.SIGTERM, older_than=self.generation)
        self.spawn_workers(min(self.settings.min_spare,
                               self.settings.max_workers - len(self.workers)))
        self.notifier.send("READY=1", f"STATUS=serving, generation {self.generation}")

    def handle_term(self) -> None:
        if self.stop_deadline is None:
            log.info("stopping -- letting %d workers finish for up to %g s",
                     len(self.workers), self.settings.grace)
            self.stop_deadline = time.monotonic() + self.settings.grace
            self.notifier.send("STOPPING=1", "STATUS=letting sessions finish")
            self.close_listeners()
            self.signal_workers(signal.SIGTERM)

    def handle_int(self) -> None:
        if self.cut_deadline is not None:   # a second INT: no more waiting
            self.halt(EXIT_OK)
            return
        log.info("stopping now -- letting no session finish")
        self.notifier.send("STOPPING=1", "STATUS=cutting sessions")
        if self.stop_deadline is None:
            self.close_listeners()
        self.stop_deadline = time.monotonic()
        self.cut_sessions()

    handle_quit = handle_int

    def handle_usr1(self) -> None:
        slots = self.live_slots()
        idle = sum(1 for s in slots if s.state == State.IDLE)
        served = self.served_by_gone + sum(s.sessions for s in slots)
        log.info("status -- %d workers, %d idle, %d busy, %d sessions served, generation %d",
                 len(slots), idle, len(slots) - idle, served, self.generation)
        for s in slots:
            if s.state not in (State.IDLE, State.STARTING):
                log.info("status -- worker %d: %s %s@%s %s", s.pid, s.state.name.lower(),
                         s.user or "-", s.client, s.destination or "-")
        if self.fleet is not None:
            self.fleet.status_lines()

    # -- workers ------------------------------------------------------------------

    def spawn_workers(self, count: int) -> None:
        for _ in range(count):
            if not self.spawn_worker():
                break

    def spawn_worker(self) -> bool:
        """Fork one worker of the current generation; False when no slot is free."""
        index = self.board.free_slot()
        if index is None:
            return False
        self.board.claim(index, 0, self.generation)
        worker = Worker(index, self.generation, self.listeners, self.settings, self.rules,
                        self.board, self.passwords, self.failures)
        pid = fork_child(worker.run)
        self.board.set_pid(index, pid)
        self.workers[pid] = (index, self.generation)
        return True

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reap_worker(pid, status)

    def reap_worker(self, pid: int, status: int) -> None:
        if self.fleet is not None and self.fleet.reap(pid, status):
            if self.fleet.failed:   # a relay process could not start: nor will the next
                self.halt(EXIT_WORKERS_FAILED)
            return  # a relay process: its successor is forked on the tick
        if pid not in self.workers:
            log.debug("reaped pid %d, not a worker", pid)  # a shell hook's child, say
            return
        index, _ = self.workers.pop(pid)
        slot = self.board.read(index)
        self.served_by_gone += slot.sessions
        self.board.set_served_by_gone(self.served_by_gone)
        self.board.release(index)
        if os.WIFSIGNALED(status):
            log.error("error -- worker %d killed by signal %d (%s)", pid, os.WTERMSIG(status),
                      f"serving {slot.client}" if slot.state != State.IDLE else "idle")
        elif os.WEXITSTATUS(status) == EXIT_BOOT_ERROR:
            log.error("error -- worker %d could not start; stopping the server", pid)
            self.halt(EXIT_WORKERS_FAILED)

    def maintain_pool(self) -> None:
        """Apply one tick of the spare-worker plan: spares of the current generation, the
        ceiling over every live worker."""
        slots = self.live_slots()
        spare, total = census(slots, self.generation)
        plan = pool.plan(spare, total, self.limits, self.spawn_rate)
        self.spawn_rate = plan.next_rate
        if plan.warning and not self.warned:
            log.warning("warning -- %s", plan.warning)
        self.warned = bool(plan.warning)
        if self.fleet is not None:
            self.fleet.spawn_missing()
        idle = [s for s in slots if s.generation == self.generation and s.state == State.IDLE]
        if plan.retire and idle:
            self.retire_worker(idle[-1].pid)
        self.spawn_workers(plan.spawn)

    def retire_worker(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def signal_workers(self, signum: int, older_than: int | None = None) -> None:
        for pid, (_, generation) in list(self.workers.items()):
            if older_than is None or generation < older_than:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def live_slots(self):
        return [self.board.read(index) for index, _ in self.workers.values()]

    # -- stopping -----------------------------------------------------------------

    def check_drained(self) -> None:
        relays = self.fleet.pids if self.fleet is not None else ()
        if not self.workers and relays and self.cut_deadline is None:
            self.fleet.stop()   # no more hand-offs can come: relays leave once empty
        if not self.workers and not relays:
            if self.cut_deadline is None:
                log.info("stopped -- every session finished")
            self.exit_code = EXIT_OK
        elif self.cut_deadline is not None:
            if time.monotonic() >= self.cut_deadline:
                self.halt(EXIT_OK)      # workers that were not relaying, or are stuck
        elif time.monotonic() >= self.stop_deadline:
            log.info("stopped -- grace period over, %d sessions cut",
                     len(self.workers) + len(self.board.tunnels()))
            self.cut_sessions()

    def cut_sessions(self) -> None:
        """Ask every worker to end its session now (its relay returns and the session logs
        its closing line), and every relay process to end its tunnels (each logs its
        closing line), and give them CUT_WAIT seconds before they are killed."""
        self.cut_deadline = time.monotonic() + CUT_WAIT
        self.signal_workers(signal.SIGINT)
        if self.fleet is not None:
            self.fleet.cut()

    def halt(self, code: int) -> None:
        self.close_listeners()
        self.signal_workers(signal.SIGKILL)
        if self.fleet is not None:     # cut already (INT, --grace): no more waiting
            self.fleet.halt(0.0 if self.cut_deadline is not None else CUT_WAIT)
        self.wait_for_workers()
        self.exit_code = code

    def wait_for_workers(self) -> None:
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            index, _ = self.workers.pop(pid)
            self.board.release(index)

    def close_listeners(self) -> None:
        for sock in self.listeners:
            listeners.stop(sock)

    # -- what the administrator sees -------------------------------------------------

    def log_rules_in_force(self) -> None:
        if self.rules.embedded:
            log.info("rules -- no %s: the embedded default is in force "
                     "(clients from 127.0.0.0/8 and ::1 only)", self.settings.config)
        else:
            log.info("rules -- %d rules from %s", len(self.rules.rules), self.rules.file)

    def log_capacity(self) -> None:
        if self.fleet is not None:
            room, mode = self.tunnel_room * self.settings.relay_count, "shared"
        else:
            room, mode = self.settings.max_workers, "worker"
        log.info("capacity -- %d file descriptors per process, room for %d tunnels "
                 "(--relay %s)", self.fd_limit, room, mode)

    def show_title(self) -> None:
        slots = self.live_slots()
        idle = sum(1 for s in slots if s.state == State.IDLE)
        title = f"sockd: master [{len(slots)} workers, {idle} idle]"
        if title != getattr(self, "_title", None):
            self._title = title
            proctitle.set_title(title)
