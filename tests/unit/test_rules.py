"""sockd.rules: the sockd.conf language, pure tests (no sockets, no DNS: resolvers are injected)."""

from __future__ import annotations

import ipaddress
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockd import rules
from sockd.rules import Command, ConfigError, IdentPolicy, Query

BAD = pathlib.Path(__file__).parent.parent / "data" / "conf" / "bad"

NAMES = {
    "gateway.test": "192.0.2.1",
    "mailhub.test": "192.0.2.25",
    "v6only.test": "2001:db8::25",
    "loopback": "127.0.0.0",        # a network name, as /etc/networks has it
}


def resolver(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The load-time resolver of these tests: a fixed table, LookupError for anything else."""
    return ipaddress.ip_address(NAMES[name])


def parse(text: str, file: str = "t.conf") -> rules.Ruleset:
    return rules.parse_text(text, file, resolver=resolver)


def errors(text: str, file: str = "t.conf") -> list[str]:
    return [str(e) for e in rules.check_text(text, file, resolver=resolver)]


def query(src: str = "10.1.2.3", dst: str = "192.0.2.80", port: int = 23, user: str = "fred",
          command: str = "connect", authenticated: bool = False) -> Query:
    try:
        destination: ipaddress.IPv4Address | ipaddress.IPv6Address | str = \
            ipaddress.ip_address(dst)
    except ValueError:
        destination = dst
    return Query(command, ipaddress.ip_address(src), user, authenticated, destination, port)


class Resolve:
    """A request-time resolver that counts its calls."""

    def __init__(self, answer: str = "198.51.100.7") -> None:
        self.answer = ipaddress.ip_address(answer)
        self.calls: list[str] = []

    def __call__(self, name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        self.calls.append(name)
        return self.answer


def no_resolve(name: str) -> ipaddress.IPv4Address:
    raise AssertionError(f"resolve({name!r}) was not expected")


def where(ruleset: rules.Ruleset, q: Query, resolve=no_resolve) -> str:
    return ruleset.evaluate(q, resolve).where


# ---------------------------------------------------------------------------------------------
# Reading lines


@pytest.mark.parametrize("line, tokens, command", [
    ("permit 10.0.0.0 255.0.0.0", ["permit", "10.0.0.0", "255.0.0.0"], None),
    ("permit\t10.0.0.0\t255.0.0.0", ["permit", "10.0.0.0", "255.0.0.0"], None),
    ("deny 1.2.3.4 255.255.255.255 # no command: x", ["deny", "1.2.3.4", "255.255.255.255"],
     None),
    ("deny 1.2.3.4 255.255.255.255#comment", ["deny", "1.2.3.4", "255.255.255.255"], None),
    ("deny 1.2.3.4 255.255.255.255 : mail root # not a comment",
     ["deny", "1.2.3.4", "255.255.255.255"], " mail root # not a comment"),
    ("deny 1.2.3.4 255.255.255.255: mail root", ["deny", "1.2.3.4", "255.255.255.255"],
     " mail root"),
    ("deny 1.2.3.4 255.255.255.255 :finger @%A", ["deny", "1.2.3.4", "255.255.255.255"],
     "finger @%A"),
    ("allow ::1 2001:db8::/32 eq 80", ["allow", "::1", "2001:db8::/32", "eq", "80"], None),
    ("allow ::ffff:10.0.0.0/104 : x", ["allow", "::ffff:10.0.0.0/104"], " x"),
    ("# only a comment", [], None),
    ("", [], None),
])
def test_split_line(line, tokens, command):
    assert rules.split_line(line) == (tokens, command)


def test_blank_and_comment_lines_make_no_rules():
    ruleset = parse("\n   \n\t\n# comment\n  # indented comment\n")
    assert ruleset.rules == ()


def test_crlf_line_ends_are_accepted():
    ruleset = parse("permit 10.0.0.0 255.0.0.0\r\ndeny 0.0.0.0 0.0.0.0\r\n")
    assert [r.text for r in ruleset.rules] == ["permit 10.0.0.0 255.0.0.0", "deny 0.0.0.0 0.0.0.0"]


def test_rules_keep_file_line_and_text_as_written():
    ruleset = parse("# header\n\npermit\t?=I  10.0.0.0 255.0.0.0   # internal\n", "site.conf")
    rule = ruleset.rules[0]
    assert (rule.file, rule.line, rule.where) == ("site.conf", 3, "site.conf:3")
    assert rule.text == "permit\t?=I  10.0.0.0 255.0.0.0   # internal"


def test_a_line_of_1023_characters_is_accepted_and_1024_is_an_error():
    line = "deny 0.0.0.0 0.0.0.0 : echo "
    ok = line + "x" * (1023 - len(line))
    assert parse(ok + "\n").rules[0].shell_command.endswith("x")
    assert errors("\n" + ok + "y\n") == ["t.conf:2: line too long (1024 characters, at most 1023)"]


def test_a_long_comment_line_is_an_error_too():
    # CSTC read the tail of an over-long line as a line of its own, even after a '#'.
    assert errors("#" + "x" * 1100) == ["t.conf:1: line too long (1101 characters, at most 1023)"]


# ---------------------------------------------------------------------------------------------
# Actions, ident, users


@pytest.mark.parametrize("word, action", [("allow", "allow"), ("permit", "allow"),
                                          ("deny", "deny")])
def test_actions(word, action):
    rule = parse(f"{word} 10.0.0.0 255.0.0.0").rules[0]
    assert rule.action == action
    assert parse(f"{word} 10.0.0.0 255.0.0.0").evaluate(query(), no_resolve).allowed == \
        (action == "allow")


@pytest.mark.parametrize("field, policy", [
    ("", None), ("?=I", IdentPolicy.STRICT), ("?=i", IdentPolicy.RELAXED),
    ("?=n", IdentPolicy.NONE), ("?=", IdentPolicy.NONE),
])
def test_ident_field(field, policy):
    assert parse(f"permit {field} 10.0.0.0 255.0.0.0").rules[0].ident == policy


@pytest.mark.parametrize("field, daemon_default, expected", [
    ("", IdentPolicy.NONE, IdentPolicy.NONE),
    ("", IdentPolicy.RELAXED, IdentPolicy.RELAXED),         # sockd -i
    ("", IdentPolicy.STRICT, IdentPolicy.STRICT),           # sockd -I
    ("?=I", IdentPolicy.NONE, IdentPolicy.STRICT),
    ("?=i", IdentPolicy.STRICT, IdentPolicy.RELAXED),
    ("?=n", IdentPolicy.STRICT, IdentPolicy.NONE),
    ("?=", IdentPolicy.RELAXED, IdentPolicy.NONE),
])
def test_the_lines_ident_field_overrides_the_daemons_flag(field, daemon_default, expected):
    decision = parse(f"permit {field} 10.0.0.0 255.0.0.0").evaluate(query(), no_resolve)
    assert decision.ident_policy(daemon_default) == expected


def test_identd_is_never_asked_about_a_deny_line_or_no_match():
    ruleset = parse("deny ?=I 10.0.0.0 255.0.0.0")
    assert ruleset.evaluate(query(), no_resolve).ident_policy(IdentPolicy.STRICT) == \
        IdentPolicy.NONE
    assert ruleset.evaluate(query(src="192.0.2.1"), no_resolve).ident_policy(
        IdentPolicy.STRICT) == IdentPolicy.NONE


@pytest.fixture
def goodusers(tmp_path):
    path = tmp_path / "goodusers"
    path.write_text("# the good ones\njulie simsong\tann,bob  # trailing comment\n\n,carol,\n")
    return str(path)


@pytest.mark.parametrize("field, user, matches", [
    # The chapter's table of *= examples.
    ("*=simsong", "simsong", True),
    ("*=simsong", "fred", False),
    ("*=fred,julie", "fred", True),
    ("*=fred,julie", "julie", True),
    ("*=fred,julie", "bob", False),
    ("*=GOODUSERS", "simsong", True),
    ("*=GOODUSERS", "carol", True),
    ("*=GOODUSERS", "fred", False),
    ("*=fred,GOODUSERS", "fred", True),
    ("*=fred,GOODUSERS", "ann", True),
    ("*=fred,GOODUSERS", "zed", False),
    ("*=", "anyone", True),           # CSTC: an empty list is every user
    ("", "anyone", True),
    ("*=fred", "", False),
])
def test_user_lists(field, user, matches, goodusers):
    ruleset = parse(f"permit {field.replace('GOODUSERS', goodusers)} 10.0.0.0 255.0.0.0")
    assert ruleset.evaluate(query(user=user), no_resolve).allowed == matches


def test_user_file_is_read_at_load(goodusers):
    ruleset = parse(f"permit *={goodusers} 10.0.0.0 255.0.0.0")
    assert ruleset.rules[0].users == {"julie", "simsong", "ann", "bob", "carol"}
    pathlib.Path(goodusers).unlink()
    assert ruleset.evaluate(query(user="julie"), no_resolve).allowed


def test_parse_user_file():
    assert rules.parse_user_file("a b\tc,d\n#x y\ne # f\n") == {"a", "b", "c", "d", "e"}


# ---------------------------------------------------------------------------------------------
# Addresses


@pytest.mark.parametrize("pair, inside, outside", [
    # The chapter's table of source address/mask examples.
    ("18.80.0.1 255.255.255.255", "18.80.0.1", "18.80.0.2"),
    ("204.17.190.0 255.255.255.0", "204.17.190.77", "204.17.191.1"),
    ("10.0.0.0 255.0.0.0", "10.200.3.4", "11.0.0.1"),
    ("0.0.0.0 0.0.0.0", "203.0.113.9", None),
    # Netmask semantics: 1-bits are compared, whatever the address's other bits.
    ("10.1.2.3 255.255.0.0", "10.1.99.99", "10.2.2.3"),
    ("10.0.0.5 255.0.0.255", "10.77.77.5", "10.77.77.6"),
    # Names resolved at load, network names included.
    ("gateway.test 255.255.255.255", "192.0.2.1", "192.0.2.2"),
    ("loopback 255.0.0.0", "127.5.5.5", "128.0.0.1"),
    # Modern: CIDR and IPv6.
    ("10.0.0.0/8", "10.1.1.1", "11.1.1.1"),
    ("2001:db8::/32", "2001:db8:1::1", "2001:db9::1"),
    ("::1", "::1", "::2"),
])
def test_source_addresses(pair, inside, outside):
    ruleset = parse(f"permit {pair}")
    assert ruleset.evaluate(query(src=inside), no_resolve).allowed
    if outside is not None:
        assert not ruleset.evaluate(query(src=outside), no_resolve).allowed


@pytest.mark.parametrize("pair, inside, outside", [
    ("192.0.2.0 255.255.255.0", "192.0.2.80", "192.0.3.80"),
    ("mailhub.test 255.255.255.255", "192.0.2.25", "192.0.2.26"),
    ("192.0.2.0/24", "192.0.2.1", "198.51.100.1"),
    ("2001:db8::/32", "2001:db8::80", "2001:db9::80"),
    ("::1", "::1", "::2"),
])
def test_destination_addresses(pair, inside, outside):
    ruleset = parse(f"permit 10.0.0.0 255.0.0.0 {pair}")
    assert ruleset.evaluate(query(dst=inside), no_resolve).allowed
    assert not ruleset.evaluate(query(dst=outside), no_resolve).allowed


def test_the_destination_pair_is_optional():
    ruleset = parse("permit 10.0.0.0 255.0.0.0 eq 23")
    assert ruleset.rules[0].dst is None
    for dst in ("192.0.2.1", "2001:db8::1", "www.example.com"):
        assert ruleset.evaluate(query(dst=dst), no_resolve).allowed


def test_families_do_not_mix_except_for_a_zero_mask():
    ruleset = parse("permit 10.0.0.0 255.0.0.0 192.0.2.0 255.255.255.0\n"
                    "permit ::1 0.0.0.0 0.0.0.0\n"
                    "permit 0.0.0.0/0 ::/0 eq 99\n")
    assert not ruleset.evaluate(query(dst="2001:db8::1"), no_resolve).allowed
    assert ruleset.evaluate(query(src="::1", dst="2001:db8::1"), no_resolve).allowed
    assert ruleset.evaluate(query(src="::1", dst="www.example.com"), no_resolve).allowed
    assert where(ruleset, query(src="2001:db8::5", dst="192.0.2.1", port=99)) == "t.conf:3"


def test_ipv4_mapped_clients_match_ipv4_rules():
    ruleset = parse("permit 10.0.0.0/8 192.0.2.0/24")
    assert ruleset.evaluate(query(src="::ffff:10.9.9.9", dst="::ffff:192.0.2.1"),
                            no_resolve).allowed


def test_names_are_resolved_once_at_load_only():
    calls = []

    def counting(name):
        calls.append(name)
        return resolver(name)

    ruleset = rules.parse_text("permit gateway.test 255.255.255.255 mailhub.test "
                               "255.255.255.255\n", "t.conf", resolver=counting)
    assert calls == ["gateway.test", "mailhub.test"]
    for _ in range(3):
        ruleset.evaluate(query(src="192.0.2.1", dst="192.0.2.25"), no_resolve)
    assert len(calls) == 2


def test_a_name_resolving_to_ipv6_cannot_take_an_ipv4_mask():
    assert errors("permit v6only.test 255.255.255.255") == [
        "t.conf:1: 'v6only.test' resolves to 2001:db8::25, not an IPv4 address to mask"]


# ---------------------------------------------------------------------------------------------
# Destination names (SOCKS4a, SOCKS5 domain)


def test_name_patterns_exact_and_zone():
    ruleset = parse("deny 0.0.0.0/0 .evil.example\n"
                    "allow 0.0.0.0/0 www.example.com\n")
    assert where(ruleset, query(dst="evil.example")) == "t.conf:1"
    assert where(ruleset, query(dst="a.b.EVIL.example.")) == "t.conf:1"
    assert where(ruleset, query(dst="notevil.example")) == "t.conf:no-match"
    assert where(ruleset, query(dst="WWW.Example.COM")) == "t.conf:2"
    assert where(ruleset, query(dst="ftp.www.example.com")) == "t.conf:no-match"


def test_requests_by_address_are_matched_by_address_only():
    ruleset = parse("allow 0.0.0.0/0 www.example.com\nallow 0.0.0.0/0 .example.org\n")
    assert where(ruleset, query(dst="93.184.216.34")) == "t.conf:no-match"


def test_a_lone_name_is_a_pattern_and_a_name_with_a_mask_a_classic_pair():
    ruleset = parse("allow 10.0.0.0/8 mailhub.test 255.255.255.255 eq 25\n"
                    "allow 10.0.0.0/8 gateway.test eq 80\n")
    first, second = ruleset.rules
    assert first.dst == rules.AddressMatch(4, int(ipaddress.ip_address("192.0.2.25")),
                                           0xFFFFFFFF, "mailhub.test 255.255.255.255")
    assert second.dst == rules.NamePattern("gateway.test", zone=False)


def test_a_request_refused_by_name_causes_no_dns_lookup():
    ruleset = parse("deny 0.0.0.0/0 .ads.example\n"
                    "allow 0.0.0.0/0 192.0.2.0/24\n")
    resolve = Resolve()
    decision = ruleset.evaluate(query(dst="x.ads.example"), resolve)
    assert (decision.allowed, decision.where, resolve.calls) == (False, "t.conf:1", [])


def test_a_name_is_resolved_once_when_an_address_rule_needs_it():
    ruleset = parse("deny 0.0.0.0/0 192.0.2.0/24\n"
                    "deny 0.0.0.0/0 198.51.100.0/24 eq 80\n"
                    "allow 0.0.0.0/0 198.51.100.0/24\n")
    resolve = Resolve("198.51.100.7")
    decision = ruleset.evaluate(query(dst="www.example.com", port=443), resolve)
    assert (decision.where, decision.resolved, resolve.calls) == (
        "t.conf:3", ipaddress.ip_address("198.51.100.7"), ["www.example.com"])


def test_no_lookup_when_the_address_rules_fail_on_other_fields():
    ruleset = parse("deny *=bob 0.0.0.0/0 192.0.2.0/24\n"
                    "deny 0.0.0.0/0 192.0.2.0/24 eq 25\n"
                    "allow 0.0.0.0/0 .example.com\n"
                    "deny 0.0.0.0/0 192.0.2.0/24\n")
    decision = ruleset.evaluate(query(dst="www.example.com", user="fred", port=80), no_resolve)
    assert (decision.where, decision.resolved) == ("t.conf:3", None)


def test_zero_masks_match_names_without_resolving():
    ruleset = parse("allow 10.0.0.0/8 0.0.0.0 0.0.0.0\n")
    assert where(ruleset, query(dst="www.example.com")) == "t.conf:1"


def test_resolve_errors_propagate():
    ruleset = parse("allow 0.0.0.0/0 192.0.2.0/24\n")

    def failing(name):
        raise OSError("no such host")

    with pytest.raises(OSError, match="no such host"):
        ruleset.evaluate(query(dst="nowhere.example"), failing)


def test_a_destination_name_that_is_an_address_literal_is_an_address():
    ruleset = parse("allow 0.0.0.0/0 192.0.2.0/24\n")
    assert ruleset.evaluate(query(dst="192.0.2.1"), no_resolve).allowed
    assert ruleset.evaluate(Query("connect", ipaddress.ip_address("10.0.0.1"), "", False,
                                  "192.0.2.1", 80), no_resolve).allowed


# ---------------------------------------------------------------------------------------------
# Ports, commands, authentication


@pytest.mark.parametrize("op, value, passing, failing", [
    ("eq", "23", [23], [22, 24]),
    ("neq", "23", [22, 24, 0], [23]),
    ("lt", "1024", [0, 1023], [1024, 65535]),
    ("le", "1024", [1023, 1024], [1025]),
    ("gt", "1023", [1024, 65535], [1023, 0]),
    ("ge", "1024", [1024], [1023]),
    ("eq", "telnet", [23], [21]),
    ("eq", "http", [80], [443]),
])
def test_port_operators(op, value, passing, failing):
    ruleset = parse(f"permit 10.0.0.0 255.0.0.0 {op} {value}")
    for port in passing:
        assert ruleset.evaluate(query(port=port), no_resolve).allowed, port
    for port in failing:
        assert not ruleset.evaluate(query(port=port), no_resolve).allowed, port


def test_a_rule_with_all_nine_fields_keeps_its_port_test():
    # CSTC's mkargs stopped at 8 fields and glued "eq 23" together: the test was lost.
    ruleset = parse("permit ?=n *=fred 10.0.0.0 255.0.0.0 192.0.2.0 255.255.255.0 eq 23")
    assert ruleset.rules[0].port == rules.PortTest("eq", 23)
    assert ruleset.evaluate(query(port=23), no_resolve).allowed
    assert not ruleset.evaluate(query(port=25), no_resolve).allowed


@pytest.mark.parametrize("field, allowed", [
    ("", {"connect", "bind", "udp"}),
    ("cmd=connect", {"connect"}),
    ("cmd=bind", {"bind"}),
    ("cmd=udp", {"udp"}),
    ("cmd=bind,udp", {"bind", "udp"}),
])
def test_commands(field, allowed):
    ruleset = parse(f"allow {field} 10.0.0.0/8")
    for command in Command:
        assert ruleset.evaluate(query(command=command.value), no_resolve).allowed == \
            (command.value in allowed)


def test_auth_password_requires_socks5_authentication():
    ruleset = parse("allow auth=password *=fred 10.0.0.0/8\n")
    assert ruleset.evaluate(query(authenticated=True), no_resolve).allowed
    assert not ruleset.evaluate(query(authenticated=False), no_resolve).allowed


def test_options_come_in_any_order():
    one = parse("allow ?=I *=fred cmd=bind auth=password 10.0.0.0/8").rules[0]
    two = parse("allow auth=password cmd=bind *=fred ?=I 10.0.0.0/8").rules[0]
    fields = ("ident", "users", "commands", "require_auth")
    assert [getattr(one, f) for f in fields] == [getattr(two, f) for f in fields]


# ---------------------------------------------------------------------------------------------
# Order, default, shell commands, special lines


def test_first_match_wins_and_no_match_denies():
    ruleset = parse("deny 10.1.0.0 255.255.0.0\n"
                    "permit 10.0.0.0 255.0.0.0\n"
                    "deny 10.0.0.0 255.0.0.0\n", "sockd.conf")
    assert where(ruleset, query(src="10.1.1.1")) == "sockd.conf:1"
    assert where(ruleset, query(src="10.2.1.1")) == "sockd.conf:2"
    decision = ruleset.evaluate(query(src="192.0.2.9"), no_resolve)
    assert (decision.allowed, decision.rule, decision.where) == (False, None,
                                                                 "sockd.conf:no-match")


def test_an_empty_file_denies_everything():
    decision = parse("").evaluate(query(), no_resolve)
    assert (decision.allowed, decision.where) == (False, "t.conf:no-match")


def test_default_ruleset_allows_loopback_only():
    ruleset = rules.default_ruleset()
    for src in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        decision = ruleset.evaluate(query(src=src, dst="www.example.com"), no_resolve)
        assert (decision.allowed, decision.where) == (True, "default")
    for src in ("10.0.0.1", "::2", "2001:db8::1"):
        decision = ruleset.evaluate(query(src=src), no_resolve)
        assert (decision.allowed, decision.where) == (False, "default")


def test_the_chapters_example_file(tmp_path):
    conf = tmp_path / "sockd.conf"
    conf.write_text(
        "# Protect the workstations on 204.99.90.\n"
        "#NO_IDENTD: /usr/ucb/finger @%A | /bin/mailx -s 'SOCKS: no identd on %A' root\n"
        "#BAD_ID: /usr/ucb/finger @%A | /bin/mailx -s 'SOCKS: %U pretends to be %u' root\n"
        "deny 0.0.0.0 0.0.0.0 204.99.90.0 255.255.255.0 eq telnet : "
        "/usr/ucb/finger @%A | /bin/mailx -s 'SOCKS: rejected %u@%A' root\n"
        "permit ?=I 204.99.90.0 255.255.255.0 0.0.0.0 0.0.0.0 eq telnet\n"
        "permit 204.99.90.0 255.255.255.0 0.0.0.0 0.0.0.0 gt 1023\n"
        "deny 0.0.0.0 0.0.0.0\n")
    ruleset = rules.load(str(conf), resolver=resolver)
    assert ruleset.no_identd.shell_command.startswith("/usr/ucb/finger @%A")
    assert (ruleset.no_identd.where, ruleset.bad_id.where) == (f"{conf}:2", f"{conf}:3")
    inbound = ruleset.evaluate(query(src="203.0.113.5", dst="204.99.90.17", port=23), no_resolve)
    assert (inbound.allowed, inbound.rule.line) == (False, 4)
    assert inbound.rule.shell_command == ("/usr/ucb/finger @%A | /bin/mailx -s "
                                          "'SOCKS: rejected %u@%A' root")
    outbound = ruleset.evaluate(query(src="204.99.90.3", dst="192.0.2.1", port=23), no_resolve)
    assert (outbound.allowed, outbound.rule.line) == (True, 5)
    assert outbound.ident_policy(IdentPolicy.NONE) == IdentPolicy.STRICT
    assert rules.check(str(conf), resolver=resolver) == []


def test_shell_command_tabs_become_blanks():
    rule = parse("deny 0.0.0.0/0 :\techo\t%u  \n").rules[0]
    assert rule.shell_command == "echo %u"


def test_special_lines_need_to_start_the_line():
    ruleset = parse(" #NO_IDENTD: echo x\n")
    assert ruleset.no_identd is None


# ---------------------------------------------------------------------------------------------
# Errors


def bad_files():
    return sorted(p.name for p in BAD.glob("*.conf"))


@pytest.mark.parametrize("name", bad_files())
def test_bad_files(name, monkeypatch):
    """Each bad file against its exact messages: check() all of them, load() the first."""
    monkeypatch.chdir(BAD)
    expected = (BAD / name).with_suffix(".expected").read_text().splitlines()
    assert [str(e) for e in rules.check(name, resolver=resolver)] == expected
    with pytest.raises(ConfigError) as raised:
        rules.load(name, resolver=resolver)
    assert str(raised.value) == expected[0]
    assert (raised.value.file, raised.value.line) == (name, int(expected[0].split(":")[1]))


def test_the_bad_file_suite_is_complete():
    assert len(bad_files()) >= 30
    assert all((BAD / n).with_suffix(".expected").exists() for n in bad_files())


def test_an_unreadable_file():
    errs = rules.check("/nonexistent/sockd.conf")
    assert [str(e) for e in errs] == ["/nonexistent/sockd.conf: cannot read: "
                                      "No such file or directory"]
    assert errs[0].line is None


def test_config_error_attributes():
    error = ConfigError("sockd.conf", 14, "unknown action 'permti'")
    assert (str(error), error.file, error.line, error.message) == (
        "sockd.conf:14: unknown action 'permti'", "sockd.conf", 14, "unknown action 'permti'")


def test_default_resolver_uses_the_networks_file(tmp_path, monkeypatch):
    networks = tmp_path / "networks"
    networks.write_text("# networks\nlink-local 169.254.0.0\nbackbone 10.1 net10 # short\n")
    monkeypatch.setattr(rules, "NETWORKS_FILE", str(networks))

    def no_hosts(name):
        raise OSError("not a host")

    monkeypatch.setattr(rules.socket, "gethostbyname", no_hosts)
    assert rules.default_resolver("link-local") == ipaddress.ip_address("169.254.0.0")
    assert rules.default_resolver("net10") == ipaddress.ip_address("10.1.0.0")
    with pytest.raises(LookupError):
        rules.default_resolver("nothing-here")


# ---------------------------------------------------------------------------------------------
# Properties


TOKENS = ["allow", "permit", "deny", "Permit", "?=I", "?=i", "?=n", "?=", "?=x", "*=fred",
          "*=fred,bob", "*=", "*=,", "*=/nonexistent/users", "cmd=connect", "cmd=bind,udp",
          "cmd=", "auth=password", "auth=x", "x=y", "10.0.0.0", "255.0.0.0", "0.0.0.0",
          "10.0.0.0/8", "10.0.0.1/8", "1.2.3", "256.1.1.1", "::1", "2001:db8::/32", "ffff::",
          "fe80::1%eth0", "gateway.test", "nosuch.test", "loopback", ".example.com",
          "www.example.com", "-", "eq", "neq", "lt", "le", "gt", "ge", "23", "telnet",
          "70000", "80x", ":", ": echo %u", "#", "#NO_IDENTD:", "#BAD_ID: x", "/", "é", "\x00"]


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
                          st.text(max_size=60)), max_size=8))
def test_the_parser_raises_only_config_errors(lines):
    text = "\n".join(lines)
    try:
        ruleset = rules.parse_text(text, "p.conf", resolver=resolver)
    except ConfigError as error:
        assert str(error).startswith("p.conf:")
        return
    ruleset.evaluate(query(), Resolve())


SOURCES = ["10.0.0.0 255.0.0.0", "10.1.0.0/16", "10.1.2.3 255.255.255.255", "0.0.0.0 0.0.0.0",
           "10.0.0.0 255.0.255.0", "::1", "2001:db8::/32", "::/0", "gateway.test 255.255.255.0"]
DESTINATIONS = ["", "192.0.2.0 255.255.255.0", "192.0.2.0/25", "198.51.100.7/32",
                "0.0.0.0 0.0.0.0", "2001:db8::/48", ".example.com", "www.example.com",
                "mailhub.test 255.255.255.255", "10.0.0.0/8"]
PORTS = [0, 21, 23, 80, 443, 1023, 1024, 65535]
rule_lines = st.builds(
    lambda action, ident, users, cmd, auth, src, dst, port: " ".join(
        w for w in (action, ident, users, cmd, auth, src, dst, port) if w),
    st.sampled_from(["allow", "permit", "deny"]),
    st.sampled_from(["", "?=I", "?=i", "?=n"]),
    st.sampled_from(["", "", "", "*=fred", "*=fred,bob", "*=bob", "*="]),
    st.sampled_from(["", "", "", "cmd=connect", "cmd=bind,udp", "cmd=udp"]),
    st.sampled_from(["", "", "", "auth=password"]),
    st.sampled_from(SOURCES),
    st.sampled_from(DESTINATIONS),
    st.one_of(st.just(""), st.just(""), st.builds("{} {}".format,
                                                  st.sampled_from(rules.OPERATORS),
                                                  st.sampled_from(PORTS))),
)
queries = st.builds(
    query,
    src=st.sampled_from(["10.1.2.3", "10.9.2.3", "10.1.9.9", "192.0.2.77", "::1", "2001:db8::1",
                         "2001:db9::1", "::ffff:10.1.2.3"]),
    # Names half of the time: the interesting cases are about when a name gets resolved.
    dst=st.sampled_from(["192.0.2.1", "192.0.2.200", "198.51.100.7", "2001:db8::1", "10.0.0.1",
                         "www.example.com", "ftp.example.com", "example.com", "www.example.net",
                         "host.example.org"]),
    port=st.sampled_from([p + d for p in PORTS for d in (-1, 0, 1) if 0 <= p + d <= 65535]),
    user=st.sampled_from(["fred", "bob", "", "carol"]),
    command=st.sampled_from(["connect", "bind", "udp"]),
    authenticated=st.booleans(),
)


def reference(ruleset: rules.Ruleset, q: Query, resolve: Resolve):
    """First match by brute force, written from sockd.conf(5) without the compiled index."""
    resolved = None

    def address_matches(match, address):
        if match.mask == 0:
            return True
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version == match.version and int(address) & match.mask == match.value

    for rule in ruleset.rules:
        if not address_matches(rule.src, q.src):
            continue
        if rule.commands is not None and Command(q.command) not in rule.commands:
            continue
        if rule.require_auth and not q.authenticated:
            continue
        if rule.users is not None and q.user not in rule.users:
            continue
        if rule.port is not None and not rule.port.passes(q.port):
            continue
        if isinstance(rule.dst, rules.NamePattern):
            if not isinstance(q.dst, str):
                continue
            name = q.dst.lower()
            if name != rule.dst.name and not (rule.dst.zone and name.endswith("." + rule.dst.name)):
                continue
        elif isinstance(rule.dst, rules.AddressMatch) and rule.dst.mask != 0:
            if isinstance(q.dst, str):
                if resolved is None:
                    resolved = resolve(q.dst)
                target = resolved
            else:
                target = q.dst
            if not address_matches(rule.dst, target):
                continue
        return rule, resolved
    return None, resolved


@settings(deadline=None, max_examples=400)
@given(st.lists(rule_lines, max_size=25), st.lists(queries, min_size=1, max_size=5),
       st.sampled_from(["192.0.2.1", "198.51.100.7", "2001:db8::7", "10.0.0.1"]))
def test_evaluation_agrees_with_brute_force(lines, qs, answer):
    ruleset = parse("\n".join(lines))
    for q in qs:
        compiled, brute = Resolve(answer), Resolve(answer)
        decision = ruleset.evaluate(q, compiled)
        rule, resolved = reference(ruleset, q, brute)
        assert decision.rule == rule
        assert decision.allowed == (rule is not None and rule.action == "allow")
        assert decision.resolved == resolved
        assert compiled.calls == brute.calls and len(compiled.calls) <= 1


def test_ten_thousand_rules_load_and_decide():
    """Correctness at size (timings are measured apart, never asserted)."""
    lines = [f"deny 10.{i // 256}.{i % 256}.0 255.255.255.0 eq {1 + i % 1000}"
             for i in range(10_000)]
    lines.append("allow 10.0.0.0/8 .example.com")
    ruleset = parse("\n".join(lines))
    assert len(ruleset) == 10_001
    assert where(ruleset, query(src="10.39.15.1", port=1 + 9999 % 1000)) == "t.conf:10000"
    assert where(ruleset, query(src="10.39.15.1", dst="a.example.com", port=2)) == "t.conf:10001"
    assert where(ruleset, query(src="10.39.15.1", port=2)) == "t.conf:no-match"


def test_the_man_pages_examples_parse(tmp_path):
    """Every example block of sockd.conf(5)'s EXAMPLES section is a good file."""
    page = (pathlib.Path(__file__).parents[2] / "man" / "sockd.conf.5").read_text()
    examples = page.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0]
    blocks = [b.split(".fi", 1)[0] for b in examples.split(".nf\n")[1:]]
    users = tmp_path / "users"
    users.write_text("julie\n")
    names = dict(NAMES, **{"ftp.example.com": "192.0.2.21"})
    assert len(blocks) == 2
    for block in blocks:
        text = block.replace("\\-", "-").replace("/etc/goodusers", str(users))
        text = text.replace("/etc/sockd.users", str(users))
        ruleset = rules.parse_text(text, "example.conf",
                                   resolver=lambda n: ipaddress.ip_address(names[n]))
        assert len(ruleset.rules) >= 4


def test_name_patterns_may_end_with_a_dot():
    assert parse("deny 0.0.0.0/0 .Example.COM.").rules[0].dst == rules.NamePattern(
        "example.com", zone=True)
    assert errors("deny 0.0.0.0/0 .") == ["t.conf:1: bad host name pattern '.'"]
