"""socks.conf (clients.conf), the server list policy (clients.servers), the client negotiation
(clients.handshake) and test_socks_conf, without sockets."""

from __future__ import annotations

import ipaddress

import pytest

from clients import conf, testconf
from clients.conf import Action, Server
from clients.errors import SocksRefused
from clients.handshake import ClientHandshake
from clients.servers import ServerMemory
from sockd.protocol import Command

TEXT = """\
# comment
direct 10.0.0.0 255.0.0.0
sockd @=p1:1081,[::1]:1082,p2 *=alice,bob 0.0.0.0/0 eq http : echo %u to %Z
sockd@a,b proto=4 order=random .example.com
sockd 2001:db8::/32 ge 1024
deny 0.0.0.0 0.0.0.0 : echo denied %z
"""


def resolver(name: str):
    return {"www.inside.test": ipaddress.ip_address("10.1.1.1")}[name]


@pytest.fixture
def routing():
    return conf.parse_text(TEXT, default_server=Server("dflt", 1080), resolver=resolver)


def test_every_construct(routing):
    direct, alice, four, six, deny = routing.lines
    assert direct.action is Action.DIRECT and direct.line == 2
    assert alice.servers == (Server("p1", 1081), Server("::1", 1082), Server("p2", 1080))
    assert alice.users == {"alice", "bob"} and alice.port.op == "eq" and alice.port.port == 80
    assert alice.shell_command == "echo %u to %Z"
    assert four.proto == "4" and four.order == "random" and four.servers[1] == Server("b", 1080)
    assert six.dst.version == 6 and six.port.op == "ge"
    assert deny.action is Action.DENY


@pytest.mark.parametrize("dst, port, user, action, line", [
    ("10.2.3.4", 22, "x", Action.DIRECT, 2),
    ("www.inside.test", 22, "x", Action.DIRECT, 2),      # resolved here for an address line
    ("1.2.3.4", 80, "alice", Action.SOCKD, 3),
    ("1.2.3.4", 80, "carol", Action.DENY, 6),
    ("www.example.com", 443, "x", Action.SOCKD, 4),
    ("2001:db8::1", 2000, "x", Action.SOCKD, 5),
    ("2001:db8::1", 80, "x", Action.DENY, 6),
])
def test_first_match_wins(routing, dst, port, user, action, line):
    route = routing.route(dst, port, user, resolver)
    assert route.action is action and route.line.line == line


def test_always_direct_and_no_match():
    routing = conf.parse_text("deny 0.0.0.0/0\n")
    assert routing.route("127.0.0.1", 1, "u").action is Action.DIRECT
    assert routing.route("0.0.0.0", 1, "u").action is Action.DIRECT
    assert routing.route("127.0.0.2", 1, "u").action is Action.DENY
    assert conf.parse_text("direct 10.0.0.0/8\n").route("1.1.1.1", 1, "u").reason == \
        "no match with any line"


def test_unresolvable_name_skips_address_lines():
    routing = conf.parse_text("direct 10.0.0.0/8\nsockd @=p 0.0.0.0/0\n")
    assert routing.route("nowhere.invalid", 80, "u", resolver).action is Action.SOCKD


def test_environment(tmp_path):
    missing = str(tmp_path / "none")
    assert conf.from_environment({"SOCKS_CONF": missing}).route("1.2.3.4", 1, "u").action \
        is Action.DIRECT
    route = conf.from_environment({"SOCKS_CONF": missing, "SOCKS_SERVER": "[::1]:1090"}) \
        .route("1.2.3.4", 1, "u")
    assert route.action is Action.SOCKD and route.servers == (Server("::1", 1090),)
    path = tmp_path / "socks.conf"
    path.write_text("sockd 0.0.0.0/0\n")
    assert conf.from_environment({"SOCKS_CONF": str(path)}).route("1.2.3.4", 1, "u").action \
        is Action.DENY                                    # no server named, none by default
    route = conf.from_environment({"SOCKS_CONF": str(path), "SOCKS_SERVER": "s"}) \
        .route("1.2.3.4", 1, "u")
    assert route.servers == (Server("s", conf.socks_port()),)


