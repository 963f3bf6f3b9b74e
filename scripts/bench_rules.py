"""Rule-engine benchmark: load a 10,000-line sockd.conf and time single decisions.

Part of `make bench`.  Pure: no sockets; names in the generated file are
resolved by a stand-in resolver, so nothing is looked up in DNS.
"""

import argparse
import ipaddress
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sockd import rules  # noqa: E402

OPERATORS = ("eq", "neq", "lt", "le", "gt", "ge")


def generate(count: int, seed: int = 7) -> str:
    """A file of *count* varied lines: classic pairs, CIDR, IPv6, users, names, ports."""
    rng = random.Random(seed)
    lines = ["#NO_IDENTD: logger -t sockd no identd for %u at %a",
             "#BAD_ID: logger -t sockd bad ident %U for %u at %a"]
    for n in range(count - 1):
        a, b, c = rng.randrange(11, 126), rng.randrange(256), rng.randrange(256)
        shape = n % 6
        if shape == 0:
            lines.append(f"deny {a}.{b}.{c}.{rng.randrange(1, 255)} 255.255.255.255 "
                         f": logger refused %u@%a")
        elif shape == 1:
            lines.append(f"permit ?=i *=u{n},u{n + 1} {a}.{b}.0.0 255.255.0.0 "
                         f"{b}.{c}.0.0 255.255.255.0 {rng.choice(OPERATORS)} "
                         f"{rng.randrange(1, 65536)}")
        elif shape == 2:
            lines.append(f"allow cmd=connect {a}.{b}.{c}.0/24 .zone{n}.example.com eq 443")
        elif shape == 3:
            lines.append(f"allow auth=password 2001:db8:{n:x}::/48 2001:db8:ffff:{n:x}::/64")
        elif shape == 4:
            lines.append(f"deny {a}.0.0.0 255.0.0.0 www.host{n}.example.net "
                         f"eq {rng.randrange(1, 1024)}")
        else:
            lines.append(f"permit {a}.{b}.{c}.0 255.255.255.0 0.0.0.0 0.0.0.0 ge 1024")
    lines.append("permit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0")
    return "\n".join(lines) + "\n"


def fixed_resolver(name: str):
    return ipaddress.ip_address("127.0.0.2")


def time_decision(ruleset, query, repeat: int) -> tuple[float, str]:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            decision = ruleset.evaluate(query, fixed_resolver)
        samples.append((time.perf_counter() - start) / repeat)
    return statistics.median(samples), decision.where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sockd.conf"
        path.write_text(generate(args.lines))
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            ruleset = rules.load(str(path), resolver=fixed_resolver)
            loads.append(time.perf_counter() - start)
    ip = ipaddress.ip_address
    queries = {
        "last line matches (loopback)": rules.Query("connect", ip("127.0.0.1"), "alice", False,
                                                    ip("127.0.0.1"), 80),
        "no line matches": rules.Query("connect", ip("200.1.2.3"), "alice", False,
                                       ip("200.9.9.9"), 80),
        "request by name, no match": rules.Query("connect", ip("200.1.2.3"), "alice", False,
                                                 "www.nomatch.example.org", 80),
        "IPv6 with auth, no match": rules.Query("connect", ip("2001:db8:1::5"), "bob", True,
                                      ip("2001:db8:ffff:1::1"), 21),
    }
    print(f"rules: {len(ruleset)} lines loaded in {statistics.median(loads) * 1000:.0f} ms "
          f"(median of 3)")
    print(f"{'decision':32} {'time':>10}  verdict")
    for label, query in queries.items():
        seconds, where = time_decision(ruleset, query, args.repeat)
        print(f"{label:32} {seconds * 1e6:8.1f} us  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
