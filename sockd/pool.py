"""The spare-worker policy, as a pure function (Apache prefork's idle maintenance).

Takes counts and limits, returns what the master should do on this tick.  It
forks nothing and reads no clock: the master applies the plan.
"""

from dataclasses import dataclass

MAX_SPAWN_RATE = 32


@dataclass(frozen=True)
class Limits:
    min_spare: int
    max_spare: int
    max_workers: int


@dataclass(frozen=True)
class Plan:
    spawn: int          # how many workers to fork now
    retire: int         # how many idle workers to retire now (0 or 1)
    next_rate: int      # the spawn rate for the next tick
    warning: str | None  # something the administrator should hear about, once


def plan(idle: int, total: int, limits: Limits, rate: int) -> Plan:
    """Decide one tick of pool maintenance.

    Args:
        idle: workers of the current generation waiting in accept() (or booting): the spare
            workers.  Workers of an older generation are leaving and are never spare.
        total: every live worker, of every generation (idle, busy, booting, leaving): all
            of them count against --max-workers.
        limits: the --min-spare, --max-spare and --max-workers settings.
        rate: how many workers the previous tick was allowed to spawn.

    Returns:
        A Plan.  Like Apache, at most one idle worker is retired per tick, and
        the spawn rate doubles on each tick that needed every spawn it was
        allowed (up to 32), and falls back to 1 when no spawn was needed.
    """
    if idle > limits.max_spare:
        return Plan(spawn=0, retire=1, next_rate=1, warning=None)
    if idle >= limits.min_spare:
        return Plan(spawn=0, retire=0, next_rate=1, warning=None)
    room = limits.max_workers - total
    if room <= 0:
        return Plan(spawn=0, retire=0, next_rate=1,
                    warning=f"server reached --max-workers ({limits.max_workers}); "
                            "consider raising it")
    wanted = min(rate, room, limits.min_spare - idle)
    next_rate = min(rate * 2, MAX_SPAWN_RATE) if wanted == rate else rate
    return Plan(spawn=wanted, retire=0, next_rate=next_rate, warning=None)
