"""Handing an established session to a relay process (--relay shared).

Owns the session's record as it travels (`Tunnel`), its wire format (`encode`
and `decode`: pure, no sockets) and the passing itself: the record and the two
sockets go over a *lane*, a UNIX SOCK_SEQPACKET socket pair per relay process,
the sockets as SCM_RIGHTS (unix(7)).  The master makes the lanes before it
forks anything and keeps both ends for its whole life, so that a relay process
that dies and is replaced finds its lane, and hand-offs queued in it, where
they were.  A worker never waits for a relay process: a lane whose queue is
full is skipped, and when every lane is, the worker relays the session itself.
"""

import json
import socket
from dataclasses import dataclass, fields

_RECORD_MAX = 1 << 16       # bytes of one record: the story and the pending bytes fit


class HandoffError(Exception):
    """A hand-off that came in broken (sockets missing, a record that does not decode)."""


@dataclass(frozen=True)
class Tunnel:
    """What a relay process needs to carry a session to its end and log that end.

    `story` is the session's story (Session.story()), `client` and `dest` the names its
    end line uses; `user` and `what` the escaped text of the worker's title and slot;
    `source` the client's scoreboard source key; `started` the session's start
    (time.monotonic(), one clock for every process) and `wall_started` (time.time());
    `worker_pid` and `worker_session` what the worker's scoreboard slot shows of the session
    (its pid and session number) until the worker goes idle: the tunnel slot shows them
    too, so that a session in both slots for a moment is counted once (sessions_from);
    `from_client` and `from_server` the bytes counted before the hand-off; `pending`
    bytes the client sent after its request, still to be written to the destination.
    """

    session: str
    story: str
    client: str
    dest: str
    user: str
    what: str
    source: bytes
    started: float
    wall_started: float
    idle_timeout: float
    worker_pid: int = 0
    worker_session: int = 0
    from_client: int = 0
    from_server: int = 0
    pending: bytes = b""


_FIELDS = tuple(field.name for field in fields(Tunnel))
_SOURCE, _PENDING = _FIELDS.index("source"), _FIELDS.index("pending")
_COUNTS = [_FIELDS.index(name) for name in
           ("worker_pid", "worker_session", "from_client", "from_server")]
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(tunnel: Tunnel) -> bytes:
    """The record as one datagram: the fields in order, as a JSON array (the two bytes
    fields as hexadecimal and as Latin-1 text).  Every hand-off pays for it: a flat list,
    not dataclasses.asdict() (a deep copy of the record)."""
    values = [getattr(tunnel, name) for name in _FIELDS]
    values[_SOURCE] = tunnel.source.hex()
    values[_PENDING] = tunnel.pending.decode("latin-1")
    return _ENCODER.encode(values).encode()


def decode(data: bytes) -> Tunnel:
    """The record from a datagram; raises HandoffError when it is not one."""
    try:
        values = json.loads(data)
        if not isinstance(values, list) or len(values) != len(_FIELDS):
            raise ValueError(f"not a list of {len(_FIELDS)} fields")
        values[_SOURCE] = bytes.fromhex(values[_SOURCE])
        values[_PENDING] = values[_PENDING].encode("latin-1")
        if not all(type(values[i]) is int for i in _COUNTS):    # they go into the scoreboard
            raise ValueError("a count that is not an integer")
        return Tunnel(*values)
    except (ValueError, TypeError, AttributeError) as exc:
        raise HandoffError(f"a broken record ({exc})") from None


class Lanes:
    """One lane per relay process: the sending ends (workers), the receiving ends."""

    def __init__(self, count: int) -> None:
        self.send_ends: list[socket.socket] = []
        self.receive_ends: list[socket.socket] = []
        for _ in range(count):
            sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sender.setblocking(False)
            receiver.setblocking(False)
            self.send_ends.append(sender)
            self.receive_ends.append(receiver)
        self.next = 0


# The lanes of this server, set by the master before it forks (a worker inherits them).
lanes: Lanes | None = None


def hand_off(tunnel: Tunnel, client: socket.socket, server: socket.socket) -> bool:
    """Hand the session to a relay process; False when there is no lane or every lane is
    full (the caller then relays it itself).  The caller closes its copies of the sockets."""
    if lanes is None or not lanes.send_ends:
        return False
    data = encode(tunnel)
    ends = lanes.send_ends
    for _ in range(len(ends)):
        lane = ends[lanes.next % len(ends)]
        lanes.next += 1
        try:
            socket.send_fds(lane, [data], [client.fileno(), server.fileno()])
            return True
        except OSError:     # EAGAIN (full queue), ENOBUFS, ETOOMANYREFS: the next lane
            continue
    return False


def receive(lane: socket.socket) -> tuple[Tunnel, socket.socket, socket.socket]:
    """The next hand-off on *lane* (non-blocking): the record, the client's socket and the
    destination's.  Raises BlockingIOError when none waits, HandoffError for a broken one
    (its sockets closed)."""
    data, fds, flags, _ = socket.recv_fds(lane, _RECORD_MAX, 2)
    if not data and not fds:
        raise BlockingIOError
    if len(fds) != 2 or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        for fd in fds:
            socket.close(fd)
        raise HandoffError("a hand-off without its two sockets "
                           "(the relay process may be out of file descriptors)")
    client, server = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
    try:
        return decode(data), client, server
    except HandoffError:
        client.close()
        server.close()
        raise
