"""Readiness for systemd: the datagrams sockd sends to a NOTIFY_SOCKET the test holds."""

import os
import signal
import socket

import pytest

from sockd.notify import Notifier

pytestmark = pytest.mark.integration


def receive(sock: socket.socket) -> set[str]:
    sock.settimeout(15)
    return set(sock.recv(4096).decode().split("\n"))


@pytest.fixture(params=["path", "abstract"])
def notify_socket(tmp_path, monkeypatch, request):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = name = str(tmp_path / "notify")
    else:
        name = f"sockd-test-notify-{os.getpid()}-{id(sock)}"
        address, name = "\0" + name, "@" + name
    sock.bind(address)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield sock
    sock.close()


def test_ready_reload_and_stop_are_notified(sockd, notify_socket):
    server = sockd(ready=False)
    ready = receive(notify_socket)
    assert {"READY=1", f"MAINPID={server.pid}"} <= ready
    server.wait_ready()
    server.signal(signal.SIGHUP)
    assert "RELOADING=1" in receive(notify_socket)
    assert {"READY=1", "STATUS=serving, generation 2"} <= receive(notify_socket)
    server.signal(signal.SIGTERM)
    assert "STOPPING=1" in receive(notify_socket)
    assert server.proc.wait(10) == 0


def test_without_notify_socket_nothing_is_sent():
    environ: dict[str, str] = {}
    assert Notifier(environ).send("READY=1") is False
    environ = {"NOTIFY_SOCKET": "relative/path"}
    assert Notifier(environ).send("READY=1") is False
    assert environ == {}        # taken out: workers and hooks never see it
