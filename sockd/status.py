"""`sockd --status`: the pool and its sessions, read from a running daemon's scoreboard.

Owns the status view (Apache's server-status for sockd): finds the master by
its pid file, maps its scoreboard file read-only (sockd.scoreboard) and
prints one summary and one line per busy worker, then (--relay shared) one
per tunnel a relay process carries, or the same as JSON.  It
never signals, locks or writes anything, so it cannot disturb the daemon;
it needs no privilege beyond reading the scoreboard file (root or group
`adm`, sockd(8), FILES).  Slots are read while workers write them, so a
line may mix two moments of one session; the next run is right again.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field

from sockd import __version__
from sockd.scoreboard import BUSY, Header, Scoreboard, ScoreboardError, Slot, State, path_for

DEFAULT_PIDFILE = "/run/sockd.pid"
EXIT_OK = 0
EXIT_UNREADABLE = 1         # a running daemon whose scoreboard cannot be read
EXIT_NOT_RUNNING = 3        # LSB's "program is not running"


class NotRunning(Exception):
    """No sockd runs under the pid file; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    """What one reading of the scoreboard saw."""

    header: Header
    slots: list[Slot]     # live slots only (a worker owns them)
    now: float
    relay_processes: int = 0                            # lanes (--relay shared)
    tunnels: list[Slot] = field(default_factory=list)   # tunnel slots in use


def read_pid(pidfile: str) -> int:
    """The running master's pid from *pidfile*.  Raises NotRunning."""
    try:
        with open(pidfile, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
    except OSError as exc:
        raise NotRunning(f"{pidfile}: {exc.strerror}") from None
    if not text.isdigit() or int(text) < 1:
        raise NotRunning(f"{pidfile}: no pid in the file")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise NotRunning(f"{pidfile}: pid {pid} is not running") from None
    except PermissionError:
        pass                # running, as somebody else
    return pid


def take(board: Scoreboard, now: float) -> Snapshot:
    """Read every slot once: the workers', then the relay processes' tunnels."""
    slots = [s for s in board.slots() if s.state != State.DEAD and s.pid > 0]
    return Snapshot(board.header(), slots, now, board.lanes, board.tunnels())


def _record(s: Slot, now: float) -> dict:
    command, _, destination = s.destination.partition(" ")
    return {
        "pid": s.pid, "state": s.state.name.lower(), "client": s.client,
        "user": s.user or None, "command": command or None,
        "destination": destination or None, "bytes_from_client": s.bytes_up,
        "bytes_from_destination": s.bytes_down,
        "age": round(max(0.0, now - s.started), 3), "generation": s.generation}


def summary(snap: Snapshot) -> dict:
    """The pool, one record per busy worker, and (--relay shared) one per tunnel a relay
    process carries (the --json form); pure."""
    counts = {state: sum(1 for s in snap.slots if s.state == state) for state in State}
    sessions = [_record(s, snap.now) for s in snap.slots if s.state in BUSY]
    tunnels = []
    for s in snap.tunnels:
        record = _record(s, snap.now)
        del record["generation"]        # a relay process serves every generation
        tunnels.append(record)
    return {
        "master": {"pid": snap.header.master_pid, "generation": snap.header.generation,
                   "started": snap.header.started,
                   "uptime": round(max(0.0, snap.now - snap.header.started), 3)},
        "workers": len(snap.slots), "idle": counts[State.IDLE],
        "starting": counts[State.STARTING], "busy": len(sessions),
        "sessions_served": snap.header.served_by_gone + sum(s.sessions for s in snap.slots),
        "sessions": sessions,
        "relay_processes": snap.relay_processes, "tunnels": tunnels,
    }


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


COLUMNS = ("PID", "STATE", "AGE", "CLIENT", "USER", "COMMAND", "DESTINATION", "FROM-CLIENT",
           "FROM-DEST")


def render(info: dict) -> str:
    """The text form: two summary lines (three with relay processes), then a table of the
    busy workers and of the tunnels the relay processes carry; pure."""
    master = info["master"]
    lines = [f"sockd {__version__}: master pid {master['pid']}, up "
             f"{_duration(master['uptime'])}, generation {master['generation']}",
             f"{info['workers']} workers: {info['busy']} busy, {info['idle']} idle, "
             f"{info['starting']} starting; {info['sessions_served']} sessions served"]
    tunnels = info.get("tunnels", [])
    if info.get("relay_processes"):
        lines.append(f"{info['relay_processes']} relay processes: {len(tunnels)} tunnels")
    if not info["sessions"] and not tunnels:
        return "\n".join(lines) + "\n"
    rows = [COLUMNS] + [
        (str(s["pid"]), s["state"], _duration(s["age"]), s["client"] or "-", s["user"] or "-",
         s["command"] or "-", s["destination"] or "-", str(s["bytes_from_client"]),
         str(s["bytes_from_destination"])) for s in info["sessions"] + tunnels]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines.append("")
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def main(pidfile: str, as_json: bool = False) -> int:
    """Print the status of the sockd whose pid is in *pidfile*; the exit status."""
    try:
        pid = read_pid(pidfile)
    except NotRunning as exc:
        print(f"sockd: not running ({exc})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    path = path_for(pid)
    try:
        board = Scoreboard.attach(path)
    except ScoreboardError as exc:
        print(f"sockd: cannot read the scoreboard of pid {pid}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    info = summary(take(board, time.time()))
    if info["master"]["pid"] != pid:
        print(f"sockd: {path} belongs to pid {info['master']['pid']}, not {pid}",
              file=sys.stderr)
        return EXIT_UNREADABLE
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if as_json else render(info))
    return EXIT_OK
