"""The scoreboard, log escaping and listen addresses (the password file: test_passwords.py)."""

import os
import re

import pytest

from sockd import listeners
from sockd.log import escape
from sockd.scoreboard import Scoreboard, State


def test_scoreboard_slot_life():
    board = Scoreboard(4)
    assert board.free_slot() == 0
    board.claim(0, 0, 3)
    board.set_pid(0, 1234)
    assert board.free_slot() == 1
    board.set_state(0, State.IDLE)
    board.begin_session(0, 7, 100.0, "127.0.0.1")
    board.set_request(0, "alice", "connect 127.0.0.1:80 (http)")
    slot = board.read(0)
    assert (slot.pid, slot.generation, slot.state, slot.sessions) == (1234, 3, State.RELAYING, 7)
    assert (slot.client, slot.user, slot.destination) == \
        ("127.0.0.1", "alice", "connect 127.0.0.1:80 (http)")
    board.end_session(0, 101.0, 10, 20)
    slot = board.read(0)
    assert (slot.state, slot.bytes_up, slot.bytes_down, slot.heartbeat) == \
        (State.IDLE, 10, 20, 101.0)
    board.release(0)
    assert board.read(0).state == State.DEAD and board.free_slot() == 0


def test_scoreboard_is_shared_across_fork():
    board = Scoreboard(2)
    board.claim(1, 0, 1)
    pid = os.fork()
    if pid == 0:
        board.set_state(1, State.IDLE)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.read(1).state == State.IDLE


@pytest.mark.parametrize("raw, shown", [
    ("alice", "alice"),
    ("x;touch /tmp/pwned", "x;touch\\x20/tmp/pwned"),
    ("a\nb\rc\x00", "a\\x0ab\\x0dc\\x00"),
    ("back\\slash", "back\\x5cslash"),
    ("\u00e9t\u00e9", "\\xe9t\\xe9"),
])
def test_escape_keeps_client_text_on_one_printable_line(raw, shown):
    assert escape(raw) == shown


def test_escape_bounds_length():
    assert len(escape("a" * 1000)) == 255


@pytest.mark.parametrize("text, parsed", [
    ("127.0.0.1:1080", ("127.0.0.1", 1080)),
    ("[::1]:1081", ("::1", 1081)),
    ("127.0.0.1", ("127.0.0.1", listeners.socks_port())),
    (":1082", ("0.0.0.0", 1082)),
    ("[::]:socks", ("::", 1080)),
])
def test_listen_addresses(text, parsed):
    assert listeners.parse_address(text) == parsed


@pytest.mark.parametrize("text", ["[::1:1080", "127.0.0.1:99999", "127.0.0.1:nosuchservice"])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        listeners.parse_address(text)


def test_login_failure_delay_grows_and_is_shared_after_fork():
    import ipaddress
    import os

    from sockd import failures

    assert [failures.delay(n) for n in range(7)] == [0, 0.25, 0.5, 1, 2, 4, 8]
    assert failures.delay(40) == failures.MAX_DELAY
    assert failures.delay(10 ** 6) == failures.MAX_DELAY     # no overflow, however many
    table = failures.LoginFailures(slots=8)
    a, b = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::ffff:10.0.0.1")
    assert table.record(a, 1000.0) == 1
    pid = os.fork()
    if pid == 0:
        os._exit(0 if table.record(a, 1001.0) == 2 else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert table.record(ipaddress.ip_address(str(b.ipv4_mapped)), 1002.0) == 3
    assert table.record(a, 1002.0 + failures.FORGET_AFTER + 1) == 1     # forgotten


def test_a_full_log_disk_loses_lines_quietly_and_says_how_many(tmp_path):
    """--log FILE on a full disk: no traceback on stderr, lines counted, and once space comes
    back the first line written says how many were lost (a private tmpfs of 24 KiB)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
import logging, os, sys
sys.path.insert(0, {str(root)!r})
from sockd import log
handler = log.configure({str(disk / "sockd.log")!r})
logger = logging.getLogger("sockd")
for i in range(1000):
    logger.info("line %d %s", i, "x" * 60)
assert handler.lost > 0, handler.lost
os.truncate({str(disk / "sockd.log")!r}, 0)        # space again
logger.info("after the gap")
print(handler.lost)
print(open({str(disk / "sockd.log")!r}).read())
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f'mount -t tmpfs -o size=24k tmpfs {disk} && exec "$0" "$@"',
                           sys.executable, "-c", script, ],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lost, *lines = done.stdout.strip().splitlines()
    assert lost == "0" and done.stderr == ""
    assert re.search(r"sockd\[\d+\]: error -- \d+ log lines lost \(No space left on device\)$",
                     lines[0]), lines
    assert lines[1].endswith("after the gap")


@pytest.mark.parametrize("where", ["file", "stderr", "syslog"])
def test_the_quick_info_path_writes_what_the_logging_module_writes(tmp_path, where):
    """sockd.log gives the logger a quicker info() for the session lines: for each handler,
    a line made that way is byte for byte the line logging.Logger.info() makes (the time
    stamp aside), and a call the quick path does not cover (exc_info) takes the general
    path.  In a child process: the logger's set-up stays out of the other tests."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    target = {"file": str(tmp_path / "sockd.log"), "stderr": "stderr", "syslog": "syslog"}[where]
    script = f"""
import logging, os, socket, sys
sys.path.insert(0, {str(root)!r})
from sockd import log
address = {str(tmp_path / "dev-log")!r}
inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
inbox.bind(address)
log.configure({target!r}, syslog_address=address)
logger = logging.getLogger("sockd")
assert logger.info is log._info
for say in (logger.info, lambda *a: logging.Logger.info(logger, *a)):
    say("connected -- %s rule=%s:%d", "Connect from -(unknown)@127.0.0.2:5 caf\\xe9", "/c", 7)
    say("plain line, no arguments")
    say("%(who)s by name", {{"who": "alice"}})
logger.info("with a traceback", exc_info=(ValueError, ValueError("boom"), None))
inbox.setblocking(False)
try:
    while True:
        sys.stdout.write(repr(inbox.recv(4096)) + "\\n")
except BlockingIOError:
    pass
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    if where == "file":
        lines = (tmp_path / "sockd.log").read_text().splitlines()
    elif where == "stderr":
        lines = done.stderr.splitlines()
    else:
        lines = done.stdout.splitlines()
    assert len(lines) >= 7, lines
    if where != "syslog":
        lines = [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "STAMP ", line) for line in lines]
    assert lines[:3] == lines[3:6] and "alice by name" in lines[2] and "caf" in lines[0]
    assert "with a traceback" in lines[6] and "ValueError: boom" in "\n".join(lines[6:])
