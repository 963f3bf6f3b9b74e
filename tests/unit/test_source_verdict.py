"""Ruleset.source_verdict: can the rules ever allow a client address?  Pure tests.

The verdict lets a worker close a client at accept; it must never say NEVER for an address
from which some request could be allowed, or whose requests could run a rule's shell command.
The property test below holds it to `Ruleset.evaluate` over random rule sets and requests.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockd import rules
from sockd.rules import Query, SourceVerdict

MAY, HOOK, NEVER = SourceVerdict.MAY_PERMIT, SourceVerdict.HOOK, SourceVerdict.NEVER


def parse(text: str) -> rules.Ruleset:
    return rules.parse_text(text, "t.conf", resolver=lambda name: ipaddress.ip_address("192.0.2.9"))


def verdict(text: str, address: str) -> SourceVerdict:
    return parse(text).source_verdict(ipaddress.ip_address(address))


PERMIT_TEN = "permit 10.0.0.0/8\ndeny 0.0.0.0/0\n"


@pytest.mark.parametrize(("address", "expected"), [
    ("10.1.2.3", MAY),
    ("192.0.2.1", NEVER),
    ("::ffff:10.1.2.3", MAY),       # IPv4-mapped: judged as IPv4
    ("::ffff:192.0.2.1", NEVER),
    ("::1", NEVER),                 # a zero mask matches both families
])
def test_permit_one_network_deny_the_rest(address, expected):
    assert verdict(PERMIT_TEN, address) is expected


def test_addresses_given_as_text_are_judged_too():
    ruleset = parse(PERMIT_TEN)
    assert ruleset.source_verdict("::ffff:10.0.0.1") is MAY
    assert ruleset.source_verdict("192.0.2.1") is NEVER


def test_no_rules_and_no_matching_rule_never_permit():
    assert verdict("", "10.1.2.3") is NEVER
    assert verdict("permit 10.0.0.0/8\n", "192.0.2.1") is NEVER
    assert verdict("permit 10.0.0.0/8\n", "10.0.0.1") is MAY


def test_the_embedded_default():
    ruleset = rules.default_ruleset()
    assert ruleset.source_verdict(ipaddress.ip_address("127.0.0.2")) is MAY
    assert ruleset.source_verdict(ipaddress.ip_address("::1")) is MAY
    assert ruleset.source_verdict(ipaddress.ip_address("::2")) is NEVER
    assert ruleset.source_verdict(ipaddress.ip_address("10.0.0.1")) is NEVER


def test_first_match_wins_for_the_source_too():
    text = "deny 10.1.0.0/16\npermit 10.0.0.0/8\n"
    assert verdict(text, "10.1.2.3") is NEVER
    assert verdict(text, "10.2.0.1") is MAY


@pytest.mark.parametrize("deny", [
    "deny 10.0.0.0/8 eq 23",                    # a port test
    "deny 10.0.0.0/8 neq 80",
    "deny 10.0.0.0/8 lt 1024",
    "deny 10.0.0.0/8 192.0.2.0/24",             # a destination
    "deny 10.0.0.0/8 .example.com",             # a destination name
    "deny *=fred 10.0.0.0/8",                   # users
    "deny cmd=connect 10.0.0.0/8",              # commands
    "deny cmd=connect,bind 10.0.0.0/8",
    "deny auth=password 10.0.0.0/8",            # authenticated requests only
])
def test_a_narrower_deny_does_not_stop_the_walk(deny):
    assert verdict(f"{deny}\npermit 10.0.0.0/8\ndeny 0.0.0.0/0\n", "10.1.2.3") is MAY


@pytest.mark.parametrize("deny", [
    "deny 10.0.0.0/8",
    "deny 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0",  # a destination that matches everything
    "deny 10.0.0.0/8 ::/0",
    "deny 10.0.0.0/8 ge 0",                     # a port test every port passes
    "deny 10.0.0.0/8 le 65535",
    "deny cmd=connect,bind,udp 10.0.0.0/8",     # every command
    "deny ?=I 10.0.0.0/8",                      # ident means nothing on a deny line
    "deny *= 10.0.0.0/8",                       # an empty *= is every user
])
def test_a_deny_of_every_request_stops_the_walk(deny):
    assert verdict(f"{deny}\npermit 10.0.0.0/8\n", "10.1.2.3") is NEVER


def test_any_allow_rule_reached_may_permit():
    for allow in ("permit *=fred 10.0.0.0/8", "permit cmd=bind 10.0.0.0/8 eq 21",
                  "permit ?=I 10.0.0.0/8", "permit auth=password 10.0.0.0/8 .example.com"):
        assert verdict(f"{allow}\ndeny 0.0.0.0/0\n", "10.1.2.3") is MAY


def test_a_shell_command_on_the_stopping_deny_means_negotiate():
    text = "permit 10.0.0.0/8\ndeny 0.0.0.0/0 : echo %A >> /tmp/refused\n"
    assert verdict(text, "192.0.2.1") is HOOK
    assert verdict(text, "10.1.2.3") is MAY


def test_a_shell_command_on_a_narrower_deny_reached_means_negotiate():
    text = "deny 192.0.2.0/24 eq 23 : echo telnet\ndeny 0.0.0.0/0\npermit 0.0.0.0/0\n"
    assert verdict(text, "192.0.2.1") is HOOK
    assert verdict(text, "198.51.100.1") is NEVER      # that rule's source does not match


def test_a_shell_command_after_the_stop_is_never_reached():
    text = "deny 0.0.0.0/0\ndeny 192.0.2.0/24 : echo never\n"
    assert verdict(text, "192.0.2.1") is NEVER


def test_a_shell_command_on_a_later_allow_is_not_reached_either():
    text = "deny 192.0.2.0/24\npermit 0.0.0.0/0 : echo hi\n"
    assert verdict(text, "192.0.2.1") is NEVER
    assert verdict(text, "10.0.0.1") is MAY


def test_a_shell_command_and_no_stop_means_negotiate():
    assert verdict("deny 0.0.0.0/0 eq 23 : echo telnet\n", "10.0.0.1") is HOOK


def test_ipv6_rules():
    text = "permit 2001:db8::/32\ndeny ::/0\n"
    assert verdict(text, "2001:db8::5") is MAY
    assert verdict(text, "2001:db9::5") is NEVER
    assert verdict(text, "10.0.0.1") is NEVER


# -- the verdict against evaluate(), over random rule sets -----------------------------------

SOURCES = ["10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0", "::1", "2001:db8::/32", "192.0.2.0/24"]
OPTIONS = ["", "*=fred", "*=fred,bob", "cmd=connect", "cmd=bind,udp", "cmd=connect,bind,udp",
           "auth=password", "?=I"]
DESTINATIONS = ["", "198.51.100.0/24", ".example.com", "0.0.0.0/0", "::/0"]
PORTS = ["", "eq 23", "neq 23", "lt 1024", "ge 0", "le 65535", "gt 1023"]
HOOKS = ["", ": echo %A"]

rule_line = st.builds(
    lambda action, option, src, dst, port, hook: " ".join(
        part for part in (action, option, src, dst, port, hook) if part),
    st.sampled_from(["permit", "deny"]), st.sampled_from(OPTIONS), st.sampled_from(SOURCES),
    st.sampled_from(DESTINATIONS), st.sampled_from(PORTS), st.sampled_from(HOOKS))

CLIENTS = ["10.1.2.3", "10.2.0.1", "::1", "2001:db8::7", "192.0.2.1", "198.51.100.1",
           "::ffff:10.1.2.3"]
requests = st.builds(
    lambda command, user, authenticated, dst, port: (command, user, authenticated, dst, port),
    st.sampled_from(["connect", "bind", "udp"]), st.sampled_from(["", "fred", "bob", "eve"]),
    st.booleans(), st.sampled_from(["198.51.100.7", "203.0.113.1", "www.example.com",
                                    "other.test", "2001:db8::80"]),
    st.sampled_from([0, 21, 23, 80, 1023, 1024, 65535]))


@settings(deadline=None, max_examples=300)
@given(st.lists(rule_line, max_size=6), st.sampled_from(CLIENTS),
       st.lists(requests, min_size=1, max_size=20))
def test_never_and_hook_agree_with_evaluate(lines, client, asked):
    ruleset = parse("\n".join(lines) + "\n")
    verdict_ = ruleset.source_verdict(ipaddress.ip_address(client))
    for command, user, authenticated, dst, port in asked:
        query = Query(command, ipaddress.ip_address(client), user, authenticated,
                      dst if "." in dst and not dst[0].isdigit() else ipaddress.ip_address(dst),
                      port)
        decision = ruleset.evaluate(query, lambda name: ipaddress.ip_address("198.51.100.7"))
        if verdict_ is not MAY:
            assert not decision.allowed, (lines, client, query)
        if verdict_ is NEVER:
            assert decision.rule is None or decision.rule.shell_command is None, \
                (lines, client, query)


def test_may_allow_a_command_to_some_destination():
    ruleset = rules.parse_text(
        "deny cmd=udp 10.0.0.0/8 192.0.2.1/32\n"        # one destination: not a stop
        "permit cmd=udp *=alice 10.0.0.0/8 192.0.2.0/24\n"
        "deny cmd=udp 10.0.0.0/8\n"                     # every destination and port: a stop
        "permit auth=password 10.0.0.0/8\n"
        "permit 10.0.0.0/8 eq 53\n", "t")
    src = "10.1.2.3"
    assert ruleset.may_allow("udp", src, "alice", False)
    assert not ruleset.may_allow("udp", src, "bob", False)
    assert not ruleset.may_allow("udp", src, "bob", True)      # the stop comes first
    assert ruleset.may_allow("connect", src, "bob", True)
    assert ruleset.may_allow("connect", src, "bob", False)     # eq 53 is some port
    assert not ruleset.may_allow("udp", "192.0.2.9", "alice", False)
    assert ruleset.may_allow("udp", "::ffff:10.0.0.1", "alice", False)
