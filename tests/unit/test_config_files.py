"""Configuration files as sockd reads them: only regular files of bounded size, no IPv4-mapped
addresses in rules or routes, and error messages whose file bytes are escaped."""

import os
import pickle

import pytest

from sockd import passwords, route, rules
from sockd.log import escape_text
from sockd.rules import ConfigError


def no_resolver(name):
    raise LookupError(name)


def rule_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        rules.parse_text(text, "p.conf", resolver=no_resolver)
    return str(info.value)


# -- IPv4-mapped addresses ------------------------------------------------------------------------


@pytest.mark.parametrize("line, message", [
    # The hole: this became 0.0.0.0/0, whose zero mask matches every IPv6 client.
    ("allow ::ffff:0.0.0.0/96",
     "p.conf:1: IPv4-mapped address '::ffff:0.0.0.0/96': write the IPv4 form 0.0.0.0/0 instead"),
    ("allow ::ffff:10.0.0.0/104",
     "p.conf:1: IPv4-mapped address '::ffff:10.0.0.0/104': write the IPv4 form 10.0.0.0/8 "
     "instead"),
    ("deny ::FFFF:a00:0/104",
     "p.conf:1: IPv4-mapped address '::FFFF:a00:0/104': write the IPv4 form 10.0.0.0/8 instead"),
    ("allow ::ffff:10.1.2.3",
     "p.conf:1: IPv4-mapped address '::ffff:10.1.2.3': write the IPv4 form 10.1.2.3/32 instead"),
    ("allow ::ffff:10.0.0.1/104",
     "p.conf:1: IPv4-mapped address '::ffff:10.0.0.1/104': write the IPv4 form 10.0.0.1/8 "
     "instead"),
    ("allow 127.0.0.0/8 ::ffff:0.0.0.0/96 eq 80",
     "p.conf:1: IPv4-mapped address '::ffff:0.0.0.0/96': write the IPv4 form 0.0.0.0/0 instead"),
    ("allow ::1 ::ffff:192.0.2.0/120 : echo %u",
     "p.conf:1: IPv4-mapped address '::ffff:192.0.2.0/120': write the IPv4 form 192.0.2.0/24 "
     "instead"),
])
def test_an_ipv4_mapped_address_in_a_rule_is_an_error(line, message):
    assert rule_error(line) == message


def test_ipv6_rules_outside_the_mapped_range_still_load():
    ruleset = rules.parse_text("allow ::/96\nallow ::fffe:0:0/96\nallow ::1:ffff:0:0/96\n"
                               "allow 2001:db8::/32 ::/0\n", "p.conf", resolver=no_resolver)
    assert len(ruleset) == 4


def test_mapped_clients_and_destinations_are_still_judged_as_ipv4():
    ruleset = rules.parse_text("allow 10.0.0.0/8 192.0.2.0/24\n", "p.conf",
                               resolver=no_resolver)
    query = rules.Query("connect", rules.ipaddress.ip_address("::ffff:10.1.1.1"), "", False,
                        rules.ipaddress.ip_address("::ffff:192.0.2.7"), 80)
    assert ruleset.evaluate(query, no_resolver).allowed


def test_a_rule_with_an_ipv4_prefix_does_not_match_ipv6_clients():
    ruleset = rules.parse_text("allow 10.0.0.0/8\n", "p.conf", resolver=no_resolver)
    query = rules.Query("connect", rules.ipaddress.ip_address("2001:db8::1"), "", False,
                        rules.ipaddress.ip_address("192.0.2.7"), 80)
    assert not ruleset.evaluate(query, no_resolver).allowed


@pytest.mark.parametrize("line, message", [
    ("::ffff:10.0.0.1 10.0.0.0/8",
     "r:1: IPv4-mapped address '::ffff:10.0.0.1': write the IPv4 form 10.0.0.1 instead"),
    ("10.0.0.1 ::ffff:0.0.0.0/96",
     "r:1: IPv4-mapped address '::ffff:0.0.0.0/96': write the IPv4 form 0.0.0.0/0 instead"),
])
def test_an_ipv4_mapped_address_in_a_route_is_an_error(line, message):
    with pytest.raises(ConfigError) as info:
        route.parse_routes(line, "r", resolver=no_resolver)
    assert str(info.value) == message


