"""test_sockd_conf: output and exit status as the CSTC test program, plus the modern flags."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import subprocess
import sys

import pytest

from sockd import testconf

ROOT = pathlib.Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "conf" / "bad"

CONF = """\
# In the spirit of the CSTC test driver's junk.conf.
#NO_IDENTD: echo "no identd on %A for %u" >> OUT
#BAD_ID: echo "%U pretends to be %u at %a" >> OUT
deny *=root,toor 0.0.0.0 0.0.0.0 : echo "refused %u@%A to %Z (%S)" >> OUT
permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet
permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq ftp
permit cmd=bind 10.0.0.0 255.0.0.0 192.0.2.0 255.255.255.0
permit auth=password 10.0.0.0/8 .example.com
permit 10.0.0.0 255.0.0.0 mailhub.test 255.255.255.255 eq smtp : echo "mail from %u" >> OUT
"""

NAMES = {"mailhub.test": "192.0.2.25", "client.test": "10.4.4.4", "www.example.com": "192.0.2.80",
         "gw.test": "10.0.0.1"}


def resolver(name):
    return ipaddress.ip_address(NAMES[name])


def name_of(address):
    return {"10.1.1.1": "ws1.inside.test"}.get(str(address), str(address))


@pytest.fixture
def conf(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "junk.conf"
    path.write_text(CONF.replace("OUT", str(out)))
    return path, out


def run(capsys, *argv):
    status = testconf.main([str(a) for a in argv], resolver=resolver, name_of=name_of)
    captured = capsys.readouterr()
    assert captured.out == ""                   # everything goes to stderr, as in CSTC
    return status, captured.err.splitlines()


def test_a_deny_line_for_some_users(conf, capsys):
    path, out = conf
    status, lines = run(capsys, "-C", path, "root", "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 0
    assert lines == [
        "USER:root,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:23",
        f"Line 4: deny *=root,toor 0.0.0.0 0.0.0.0 : echo \"refused %u@%A to %Z (%S)\" >> {out}",
        "Shell command (not run; -x runs it): echo \"refused root@ws1.inside.test to "
        f"192.0.2.9 (telnet)\" >> {out}",
    ]
    assert not out.exists()


def test_x_runs_the_command(conf, capsys):
    path, out = conf
    status, lines = run(capsys, "-x", "-C", path, "root", "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 0
    assert lines[2] == ("Shell command: echo \"refused root@ws1.inside.test to 192.0.2.9 "
                        f"(telnet)\" >> {out}")
    assert lines[3].startswith(f"hook started -- {path}:4: pid ")
    assert lines[4] == f"hook done -- {path}:4: exit status 0"
    assert out.read_text() == "refused root@ws1.inside.test to 192.0.2.9 (telnet)\n"


def test_a_permit_with_a_port_test(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "10.1.1.1", "192.0.2.9", "23")
    assert status == 1
    assert lines == ["USER:fred,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:23",
                     "Line 5: permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet"]


def test_no_match(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "10.1.1.1", "192.0.2.9", "http")
    assert status == 0
    assert lines == ["USER:fred,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:80",
                     "*** No match with any line. Access denied."]


def test_strict_line_and_unreachable_identd(conf, capsys):
    path, out = conf
    status, lines = run(capsys, "-i", "-C", path, "fred", "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 0
    assert lines == ["USER:fred,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:23",
                     "Line 5: permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet",
                     f"Line 2: #NO_IDENTD: echo \"no identd on %A for %u\" >> {out}",
                     "Shell command (not run; -x runs it): echo \"no identd on ws1.inside.test "
                     f"for fred\" >> {out}",
                     "Access denied: cannot verify user-id."]


def test_relaxed_line_and_unreachable_identd_permits(conf, capsys):
    path, out = conf
    status, lines = run(capsys, "-I", "-C", path, "fred", "10.1.1.1", "192.0.2.9", "ftp")
    assert status == 1
    assert lines[1:] == ["Line 6: permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq ftp",
                         f"Line 2: #NO_IDENTD: echo \"no identd on %A for %u\" >> {out}",
                         "Shell command (not run; -x runs it): echo \"no identd on "
                         f"ws1.inside.test for fred\" >> {out}"]


def test_bad_user_id(conf, capsys):
    path, out = conf
    status, lines = run(capsys, "-B", "-x", "-C", path, "fred", "10.1.1.1", "192.0.2.9", "ftp")
    assert status == 0
    assert lines[1:4] == ["Line 6: permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq ftp",
                          f"Line 3: #BAD_ID: echo \"%U pretends to be %u at %a\" >> {out}",
                          "Shell command: echo \"unknown pretends to be fred at 10.1.1.1\" "
                          f">> {out}"]
    assert lines[-1] == "Access denied: bad user-id."
    assert out.read_text() == "unknown pretends to be fred at 10.1.1.1\n"


def test_an_ident_answer_to_try(conf, capsys):
    """-U: the answer identd would give; the claimed user either matches it or not."""
    path, out = conf
    status, lines = run(capsys, "-I", "-U", "mallory", "-C", path, "fred", "10.1.1.1",
                        "192.0.2.9", "telnet")
    assert status == 0
    assert lines[1:] == ["Line 5: permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet",
                         f"Line 3: #BAD_ID: echo \"%U pretends to be %u at %a\" >> {out}",
                         "Shell command (not run; -x runs it): echo \"mallory pretends to be "
                         f"fred at 10.1.1.1\" >> {out}",
                         "Access denied: real user is mallory, not fred."]
    # the claimed user: a ?=I line then permits, even with -I, and %U is the answer
    status, lines = run(capsys, "-I", "-U", "fred", "-C", path, "fred", "10.1.1.1",
                        "192.0.2.9", "telnet")
    assert status == 1
    assert lines[1:] == ["Line 5: permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet"]
    # a hostile answer is escaped in what is printed and inert in the command
    status, lines = run(capsys, "-U", "$(id)\nx", "-C", path, "fred", "10.1.1.1",
                        "192.0.2.9", "ftp")
    assert status == 0
    assert lines[-1] == "Access denied: real user is $(id)\\x0ax, not fred."
    assert "pretends to be" in lines[-2] and "$(id)" not in lines[-2]


def test_identd_flags_do_not_touch_lines_without_ident(conf, capsys):
    path, out = conf
    # -B alone: the smtp line has no ?= and the daemon no -i/-I, so identd is never asked.
    status, lines = run(capsys, "-B", "-C", path, "fred", "10.1.1.1", "192.0.2.25", "smtp")
    assert status == 1
    assert lines[1:] == [f"Line 9: permit 10.0.0.0 255.0.0.0 mailhub.test 255.255.255.255 eq smtp "
                         f": echo \"mail from %u\" >> {out}",
                         f"Shell command (not run; -x runs it): echo \"mail from fred\" >> {out}"]
    # -I makes the daemon strict for lines without ?=.
    status, lines = run(capsys, "-I", "-C", path, "fred", "10.1.1.1", "192.0.2.25", "smtp")
    assert status == 0
    assert lines[-1] == "Access denied: cannot verify user-id."


def test_hostile_user_names_run_nothing(conf, capsys, tmp_path):
    path, out = conf
    marker = tmp_path / "pwned"
    user = f"root;touch {marker};$(touch {marker})`touch {marker}`\"'\n-x"
    status, lines = run(capsys, "-x", "-C", path, user, "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 1                          # not root: the deny line does not match ...
    toor = f"toor\";touch {marker}"
    status, lines = run(capsys, "-x", "-C", path, toor, "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 1
    assert not marker.exists()
    # ... and a listed user whose name is harmless still gets the hook.
    status, lines = run(capsys, "-x", "-C", path, "toor", "10.1.1.1", "192.0.2.9", "telnet")
    assert status == 0
    assert "refused toor@ws1.inside.test" in out.read_text()


def test_the_request_line_escapes_control_characters(conf, capsys):
    path, _ = conf
    _, lines = run(capsys, "-C", path, "a\nb", "10.1.1.1", "192.0.2.9", "http")
    assert lines[0] == "USER:a\\x0ab,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:80"


def test_command_and_auth_flags(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-c", "bind", "-C", path, "fred", "10.1.1.1", "192.0.2.9", "80")
    assert status == 1
    assert lines[:3] == ["USER:fred,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:80",
                         "COMMAND:bind,  AUTH:none",
                         "Line 7: permit cmd=bind 10.0.0.0 255.0.0.0 192.0.2.0 255.255.255.0"]
    status, _ = run(capsys, "-C", path, "fred", "10.1.1.1", "www.example.com", "80")
    assert status == 0
    status, lines = run(capsys, "--auth", "-C", path, "fred", "10.1.1.1", "www.example.com", "80")
    assert status == 1
    assert lines[1:] == ["COMMAND:connect,  AUTH:password",
                         "Line 8: permit auth=password 10.0.0.0/8 .example.com"]


def test_a_name_is_resolved_only_when_a_line_needs_it(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "client.test", "mailhub.test", "25")
    assert status == 1
    assert lines[:3] == ["USER:fred,  SRC:10.4.4.4,  DST:mailhub.test, PORT:25",
                         "(mailhub.test resolved to 192.0.2.25)",
                         "Line 9: permit 10.0.0.0 255.0.0.0 mailhub.test 255.255.255.255 eq smtp"
                         + lines[2].split("eq smtp", 1)[1]]


def test_an_unresolvable_destination_is_denied(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "10.1.1.1", "nowhere.test", "smtp")
    assert status == 0
    assert lines[-1] == "Cannot resolve nowhere.test: 'nowhere.test'. Access denied."


def test_route_check(conf, capsys, tmp_path):
    path, _ = conf
    routes = tmp_path / "junk.route"
    routes.write_text("# interfaces\n10.0.0.1 192.0.2.0 255.255.255.128\n"
                      "gw.test 10.0.0.0/8\n")
    status, lines = run(capsys, "-R", routes, "-C", path, "fred", "10.1.1.1", "192.0.2.9", "23")
    assert status == 1
    assert lines[2:] == [f"==== Checking routing file ({routes})...",
                         "Line 2: 10.0.0.1 192.0.2.0 255.255.255.128"]
    status, lines = run(capsys, "-R", routes, "-C", path, "fred", "10.1.1.1", "192.0.2.200",
                        "23")
    assert status == 0
    assert lines[-1] == "***Cannot find appropriate interface to communicate with 192.0.2.200"


def test_route_file_errors(conf, capsys, tmp_path):
    path, _ = conf
    routes = tmp_path / "bad.route"
    routes.write_text("10.0.0.1 192.0.2.0\n10.0.0.1 0.0.0.0 0.0.0.0 extra\n")
    status, lines = run(capsys, "-R", routes, "-C", path, "fred", "10.1.1.1", "192.0.2.9", "23")
    assert status == 2
    assert lines == [f"{routes}:1: destination address '192.0.2.0' has no mask",
                     f"{routes}:2: unexpected 'extra' after the destination"]


def test_config_errors_exit_2_with_every_message(capsys, monkeypatch):
    monkeypatch.chdir(BAD)
    status, lines = run(capsys, "-C", "many-errors.conf", "fred", "10.1.1.1", "192.0.2.9", "23")
    assert status == 2
    assert lines == (BAD / "many-errors.expected").read_text().splitlines()


def test_a_missing_config_file(capsys, tmp_path):
    status, lines = run(capsys, "-C", tmp_path / "none.conf", "fred", "10.1.1.1", "1.2.3.4", "23")
    assert status == 2
    assert lines == [f"{tmp_path}/none.conf: cannot read: No such file or directory"]


def test_the_embedded_default_when_there_is_no_etc_sockd_conf(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(testconf, "DEFAULT_CONF", str(tmp_path / "sockd.conf"))
    status, lines = run(capsys, "fred", "127.0.0.1", "192.0.2.9", "23")
    assert status == 1
    assert lines == [f"No {tmp_path}/sockd.conf: using the embedded default rules.",
                     "USER:fred,  SRC:127.0.0.1,  DST:192.0.2.9, PORT:23",
                     "Line 2: allow 127.0.0.0/8"]
    status, lines = run(capsys, "fred", "10.0.0.1", "192.0.2.9", "23")
    assert status == 0


@pytest.mark.parametrize("argv, message", [
    ([], "test_sockd_conf: expected user src_addr dst_addr {service|port}"),
    (["fred", "10.1.1.1", "1.2.3.4"], "test_sockd_conf: expected user src_addr dst_addr "
                                       "{service|port}"),
    (["-q", "fred", "10.1.1.1", "1.2.3.4", "23"], "test_sockd_conf: option -q not recognized"),
    (["-c", "listen", "fred", "10.1.1.1", "1.2.3.4", "23"],
     "test_sockd_conf: unknown command 'listen' (expected connect, bind or udp)"),
])
def test_usage_errors(capsys, argv, message):
    status, lines = run(capsys, *argv)
    assert status == 2
    assert lines == [message, testconf.USAGE]


@pytest.mark.parametrize("port", ["nosuch", "70000", "80x"])
def test_unknown_service(conf, capsys, port):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "10.1.1.1", "1.2.3.4", port)
    assert status == 2
    assert lines == [f"test_sockd_conf: Unknown service or illegal port number '{port}'"]


def test_an_unresolvable_source(conf, capsys):
    path, _ = conf
    status, lines = run(capsys, "-C", path, "fred", "nosuch.test", "1.2.3.4", "23")
    assert status == 2
    assert lines == ["test_sockd_conf: cannot resolve 'nosuch.test': 'nosuch.test'"]


def test_the_program_runs_as_a_module(tmp_path):
    """Smoke test of the console script's entry point, in a process of its own."""
    path = tmp_path / "sockd.conf"
    path.write_text("permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "sockd.testconf", "-C", str(path), "fred",
                             "10.1.1.1", "192.0.2.9", "telnet"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        "USER:fred,  SRC:10.1.1.1,  DST:192.0.2.9, PORT:23",
        "Line 1: permit ?=I 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet"])
    result = subprocess.run([sys.executable, "-m", "sockd.testconf"], capture_output=True,
                            text=True, env=env, timeout=30)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, testconf.USAGE)


