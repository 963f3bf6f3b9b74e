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
A lane's high-water mark (slots in use are below it) bounds the scans.
Callers ask about sessions ("how many from this address"), not workers.
"""

import enum
import ipaddress
import mmap
import struct
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
_STATE = 8                      # offset of the state byte in a slot
_SOURCE = 48                    # offset of the source field
_NO_SOURCE = bytes(16)


def source_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The 16 bytes a slot keeps of a client address: IPv6, with IPv4 (and IPv4-mapped
    IPv6) as the mapped form, so that both forms of one client compare equal."""
    if address.version == 4:
        return bytes(10) + b"\xff\xff" + address.packed
    return address.packed


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
    shared by the master and every process it forks."""

    def __init__(self, size: int, lanes: int = 0, per_lane: int = 0) -> None:
        self.size = size
        self.lanes, self.per_lane = lanes, per_lane
        self._marks = _SLOT.size * (size + lanes * per_lane)   # the high-water marks
        self._map = mmap.mmap(-1, self._marks + 4 * lanes)

    def claim(self, index: int, pid: int, generation: int) -> None:
        """Master, at spawn: the slot now belongs to worker *pid*."""
        _HEAD.pack_into(self._map, index * _SLOT.size, pid, generation, State.STARTING, 0)

    def set_pid(self, index: int, pid: int) -> None:
        """Master, right after fork: the pid of the worker that owns the slot."""
        struct.pack_into("=i", self._map, index * _SLOT.size, pid)

    def release(self, index: int) -> None:
        """Master, at reap: the slot is free again."""
        _SLOT.pack_into(self._map, index * _SLOT.size, 0, 0, State.DEAD, 0, 0.0, 0.0, 0, 0,
                        b"", b"", b"", b"")

    def set_state(self, index: int, state: State) -> None:
        """Worker: record a state change that carries no session details."""
        self._map[index * _SLOT.size + _STATE] = state

    def begin_session(self, index: int, sessions: int, started: float, client: str,
                      source: bytes = _NO_SOURCE) -> None:
        """Worker: a client has been accepted; *source* is its `source_key` (a session begun
        without one is never counted by `sessions_from`)."""
        offset = index * _SLOT.size
        pid, generation, state = struct.unpack_from("=iIB", self._map, offset)
        _SLOT.pack_into(self._map, offset, pid, generation, state, sessions, started, started,
                        0, 0, source, client.encode()[:48], b"", b"")
        self._map[offset + _STATE] = State.NEGOTIATING     # last: the source is in place

    def withdraw_session(self, index: int, sessions: int) -> None:
        """Worker: the session just begun is refused at accept; idle again, with the count of
        sessions it had before."""
        offset = index * _SLOT.size
        self._map[offset + _STATE] = State.IDLE
        struct.pack_into("=I", self._map, offset + 12, sessions)

    def set_client(self, index: int, client: str) -> None:
        """Worker: how the session names its client (display only; counting uses the source)."""
        offset = index * _SLOT.size + _SOURCE + 16
        struct.pack_into("=48s", self._map, offset, client.encode()[:48])

    def set_request(self, index: int, user: str, destination: str) -> None:
        """Worker: the request has been granted and relaying begins."""
        offset = index * _SLOT.size + _SLOT.size - 128
        struct.pack_into("=32s96s", self._map, offset, user.encode()[:32],
                         destination.encode()[:96])
        self._map[index * _SLOT.size + _STATE] = State.RELAYING

    def end_session(self, index: int, now: float, up: int, down: int) -> None:
        """Worker: the session is over; keep its byte counts for the status display."""
        offset = index * _SLOT.size
        struct.pack_into("=dQQ", self._map, offset + 24, now, up, down)
        self._map[offset + _STATE] = State.IDLE

    def sessions_from(self, source: bytes) -> int:
        """How many sessions (negotiating or relaying) come from the client *source*
        (a `source_key`).  A scan of every worker slot and of the tunnel slots in use:
        cheap for the few hundred slots of a pool, and done once per accepted client."""
        count, view, size = 0, self._map, _SLOT.size
        spans = [(0, self.size)] + [(self.lane(n).start, self.lane(n).start + self.high_water(n))
                                    for n in range(self.lanes)]
        for first, end in spans:
            for offset in range(first * size, end * size, size):
                if view[offset + _STATE] in BUSY and \
                        view[offset + _SOURCE:offset + _SOURCE + 16] == source:
                    count += 1
        return count

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
                    user: str, destination: str, up: int) -> None:
        """Relay process: the tunnel slot *index* now shows a session it carries."""
        offset = index * _SLOT.size
        _SLOT.pack_into(self._map, offset, pid, 0, State.DEAD, 0, started, started, up, 0,
                        source, client.encode()[:48], user.encode()[:32],
                        destination.encode()[:96])
        self._map[offset + _STATE] = State.RELAYING     # last: the source is in place

    def count_bytes(self, index: int, now: float, up: int, down: int) -> None:
        """Relay process: a tunnel's byte counts so far."""
        struct.pack_into("=dQQ", self._map, index * _SLOT.size + 24, now, up, down)

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
                if self._map[index * _SLOT.size + _STATE] == State.RELAYING:
                    found.append(self.read(index))
        return found

    def heartbeat(self, index: int, now: float) -> None:
        struct.pack_into("=d", self._map, index * _SLOT.size + 24, now)

    def read(self, index: int) -> Slot:
        fields = _SLOT.unpack_from(self._map, index * _SLOT.size)
        return Slot(index, fields[0], fields[1], State(fields[2]), fields[3], fields[4],
                    fields[5], fields[6], fields[7], fields[8], _text(fields[9]),
                    _text(fields[10]), _text(fields[11]))

    def slots(self) -> list[Slot]:
        return [self.read(i) for i in range(self.size)]

    def free_slot(self) -> int | None:
        """Master: the index of a slot nobody owns, or None."""
        for index in range(self.size):
            if self._map[index * _SLOT.size + _STATE] == State.DEAD:
                return index
        return None
