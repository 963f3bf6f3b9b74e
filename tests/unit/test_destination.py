"""sockd.destination: valid names, "this host", own listeners (pure)."""

import ipaddress

import pytest

from sockd.destination import InvalidName, OwnListeners, host_name, means_this_host

ip = ipaddress.ip_address


@pytest.mark.parametrize("name", ["localhost", "WWW.Example.COM.", "a", "_srv._tcp.x",
                                  "a" * 63 + ".b", ".".join(["a" * 62] * 4)[:253],
                                  "0x7f.1", "-x.example"])
def test_valid_names_come_back_unchanged(name):
    assert host_name(name) is name


@pytest.mark.parametrize("name, why", [
    ("", "empty host name"),
    (".", "empty host name"),
    ("a..b", "empty label in host name"),
    (".a", "empty label in host name"),
    ("a..", "empty label in host name"),
    ("a" * 64, "host name label longer than 63 bytes"),
    (".".join(["a" * 63] * 4) + "a", "host name longer than 253 bytes"),
    ("local\xadhost", "host name with a byte other than a-z 0-9 - _ ."),
    ("localhost\0", "host name with a byte other than a-z 0-9 - _ ."),
    ("a b", "host name with a byte other than a-z 0-9 - _ ."),
    ("a\n", "host name with a byte other than a-z 0-9 - _ ."),
    ("xn--\xe9", "host name with a byte other than a-z 0-9 - _ ."),
    ("a/b", "host name with a byte other than a-z 0-9 - _ ."),
])
def test_invalid_names_say_why(name, why):
    with pytest.raises(InvalidName) as exc:
        host_name(name)
    assert str(exc.value) == why


def test_253_bytes_and_one_trailing_dot_are_allowed():
    name = ".".join(["a" * 63] * 3 + ["a" * 61])
    assert len(name) == 253
    assert host_name(name) == name and host_name(name + ".") == name + "."
    with pytest.raises(InvalidName):
        host_name(name + "a")


@pytest.mark.parametrize("address, this", [
    ("0.0.0.0", True), ("0.255.255.255", True), ("1.0.0.0", False), ("127.0.0.1", False),
    ("::", True), ("::ffff:0.0.0.0", True), ("::ffff:0.1.2.3", True), ("::1", False),
    ("::ffff:127.0.0.1", False), ("::0.0.0.1", False),
])
def test_this_host(address, this):
    assert means_this_host(ip(address)) is this


def test_own_listeners():
    own = OwnListeners.of([("127.0.0.1", 1080), ("::", 1081), ("0.0.0.0", 1082),
                           ("::ffff:127.0.0.2", 1083)])
    never = {"local": False}

    def is_local(address):
        never["local"] = True
        return address.is_loopback
    assert own.reached_by(ip("127.0.0.1"), 1080, is_local)
    assert own.reached_by(ip("::ffff:127.0.0.1"), 1080, is_local)
    assert not own.reached_by(ip("127.0.0.2"), 1080, is_local)
    assert own.reached_by(ip("127.0.0.2"), 1083, is_local)
    assert not never["local"]          # exact listeners need no probe
    assert own.reached_by(ip("127.9.9.9"), 1081, is_local)
    assert own.reached_by(ip("::1"), 1082, is_local)
    assert not own.reached_by(ip("192.0.2.1"), 1081, is_local)
    assert not own.reached_by(ip("127.0.0.1"), 1084, is_local)
    both = own | OwnListeners(any_address_ports=frozenset({9}))
    assert both.reached_by(ip("127.0.0.1"), 9, is_local)
