"""The scoreboard: one fixed-layout slot per worker in a shared anonymous mmap.

Each slot is written by exactly one process at a time: the master when it
spawns or reaps the worker that owns the slot, the worker itself in between.
So no lock is needed; a reader may see a slot mid-update and must not care,
with one exception that the write order takes care of: a slot counted by
`sessions_from` has its source written before its state says it is busy.
Text fields are stored already escaped (see sockd.log.escape).

A worker's slot holds its one session.  With --relay shared, sessions carried
by a relay process (sockd.relayproc) get slots of their own: each relay
process owns a *lane*, a range of tunnel slots after the workers' slots, and
is the only writer of its lane (the master clears a lane whose process died).
A lane's high-water mark (slots in use are below it) bounds the scans; the
marks follow the last lane.  Callers ask about sessions ("how many from this
address"), not workers.

The map is a file when the master can make one (`Scoreboard.create`), so that
`sockd --status` (sockd.status) can read it without disturbing the daemon:
`/run/sockd/sockd.PID.scoreboard`, PID the master's, mode 0640, owned by root
and group `adm` (the group that reads the logs on Debian; the master's own
group when there is none), in a directory `/run/sockd` of mode 0755.  The
file is made under a temporary name and renamed into place, never through a
symbolic link, and removed when the master exits.  A reader maps it read-only
(`Scoreboard.attach`).  A header before the slots says what the file is and
how it is laid out (slots, lanes, slots per lane), and holds what only the
master knows (its pid, start time, generation, and the sessions of workers
that have gone).
"""

import contextlib
import enum
import errno
import grp
import ipaddress
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass


class State(enum.IntEnum):
    DEAD = 0
    STARTING = 1
    IDLE = 2
    NEGOTIATING = 3
    RELAYING = 4


BUSY = (State.NEGOTIATING, State.RELAYING)

# pid, generation, state, sessions, started, heartbeat, bytes up, bytes down,
# source (the client's address, see source_key), client, user, destination
_SLOT = struct.Struct("=iIBxxxIddQQ16s48s32s96s")
_HEAD = struct.Struct("=iIBxxxI")
# The file's header: magic, slot count, slot size, master pid, generation, master's start
# (time.time()), sessions served by workers that have gone, relay lanes, tunnel slots per
# lane; padded to 64 bytes.
_FILE_HEAD = struct.Struct("=8sIIiIdQII")
_HEADER = 64
_MAGIC = b"SOCKDSB2"
_GENERATION = 20                # offsets in the header
_SERVED = 32
RUN_DIR = "/run/sockd"
FILE_MODE = 0o640
READERS_GROUP = "adm"
_STATE = 8                      # offset of the state byte in a slot
_SOURCE = 48                    # offset of the source field
_NO_SOURCE = bytes(16)


