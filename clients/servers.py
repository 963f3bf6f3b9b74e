"""Server lists: the order in which a ``sockd`` line's servers are tried, and which are down.

This module owns one policy and its memory.  The servers of a line are tried in the order
written (CSTC's connect_sockd), or in a random order when the line says ``order=random`` (to
spread clients over several sockd servers).  A server that refused the TCP connection or did
not answer in time is remembered as down for `DOWN_FOR` seconds (per process) and skipped while
it is; when every server of the list is down they are all tried anyway, in the same order,
rather than refusing without a try.

It does no I/O: the caller reports failures with `mark_down` and asks `order`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable

from clients.conf import Server

DOWN_FOR = 30.0


class ServerMemory:
    """Which servers failed lately; thread-safe (the non-blocking connect runs in a thread)."""

    def __init__(self, down_for: float = DOWN_FOR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.down_for = down_for
        self.clock = clock
        self._down_until: dict[Server, float] = {}
        self._lock = threading.Lock()

    def mark_down(self, server: Server) -> None:
        with self._lock:
            self._down_until[server] = self.clock() + self.down_for

    def mark_up(self, server: Server) -> None:
        with self._lock:
            self._down_until.pop(server, None)

    def is_down(self, server: Server) -> bool:
        with self._lock:
            until = self._down_until.get(server)
            if until is None:
                return False
            if until <= self.clock():
                del self._down_until[server]
                return False
            return True

    def order(self, servers: Iterable[Server], order: str = "listed",
              rng: random.Random | None = None) -> list[Server]:
        """The servers to try, in order: those not down, as written or shuffled; all of them
        when every one is down."""
        listed = list(servers)
        if order == "random":
            (rng or random).shuffle(listed)
        up = [s for s in listed if not self.is_down(s)]
        return up or listed


__all__ = ["DOWN_FOR", "ServerMemory"]
