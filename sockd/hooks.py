"""Shell-command hooks: the ``: shell-command`` of sockd.conf lines, ``#NO_IDENTD:``, ``#BAD_ID:``.

This module owns two things:

- `expand`, a pure function, which substitutes the ``%`` tokens of sockd.conf(5) into a command
  template.  Every value is made inert first (`sanitize`): characters outside
  ``A-Z a-z 0-9 . - _ @ : , + =`` become ``_``, and so does a leading ``-`` or ``.``.  So whatever
  quoting the administrator wrote around a token, a hostile USERID, ident answer or reverse-DNS
  name can neither run anything, nor become an option, nor name a path outside the directory the
  command writes to (``/`` is not kept, and no value is ``.`` or ``..``, so ``/var/log/socks/%u``
  stays in ``/var/log/socks``; CSTC's filter let ``-``, ``\\`` and ``!`` through;
  cstc-facts.md §9.1).
- `HookRunner`, which runs expanded commands with ``/bin/sh -c`` without blocking the caller: at
  most ``max_running`` at once (more are skipped, with a rate-limited log line), each bounded by
  ``timeout`` seconds, output and exit status logged to the "sockd" logger, a failure never fatal.

How a command runs (built for a single-threaded forked worker): `HookRunner.start` forks a small
supervisor child, which closes every descriptor it inherited (so a hook never holds a client
connection open), starts the shell in its own session, waits for it with the timeout (killing the
shell's process group when it expires), writes one status line to a pipe and exits.  The command's
output goes to an unlinked temporary file.  The worker calls `HookRunner.reap` from its loop:
``waitpid(pid, WNOHANG)`` on its own supervisors only, then logs what each one reported.

It must not: run a command through anything but the sanitized expansion, wait for a command in
`start`, or reap children it did not start.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

TOKENS = frozenset("AacpSsUuZz")
SAFE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                            ".-_@:,+=")
MAX_VALUE = 255                 # longest value substituted for one token
MAX_OUTPUT = 4096               # bytes of a command's output copied to the log
SKIP_REPORT_INTERVAL = 10.0     # seconds between two "hook skipped" log lines
SHELL = "/bin/sh"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_TOKEN = re.compile(r"%(.?)", re.DOTALL)


def sanitize(value: str) -> str:
    """``value`` made inert for any shell quoting and any path: only safe characters (no ``/``),
    no leading ``-`` (an option) or ``.`` (``..``, a hidden file)."""
    cleaned = "".join(c if c in SAFE_CHARACTERS else "_" for c in value[:MAX_VALUE])
    if cleaned.startswith(("-", ".")):
        cleaned = "_" + cleaned[1:]
    return cleaned


def needs(template: str) -> set[str]:
    """The token letters ``template`` uses (``%%`` is not a token), so that a caller computes the
    slow ones (``%A``, ``%Z``: reverse DNS) only when they are used."""
    return {m.group(1) for m in _TOKEN.finditer(template) if m.group(1) in TOKENS}


def expand(template: str, tokens: Mapping[str, str]) -> str:
    """Substitute the ``%`` tokens of ``template``; each value is sanitized first.

    ``%%`` is a literal ``%``; a token missing from ``tokens``, any other ``%x`` and a final lone
    ``%`` are removed, as CSTC's percent_x did.
    """
    def substitute(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter == "%":
            return "%"
        if letter in TOKENS and letter in tokens:
            return sanitize(tokens[letter])
        return ""
    return _TOKEN.sub(substitute, template)


# ---------------------------------------------------------------------------------------------
# Token values


def token_values(template: str, *, client: Address, user: str, ident_user: str | None,
                 command: str, dst: Address | str, port: int, resolved: Address | None = None,
                 pid: int | None = None,
                 name_of: Callable[[Address], str] | None = None) -> dict[str, str]:
    """The values of the tokens ``template`` uses, per sockd.conf(5).

    ``dst`` is the destination as requested (an address or a name) and ``resolved`` its address
    when known.  ``ident_user`` is what identd reported (None: ``unknown``).  ``name_of(address)``
    gives a host name for ``%A``/``%Z`` (default `reverse_name`, bounded in time); it is called
    only when the template uses those tokens.
    """
    lookup = name_of or reverse_name
    getters: dict[str, Callable[[], str]] = {
        "a": lambda: str(client),
        "A": lambda: lookup(client),
        "c": lambda: command,
        "p": lambda: str(os.getpid() if pid is None else pid),
        "s": lambda: str(port),
        "S": lambda: service_name(port),
        "u": lambda: user,
        "U": lambda: ident_user or "unknown",
        "z": lambda: str(resolved if resolved is not None else dst),
        "Z": lambda: dst if isinstance(dst, str) else lookup(dst),
    }
    return {letter: getters[letter]() for letter in needs(template)}


def service_name(port: int) -> str:
    """The tcp service name of ``port`` in /etc/services, else the number."""
    try:
        return socket.getservbyport(port, "tcp")
    except (OSError, OverflowError):
        return str(port)


def reverse_name(address: Address, timeout: float = 2.0) -> str:
    """The host name of ``address`` if reverse DNS gives one whose forward lookup comes back to
    the same address within ``timeout`` seconds; else the address itself (CSTC had no forward
    check: cstc-facts.md §9.10).  The lookup runs in a daemon thread so the wait is bounded."""
    found: list[str] = []

    def lookup() -> None:
        try:
            name = socket.gethostbyaddr(str(address))[0]
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return
        if any(ipaddress.ip_address(info[4][0].split("%")[0]) == address for info in infos):
            found.append(name)

    thread = threading.Thread(target=lookup, name="reverse-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else str(address)


# ---------------------------------------------------------------------------------------------
# Running commands


@dataclass
class _Running:
    pid: int
    where: str
    command: str
    output: IO[bytes]
    status_fd: int


class HookRunner:
    """Runs hook commands in the background; see the module docstring.

    Methods for the caller: `start` (never blocks, never raises), `reap` (call it from the loop),
    `wait` (block until every hook has finished, e.g. before the worker exits).
    """

    def __init__(self, max_running: int = 4, timeout: float = 30.0,
                 logger: logging.Logger | None = None) -> None:
        self.max_running = max_running
        self.timeout = timeout
        self.log = logger or logging.getLogger("sockd")
        self._running: dict[int, _Running] = {}
        self._skipped = 0
        self._last_skip_report = float("-inf")

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self, command: str, where: str) -> bool:
        """Start ``command`` (already expanded) for the rule at ``where``; False if it was not
        started (too many running, or fork failed), which is logged."""
        self.reap()
        if len(self._running) >= self.max_running:
            self._report_skip(where)
            return False
        try:
            output = tempfile.TemporaryFile(prefix="sockd-hook-")
            status_read, status_write = os.pipe()
        except OSError as e:
            self.log.warning("hook failed -- %s: cannot start: %s", where, e.strerror or e)
            return False
        try:
            pid = os.fork()
        except OSError as e:
            output.close()
            os.close(status_read)
            os.close(status_write)
            self.log.warning("hook failed -- %s: cannot fork: %s", where, e.strerror or e)
            return False
        if pid == 0:                                            # the supervisor
            try:
                _supervise(command, self.timeout, output.fileno(), status_write)
            finally:
                os._exit(0)
        os.close(status_write)
        self._running[pid] = _Running(pid, where, command, output, status_read)
        self.log.info("hook started -- %s: pid %d: %s", where, pid, printable(command))
        return True

    def reap(self) -> int:
        """Collect the supervisors that have finished and log their reports; the number."""
        finished = 0
        for pid in list(self._running):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid                      # reaped by someone else: report what we have
            if done:
                self._finish(self._running.pop(pid))
                finished += 1
        return finished

    def wait(self, timeout: float | None = None) -> bool:
        """Reap until every hook has finished or ``timeout`` seconds passed; True if all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running:
            self.reap()
            if not self._running:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _finish(self, hook: _Running) -> None:
        try:
            status = os.read(hook.status_fd, 512).decode("utf-8", "replace").strip()
        except OSError:
            status = ""
        finally:
            os.close(hook.status_fd)
        with hook.output:
            hook.output.seek(0)
            data = hook.output.read(MAX_OUTPUT + 1)
        for line in data[:MAX_OUTPUT].decode("utf-8", "replace").splitlines():
            self.log.info("hook output -- %s: %s", hook.where, printable(line))
        if len(data) > MAX_OUTPUT:
            self.log.info("hook output -- %s: (truncated after %d bytes)", hook.where, MAX_OUTPUT)
        if status == "exit 0":
            self.log.info("hook done -- %s: exit status 0", hook.where)
        else:
            self.log.warning("hook failed -- %s: %s", hook.where, _describe(status, self.timeout))

    def _report_skip(self, where: str) -> None:
        self._skipped += 1
        now = time.monotonic()
        if now - self._last_skip_report < SKIP_REPORT_INTERVAL:
            return
        self.log.warning("hook skipped -- %s: %d hooks already running (%d skipped since the "
                         "last report)", where, len(self._running), self._skipped)
        self._skipped = 0
        self._last_skip_report = now


