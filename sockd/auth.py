"""Who is the client: RFC 1929 credentials checked against the password file, then PAM.

This module owns the decision "are these the credentials of a user": `Authenticator.check`.
The password file (`sockd.passwords`) is asked first; a user it does not list goes to PAM when
a PAM service is configured; a wrong password for a listed user is final (PAM is not asked, so
a file entry cannot be bypassed through another stack).  It does not choose the SOCKS5 method,
reply to the client, log, or slow repeated failures down: that is the session's job.

PAM runs in a child forked for the one check, under the caller's privileges (the worker's,
after it dropped them), bounded in time: the parent waits for one result line on a pipe for at
most ``timeout`` seconds, then kills the child's process group.  A thread could not be bounded
that way: a PAM module stuck in a blocking call (an LDAP server that does not answer) cannot be
interrupted, and a thread left behind would hold the conversation, the password, and whatever
the module locked, for the rest of the worker's life.  A fork also keeps a module that leaks
or crashes away from the worker.  It costs a fork per PAM login (about a millisecond).

Neither a password nor anything derived from it appears in an AuthResult, a message or an
exception.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass

from sockd.passwords import DEFAULT_LN, DEFAULT_P, DEFAULT_R, PasswordTable, ScryptHash

try:
    # python-pam: imported with this module (in the master, before workers fork and drop
    # privileges), not in the child of each check
    import pam
except ImportError:                             # reported by `sockd -t --pam` and per check
    pam = None

DEFAULT_PAM_TIMEOUT = 10.0
MAX_REPORT = 512            # bytes of the child's one-line report
# Where libpam looks for a service's stack (Debian's libpam has no vendor directory, others
# have /usr/lib/pam.d); without one it uses the "other" stack.
PAM_DIRECTORIES = ("/etc/pam.d", "/usr/lib/pam.d")


@dataclass(frozen=True)
class AuthResult:
    """The verdict on one set of credentials.  ``reason`` is for the log: where the verdict
    came from and why, never the password (``password file``, ``wrong password (password
    file)``, ``PAM sockd: Authentication failure``, ``PAM sockd: no answer within 10 s``...)."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


class Authenticator:
    """Checks RFC 1929 credentials against a `PasswordTable` and/or a PAM service.

    With neither, every check is denied.  Build one per worker or per session: it is cheap and
    holds no state but its settings."""

    def __init__(self, passwords: PasswordTable | None, pam_service: str | None,
                 timeout: float = DEFAULT_PAM_TIMEOUT) -> None:
        self.passwords = passwords
        self.pam_service = pam_service
        self.timeout = timeout
        if pam_service is not None and pam is not None:
            try:
                # load libpam here, once, rather than in the child of every check
                pam.PamAuthenticator()
            except Exception:                   # noqa: BLE001 (each check reports it)
                pass

    @property
    def configured(self) -> bool:
        """True when there is something to check against (--passwd or --pam)."""
        return self.passwords is not None or self.pam_service is not None

    def check(self, user: str | bytes, password: str | bytes) -> AuthResult:
        """The verdict on *user* and *password*, the RFC 1929 fields (bytes, or the str that
        sockd.protocol decodes them to, latin-1).  Blocks for one scrypt (some 60 ms) or one
        PAM conversation (at most ``timeout`` seconds)."""
        user, password = _wire(user), _wire(password)
        if self.passwords is not None:
            verdict = self.passwords.verify(user, password)
            if verdict is not None:
                return AuthResult(True, "password file") if verdict else \
                    AuthResult(False, "wrong password (password file)")
        if self.pam_service is not None:
            return pam_check(self.pam_service, user, password, self.timeout)
        # Spend what a listed user costs, so that the time of a refusal does not tell
        # whether the user exists.
        _DUMMY.matches(password)
        return AuthResult(False, "no such user")


def _wire(field: str | bytes) -> bytes:
    return field.encode("latin-1") if isinstance(field, str) else field


_DUMMY = ScryptHash(DEFAULT_LN, DEFAULT_R, DEFAULT_P, b"\0" * 16, b"\0" * 32)


