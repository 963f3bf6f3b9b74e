"""The spare-worker plan, as a pure function."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sockd.pool import MAX_SPAWN_RATE, Limits, plan

LIMITS = Limits(min_spare=5, max_spare=10, max_workers=64)


def test_enough_idle_workers_does_nothing():
    p = plan(idle=7, total=20, limits=LIMITS, rate=4)
    assert (p.spawn, p.retire, p.next_rate, p.warning) == (0, 0, 1, None)


def test_too_many_idle_retires_one_per_tick():
    assert plan(idle=30, total=30, limits=LIMITS, rate=1).retire == 1


def test_spawn_rate_doubles_while_short():
    limits = Limits(min_spare=50, max_spare=60, max_workers=100)
    rates = []
    rate, idle = 1, 0
    for _ in range(7):
        p = plan(idle=idle, total=idle, limits=limits, rate=rate)
        rates.append(p.spawn)
        idle += p.spawn
        rate = p.next_rate
    assert rates == [1, 2, 4, 8, 16, 19, 0]


def test_rate_is_capped():
    limits = Limits(min_spare=500, max_spare=600, max_workers=1000)
    assert plan(idle=0, total=0, limits=limits, rate=32).next_rate == MAX_SPAWN_RATE


def test_max_workers_is_a_ceiling_with_a_warning():
    p = plan(idle=0, total=64, limits=LIMITS, rate=8)
    assert p.spawn == 0 and p.next_rate == 1
    assert "--max-workers (64)" in p.warning
    assert plan(idle=0, total=62, limits=LIMITS, rate=8).spawn == 2


@settings(deadline=None)
@given(st.integers(0, 100), st.integers(0, 100), st.integers(1, 32),
       st.integers(1, 20), st.integers(0, 20), st.integers(1, 100))
def test_plan_never_breaks_the_limits(idle, busy, rate, min_spare, extra, max_workers):
    limits = Limits(min_spare, min_spare + extra, max(max_workers, min_spare + extra))
    total = idle + busy
    p = plan(idle, total, limits, rate)
    assert 0 <= p.spawn <= rate
    assert total + p.spawn <= max(limits.max_workers, total)
    assert p.retire in (0, 1) and not (p.spawn and p.retire)
    assert 1 <= p.next_rate <= MAX_SPAWN_RATE
    if min_spare <= idle <= limits.max_spare:
        assert p.spawn == p.retire == 0
