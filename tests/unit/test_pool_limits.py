"""The pool's limits, pure or nearly: counting sessions by client address in the scoreboard,
the master's census for the spare-worker plan, the rate limit of the accept-time lines,
and the --max-per-source setting."""

import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockd import cli
from sockd.master import census
from sockd.pool import Limits, plan
from sockd.scoreboard import Scoreboard, State, source_key
from sockd.session import format_host
from sockd.settings import Settings
from sockd.worker import Reports


def key(text: str) -> bytes:
    return source_key(ipaddress.ip_address(text))


# -- the scoreboard counts sessions by client address -------------------------------------


def busy_board(*clients: str) -> Scoreboard:
    board = Scoreboard(len(clients) + 2)
    for index, client in enumerate(clients):
        board.claim(index, 0, 1)
        board.set_pid(index, 100 + index)
        board.set_state(index, State.IDLE)
        board.begin_session(index, 1, 10.0, client, key(client))
    return board


def test_source_key_is_one_form_for_ipv4_and_ipv4_mapped_ipv6():
    assert key("10.1.2.3") == key("::ffff:10.1.2.3") == bytes(10) + b"\xff\xff\x0a\x01\x02\x03"
    assert key("::1") != key("0.0.0.1") and len(key("2001:db8::1")) == 16


def test_sessions_from_counts_negotiating_and_relaying_slots():
    board = busy_board("10.0.0.1", "10.0.0.1", "10.0.0.2", "::1")
    assert board.sessions_from(key("10.0.0.1")) == 2
    assert board.sessions_from(key("::ffff:10.0.0.1")) == 2
    assert board.sessions_from(key("10.0.0.2")) == 1
    assert board.sessions_from(key("::1")) == 1
    assert board.sessions_from(key("10.0.0.3")) == 0
    board.set_request(1, "alice", "connect 127.0.0.1:80 (http)")      # relaying counts too
    assert board.read(1).state == State.RELAYING
    assert board.sessions_from(key("10.0.0.1")) == 2


@given(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "10.0.1.1", "11.0.0.1", "::1",
                                            "2001:db8::101", "10.0.0.2"]),
                          st.sampled_from(["idle", "negotiating", "relaying", "tunnel",
                                           "handing", "handed"])),
                max_size=24),
       st.sampled_from(["10.0.0.1", "10.0.1.1", "::1", "2001:db8::101", "10.0.0.9"]))
def test_sessions_from_agrees_with_a_count_by_hand(slots, asked):
    """Clients that share the key's last byte, idle slots that still hold a key, tunnels,
    a session in the worker slot and the tunnel slot at once while it is handed over (and
    after, when the worker has gone idle or on to its next session): whatever the scan
    skips, the count is the one a plain look at the sessions gives."""
    board = Scoreboard(len(slots) + 1, lanes=1, per_lane=len(slots) + 1)
    expected = 0
    tunnels = 0
    for index, (client, what) in enumerate(slots):
        pid = 100 + index
        if what != "tunnel":
            board.claim(index, 0, 1)
            board.set_pid(index, pid)
            board.set_state(index, State.IDLE)
            board.begin_session(index, 5, 1.0, client, key(client))
            if what == "idle":
                board.end_session(index, 2.0, 0, 0)
            elif what in ("relaying", "handing"):
                board.set_request(index, "-", "connect 127.0.0.1:7 (echo)")
            elif what == "handed":      # the worker's next session, from the same client
                board.end_session(index, 2.0, 0, 0)
                board.begin_session(index, 6, 1.0, client, key(client))
        if what in ("tunnel", "handing", "handed"):
            board.hold_tunnel(board.lane(0).start + tunnels, 300, 1.0, key(client), client,
                              "-", "connect 127.0.0.1:7 (echo)", 0,
                              (0, 0) if what == "tunnel" else (pid, 5))
            tunnels += 1
            board.set_high_water(0, tunnels)
        sessions = {"idle": 0, "handed": 2}.get(what, 1)
        expected += sessions * (key(client) == key(asked))
    assert board.sessions_from(key(asked)) == expected


def test_a_session_being_handed_over_counts_once():
    board = Scoreboard(4, lanes=1, per_lane=4)
    for index in range(2):
        board.claim(index, 0, 1)
        board.set_pid(index, 100 + index)
        board.set_state(index, State.IDLE)
        board.begin_session(index, 3, 10.0, "10.0.0.1", key("10.0.0.1"))
        board.set_request(index, "-", "connect 127.0.0.1:7 (echo)")
    assert board.sessions_from(key("10.0.0.1")) == 2
    # The relay process holds worker 100's session before the worker goes idle.
    board.hold_tunnel(board.lane(0).start, 300, 10.0, key("10.0.0.1"), "10.0.0.1", "-",
                      "connect 127.0.0.1:7 (echo)", 0, (100, 3))
    board.set_high_water(0, 1)
    assert board.sessions_from(key("10.0.0.1")) == 2
    board.end_session(0, 11.0, 0, 0)
    assert board.sessions_from(key("10.0.0.1")) == 2
    # Another worker's session with the same number is another session.
    board.hold_tunnel(board.lane(0).start + 1, 300, 10.0, key("10.0.0.1"), "10.0.0.1", "-",
                      "connect 127.0.0.1:7 (echo)", 0, (102, 3))
    board.set_high_water(0, 2)
    assert board.sessions_from(key("10.0.0.1")) == 3