def pam_check(service: str, user: bytes, password: bytes, timeout: float) -> AuthResult:
    """One PAM authentication (pam_authenticate, then pam_acct_mgmt) for *service*, run in a
    forked child that is killed after *timeout* seconds.  Denied when the child cannot be
    started, reports nothing, or runs out of time."""
    where = f"PAM {service}"
    if pam is None:
        return AuthResult(False, f"{where}: the python-pam module is not installed")
    if b"\0" in user or b"\0" in password:
        return AuthResult(False, f"{where}: NUL byte in user name or password")
    try:
        read_fd, write_fd = os.pipe()
    except OSError as e:
        return AuthResult(False, f"{where}: cannot start: {e.strerror}")
    try:
        pid = os.fork()
    except OSError as e:
        os.close(read_fd)
        os.close(write_fd)
        return AuthResult(False, f"{where}: cannot fork: {e.strerror}")
    if pid == 0:                                                    # the child
        try:
            os.close(read_fd)
            _converse_in_child(service, user, password, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    # Here too, not only in the child: a kill must reach the group even if it comes first.
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass                                    # the child already did it, or has exited
    try:
        report = _read_report(read_fd, timeout)
    finally:
        os.close(read_fd)
        if report is None:
            _kill_group(pid)
        _reap(pid)
    if report is None:
        return AuthResult(False, f"{where}: no answer within {timeout:g} s, stopped")
    status, _, reason = report.partition(" ")
    if status == "ok":
        return AuthResult(True, where)
    return AuthResult(False, f"{where}: {reason or 'failed without a report'}")


def _read_report(fd: int, timeout: float) -> str | None:
    """The child's report, or None when it did not come in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < MAX_REPORT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            ready, _, _ = select.select([fd], [], [], remaining)
        except InterruptedError:
            continue
        if not ready:
            return None
        chunk = os.read(fd, MAX_REPORT - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _kill_group(pid: int) -> None:
    """Kill the child, its process group, and what its modules started in sessions of their
    own (pam_exec calls setsid), so nothing of a stopped check lives on."""
    others = _descendants(pid)
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
            break
        except (ProcessLookupError, PermissionError):
            continue
    for other in others:
        try:
            os.kill(other, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pid: int) -> list[int]:
    """The processes below *pid*, from /proc (empty where there is no /proc)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    # the fourth field, after the command name (which may hold spaces and ')')
                    parents[int(entry)] = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _converse_in_child(service: str, user: bytes, password: bytes, write_fd: int) -> None:
    """In the forked child: run the PAM conversation and write ``ok`` or ``denied REASON``."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)                    # the worker's wake-up pipe is not ours
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE,
                signal.SIGUSR1, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    # Keep nothing of the worker's open: a client connection or a listener must not live on
    # in a helper a PAM module may start.
    os.closerange(3, write_fd)
    os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        authenticator = pam.PamAuthenticator()
        ok = authenticator.authenticate(user, password, service=service, resetcreds=False)
        reason = authenticator.reason
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        report = "ok" if ok else f"denied {reason or 'authentication failed'}"
    except Exception as e:                      # noqa: BLE001 (reported, not raised)
        report = f"denied {type(e).__name__}"
    os.write(write_fd, printable(report).encode("utf-8")[:MAX_REPORT - 1] + b"\n")


def pam_service_problem(service: str) -> str | None:
    """Why *service* cannot be a PAM service name (a file name in /etc/pam.d), or None."""
    if not service or service in (".", "..") or "/" in service or \
            not (service.isascii() and service.isprintable()) or " " in service:
        return f"not a PAM service name: {service!r}"
    return None


def pam_problems(service: str) -> list[str]:
    """What `sockd -t` says about ``--pam service``: python-pam missing, no stack for it."""
    problems = []
    if pam is None:
        problems.append("--pam: the python-pam module is not installed (pip install python-pam)")
    if os.path.isdir(PAM_DIRECTORIES[0]) and \
            not any(os.path.isfile(os.path.join(d, service)) for d in PAM_DIRECTORIES):
        problems.append(f"{PAM_DIRECTORIES[0]}/{service}: no such PAM service (PAM would use "
                        "the 'other' stack); see the sample in share/sockd/init/pam.d/sockd")
    return problems


def printable(text: str) -> str:
    """One log-safe line: no control character from a PAM module reaches the log."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
