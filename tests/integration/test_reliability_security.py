"""Security properties, each a test, in every relay mode: the embedded default relays for no
client from another network (a second network namespace joined by a veth pair); workers and
relay processes run as --user; no password reaches a log, standard error or a process
title; method selection never lands a session on a password rule without the password.

(BIND accepts only the expected peer: test_bind.py::test_bind_accepts_only_the_expected_peer_
and_relays; UDP only the client's datagrams: test_udp.py::test_strangers_fragments_and_
malformed_headers_are_dropped_and_counted and test_the_request_port_is_the_only_client_port.)
"""

import os
import signal
import socket
import struct
import subprocess
import sys

import pytest
from reliability import (
    SocksError,
    connect,
    relay_args,
    relay_mode,
    relay_processes,
    uids,
    workers,
)

from conftest import require, wait_until
from sockd.passwords import ScryptHash

pytestmark = pytest.mark.integration
__all__ = ["relay_mode"]

SERVER_ADDR, CLIENT_ADDR = "10.14.0.1", "10.14.0.2"


@pytest.fixture
def client_netns():
    """A second network namespace (held by a sleeping process) joined to this one by a
    veth pair: 10.14.0.1 here, 10.14.0.2 there.  Returns a prefix that runs a command there."""
    ip = require("ip")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"], start_new_session=True)
    prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
    try:
        wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/net")
                   != os.readlink("/proc/self/ns/net"), 10, "the client namespace")
        for argv in ([ip, "link", "add", "rel14-s", "type", "veth", "peer", "name", "rel14-c",
                      "netns", str(holder.pid)],
                     [ip, "addr", "add", f"{SERVER_ADDR}/24", "dev", "rel14-s"],
                     [ip, "link", "set", "rel14-s", "up"],
                     [*prefix, ip, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "rel14-c"],
                     [*prefix, ip, "link", "set", "rel14-c", "up"],
                     [*prefix, ip, "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True, timeout=10)
        yield prefix
    finally:
        subprocess.run([ip, "link", "del", "rel14-s"], timeout=10, stderr=subprocess.DEVNULL)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)


# sockd with no -c and no /etc/sockd.conf: if the host has one, a private mount namespace
# shows sockd an /etc without it (every other entry bound back in).
NO_ETC_SOCKD_CONF = ["unshare", "--mount", "--propagation", "private", "sh", "-c", """
if [ -e /etc/sockd.conf ]; then
  t=$(mktemp -d) && mount --bind /etc "$t" && mount -t tmpfs tmpfs /etc &&
  for f in "$t"/* "$t"/.[!.]*; do
    [ -e "$f" ] || continue; n=${f##*/}; [ "$n" = sockd.conf ] && continue
    if [ -d "$f" ]; then mkdir "/etc/$n"; else : > "/etc/$n"; fi; mount --bind "$f" "/etc/$n"
  done
fi
exec "$0" "$@"
"""]

CLIENT = """
import socket, struct, sys
port, dport = int(sys.argv[1]), int(sys.argv[2])
try:
    s = socket.create_connection((sys.argv[3], port), timeout=10)
    s.sendall(b"\\x05\\x01\\x00\\x05\\x01\\x00\\x01" + socket.inet_aton("127.0.0.1")
              + struct.pack(">H", dport))
    got = b""
    while len(got) < 12 and (chunk := s.recv(12)):
        got += chunk
    print(got.hex() or "closed")
except OSError as e:
    print("error", e)
"""


def test_the_embedded_default_relays_for_no_client_of_another_network(
        sockd, client_netns, echo_server, relay_mode):
    server = sockd(rules=None, wrap=NO_ETC_SOCKD_CONF, args=[
        "-l", f"{SERVER_ADDR}:1080", "-l", "127.0.0.1:1080", *relay_args(relay_mode)])
    server.wait_log(r"the embedded default is in force")
    # From the other network: sockd is reachable (the handshake starts) but relays nothing.
    accepted_before = len(server.lines(r"connected -- "))
    out = subprocess.run([*client_netns, sys.executable, "-c", CLIENT, "1080",
                          str(echo_server), SERVER_ADDR],
                         capture_output=True, text=True, timeout=60)
    answer = out.stdout.strip()
    assert not answer.startswith("05000500"), f"relayed for {CLIENT_ADDR}: {answer}"
    server.wait_log(rf"refused -- .*{CLIENT_ADDR.replace('.', r'[.]')}")
    assert len(server.lines(r"connected -- ")) == accepted_before
    # From loopback, the same request is relayed.
    with connect(1080, 5, "127.0.0.1", echo_server) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"


def test_workers_and_relay_processes_run_as_the_user_given(sockd, echo_server, relay_mode):
    server = sockd(args=["--user", "nobody", *relay_args(relay_mode)])
    with connect(server.port, 5, "127.0.0.1", echo_server) as busy:
        busy.sendall(b"x")
        assert busy.recv(1) == b"x"
        children = [*workers(server), *relay_processes(server)]
        assert children and (relay_mode == "worker" or relay_processes(server))
        for pid in children:
            assert uids(pid) == [65534] * 4, (pid, server.titles().get(pid))
    assert uids(server.pid)[0] == 0


PASSWORD = "Sekr1t-pw-Zq9"
WRONG = "Wr0ng-pw-Jx7"


def test_no_password_in_logs_errors_or_titles(sockd, echo_server, tmp_path, relay_mode):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{ScryptHash.make(PASSWORD.encode(), 1, 1, 1)}\n")
    rules = ("permit auth=password 127.0.0.0/8 127.0.0.0/8 : echo %u %c %Z\n"
             "deny 0.0.0.0/0 : echo refused %u\n")
    server = sockd(rules=rules, args=["--passwd", str(passwd), "--debug",
                                      *relay_args(relay_mode)])
    titles = []
    with connect(server.port, 5, "127.0.0.1", echo_server,
                 login=(b"alice", PASSWORD.encode())) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        titles += server.titles().values()
    for user in (b"alice", b"bob"):
        with pytest.raises(SocksError):
            connect(server.port, 5, "127.0.0.1", echo_server, login=(user, WRONG.encode()))
    server.wait_log(r"hook done -- ")
    text = server.log() + server.stderr() + passwd.read_text() + "\n".join(titles)
    for secret in (PASSWORD, WRONG):
        for form in (secret, secret.encode().hex(), "\\x".join(secret)):
            assert form not in text, form


def test_a_password_rule_is_never_reached_without_the_password(sockd, echo_server, tmp_path,
                                                            relay_mode):
    """Whatever methods a client offers, and however it answers, no session is relayed
    under the only permit line, which requires a password, without that password."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{ScryptHash.make(PASSWORD.encode(), 1, 1, 1)}\n")
    server = sockd(rules="permit auth=password 127.0.0.0/8 127.0.0.0/8\ndeny 0.0.0.0/0\n",
                   args=["--passwd", str(passwd), *relay_args(relay_mode)])
    request = (b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H",
                                                                           echo_server))
    offers = [[0], [0, 0, 0], [1], [0, 1], [0x80], [0, 0xFE], list(range(256)), [2, 0],
              [0, 2], [3, 0]]
    # Failed logins from one address wait longer and longer: few of them, a long timeout.
    logins = [b"\x01\x05alice\x00", b"\x01\x05alice\x05wrong", b"\x01\x00\x00",
              b"\x02\x05alice\x0d" + PASSWORD.encode()]
    tries = [(m, None) for m in offers] + [([0, 2], login) for login in logins]
    for methods, login in tries:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(bytes((5, len(methods) % 256)) + bytes(methods))
            chosen = s.recv(2)
            if chosen == b"\x05\x02":
                if login is None:
                    continue                      # hangs up: nothing to relay
                s.sendall(login)
                status = s.recv(2)
                assert status[1:] != b"\x00", f"login {login!r} accepted"
                s.sendall(request)
                assert s.recv(4)[:2] != b"\x05\x00"
                continue
            if chosen != b"\x05\x00":
                assert chosen in (b"\x05\xff", b""), chosen
                continue
            s.sendall(request)
            reply = s.recv(4)
            assert reply[:2] != b"\x05\x00", f"relayed without a password ({methods})"
    assert not server.lines(r"connected -- ")
    # and with it, the same request is relayed
    with connect(server.port, 5, "127.0.0.1", echo_server,
                 login=(b"alice", PASSWORD.encode())) as s:
        s.sendall(b"ok")
        assert s.recv(2) == b"ok"