def _describe(status: str, timeout: float) -> str:
    word, _, rest = status.partition(" ")
    if word == "exit":
        return f"exit status {rest}"
    if word == "signal":
        return f"killed by signal {rest}"
    if word == "timeout":
        return f"timed out after {timeout:g} s, killed"
    if word == "error":
        return f"cannot run {SHELL}: {rest}"
    return "supervisor ended without a report"


def printable(text: str) -> str:
    """No control character from a command or its output reaches a log line."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _supervise(command: str, timeout: float, output_fd: int, status_fd: int) -> None:
    """In the forked supervisor: run the shell, bounded in time, and report one status line.

    Only fds 0-2 (/dev/null, the output file twice) and 3 (the status pipe) stay open: a hook must
    not keep a client's connection or a listener alive.  Runs in its own session, so signals
    sent to the worker's process group do not cut a hook short.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE,
                signal.SIGUSR1, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    output_fd = fcntl.fcntl(output_fd, fcntl.F_DUPFD, 10)
    status_fd = fcntl.fcntl(status_fd, fcntl.F_DUPFD, 10)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.dup2(status_fd, 3)
    os.closerange(4, _max_fd())
    os.write(3, _run_shell(command, timeout).encode() + b"\n")


def _run_shell(command: str, timeout: float) -> str:
    try:
        shell = subprocess.Popen([SHELL, "-c", command], stdin=0, stdout=1, stderr=2,
                                 close_fds=True, start_new_session=True)
    except OSError as e:
        return f"error {e.strerror or e}"
    try:
        code = shell.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(shell)
        return "timeout"
    return f"signal {-code}" if code < 0 else f"exit {code}"


def _kill_group(shell: subprocess.Popen[bytes]) -> None:
    """TERM the command's process group, give it 2 s, then KILL whatever is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(shell.pid, sig)
        except ProcessLookupError:
            pass
        try:
            shell.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 20)
    except (ValueError, OSError):
        return 1024


__all__ = ["HookRunner", "MAX_VALUE", "SAFE_CHARACTERS", "TOKENS", "expand", "needs",
           "printable", "reverse_name", "sanitize", "service_name", "token_values"]
