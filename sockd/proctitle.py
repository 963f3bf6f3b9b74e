"""The process title as a live status display (the original's FOR_PS).

Owns nothing but the title: callers say what the process is doing, on each
state change and never in a loop.  Without setproctitle it does nothing.

The long title is what ps(1) shows (/proc/PID/cmdline); the short command
name (/proc/PID/comm, 15 bytes) stays `sockd` whatever the title says, so
that pidof(8), `pgrep -x sockd`, killall(1) and `start-stop-daemon --name`
find every sockd process.  setproctitle also writes the start of the title
there on Linux ("sockd: master ["), and `python -m sockd` starts as
"python3": `set_title` names the process `sockd` again after each title.
"""

try:
    from setproctitle import setproctitle as _set
    from setproctitle import setthreadtitle as _set_comm
except ImportError:  # pragma: no cover - setproctitle is a hard dependency
    _set = _set_comm = None

COMM = "sockd"


def set_title(title: str) -> None:
    """Show *title* in ps(1), keeping the command name `sockd`; *title* is already escaped
    by the caller."""
    if _set is not None:
        _set(title)
        _set_comm(COMM)    # the main thread's name is the process's comm
