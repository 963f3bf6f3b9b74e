"""Moves bytes both ways between two connected sockets until both sides are done.

Owns the relay loop and nothing else: no policy, no logging, no titles.  Each
direction moves through its own kernel pipe with splice(2), so relayed bytes
never enter Python; the loop only decides who is ready.  An end of file from
one side becomes shutdown(SHUT_WR) towards the other once everything read
from it has been written, and the other direction keeps flowing (half-close).

TCP urgent data is relayed inline (SO_OOBINLINE on both sockets, as CSTC sockd
did): the urgent byte keeps its place in the stream, and a direction ends only
at a real end of file.  splice(2) cannot read past an urgent mark whatever
SO_OOBINLINE says (tcp_read_sock() stops there): it fails with EAGAIN, or
returns 0 once the peer's FIN has come as well.  So a source that select()
called readable but that gave splice nothing is looked at with recv(2): an
empty peek is the end of file; otherwise one byte moves through the same pipe
(keeping its order) and the mark is behind us.  A busy stream never takes that
path.  read_urgent_inline() is for the caller to set the option on each socket
before its peer can send: the kernel may drop an urgent byte that comes earlier.

One exception to "never enter Python": a caller may observe the
client-to-server direction (relay(observe_client=...); sockd.ftpaudit does,
for FTP control connections).  That direction alone is read with recv(2),
handed to the observer, and written on with send(2): the same
states (end of file, half-close, urgent bytes inline, idle time, counts) and
the same loop, and the bytes reach the server unchanged and in order.  recv(2)
reads through an urgent mark by itself (SO_OOBINLINE), so that direction needs
no step over it.  Every other direction, and every session not observed,
splices exactly as above.
"""

import errno
import fcntl
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

PIPE_SIZE = 1 << 20          # bytes a direction may hold in flight
CHUNK = 1 << 20              # most bytes asked of one splice(2)
TICK = 1.0                   # seconds between calls of on_tick
PUMP_ROUNDS = 8              # reads in a row for one direction before looking around
OBSERVED_CHUNK = 1 << 18     # most bytes asked of one recv(2) in an observed direction
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_RESET = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.EHOSTUNREACH,
          errno.ENETUNREACH, errno.ECONNABORTED)


@dataclass
class Stats:
    """What a finished relay reports: bytes each way and why it ended."""

    from_client: int = 0
    from_server: int = 0
    reason: str = "eof"          # "eof", "idle", "reset", "stopped"


class _Pipe:
    """A kernel pipe for splice(2), kept by the process from one relay to the next."""

    __slots__ = ("read_fd", "room", "write_fd")

    def __init__(self, size: int) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.room = 1 << 16      # the kernel's default size
        if size > self.room:
            self.grow(size)

    def grow(self, size: int) -> int:
        """Make the pipe hold *size* bytes if the system allows; returns the room it has."""
        try:
            self.room = fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, size)
        except OSError:
            pass  # fs.pipe-max-size or the user's pipe pages are lower here; the size stays
        return self.room

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class PipePool:
    """The empty pipes of one process, ready for the next direction that has bytes to hold.

    *first_size* is the room a new pipe gets; *spares* how many empty pipes are kept.
    With *lend*, a direction gives its pipe back as soon as the pipe is empty, so that an
    idle tunnel holds no pipe (the relay processes); without it, a direction keeps its
    pipe until the relay ends (a worker relays one session at a time: two pipes serve it
    for its whole life).  A direction whose pipe fills up asks for a bigger one (grow).
    """

    def __init__(self, first_size: int, spares: int, lend: bool) -> None:
        self.first_size = first_size
        self.spares = spares
        self.lend = lend
        self._spare: list[_Pipe] = []
        self.in_use = 0

    def take(self) -> _Pipe:
        self.in_use += 1
        return self._spare.pop() if self._spare else _Pipe(self.first_size)

    def give_back(self, pipe: _Pipe, empty: bool) -> None:
        self.in_use -= 1
        if empty and len(self._spare) < self.spares:
            self._spare.append(pipe)
        else:
            pipe.close()  # bytes a reset left behind must not leak into the next session


# The worker's own relay: a pipe of PIPE_SIZE for each direction, kept for the session.
_worker_pipes = PipePool(PIPE_SIZE, spares=2, lend=False)