def test_a_session_that_ends_or_is_withdrawn_no_longer_counts():
    board = busy_board("10.0.0.1", "10.0.0.1", "10.0.0.1")
    board.end_session(0, 11.0, 5, 6)
    assert board.sessions_from(key("10.0.0.1")) == 2
    board.withdraw_session(1, 7)
    slot = board.read(1)
    assert (slot.state, slot.sessions) == (State.IDLE, 7)
    assert board.sessions_from(key("10.0.0.1")) == 1
    board.release(2)
    assert board.sessions_from(key("10.0.0.1")) == 0


def test_a_session_begun_without_a_source_is_never_counted():
    board = Scoreboard(2)
    board.claim(0, 0, 1)
    board.begin_session(0, 1, 1.0, "127.0.0.1")
    assert board.read(0).state == State.NEGOTIATING
    assert board.sessions_from(key("127.0.0.1")) == 0


def test_the_display_name_does_not_change_the_count():
    board = busy_board("10.0.0.1")
    board.set_client(0, "10.0.0.1:40312")
    slot = board.read(0)
    assert (slot.client, slot.source, slot.pid, slot.state) == \
        ("10.0.0.1:40312", key("10.0.0.1"), 100, State.NEGOTIATING)
    assert board.sessions_from(key("10.0.0.1")) == 1


def test_the_count_is_shared_across_fork():
    board = Scoreboard(3)
    for index in range(3):
        board.claim(index, 0, 1)
        board.set_state(index, State.IDLE)
    pid = os.fork()
    if pid == 0:
        board.begin_session(2, 1, 1.0, "10.0.0.9", key("10.0.0.9"))
        os._exit(0)
    os.waitpid(pid, 0)
    board.begin_session(0, 1, 1.0, "10.0.0.9", key("10.0.0.9"))
    assert board.sessions_from(key("10.0.0.9")) == 2


# -- the census: spares of the current generation, every live worker for the ceiling -------


def slots_of(*workers: tuple[int, State]) -> list:
    board = Scoreboard(len(workers))
    for index, (generation, state) in enumerate(workers):
        board.claim(index, 100 + index, generation)
        if state != State.STARTING:
            board.set_state(index, state)
    return [board.read(i) for i in range(len(workers))]


def test_census_counts_old_busy_workers_against_the_ceiling_but_not_as_spares():
    slots = slots_of((1, State.RELAYING), (1, State.NEGOTIATING), (1, State.IDLE),
                     (2, State.IDLE), (2, State.STARTING), (2, State.RELAYING))
    assert census(slots, 2) == (2, 6)
    assert census(slots, 1) == (1, 6)


def test_after_a_reload_the_plan_stays_under_max_workers():
    # three busy workers of generation 1 are finishing; generation 2 has none yet
    limits = Limits(min_spare=2, max_spare=4, max_workers=4)
    spare, total = census(slots_of(*[(1, State.RELAYING)] * 3), 2)
    step = plan(spare, total, limits, rate=4)
    assert (spare, total, step.spawn) == (0, 3, 1)
    spare, total = census(slots_of(*[(1, State.RELAYING)] * 3, (2, State.RELAYING)), 2)
    step = plan(spare, total, limits, rate=1)
    assert step.spawn == 0 and "--max-workers (4)" in step.warning


# -- the rate limit of the lines about clients closed at accept -----------------------------


def test_reports_say_the_first_at_once_then_once_an_interval_with_the_count():
    reports = Reports(interval=10)
    assert reports.due(1000.0) == 0
    assert [reports.due(1000.0 + i) for i in range(5)] == [None] * 5
    assert reports.due(1009.9) is None
    assert reports.due(1010.0) == 6
    assert reports.due(1040.0) == 0


def test_clients_are_described_as_the_session_lines_do():
    assert format_host(ipaddress.ip_address("10.0.0.1"), 40312) == "10.0.0.1:40312"
    assert format_host(ipaddress.ip_address("::1"), 1080) == "[::1]:1080"


# -- --max-per-source ---------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "cap"), [
    ([], 16),                                      # a quarter of the default 64
    (["--max-workers", "8", "--min-spare", "2", "--max-spare", "4"], 8),  # at least 8
    (["--max-workers", "200", "--max-spare", "10"], 50),
    (["--max-per-source", "0"], 0),                # no cap
    (["--max-per-source", "3", "--max-workers", "100"], 3),
])
def test_max_per_source(argv, cap):
    settings, _ = cli.parse_settings(argv)
    assert settings.per_source_cap == cap


def test_max_per_source_must_not_be_negative():
    assert cli.main(["--max-per-source", "-1"]) == cli.EXIT_USAGE
    assert cli.main(["--max-per-source", "x"]) == cli.EXIT_USAGE


def test_the_default_cap_follows_max_workers():
    assert Settings(max_workers=4).per_source_cap == 8
    assert Settings(max_workers=400).per_source_cap == 100