@pytest.mark.parametrize("line, message", [
    ("permit 0.0.0.0/0", "unknown action 'permit' (expected deny, direct or sockd)"),
    ("sockd 1.2.3.4", "destination address '1.2.3.4' has no mask"),
    ("direct @=a 0.0.0.0/0", "'@=' on a direct line (only sockd lines take it)"),
    ("sockd proto=6 0.0.0.0/0", "unknown protocol 'proto=6' (expected 4, 4a or 5)"),
    ("sockd order=up 0.0.0.0/0", "unknown order 'order=up' (expected listed or random)"),
    ("sockd @=a:99999 0.0.0.0/0", "server port out of range in 'a:99999' (1-65535)"),
    ("sockd 0.0.0.0/0 eq", "operator 'eq' has no port"),
    ("sockd 0.0.0.0/0 eq 80 junk", "unexpected 'junk' after the port test"),
    ("deny", "missing destination address"),
    ("sockd @=a @=b 0.0.0.0/0", "'@=' given twice"),
    ("sockd *=/nonexistent/users 0.0.0.0/0",
     "cannot read user file '/nonexistent/users': No such file or directory"),
    ("deny 0.0.0.0/0 :", "empty shell command after ':'"),
])
def test_errors_name_the_line(line, message):
    errors = conf.check_text("# ok\n" + line + "\n", "socks.conf")
    assert [str(e) for e in errors] == [f"socks.conf:2: {message}"]


def test_broken_file_denies_everything(tmp_path):
    path = tmp_path / "socks.conf"
    path.write_text("direct 0.0.0.0/0\nbogus\n")
    route = conf.load(str(path)).route("1.2.3.4", 1, "u")
    assert route.action is Action.DENY and route.reason.startswith(f"{path}:2: ")


def test_hook_values_are_inert(routing):
    line = routing.lines[1]
    command = conf.hook_command(line, dst="evil;rm -rf /", port=80, user="-x", login="l")
    assert command == "echo _x to evil_rm_-rf__"


def test_server_memory_order():
    now = [0.0]
    memory = ServerMemory(30, clock=lambda: now[0])
    a, b, c = Server("a", 1), Server("b", 1), Server("c", 1)
    memory.mark_down(a)
    assert memory.order([a, b, c]) == [b, c]
    now[0] = 31
    assert memory.order([a, b, c]) == [a, b, c]
    for s in (a, b, c):
        memory.mark_down(s)
    assert memory.order([a, b, c]) == [a, b, c]          # all down: try them all anyway
    assert sorted(memory.order([a, b], "random"), key=str) == [a, b]


def test_handshake_socks5_with_password_byte_by_byte():
    h = ClientHandshake(5, Command.CONNECT, "www.example.com", 80, username="u", password="p")
    assert h.start() == b"\x05\x02\x00\x02"
    assert h.receive(b"\x05") == b""
    assert h.receive(b"\x02") == b"\x01\x01u\x01p"
    assert h.receive(b"\x01\x00").startswith(b"\x05\x01\x00\x03\x0fwww.example.com")
    for byte in b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38":
        h.receive(bytes([byte]))
    assert h.done and h.reply.port == 1080


@pytest.mark.parametrize("code, words", [
    (91, "request rejected or failed"),
    (92, "cannot connect to identd on your machine"),
    (93, "user-id does not agree with the one reported by identd"),
])
def test_handshake_socks4_refusals(code, words):
    h = ClientHandshake(4, Command.CONNECT, ipaddress.ip_address("10.0.0.1"), 80, userid="me")
    assert h.start() == b"\x04\x01\x00\x50\x0a\x00\x00\x01me\x00"
    with pytest.raises(SocksRefused, match=words) as caught:
        h.receive(bytes([0, code, 0, 0, 0, 0, 0, 0]))
    assert caught.value.code == code


def test_test_socks_conf(tmp_path, capsys, monkeypatch):
    path = tmp_path / "socks.conf"
    path.write_text(TEXT.replace("%Z", "%s"))
    monkeypatch.setenv("SOCKS_SERVER", "dflt:1090")
    assert testconf.main(["-C", str(path), "alice", "1.2.3.4", "http"]) == 1
    out = capsys.readouterr().out
    assert "Default SOCKS server: dflt:1090 (SOCKS_SERVER)" in out
    assert "Line 3: sockd @=p1:1081" in out
    assert "Through SOCKS server(s) p1:1081, [::1]:1082, p2:1080 (in this order)" in out
    assert testconf.main(["-C", str(path), "carol", "1.2.3.4", "80"]) == 0
    assert "Line 6: deny" in capsys.readouterr().out
    assert testconf.main(["-C", str(path), "x", "10.0.0.1", "22"]) == 1
    assert "Direct connection." in capsys.readouterr().out
    path.write_text("direct 10.0.0.0/8\n")
    assert testconf.main(["-C", str(path), "x", "1.1.1.1", "22"]) == 0
    assert "*** No match with any line. Access denied." in capsys.readouterr().out
    path.write_text("bogus\n")
    assert testconf.main(["-C", str(path), "x", "1.1.1.1", "22"]) == 2
    assert f"{path}:1: unknown action" in capsys.readouterr().err
    assert testconf.main(["x", "1.1.1.1"]) == 2
    assert testconf.main(["-C", str(path), "x", "1.1.1.1", "nosuchservice"]) == 2
