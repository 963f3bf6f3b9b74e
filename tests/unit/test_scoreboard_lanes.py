"""The scoreboard's relay lanes (--relay shared) in memory and in its file: one layout
(header, workers' slots, lanes of tunnel slots, high-water marks) that `attach` reads back,
and `sessions_from` and `sockd --status` see the tunnels."""

import ipaddress

from sockd import status
from sockd.scoreboard import Scoreboard, State, source_key

CLIENT = source_key(ipaddress.ip_address("127.0.0.1"))
OTHER = source_key(ipaddress.ip_address("127.0.0.2"))


def fill(board: Scoreboard) -> None:
    board.claim(0, 101, 1)
    board.begin_session(0, 1, 1000.0, "127.0.0.1", CLIENT)
    board.set_request(0, "alice", "connect 127.0.0.1:80 (http)")
    board.claim(1, 102, 1)
    board.set_state(1, State.IDLE)
    first, second = board.lane(0).start, board.lane(1).start
    board.set_high_water(0, 2)
    board.hold_tunnel(first, 201, 990.0, CLIENT, "127.0.0.1", "bob",
                      "connect 127.0.0.1:22 (ssh)", 5)
    board.hold_tunnel(first + 1, 201, 995.0, OTHER, "127.0.0.2", "-",
                      "bind 127.0.0.1:0 (0)", 0)
    board.release(first + 1)                    # ended: below the mark, but free
    board.set_high_water(1, 1)
    board.hold_tunnel(second, 202, 1005.0, CLIENT, "127.0.0.1", "carol",
                      "connect 127.0.0.1:443 (https)", 0)
    board.count_bytes(second, 1010.0, 7, 9)


def check(board: Scoreboard) -> None:
    assert (board.size, board.lanes, board.per_lane) == (4, 2, 3)
    assert board.sessions_from(CLIENT) == 3      # one worker's session, two tunnels
    assert board.sessions_from(OTHER) == 0
    assert [(t.pid, t.user) for t in board.tunnels()] == [(201, "bob"), (202, "carol")]
    info = status.summary(status.take(board, 1012.0))
    assert info["busy"] == 1 and info["relay_processes"] == 2
    assert [(t["pid"], t["client"], t["command"], t["destination"], t["bytes_from_client"],
             t["bytes_from_destination"], t["age"]) for t in info["tunnels"]] == [
        (201, "127.0.0.1", "connect", "127.0.0.1:22 (ssh)", 5, 0, 22.0),
        (202, "127.0.0.1", "connect", "127.0.0.1:443 (https)", 7, 9, 7.0)]
    text = status.render(info).splitlines()
    assert text[2] == "2 relay processes: 2 tunnels"
    assert [row.split()[0] for row in text[5:]] == ["101", "201", "202"]


def test_lanes_in_memory():
    board = Scoreboard(4, 2, 3)
    fill(board)
    check(board)
    board.clear_lane(0)
    assert [t.pid for t in board.tunnels()] == [202] and board.high_water(0) == 0


def test_lanes_in_the_file_are_read_back_by_attach(tmp_path):
    path = str(tmp_path / "run" / "sockd.1.scoreboard")
    board = Scoreboard.create(4, path, 900.0, lanes=2, per_lane=3)
    fill(board)
    check(board)
    reader = Scoreboard.attach(path)
    assert reader.header().started == 900.0
    check(reader)


def test_a_board_without_lanes_shows_no_relay_line():
    board = Scoreboard(2)
    board.claim(0, 7, 1)
    board.set_state(0, State.IDLE)
    info = status.summary(status.take(board, 0.0))
    assert info["relay_processes"] == 0 and info["tunnels"] == []
    assert len(status.render(info).splitlines()) == 2