class _Direction:
    """One way of the relay: bytes read from *src*, parked in a pipe, written to *dst*.

    The one implementation of a direction's state, driven by relay() in a worker and by
    the relay processes (sockd.relayproc), many at once, from epoll.  The pipe is taken
    from *pipes* at the first byte read (see PipePool for when it goes back).
    """

    __slots__ = ("count", "dst", "dst_sock", "eof", "full", "held", "pipe", "pipe_r",
                 "pipe_w", "pipes", "room", "shut", "src", "src_sock")

    def __init__(self, src: socket.socket, dst: socket.socket,
                 pipes: PipePool = _worker_pipes) -> None:
        self.src, self.dst = src.fileno(), dst.fileno()
        self.src_sock, self.dst_sock = src, dst
        self.pipes = pipes
        self.pipe: _Pipe | None = None
        self.pipe_r = self.pipe_w = -1
        self.room = pipes.first_size
        self.held = 0
        self.full = False
        self.count = 0
        self.eof = False
        self.shut = False

    def _take_pipe(self) -> None:
        self.pipe = self.pipes.take()
        self.pipe_r, self.pipe_w, self.room = (self.pipe.read_fd, self.pipe.write_fd,
                                               self.pipe.room)

    def _let_go(self) -> None:
        """An empty pipe goes back to the pool (PipePool.lend)."""
        self.pipes.give_back(self.pipe, True)
        self.pipe = None
        self.pipe_r = self.pipe_w = -1

    @property
    def wants_read(self) -> bool:
        """The source may be read: no end of file yet, and the pipe has room."""
        return not (self.eof or self.full or self.held >= self.room)

    def preload(self, data: bytes) -> None:
        """Put *data* (bytes read from the source before the relay began) in the pipe,
        ahead of anything read later; they are not counted (the caller has counted them)."""
        if data:
            if self.pipe is None:
                self._take_pipe()
            self.held += os.write(self.pipe_w, data)

    def fill(self, readable: bool = False) -> int:
        """Read what the source has into the pipe; notice its end of file.

        *readable* says select() has just reported the source readable, so
        that a read of nothing means an urgent mark (or the end of file)
        rather than a source gone dry.  Returns the bytes read, 0 at end of
        file, -1 when nothing could be read.
        """
        if self.pipe is None:
            self._take_pipe()
        try:
            n = os.splice(self.src, self.pipe_w, CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            if readable and not self.held:
                return self.step_over_mark()
            # The pipe can run out of buffer slots before it runs out of bytes
            # (one slot per received segment): wait for a drain, do not spin.
            self.full = self.held > 0
            return -1
        if n == 0:
            return self.step_over_mark()
        self.held += n
        self.count += n
        if self.held >= self.room and self.room < PIPE_SIZE:
            self.room = self.pipe.grow(PIPE_SIZE)  # a busy stream: a bigger pipe
        return n
    def step_over_mark(self) -> int:
        """Where splice(2) read nothing: move one byte with recv(2), or see the end of file.

        At an urgent mark the byte is the urgent byte (SO_OOBINLINE): it is
        peeked, written to the pipe behind what is held, and only then taken
        from the socket, so a full pipe leaves it where it was.  Reading past
        it clears the mark and splice(2) moves the rest.  Returns 1, 0 at the
        end of file, -1 when the byte has to wait.
        """
        try:
            byte = self.src_sock.recv(1, _PEEK)
        except BlockingIOError:
            return -1
        if not byte:
            self.eof = True
            return 0
        try:
            os.write(self.pipe_w, byte)
        except BlockingIOError:
            self.full = self.held > 0
            return -1
        self.src_sock.recv(1, socket.MSG_DONTWAIT)
        self.held += 1
        self.count += 1
        return 1

    def pump(self) -> None:
        """Read and write again while the source has more and the destination takes it all.

        A busy stream then costs one select() per several megabytes, not per
        read; the rounds are bounded so that the other direction gets its turn.
        """
        for round_ in range(PUMP_ROUNDS):
            got = self.fill(readable=round_ == 0)
            if self.held:
                self.drain()
            if got <= 0 or self.held:
                return

    def drain(self) -> None:
        """Write what the pipe holds to the destination, as far as it takes it."""
        try:
            n = os.splice(self.pipe_r, self.dst, self.held, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        self.held -= n
        self.full = False
        if not self.held and self.pipes.lend:
            self._let_go()

    def pass_end(self) -> None:
        """Once the source's end of file is read and every byte written: shut the
        destination's write side (half-close); the other direction goes on."""
        if self.eof and not self.held and not self.shut:
            self.shut = True
            _shutdown_write(self.dst_sock)

    @property
    def done(self) -> bool:
        return self.shut

    def close(self) -> None:
        if self.pipe is not None:
            self.pipes.give_back(self.pipe, self.held == 0)
            self.pipe = None


class _ObservedDirection(_Direction):
    """A direction whose bytes an observer sees: recv(2), then send(2) of the same bytes.

    The same states as _Direction (held, full, room, eof, shut, count), so
    the loop and pump() drive it unchanged; only how bytes move differs.
    What has been read and not yet sent waits as the very objects recv(2)
    returned, in order: no copy.
    """

    __slots__ = ("dst_sock", "observe", "waiting")

    def __init__(self, src: socket.socket, dst: socket.socket,
                 observe: Callable[[bytes], None]) -> None:
        self.src, self.dst = src.fileno(), dst.fileno()
        self.src_sock, self.dst_sock = src, dst
        self.observe = observe
        self.waiting: deque[memoryview] = deque()
        self.room = PIPE_SIZE
        self.held = 0
        self.full = False
        self.count = 0
        self.eof = False
        self.shut = False

    def fill(self, readable: bool = False) -> int:
        """Read what the source has, show it to the observer, keep it to be sent."""
        try:
            data = self.src_sock.recv(OBSERVED_CHUNK)
        except BlockingIOError:
            return -1
        if not data:
            self.eof = True
            return 0
        self.observe(data)
        self.waiting.append(memoryview(data))
        n = len(data)
        self.held += n
        self.count += n
        return n

    def drain(self) -> None:
        """Send what waits to the destination, as far as it takes it."""
        waiting = self.waiting
        while waiting:
            head = waiting[0]
            try:
                n = self.dst_sock.send(head)
            except BlockingIOError:
                return
            self.held -= n
            self.full = False
            if n < len(head):
                waiting[0] = head[n:]
                return
            waiting.popleft()

    def close(self) -> None:
        self.waiting.clear()


def read_urgent_inline(sock: socket.socket) -> None:
    """Make *sock* read TCP urgent data inline (SO_OOBINLINE).

    Call it before the peer can send bytes that will be relayed: on the
    client's socket before the request is read, on the outbound socket
    before connect(2).  A second urgent mark that arrives while the first
    urgent byte is unread makes the kernel drop that byte unless the socket
    reads urgent data inline (tcp_check_urg()), so setting it only when the
    relay starts can be too late.  relay() sets it again; that costs nothing.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(client: socket.socket, server: socket.socket, *, idle_timeout: float,
          on_tick: Callable[[], bool] | None = None,
          observe_client: Callable[[bytes], None] | None = None) -> Stats:
    """Relay between *client* and *server* until both directions have ended.

    Args:
        client, server: connected TCP sockets; made non-blocking, and set to
            read urgent data inline, here (better: earlier, see read_urgent_inline).
        idle_timeout: end the relay after this many seconds with no byte moved.
        on_tick: called about once a second; returning False stops the relay.
        observe_client: called with each piece the client sends, in order,
            before it is passed on; it must not raise.  None (the default)
            keeps every byte out of Python.

    Returns:
        Stats with the byte counts and the reason the relay ended.
    """
    for sock in (client, server):
        sock.setblocking(False)
        read_urgent_inline(sock)  # telnet's interrupt, FTP's ABOR stay in the stream
    up = _Direction(client, server) if observe_client is None \
        else _ObservedDirection(client, server, observe_client)
    down = _Direction(server, client)
    stats = Stats()
    try:
        stats.reason = _run(up, down, idle_timeout, on_tick, client, server)
    finally:
        stats.from_client, stats.from_server = up.count, down.count
        up.close()
        down.close()
    return stats


def _run(up: _Direction, down: _Direction, idle_timeout: float,
         on_tick: Callable[[], bool] | None, client: socket.socket,
         server: socket.socket) -> str:
    """The loop proper: wait for readiness, splice, pass half-closes on."""
    now = last_activity = time.monotonic()
    next_tick = now + TICK      # the first wait blocks: a short session never ticks
    directions = (up, down)
    while not (up.done and down.done):
        readers = [d.src for d in directions if d.wants_read]
        writers = [d.dst for d in directions if d.held]
        timeout = max(0.0, next_tick - now)
        try:
            readable, writable, _ = select.select(readers, writers, (), timeout)
        except InterruptedError:
            readable = writable = []
        now = time.monotonic()
        if readable or writable:
            last_activity = now
        try:
            for d in directions:
                if d.dst in writable:
                    d.drain()
                if d.src in readable:
                    d.pump()
                d.pass_end()
        except OSError as exc:
            if exc.errno in _RESET:
                return "reset"
            raise
        if now >= next_tick:
            next_tick = now + TICK
            if on_tick is not None and not on_tick():
                return "stopped"
            if now - last_activity >= idle_timeout:
                return "idle"
    return "eof"
