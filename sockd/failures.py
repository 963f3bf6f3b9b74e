"""Failed logins per client address, shared by every worker, and the delay they earn.

Owns a small table in a shared anonymous mmap, made by the master before it
forks, so that a client cannot escape its delay by landing on another worker.
Each entry is a client address, how many logins failed from it, and when the
last one did; the table is a fixed number of slots chosen by a hash of the
address, and a busy slot is taken over by a new address (the table bounds
memory, not attackers: a forgotten address starts again at the short delay).
Workers update it without a lock: two failures at the same moment may count
once, which only shortens one delay.

`delay` is the policy, a pure function: the delay before answering a failed
login grows with the recent failures from that address (sockd(8), AUTHENTICATION).
"""

from __future__ import annotations

import ipaddress
import mmap
import struct
import zlib

SLOTS = 1024
FORGET_AFTER = 600.0        # seconds without a failure before an address starts again
FIRST_DELAY = 0.25          # seconds before the first failure's answer
MAX_DELAY = 8.0

_ENTRY = struct.Struct("=16sId")    # address (IPv6 or IPv4-mapped), failures, last failure


def delay(failures: int) -> float:
    """Seconds to wait before answering the *failures*-th recent failed login (1 and up)."""
    if failures <= 0:
        return 0.0
    doublings = min(failures - 1, 16)   # past MAX_DELAY anyway; 2.0 ** 1024 would overflow
    return min(FIRST_DELAY * 2 ** doublings, MAX_DELAY)


class LoginFailures:
    """The shared table; `record` is the one call a session makes."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, _ENTRY.size * slots)

    def record(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
               now: float) -> int:
        """Count one more failed login from *address* at time *now* (time.time());
        returns the failures from it in the last FORGET_AFTER seconds, this one included."""
        key = _key(address)
        offset = (zlib.crc32(key) % self.slots) * _ENTRY.size
        stored, count, last = _ENTRY.unpack_from(self._map, offset)
        if stored != key or now - last > FORGET_AFTER:
            count = 0
        count += 1
        _ENTRY.pack_into(self._map, offset, key, count, now)
        return count


def _key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if address.version == 4:
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed).packed
    return address.packed
