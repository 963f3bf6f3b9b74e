"""The status view's pure parts: a scoreboard read into a summary, and its text form."""

import ipaddress

from sockd import status
from sockd.scoreboard import Scoreboard, State, source_key


def test_summary_and_text_of_a_board():
    board = Scoreboard(4)
    board.claim(0, 101, 1)
    board.set_state(0, State.IDLE)
    board.claim(1, 102, 1)
    board.begin_session(1, 3, 1000.0, "127.0.0.1",
                        source_key(ipaddress.ip_address("127.0.0.1")))
    board.set_client(1, "127.0.0.1:40312")
    board.set_request(1, "alice", "connect www.example.com:80 (http)")
    board.claim(2, 103, 1)
    snap = status.take(board, 1012.5)
    info = status.summary(snap)
    assert (info["workers"], info["idle"], info["starting"], info["busy"]) == (3, 1, 1, 1)
    assert info["sessions_served"] == 3
    assert info["sessions"] == [{
        "pid": 102, "state": "relaying", "client": "127.0.0.1:40312", "user": "alice",
        "command": "connect", "destination": "www.example.com:80 (http)",
        "bytes_from_client": 0, "bytes_from_destination": 0, "age": 12.5, "generation": 1}]
    text = status.render(info).splitlines()
    assert text[1] == "3 workers: 1 busy, 1 idle, 1 starting; 3 sessions served"
    assert text[3].split() == list(status.COLUMNS)
    assert text[4].split() == ["102", "relaying", "12s", "127.0.0.1:40312", "alice", "connect",
                               "www.example.com:80", "(http)", "0", "0"]


def test_an_idle_pool_has_no_table():
    board = Scoreboard(2)
    board.claim(0, 7, 1)
    board.set_state(0, State.IDLE)
    assert len(status.render(status.summary(status.take(board, 0.0))).splitlines()) == 2
