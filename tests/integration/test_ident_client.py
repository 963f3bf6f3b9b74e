"""sockd.ident.query against the real oidentd and against hostile identd stand-ins.

oidentd runs on port 113 of 127.0.0.1 and ::1 (the suite runs as root in a private network
namespace); the connections it is asked about are held by a child process running as
another user, so the answer is that user's name, or the name oidentd is forced to give.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from conftest import free_port
from identd import (
    FakeIdentd,
    close_early,
    endless,
    oidentd,
    owned_connection,
    raw,
    reset,
    send,
    silent,
    trickle,
)
from sockd.ident import query
from sockd.identwire import AnswerKind, IdentAnswer

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def listener(host: str, dual_stack: bool = False):
    """A listening socket on host (port chosen by the kernel), standing in for sockd's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, 0))
        sock.listen(8)
        sock.settimeout(10)
        yield sock


@contextlib.contextmanager
def client_of(server: socket.socket, user: str, host: str, source: str = ""):
    """A connection from *user* to *server*, accepted: yields (accepted socket, its peer)."""
    port = server.getsockname()[1]
    with owned_connection(user, host, port, source):
        conn, peer = server.accept()
        with conn:
            yield conn, peer


def ask_about(conn: socket.socket, timeout: float = 10, **kw) -> IdentAnswer:
    """Query the identd on the client's host about conn, as sockd will."""
    peer, local = conn.getpeername(), conn.getsockname()
    return query(peer[0], peer[1], local[0], local[1], timeout, **kw)


# ---------------------------------------------------------------- the real oidentd

@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_oidentd_names_the_owner_of_the_connection(tmp_path, host):
    with oidentd(tmp_path), listener(host) as server, client_of(server, "nobody", host) as (
            conn, _):
        answer = ask_about(conn)
    assert answer == IdentAnswer.of_user("nobody", "UNIX", "")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_oidentd_forced_reply_is_the_answer(tmp_path, host):
    """The spoofed answer the mismatch case needs: oidentd names someone else."""
    with oidentd(tmp_path, replies={"daemon": "mallory"}), listener(host) as server:
        with client_of(server, "daemon", host) as (conn, _):
            assert ask_about(conn).user == "mallory"
        with client_of(server, "nobody", host) as (conn, _):
            assert ask_about(conn).user == "nobody"


def test_oidentd_forced_reply_for_root(tmp_path):
    """Session tests can run their clients as root (the test's own user) and still get a
    chosen name: oidentd's forced reply for root."""
    with oidentd(tmp_path, replies={"root": "alice"}), listener("127.0.0.1") as server, \
            socket.create_connection(server.getsockname(), 10) as client:
        conn, _ = server.accept()
        with conn:
            assert client.getsockname()[1] == conn.getpeername()[1]
            assert ask_about(conn) == IdentAnswer.of_user("alice", "UNIX", "")


def test_oidentd_error_for_a_connection_that_does_not_exist(tmp_path):
    with oidentd(tmp_path):
        answer = query("127.0.0.1", free_port(), "127.0.0.1", free_port(), 10)
    assert answer.kind is AnswerKind.NO_ANSWER
    assert answer == IdentAnswer.no_answer("ERROR : NO-USER")


def test_query_is_made_from_the_address_the_client_connected_to(tmp_path):
    """Multi-homed: the client (127.0.0.1) reached us on 127.0.0.2; only a query from 127.0.0.2
    names a connection that exists, as oidentd shows."""
    with oidentd(tmp_path, addresses=("127.0.0.1",)), listener("127.0.0.2") as server, \
            client_of(server, "nobody", "127.0.0.2", source="127.0.0.1") as (conn, peer):
        assert peer[0] == "127.0.0.1" and conn.getsockname()[0] == "127.0.0.2"
        assert ask_about(conn).user == "nobody"
        wrong = query(peer[0], peer[1], "127.0.0.1", conn.getsockname()[1], 10)
    assert wrong == IdentAnswer.no_answer("ERROR : NO-USER")


def test_ipv4_mapped_addresses_are_queried_over_ipv4(tmp_path):
    """A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1."""
    with oidentd(tmp_path), listener("::", dual_stack=True) as server, \
            client_of(server, "nobody", "127.0.0.1") as (conn, peer):
        assert peer[0] == "::ffff:127.0.0.1"
        assert ask_about(conn).user == "nobody"


# ---------------------------------------------------------------- hostile stand-ins

def ask(fake: FakeIdentd, timeout: float = 10, client_port: int = 40312,
        server_port: int = 1080, local: str = "127.0.0.1") -> IdentAnswer:
    return query("127.0.0.1", client_port, local, server_port, timeout, ident_port=fake.port)