def source_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The 16 bytes a slot keeps of a client address: IPv6, with IPv4 (and IPv4-mapped
    IPv6) as the mapped form, so that both forms of one client compare equal."""
    if address.version == 4:
        return bytes(10) + b"\xff\xff" + address.packed
    return address.packed


def _at(index: int) -> int:
    """The offset of slot *index* in the map."""
    return _HEADER + index * _SLOT.size


class ScoreboardError(Exception):
    """A scoreboard file that cannot be made or read; the message says why."""


def path_for(pid: int, run_dir: str = RUN_DIR) -> str:
    """Where the master of pid *pid* keeps its scoreboard file."""
    return os.path.join(run_dir, f"sockd.{pid}.scoreboard")


@dataclass(frozen=True)
class Header:
    master_pid: int
    generation: int
    started: float
    served_by_gone: int


@dataclass(frozen=True)
class Slot:
    index: int
    pid: int
    generation: int
    state: State
    sessions: int
    started: float
    heartbeat: float
    bytes_up: int
    bytes_down: int
    source: bytes
    client: str
    user: str
    destination: str


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


class Scoreboard:
    """A table of `size` worker slots, then `lanes` lanes of `per_lane` tunnel slots,
    shared by the master and every process it forks.

    `Scoreboard(size, lanes, per_lane)` is anonymous memory, seen by the master and the
    processes it forks only; `create` makes it a file others may read, `attach` reads one.
    """

    def __init__(self, size: int, lanes: int = 0, per_lane: int = 0,
                 mapping: mmap.mmap | None = None, path: str | None = None) -> None:
        self.size = size
        self.lanes, self.per_lane = lanes, per_lane
        self.path = path
        self._marks = _at(size + lanes * per_lane)      # the high-water marks
        self._map = mapping if mapping is not None else mmap.mmap(-1, self._length())

    def _length(self) -> int:
        return self._marks + 4 * self.lanes

    @classmethod
    def create(cls, size: int, path: str, started: float, lanes: int = 0,
               per_lane: int = 0) -> "Scoreboard":
        """Master, at start: a scoreboard in the file *path* (see the module docstring).

        Raises ScoreboardError when the directory or the file cannot be made safely.
        """
        directory = os.path.dirname(path)
        length = _at(size + lanes * per_lane) + 4 * lanes
        try:
            _make_directory(directory)
            temporary = f"{path}.{os.getpid()}.new"
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise ScoreboardError(f"{exc.filename or directory}: {exc.strerror}") from None
        try:
            with contextlib.suppress(KeyError, PermissionError):
                os.fchown(fd, -1, grp.getgrnam(READERS_GROUP).gr_gid)
            os.fchmod(fd, FILE_MODE)        # whatever the umask
            os.ftruncate(fd, length)
            mapping = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            os.rename(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ScoreboardError(f"{path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        _FILE_HEAD.pack_into(mapping, 0, _MAGIC, size, _SLOT.size, os.getpid(), 1, started, 0,
                             lanes, per_lane)
        return cls(size, lanes, per_lane, mapping, path)

    @classmethod
    def attach(cls, path: str) -> "Scoreboard":
        """A reader's view of the scoreboard file *path*: mapped read-only, so that reading
        can never disturb the daemon.  Raises ScoreboardError."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ScoreboardError(f"{path}: {exc.strerror}") from None
        try:
            length = os.fstat(fd).st_size
            if length < _HEADER:
                raise ScoreboardError(f"{path}: not a sockd scoreboard")
            mapping = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as exc:
            raise ScoreboardError(f"{path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        fields = _FILE_HEAD.unpack_from(mapping, 0)
        magic, size, slot_size = fields[:3]
        lanes, per_lane = fields[7:9]
        if magic != _MAGIC or slot_size != _SLOT.size \
                or length < _at(size + lanes * per_lane) + 4 * lanes:
            raise ScoreboardError(f"{path}: not a scoreboard of this version of sockd")
        return cls(size, lanes, per_lane, mapping, path)

    def remove(self) -> None:
        """Master, at exit: the file goes (the memory stays mapped until the process ends)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def header(self) -> Header:
        pid, generation, started, served = _FILE_HEAD.unpack_from(self._map, 0)[3:7]
        return Header(pid, generation, started, served)

    def set_generation(self, generation: int) -> None:
        """Master: a reload started generation *generation*."""
        struct.pack_into("=I", self._map, _GENERATION, generation)

    def set_served_by_gone(self, served: int) -> None:
        """Master: the sessions served by workers reaped so far."""
        struct.pack_into("=Q", self._map, _SERVED, served)

    def claim(self, index: int, pid: int, generation: int) -> None:
        """Master, at spawn: the slot now belongs to worker *pid*."""
        _HEAD.pack_into(self._map, _at(index), pid, generation, State.STARTING, 0)

    def set_pid(self, index: int, pid: int) -> None:
        """Master, right after fork: the pid of the worker that owns the slot."""
        struct.pack_into("=i", self._map, _at(index), pid)

    def release(self, index: int) -> None:
        """Master, at reap: the slot is free again."""
        _SLOT.pack_into(self._map, _at(index), 0, 0, State.DEAD, 0, 0.0, 0.0, 0, 0,
                        b"", b"", b"", b"")

    def set_state(self, index: int, state: State) -> None:
        """Worker: record a state change that carries no session details."""
        self._map[_at(index) + _STATE] = state

    def begin_session(self, index: int, sessions: int, started: float, client: str,
                      source: bytes = _NO_SOURCE) -> None:
        """Worker: a client has been accepted; *source* is its `source_key` (a session begun
        without one is never counted by `sessions_from`)."""
        offset = _at(index)
        pid, generation, state = struct.unpack_from("=iIB", self._map, offset)
        _SLOT.pack_into(self._map, offset, pid, generation, state, sessions, started, started,
                        0, 0, source, client.encode()[:48], b"", b"")
        self._map[offset + _STATE] = State.NEGOTIATING     # last: the source is in place

    def withdraw_session(self, index: int, sessions: int) -> None:
        """Worker: the session just begun is refused at accept; idle again, with the count of
        sessions it had before."""
        offset = _at(index)
        self._map[offset + _STATE] = State.IDLE
        struct.pack_into("=I", self._map, offset + 12, sessions)

    def set_client(self, index: int, client: str) -> None:
        """Worker: how the session names its client (display only; counting uses the source)."""
        offset = _at(index) + _SOURCE + 16
        struct.pack_into("=48s", self._map, offset, client.encode()[:48])

    def set_request(self, index: int, user: str, destination: str) -> None:
        """Worker: the request has been granted and relaying begins."""
        offset = _at(index) + _SLOT.size - 128
        struct.pack_into("=32s96s", self._map, offset, user.encode()[:32],
                         destination.encode()[:96])
        self._map[_at(index) + _STATE] = State.RELAYING

    def end_session(self, index: int, now: float, up: int, down: int) -> None:
        """Worker: the session is over; keep its byte counts for the status display."""
        offset = _at(index)
        struct.pack_into("=dQQ", self._map, offset + 24, now, up, down)
        self._map[offset + _STATE] = State.IDLE

    def sessions_from(self, source: bytes) -> int:
        """How many sessions (negotiating or relaying) come from the client *source*
        (a `source_key`), in the worker slots and the tunnel slots in use.  Done once per
        accepted client, so C does the scan: one strided slice takes the last byte of
        every slot's source, a search of it finds the slots worth a look, and Python
        looks only at those.  (A search of the map for the whole key is slower than a
        Python loop: the key is mostly zero bytes, as the map is, so it cannot skip.)

        A session being handed to a relay process shows in its worker's slot and in its
        tunnel slot for a moment: the tunnel slot names the worker's (pid, session number)
        pair, and a pair already counted among the worker slots is not counted again."""
        view, count, seen = self._map, 0, set()
        for offset in self._matches(source, 0, self.size):
            pid, _, _, sessions = _HEAD.unpack_from(view, offset)
            seen.add((pid, sessions))
            count += 1
        for lane in range(self.lanes):
            first = self.lane(lane).start
            for offset in self._matches(source, first, first + self.high_water(lane)):
                # A tunnel slot's generation field holds the handing worker's pid.
                _, worker_pid, _, sessions = _HEAD.unpack_from(view, offset)
                if (worker_pid, sessions) not in seen:
                    count += 1
        return count

    def _matches(self, source: bytes, first: int, end: int) -> Iterator[int]:
        """The offsets of the busy slots from *first* to *end* that hold *source*."""
        view, size, last = self._map, _SLOT.size, source[-1:]
        start = _at(first)
        column = view[start + _SOURCE + 15:_at(end):size]  # each slot's last key byte
        found = column.find(last)
        while found != -1:
            offset = start + found * size
            if view[offset + _SOURCE:offset + _SOURCE + 16] == source and \
                    view[offset + _STATE] in BUSY:
                yield offset
            found = column.find(last, found + 1)

    # -- tunnel slots (--relay shared) ---------------------------------------------

    def lane(self, lane: int) -> range:
        """The tunnel slots of relay lane *lane*."""
        first = self.size + lane * self.per_lane
        return range(first, first + self.per_lane)

    def high_water(self, lane: int) -> int:
        """How many of the lane's first slots may be in use."""
        return struct.unpack_from("=i", self._map, self._marks + 4 * lane)[0]

    def set_high_water(self, lane: int, count: int) -> None:
        """Relay process: slots of its lane at *count* and above are unused."""
        struct.pack_into("=i", self._map, self._marks + 4 * lane, count)

    def hold_tunnel(self, index: int, pid: int, started: float, source: bytes, client: str,
                    user: str, destination: str, up: int,
                    handed_by: tuple[int, int] = (0, 0)) -> None:
        """Relay process: the tunnel slot *index* now shows a session it carries;
        *handed_by* is the (pid, session number) of the worker slot it came from, kept in
        the slot's generation and sessions fields (a relay process serves every
        generation; sessions_from reads the pair back)."""
        offset = _at(index)
        worker_pid, worker_session = handed_by
        _SLOT.pack_into(self._map, offset, pid, worker_pid, State.DEAD, worker_session,
                        started, started, up, 0,
                        source, client.encode()[:48], user.encode()[:32],
                        destination.encode()[:96])
        self._map[offset + _STATE] = State.RELAYING     # last: the source is in place

    def count_bytes(self, index: int, now: float, up: int, down: int) -> None:
        """Relay process: a tunnel's byte counts so far."""
        struct.pack_into("=dQQ", self._map, _at(index) + 24, now, up, down)

    def clear_lane(self, lane: int) -> None:
        """Master, when the lane's relay process is gone: every slot of it free."""
        span = self.lane(lane)
        for index in range(span.start, span.start + self.high_water(lane)):
            self.release(index)
        self.set_high_water(lane, 0)

    def tunnels(self) -> list[Slot]:
        """The tunnel slots in use, lane after lane."""
        found = []
        for lane in range(self.lanes):
            first = self.lane(lane).start
            for index in range(first, first + self.high_water(lane)):
                if self._map[_at(index) + _STATE] == State.RELAYING:
                    found.append(self.read(index))
        return found

    def heartbeat(self, index: int, now: float) -> None:
        struct.pack_into("=d", self._map, _at(index) + 24, now)

    def read(self, index: int) -> Slot:
        fields = _SLOT.unpack_from(self._map, _at(index))
        return Slot(index, fields[0], fields[1], State(fields[2]), fields[3], fields[4],
                    fields[5], fields[6], fields[7], fields[8], _text(fields[9]),
                    _text(fields[10]), _text(fields[11]))

    def slots(self) -> list[Slot]:
        return [self.read(i) for i in range(self.size)]

    def free_slot(self) -> int | None:
        """Master: the index of a slot nobody owns, or None."""
        for index in range(self.size):
            if self._map[_at(index) + _STATE] == State.DEAD:
                return index
        return None


def _make_directory(directory: str) -> None:
    """The run directory, made if missing; refused unless it is a real directory of ours
    that nobody else may write to (a file planted there would be our scoreboard)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o755)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() \
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(errno.EPERM, "not a directory of this user that only it may write to",
                      directory)
