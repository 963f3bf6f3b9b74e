"""The scoreboard: one fixed-layout slot per worker in a shared anonymous mmap.

Each slot is written by exactly one process at a time: the master when it
spawns or reaps the worker that owns the slot, the worker itself in between.
So no lock is needed; a reader may see a slot mid-update and must not care.
Text fields are stored already escaped (see sockd.log.escape).
"""

import enum
import mmap
import struct
from dataclasses import dataclass


class State(enum.IntEnum):
    DEAD = 0
    STARTING = 1
    IDLE = 2
    NEGOTIATING = 3
    RELAYING = 4


# pid, generation, state, sessions, started, heartbeat, bytes up, bytes down,
# client, user, destination
_SLOT = struct.Struct("=iIBxxxIddQQ48s32s96s")
_HEAD = struct.Struct("=iIBxxxI")


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
    client: str
    user: str
    destination: str


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


class Scoreboard:
    """A table of `size` slots shared by the master and every worker it forks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map = mmap.mmap(-1, _SLOT.size * size)

    def claim(self, index: int, pid: int, generation: int) -> None:
        """Master, at spawn: the slot now belongs to worker *pid*."""
        _HEAD.pack_into(self._map, index * _SLOT.size, pid, generation, State.STARTING, 0)

    def set_pid(self, index: int, pid: int) -> None:
        """Master, right after fork: the pid of the worker that owns the slot."""
        struct.pack_into("=i", self._map, index * _SLOT.size, pid)

    def release(self, index: int) -> None:
        """Master, at reap: the slot is free again."""
        _SLOT.pack_into(self._map, index * _SLOT.size, 0, 0, State.DEAD, 0, 0.0, 0.0, 0, 0,
                        b"", b"", b"")

    def set_state(self, index: int, state: State) -> None:
        """Worker: record a state change that carries no session details."""
        self._map[index * _SLOT.size + 8] = state

    def begin_session(self, index: int, sessions: int, started: float, client: str) -> None:
        """Worker: a client has been accepted."""
        offset = index * _SLOT.size
        pid, generation = struct.unpack_from("=iI", self._map, offset)
        _SLOT.pack_into(self._map, offset, pid, generation, State.NEGOTIATING, sessions,
                        started, started, 0, 0, client.encode()[:48], b"", b"")

    def set_request(self, index: int, user: str, destination: str) -> None:
        """Worker: the request has been granted and relaying begins."""
        offset = index * _SLOT.size + _SLOT.size - 128
        struct.pack_into("=32s96s", self._map, offset, user.encode()[:32],
                         destination.encode()[:96])
        self._map[index * _SLOT.size + 8] = State.RELAYING

    def end_session(self, index: int, now: float, up: int, down: int) -> None:
        """Worker: the session is over; keep its byte counts for the status display."""
        offset = index * _SLOT.size
        struct.pack_into("=dQQ", self._map, offset + 24, now, up, down)
        self._map[offset + 8] = State.IDLE

    def heartbeat(self, index: int, now: float) -> None:
        struct.pack_into("=d", self._map, index * _SLOT.size + 24, now)

    def read(self, index: int) -> Slot:
        fields = _SLOT.unpack_from(self._map, index * _SLOT.size)
        return Slot(index, fields[0], fields[1], State(fields[2]), fields[3], fields[4],
                    fields[5], fields[6], fields[7], _text(fields[8]), _text(fields[9]),
                    _text(fields[10]))

    def slots(self) -> list[Slot]:
        return [self.read(i) for i in range(self.size)]

    def free_slot(self) -> int | None:
        """Master: the index of a slot nobody owns, or None."""
        for index in range(self.size):
            if self._map[index * _SLOT.size + 8] == State.DEAD:
                return index
        return None