def test_the_query_line_and_where_it_comes_from():
    with FakeIdentd(send(b"USERID : UNIX : alice")) as fake:
        assert ask(fake, local="127.0.0.3") == IdentAnswer.of_user("alice", "UNIX", "")
    assert fake.queries == [b"40312 , 1080\r\n"]
    assert fake.peers[0][0] == "127.0.0.3"


def test_default_identd_port_is_113():
    with FakeIdentd(send(b"USERID : OTHER , UTF-8 : bob"), port=113):
        answer = query("127.0.0.1", 40312, "127.0.0.1", 1080, 10)
    assert answer == IdentAnswer.of_user("bob", "OTHER", "UTF-8")


def test_ipv6_stand_in():
    with FakeIdentd(send(b"USERID : UNIX : six"), host="::1") as fake:
        answer = query("::1", 40312, "::1", 1080, 10, ident_port=fake.port)
    assert answer.user == "six"


@pytest.mark.parametrize("behaviour, reason", [
    (raw(b"SSH-2.0-OpenSSH_9.2\r\n"), "garbage"),
    (raw(b"\x00\xff\x13\x37\r\n"), "garbage"),
    (send(b"USERID : UNIX :"), "garbage"),
    (send(b"ERROR : HIDDEN-USER"), "ERROR : HIDDEN-USER"),
    (raw(b"1080 , 40312 : USERID : UNIX : swapped\r\n"), "reply for other ports"),
    (send(b"USERID : UNIX : " + b"n" * 1200), "too long"),
    (close_early, "closed early"),
    (raw(b"40312 , 1080 : USERID : UN"), "closed early"),
    (reset, "closed early (Connection reset by peer)"),
], ids=["banner", "binary", "empty user", "error", "other ports", "long name", "close",
        "half line", "reset"])
def test_hostile_identd_is_no_answer(behaviour, reason):
    with FakeIdentd(behaviour) as fake:
        answer = ask(fake)
    assert answer == IdentAnswer.no_answer(reason)


def test_shell_metacharacters_are_returned_verbatim(tmp_path):
    name = f"$(touch {tmp_path}/ran);`touch {tmp_path}/ran2`|sh&>x'\"\\*?\xff"
    with FakeIdentd(send(b"USERID : UNIX : " + name.encode("latin-1"))) as fake:
        answer = ask(fake)
    assert answer.user == name
    assert list(tmp_path.iterdir()) == []


def test_reply_closed_without_crlf_is_whole():
    with FakeIdentd(raw(b"40312 , 1080 : USERID : UNIX : alice")) as fake:
        assert ask(fake).user == "alice"


def test_endless_line_is_cut_at_the_bound_quickly():
    with FakeIdentd(endless) as fake:
        start = time.monotonic()
        answer = ask(fake, timeout=10)
        took = time.monotonic() - start
    assert answer == IdentAnswer.no_answer("too long")
    assert took < 5


@pytest.mark.parametrize("behaviour", [silent, trickle], ids=["silent", "trickle"])
def test_one_deadline_bounds_the_whole_exchange(behaviour):
    """A silent identd and one that sends a byte now and then both end at the deadline."""
    with FakeIdentd(behaviour) as fake:
        start = time.monotonic()
        answer = ask(fake, timeout=1.0)
        took = time.monotonic() - start
    assert answer == IdentAnswer.no_answer("timed out")
    assert 0.9 <= took < 3, took


def test_nothing_listening_is_unreachable():
    answer = query("127.0.0.1", 40312, "127.0.0.1", 1080, 10, ident_port=free_port())
    assert answer == IdentAnswer.no_answer("unreachable (Connection refused)")


def test_connect_that_never_completes_times_out():
    """An identd whose accept queue is full drops our SYN: connect() alone meets the deadline."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):   # fill the queue; later connects stay in SYN-SENT
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            start = time.monotonic()
            answer = query("127.0.0.1", 40312, "127.0.0.1", 1080, 1.0, ident_port=port)
            took = time.monotonic() - start
        finally:
            for s in fillers:
                s.close()
    assert answer == IdentAnswer.no_answer("timed out")
    assert 0.9 <= took < 3, took


@pytest.mark.parametrize("client, local", [
    ("127.0.0.1", "::1"),
    ("not an address", "127.0.0.1"),
    ("127.0.0.1", "192.0.2.1"),   # an address this host does not have
])
def test_impossible_queries_are_no_answer(client, local):
    answer = query(client, 40312, local, 1080, 2, ident_port=free_port())
    assert answer.kind is AnswerKind.NO_ANSWER and answer.reason
