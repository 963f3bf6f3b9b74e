"""The real daemon judging by a real sockd.conf: refusals, hooks, reloads."""

import signal
import socket
import struct

import pytest

from conftest import wait_until

pytestmark = pytest.mark.integration


def socks4(port: int, dest_port: int, user: bytes, dest: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x04\x01" + struct.pack(">H", dest_port) + socket.inet_aton(dest)
                  + user + b"\x00")
        reply = b""
        while len(reply) < 8 and (chunk := s.recv(8)):
            reply += chunk
        return reply


def test_users_ports_and_first_match(sockd, echo_server, tmp_path):
    users = tmp_path / "goodusers"
    users.write_text("# the good ones\nalice bob,carol\n")
    rules = (f"deny *=mallory 127.0.0.0 255.0.0.0\n"
             f"permit *=fred,{users} 127.0.0.1 255.255.255.255 127.0.0.0 255.0.0.0 "
             f"eq {echo_server}\n"
             "deny 0.0.0.0 0.0.0.0\n")
    server = sockd(rules=rules)
    assert socks4(server.port, echo_server, b"carol")[1] == 90
    assert socks4(server.port, echo_server, b"fred")[1] == 90
    assert socks4(server.port, echo_server, b"mallory")[1] == 91
    assert socks4(server.port, echo_server, b"eve")[1] == 91
    assert socks4(server.port, echo_server + 1 if echo_server < 65535 else 1, b"alice")[1] == 91
    refused = server.wait_log(r"refused -- Connect", count=3)
    assert "from mallory(unknown)" in refused[0] and ".conf:1 session=" in refused[0]
    assert ".conf:3 session=" in refused[1]


def test_hook_expands_tokens_and_quotes_hostile_users(sockd, echo_server, tmp_path):
    marker = tmp_path / "pwned"
    rules = ("deny 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0 eq 9 "
             ": echo \"hook: user=%u client=%a cmd=%c port=%s dest=%z\"\n"
             "permit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0\n")
    server = sockd(rules=rules)
    hostile = f"x;touch {marker};$(touch {marker})`touch {marker}`'\"".encode()
    assert socks4(server.port, 9, hostile)[1] == 91
    assert socks4(server.port, 9, b"-rf")[1] == 91
    lines = server.wait_log(r"hook: user=", count=2)
    assert not marker.exists()
    # the two hooks run side by side: their lines may come in either order
    hostile_line = next(line for line in lines if "user=_rf " not in line)
    first = hostile_line[hostile_line.index("hook: "):]
    assert "client=127.0.0.1 cmd=connect port=9 dest=127.0.0.1" in first
    assert ";" not in first and "$" not in first and "`" not in first
    assert any("user=_rf " in line for line in lines)


def test_reload_changes_the_verdict(sockd, echo_server):
    server = sockd()
    assert socks4(server.port, echo_server, b"u")[1] == 90
    # a rule user u cannot pass, then one others can: a source no rule can permit at all
    # would be closed at accept, without the SOCKS refusal this test reads
    server.conf.write_text("deny *=u 127.0.0.0/8 127.0.0.0/8\n"
                           "permit 127.0.0.0/8 127.0.0.0/8\n")
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded -- generation 2")
    wait_until(lambda: socks4(server.port, echo_server, b"u")[1] == 91, 10, "the new rules")
    assert server.wait_log(r"refused -- Connect from u\(unknown\).* rule=.*\.conf:1")


def test_strict_ident_fails_closed_until_there_is_an_ident_client(sockd, echo_server):
    rules = ("#NO_IDENTD: echo no-identd for %u at %a\n"
             "permit ?=I 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0\n")
    server = sockd(rules=rules)
    assert socks4(server.port, echo_server, b"alice")[1] == 92
    server.wait_log(r"cannot connect to identd on 127.0.0.1")
    server.wait_log(r"no-identd for alice at 127.0.0.1")
