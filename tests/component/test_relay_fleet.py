"""The master's relay processes (sockd.relayproc.Fleet): a relay process that cannot start
says so with the workers' exit code, and is not forked again and again."""

import logging
import os
import signal

import pytest

from sockd import handoff
from sockd.relayproc import Fleet
from sockd.scoreboard import Scoreboard
from sockd.settings import Settings
from sockd.worker import EXIT_BOOT_ERROR


@pytest.fixture
def fleet(monkeypatch):
    monkeypatch.setattr(handoff, "lanes", None)     # Fleet sets the module's lanes
    made = []

    def make(**settings) -> Fleet:
        made.append(Fleet(Settings(relay="shared", relay_processes=1, **settings),
                          Scoreboard(2, 1, 8), []))
        return made[-1]
    yield make
    for f in made:
        f.signal(signal.SIGKILL)
        for pid in list(f.pids):
            os.waitpid(pid, 0)


def _wait_for_the_only_one(f: Fleet) -> tuple[int, int]:
    (pid,) = f.pids
    return pid, os.waitpid(pid, 0)[1]


def test_a_relay_process_that_cannot_start_stops_the_fleet(fleet, caplog):
    f = fleet(user="sockd-no-such-user")
    f.spawn_missing()
    pid, status = _wait_for_the_only_one(f)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_ERROR
    with caplog.at_level(logging.ERROR, logger="sockd"):
        assert f.reap(pid, status)
    assert f.failed
    assert f"relay process {pid} could not start; stopping the server" in caplog.text
    f.spawn_missing()
    assert f.pids == {}             # no successor: it would fail the same way


def test_a_relay_process_that_dies_later_is_replaced(fleet, caplog):
    f = fleet()
    f.spawn_missing()
    (pid,) = f.pids
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    with caplog.at_level(logging.ERROR, logger="sockd"):
        assert f.reap(pid, status)
    assert not f.failed
    assert f"relay process {pid} killed by signal 9 (0 tunnels lost)" in caplog.text
    f.spawn_missing()
    assert len(f.pids) == 1 and pid not in f.pids