def test_route_file_forms():
    from sockd import route

    table = route.parse_routes(
        "# if_addr dst_addr dst_mask\n"
        "10.0.0.1\t192.0.2.0 255.255.255.0   # tabs and comments\n"
        "gw.test 198.51.100.0/24\n"
        "2001:db8::1 2001:db8::/32\n"
        "\n"
        "192.0.2.254 0.0.0.0 0.0.0.0\n", "sockd.route", resolver=resolver)
    assert [r.line for r in table.routes] == [2, 3, 4, 6]

    def via(address):
        found = table.lookup(ipaddress.ip_address(address))
        return None if found is None else (str(found.interface), found.where)

    assert via("192.0.2.7") == ("10.0.0.1", "sockd.route:2")
    assert via("198.51.100.1") == ("10.0.0.1", "sockd.route:3")
    assert via("2001:db8::99") == ("2001:db8::1", "sockd.route:4")
    assert via("203.0.113.1") == ("192.0.2.254", "sockd.route:6")   # zero mask: catch-all
    assert route.parse_routes("10.0.0.1 10.0.0.0/8\n").lookup(
        ipaddress.ip_address("11.0.0.1")) is None


@pytest.mark.parametrize("text, message", [
    ("10.0.0.1\n", "r:1: interface address '10.0.0.1' has no destination"),
    ("10.0.0.1 10.0.0.0\n", "r:1: destination address '10.0.0.0' has no mask"),
    ("10.0.0.1 10.0.0.0 255.0.0.0 x\n", "r:1: unexpected 'x' after the destination"),
    ("10.0.0.300 10.0.0.0/8\n", "r:1: bad address '10.0.0.300'"),
    ("nosuch.test 10.0.0.0/8\n", "r:1: cannot resolve 'nosuch.test'"),
    ("# ok\n10.0.0.1 10.0.0.0/33\n", "r:2: bad address '10.0.0.0/33'"),
    ("x" * 1024 + "\n", "r:1: line too long (1024 characters, at most 1023)"),
])
def test_route_file_errors_name_the_line(text, message):
    from sockd import route

    with pytest.raises(route.ConfigError) as raised:
        route.parse_routes(text, "r", resolver=resolver)
    assert str(raised.value) == message


def test_route_check_errors_of_a_missing_file():
    from sockd import route

    assert [str(e) for e in route.check_routes("/nonexistent/sockd.route")] == [
        "/nonexistent/sockd.route: cannot read: No such file or directory"]