# -- what a configuration file may be -------------------------------------------------------------


def test_a_regular_file_is_read(tmp_path):
    path = tmp_path / "c.conf"
    path.write_bytes(b"allow 127.0.0.0/8\n")
    assert rules.read_regular_file(str(path)) == b"allow 127.0.0.0/8\n"
    link = tmp_path / "link.conf"
    link.symlink_to(path)           # a linked configuration file is normal
    assert rules.read_regular_file(str(link)) == b"allow 127.0.0.0/8\n"


def read_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        rules.read_regular_file(str(path))
    return str(info.value)


def test_dev_zero_is_refused():
    assert read_error("/dev/zero") == "/dev/zero: not a regular file (a character device)"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_error(fifo) == f"{fifo}: not a regular file (a FIFO)"


def test_a_directory_is_refused(tmp_path):
    assert read_error(tmp_path) == f"{tmp_path}: not a regular file (a directory)"


def test_a_missing_file(tmp_path):
    assert read_error(tmp_path / "none") == f"{tmp_path}/none: cannot read: No such file or " \
        "directory"


def test_size_bound(tmp_path):
    path = tmp_path / "big.conf"
    with open(path, "wb") as f:
        f.truncate(rules.MAX_CONFIG)             # sparse: costs no disk
    assert len(rules.read_regular_file(str(path))) == rules.MAX_CONFIG
    with open(path, "ab") as f:
        f.write(b"\n")
    assert read_error(path) == f"{path}: larger than {rules.MAX_CONFIG} bytes"
    assert rules.MAX_CONFIG == 16 * 1024 * 1024


def test_rules_routes_and_passwords_share_the_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert [str(e) for e in rules.check(str(fifo))] == [f"{fifo}: not a regular file (a FIFO)"]
    assert [str(e) for e in route.check_routes(str(fifo))] == \
        [f"{fifo}: not a regular file (a FIFO)"]
    with pytest.raises(passwords.PasswordError) as info:
        passwords.load(str(fifo))
    assert str(info.value) == f"{fifo}: not a regular file (a FIFO)"


# -- escaped messages ----------------------------------------------------------------------------


def test_escape_text_keeps_spaces_and_escapes_every_other_byte():
    assert escape_text("a b: 'c'") == "a b: 'c'"
    assert escape_text("a\x1b[2Jb\tc\\d\x7f") == "a\\x1b[2Jb\\x09c\\x5cd\\x7f"
    assert escape_text(b"\xff\xfe\xc3\xa9".decode("utf-8", "surrogateescape")) == \
        "\\xff\\xfe\\xc3\\xa9"
    assert escape_text("\xff", "latin-1") == "\\xff"
    assert escape_text("\ud800") == "\\xed\\xa0\\x80"  # a surrogate no file byte made


def test_a_rule_error_escapes_the_tokens_it_quotes():
    text = b"perm\x1b[2Jit\xff\xfe 10.0.0.0/8\n".decode("utf-8", "surrogateescape")
    assert rule_error(text) == ("p.conf:1: unknown action 'perm\\x1b[2Jit\\xff\\xfe' "
                                "(expected allow, permit or deny)")


def test_the_file_name_is_escaped_too():
    error = ConfigError("a\nb\udcff.conf", 3, "unknown action 'x'")
    assert str(error) == "a\\x0ab\\xff.conf:3: unknown action 'x'"
    assert error.file == "a\nb\udcff.conf"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_password_errors_are_escaped_as_the_files_bytes():
    text = b"\xff\x1bx:1\n\xff\x1bx:2\n".decode("utf-8", "surrogateescape")
    with pytest.raises(passwords.PasswordError) as info:
        passwords.parse(text, "pw")
    assert str(info.value) == "pw:1: control character in user name"
    text = b"\xff\xc3\xa9x:1\n".decode("utf-8", "surrogateescape")
    with pytest.raises(passwords.PasswordError) as info:
        passwords.parse(text, "pw")
    assert str(info.value).startswith("pw:1: user '\\xff\\xc3\\xa9x': not a scrypt hash")
    assert isinstance(info.value, ConfigError)
