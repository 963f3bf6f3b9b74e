"""sockd.hooks: token expansion (pure) and the background runner (real /bin/sh, real processes)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import hooks

HOSTILE = [
    "x;touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "x' ; touch {marker} ; '",
    'x" ; touch {marker} ; "',
    "x\ntouch {marker}",
    "x|touch {marker}",
    "x&&touch {marker}",
    "-oProxyCommand=touch {marker}",
    "x\\",
    "$HOME${{IFS}}!!*?~",
]

TEMPLATES = [                                # %%s: a literal %s for printf
    "printf '%%s\\n' %u",                    # unquoted
    "printf '%%s\\n' \"%u\"",                # double quotes
    "printf '%%s\\n' '%u'",                  # single quotes
    "printf '%%s\\n' \"refused %u@%A\"",     # the classic mail -s "refused %u@%A" form
    "printf '%%s\\n' x%uy",
]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))

    def messages(self) -> list[str]:
        return [message for _, message in self.lines]


@pytest.fixture
def log():
    records = Records()
    logger = logging.getLogger(f"sockd.test-hooks.{id(records)}")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    records.logger = logger
    return records


def wait_for(runner: hooks.HookRunner, seconds: float = 20.0) -> None:
    assert runner.wait(seconds), "hooks did not finish"


# ---------------------------------------------------------------------------------------------
# Expansion


@pytest.mark.parametrize("value, cleaned", [
    ("fred", "fred"),
    ("fred.smith-jr_2@host.example:8080,x+z=1", "fred.smith-jr_2@host.example:8080,x+z=1"),
    ("x;touch /tmp/pwned", "x_touch__tmp_pwned"),
    # A value is never a path: no "/", and no leading "." (so never "." or "..").
    ("../../x", "_._.._x"),
    ("..", "_."),
    (".", "_"),
    (".profile", "_profile"),
    ("/etc/passwd", "_etc_passwd"),
    ("a.b..c", "a.b..c"),
    ("$(id)", "__id_"),
    ("`id`", "_id_"),
    ("a'b\"c", "a_b_c"),
    ("a\nb\rc\x00d", "a_b_c_d"),
    ("-rf", "_rf"),
    ("--help", "_-help"),
    ("é!\\%", "____"),
    ("", ""),
])
def test_sanitize(value, cleaned):
    assert hooks.sanitize(value) == cleaned


def test_sanitize_caps_the_length():
    assert hooks.sanitize("a" * 10_000) == "a" * hooks.MAX_VALUE


@settings(deadline=None)
@given(st.text())
def test_sanitized_values_are_inert(value):
    cleaned = hooks.sanitize(value)
    assert set(cleaned) <= hooks.SAFE_CHARACTERS
    assert "/" not in cleaned
    assert not cleaned.startswith(("-", "."))


@pytest.mark.parametrize("template, used", [
    ("mail -s 'refused %u@%A' root", {"u", "A"}),
    ("echo %a %c %p %S %s %U %u %Z %z", set("acpSsUuZz")),
    ("echo 100%% done %%A", set()),
    ("echo %q %", set()),
    ("no tokens", set()),
])
def test_needs(template, used):
    assert hooks.needs(template) == used


TOKEN_VALUES = {"A": "client.example.com", "a": "10.1.2.3", "c": "connect", "p": "4242",
                "S": "telnet", "s": "23", "U": "realfred", "u": "fred", "Z": "www.example.com",
                "z": "192.0.2.80"}


@pytest.mark.parametrize("template, expanded", [
    # The chapter's table of tokens.
    ("%A", "client.example.com"), ("%a", "10.1.2.3"), ("%c", "connect"), ("%p", "4242"),
    ("%S", "telnet"), ("%s", "23"), ("%U", "realfred"), ("%u", "fred"),
    ("%Z", "www.example.com"), ("%z", "192.0.2.80"), ("%%", "%"),
    # The chapter's example command.
    ("/usr/ucb/finger @%A | /bin/mailx -s 'SOCKS: rejected %u@%A' root",
     "/usr/ucb/finger @client.example.com | /bin/mailx -s "
     "'SOCKS: rejected fred@client.example.com' root"),
    # Any other %x is removed, as CSTC's percent_x did; so is a final lone %.
    ("a%qb%", "ab"),
    ("100%%%u", "100%fred"),
])
def test_expand(template, expanded):
    assert hooks.expand(template, TOKEN_VALUES) == expanded


def test_expand_removes_tokens_it_was_not_given():
    assert hooks.expand("[%A][%u]", {"u": "fred"}) == "[][fred]"


def test_expand_sanitizes_every_value():
    assert hooks.expand("echo %u %A", {"u": "$(id)", "A": "-x.evil;rm"}) == "echo __id_ _x.evil_rm"


@pytest.mark.parametrize("user", ["../../x", "..", ".", "../", "/etc/x", "a/../../b"])
def test_a_value_cannot_climb_out_of_the_directory_a_hook_writes_to(user, tmp_path):
    logs = tmp_path / "a" / "b" / "logs"
    logs.mkdir(parents=True)
    command = hooks.expand(f"touch {logs}/%u.log", {"u": user})
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=10, cwd=tmp_path)
    created = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert created == [logs / f"{hooks.sanitize(user)}.log"]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_run_nothing_whatever_the_quoting(template, hostile, tmp_path):
    marker = tmp_path / "pwned"
    value = hostile.format(marker=marker)
    command = hooks.expand(template, {"u": value, "A": value})
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                            timeout=10, cwd=tmp_path)
    assert not marker.exists()
    assert result.returncode == 0, result.stderr
    assert hooks.sanitize(value) in result.stdout
    assert result.stdout.count("\n") == 1          # one argument: no word splitting, no options


def test_token_values_computes_only_what_the_template_uses():
    looked_up = []

    def name_of(address):
        looked_up.append(address)
        return "client.example.com"

    client = ipaddress.ip_address("10.1.2.3")
    values = hooks.token_values("mail -s '%u from %a' root", client=client, user="fred",
                                ident_user=None, command="connect",
                                dst=ipaddress.ip_address("192.0.2.80"), port=23,
                                name_of=name_of)
    assert values == {"u": "fred", "a": "10.1.2.3"}
    assert looked_up == []
    values = hooks.token_values("%A %Z %z %U %c %s %S %p", client=client, user="fred",
                                ident_user=None, command="bind", dst="www.example.com",
                                port=23, resolved=ipaddress.ip_address("192.0.2.80"), pid=7,
                                name_of=name_of)
    assert values == {"A": "client.example.com", "Z": "www.example.com", "z": "192.0.2.80",
                      "U": "unknown", "c": "bind", "s": "23", "S": "telnet", "p": "7"}
    assert looked_up == [client]


def test_service_name():
    assert hooks.service_name(23) == "telnet"
    assert hooks.service_name(1) in ("tcpmux", "1")
    assert hooks.service_name(65000) == "65000"


def test_reverse_name_falls_back_to_the_address():
    # 192.0.2.0/24 (TEST-NET-1) has no reverse names; without a network the lookup fails fast.
    address = ipaddress.ip_address("192.0.2.1")
    assert hooks.reverse_name(address, timeout=3.0) == "192.0.2.1"


def test_printable():
    assert hooks.printable("a\nb\x1bc") == "a\\x0ab\\x1bc"


# ---------------------------------------------------------------------------------------------
# Running


def test_a_hook_runs_and_its_output_is_logged(log, tmp_path):
    runner = hooks.HookRunner(logger=log.logger)
    assert runner.start(f"echo hello; echo oops >&2; touch {tmp_path}/ran", "sockd.conf:3")
    wait_for(runner)
    assert (tmp_path / "ran").exists()
    messages = log.messages()
    assert messages[0].startswith("hook started -- sockd.conf:3: pid ")
    assert messages[1:] == ["hook output -- sockd.conf:3: hello",
                            "hook output -- sockd.conf:3: oops",
                            "hook done -- sockd.conf:3: exit status 0"]


def test_a_failing_hook_is_logged_never_fatal(log):
    runner = hooks.HookRunner(logger=log.logger)
    runner.start("exit 3", "f:1")
    runner.start("kill -9 $$", "f:2")
    runner.start("/nonexistent/command", "f:3")
    wait_for(runner)
    warnings = sorted(m for level, m in log.lines if level == "WARNING")
    assert warnings == ["hook failed -- f:1: exit status 3",
                        "hook failed -- f:2: killed by signal 9",
                        "hook failed -- f:3: exit status 127"]


def test_start_does_not_wait(log):
    runner = hooks.HookRunner(timeout=30, logger=log.logger)
    runner.start("sleep 1", "f:1")
    assert runner.running == 1
    assert runner.reap() == 0               # still running: start returned at once
    wait_for(runner)
    assert runner.running == 0
    assert log.messages()[-1] == "hook done -- f:1: exit status 0"


def test_a_hook_is_bounded_in_time(log, tmp_path):
    runner = hooks.HookRunner(timeout=0.5, logger=log.logger)
    # The background child is in the hook's process group: it is killed too.
    runner.start(f"(sleep 3; touch {tmp_path}/late) & sleep 30", "f:9")
    wait_for(runner)
    assert log.messages()[-1] == "hook failed -- f:9: timed out after 0.5 s, killed"
    time.sleep(3.5)
    assert not (tmp_path / "late").exists()


def test_at_most_max_running_hooks(log):
    runner = hooks.HookRunner(max_running=2, timeout=10, logger=log.logger)
    started = [runner.start("sleep 1", f"f:{i}") for i in range(5)]
    assert started == [True, True, False, False, False]
    skipped = [m for level, m in log.lines if level == "WARNING"]
    # Rate-limited: one line for the burst.
    assert skipped == ["hook skipped -- f:2: 2 hooks already running (1 skipped since the last "
                       "report)"]
    wait_for(runner)
    assert runner.start("true", "f:5")
    wait_for(runner)


def test_a_hook_does_not_hold_the_clients_connection(log):
    runner = hooks.HookRunner(timeout=10, logger=log.logger)
    ours, client = socket.socketpair()
    try:
        runner.start("sleep 2", "f:1")
        ours.close()
        client.settimeout(1.5)
        assert client.recv(1) == b""        # EOF now, not when the hook ends
    finally:
        client.close()
        wait_for(runner)


def test_the_hook_inherits_none_of_the_workers_descriptors(log):
    runner = hooks.HookRunner(logger=log.logger)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        fds = [ours.fileno(), theirs.fileno(), 3]
        checks = "; ".join(f"[ -e /proc/$$/fd/{fd} ] && echo open {fd}" for fd in fds)
        runner.start(f"{checks}; echo checked", "f:1")
        wait_for(runner)
    assert [m for m in log.messages() if m.startswith("hook output")] == [
        "hook output -- f:1: checked"]


def test_reap_leaves_other_children_alone(log):
    runner = hooks.HookRunner(logger=log.logger)
    other = subprocess.Popen(["true"])
    runner.start("true", "f:1")
    wait_for(runner)
    time.sleep(0.1)
    assert other.wait(5) == 0               # still ours to reap


def test_output_is_capped_and_control_characters_escaped(log):
    runner = hooks.HookRunner(logger=log.logger)
    runner.start("printf 'a\\033[2Jb\\n'; head -c 10000 /dev/zero | tr '\\0' x", "f:1")
    wait_for(runner)
    messages = log.messages()
    assert "hook output -- f:1: a\\x1b[2Jb" in messages
    assert "hook output -- f:1: (truncated after 4096 bytes)" in messages
    assert sum(len(m) for m in messages if m.startswith("hook output")) < 4096 + 200


def test_wait_with_a_timeout(log):
    runner = hooks.HookRunner(timeout=5, logger=log.logger)
    runner.start("sleep 2", "f:1")
    assert runner.wait(0.1) is False
    wait_for(runner)


def test_the_default_logger_is_sockd():
    assert hooks.HookRunner().log.name == "sockd"


def test_no_zombies_are_left(log):
    runner = hooks.HookRunner(logger=log.logger)
    for i in range(3):
        runner.start("true", f"f:{i}")
    wait_for(runner)
    pids = [int(m.split(" pid ")[1].split(":")[0]) for m in log.messages() if " pid " in m]
    assert len(pids) == 3
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
