"""Hostile clients against the running sockd, in every relay mode.

- A live fuzz: random bytes and mutated handshakes (SOCKS 4, 4a and 5; CONNECT, BIND and UDP
  ASSOCIATE; every address type; RFC 1929 logins) thrown at sockd, several at once.  The rules
  allow loopback destinations only, and the test's network namespace has nothing else.
  Afterwards: no traceback or internal error (the sockd fixture), the master and a full pool
  alive, and a good client served.
- Shell-hook injection: hostile SOCKS 4 USERIDs, RFC 1929 user names, ident answers and host
  names (quotes, `;`, `$()`, backticks, newlines, `../`, 255 bytes) reach hooks that write
  one file per value; nothing runs (a canary file stays absent) and nothing is written
  outside the hooks' directory.
"""

import contextlib
import random
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reliability import Load, relay_args, relay_mode, scale

from conftest import LOOPBACK_RULES, wait_until
from identd import FakeIdentd, send
from sockd.passwords import ScryptHash

pytestmark = pytest.mark.integration
__all__ = ["relay_mode"]

FUZZ_CONNECTIONS = scale("fuzz_connections", 600, 20_000)


def p16(n: int) -> bytes:
    return struct.pack(">H", n)


def seeds(echo: int) -> list[bytes]:
    """Good handshakes of every kind, to be mutated."""
    v4, v6 = socket.inet_aton("127.0.0.1"), socket.inet_pton(socket.AF_INET6, "::1")
    login = b"\x01\x05alice\x02pw"
    return [
        b"\x04\x01" + p16(echo) + v4 + b"fred\x00",
        b"\x04\x02" + p16(0) + v4 + b"\x00",
        b"\x04\x01" + p16(echo) + b"\x00\x00\x00\x07u\x00localhost\x00",
        b"\x05\x01\x00\x05\x01\x00\x01" + v4 + p16(echo),
        b"\x05\x01\x00\x05\x01\x00\x04" + v6 + p16(echo),
        b"\x05\x01\x00\x05\x01\x00\x03\x09localhost" + p16(echo),
        b"\x05\x02\x00\x02" + login + b"\x05\x01\x00\x01" + v4 + p16(echo),
        b"\x05\x01\x02" + login + b"\x05\x02\x00\x01" + v4 + p16(0),
        b"\x05\x01\x00\x05\x03\x00\x01" + bytes(6),
        b"\x05\x01\x02\x01\x05alice\x05wrong",
        b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton("10.1.2.3") + p16(80),
        b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com" + p16(80),
        b"PROXY TCP4 10.0.0.1 127.0.0.1 1 1080\r\n\x05\x01\x00",
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 2:
            del out[at:at + rng.randint(1, 8)]
        elif kind == 3:
            out[at:at] = out[at:at + rng.randint(1, 64)]
        elif kind == 4:
            del out[at:]
        else:
            out[at:at] = bytes([rng.choice([0, 1, 2, 3, 4, 5, 255])]) * rng.randint(1, 300)
    return bytes(out)


def throw(port: int, data: bytes, rng: random.Random) -> str:
    """Send *data* (in pieces, sometimes half-closing, sometimes with more bytes after the
    reply) and read what comes for a moment; the outcome for the tally."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(0.5)
            cut = rng.randrange(len(data) + 1) if rng.random() < 0.3 else len(data)
            s.sendall(data[:cut])
            if cut < len(data):
                s.sendall(data[cut:])
            if rng.random() < 0.3:
                s.shutdown(socket.SHUT_WR)
            got = b""
            with contextlib.suppress(TimeoutError):
                while chunk := s.recv(4096):
                    got += chunk
                    if rng.random() < 0.2:
                        s.sendall(rng.randbytes(rng.randint(1, 100)))
                    if len(got) > 1 << 16:
                        break
            return "answered" if got else "closed"
    except ConnectionError:
        return "reset"
    except OSError as exc:
        return f"error {exc.errno}"


def test_random_and_mutated_handshakes_leave_sockd_whole(sockd, echo_server, tmp_path,
                                                       relay_mode):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{ScryptHash.make(b'pw', 1, 1, 1)}\n")
    rules = LOOPBACK_RULES.replace("deny", "permit auth=password 127.0.0.0/8 127.0.0.0/8\ndeny")
    server = sockd(rules=rules, args=[
        "--min-spare", "4", "--max-spare", "8", "--max-workers", "24", "--max-per-source", "0",
        "--negotiate-timeout", "2", "--bind-timeout", "2", "--connect-timeout", "2",
        "--idle-timeout", "5", "--passwd", str(passwd), *relay_args(relay_mode)])
    rng = random.Random(f"live-fuzz-{relay_mode}")
    base = seeds(echo_server)
    inputs = []
    for n in range(FUZZ_CONNECTIONS):
        if n % 10 == 0:
            inputs.append(rng.randbytes(rng.randint(0, 600)))
        elif n % 10 == 1:
            inputs.append(rng.choice(base))
        else:
            inputs.append(mutate(rng, rng.choice(base)))
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        for outcome in pool.map(lambda d: throw(server.port, d, random.Random(d)), inputs):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\nlive fuzz ({relay_mode}): {len(inputs)} connections in "
          f"{time.monotonic() - started:.0f} s: {outcomes}")
    assert server.proc.poll() is None
    wait_until(lambda: server.idle_workers() >= 4, 30, "the pool whole again")
    with Load(server.port, clients=3) as load:
        load.wait_served(30)
    assert load.errors == []
    assert not server.lines(r"internal error|Traceback")


# ---------------------------------------------------------------------------------------------
# Shell hooks

HOSTILE = [
    "$(touch {canary})", "`touch {canary}`", "; touch {canary}", "' ; touch {canary} ; '",
    '" ; touch {canary} ; "', "| touch {canary}", "&& touch {canary}", "../../../escaped",
    "..", "-rf", "*", "x\ntouch {canary}", "${{IFS}}touch${{IFS}}{canary}", "a" * 255,
    "é\\$HOME", "%u%Z%%",
]


def hostile_values(canary) -> list[str]:
    return [h.format(canary=canary) for h in HOSTILE]


@pytest.fixture
def hook_dir(tmp_path):
    top = tmp_path / "top"
    (top / "hooks").mkdir(parents=True)
    return top


def assert_confined(top, canary) -> list:
    """Nothing ran (no canary) and every file is directly in top/hooks."""
    assert not canary.exists(), "a hostile value ran a command"
    created = [p for p in top.rglob("*") if p != top / "hooks"]
    assert all(p.parent == top / "hooks" and p.is_file() for p in created), created
    return created


def hook_rules(top) -> str:
    hooks = top / "hooks"
    return (f"#BAD_ID: touch {hooks}/badid-%u-%U\n"
            f"#NO_IDENTD: touch {hooks}/noidentd-%u\n"
            f"permit ?=i 127.0.0.0/8 127.0.0.0/8 : touch {hooks}/u-%u {hooks}/U-%U "
            f"{hooks}/Z-%Z {hooks}/z-%z\n"
            f"deny 0.0.0.0/0 : touch {hooks}/deny-%u-%Z-%z\n")


def socks4(port: int, dport: int, userid: bytes, host: bytes | None = None) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        address = socket.inet_aton("127.0.0.1") if host is None else b"\0\0\0\1"
        s.sendall(b"\x04\x01" + p16(dport) + address + userid + b"\0"
                  + (b"" if host is None else host + b"\0"))
        reply = s.recv(8)
        return reply[1] if len(reply) == 8 else -1


def socks5(port: int, dport: int, host: bytes, login: tuple[bytes, bytes] | None = None,
           ) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if login:
            s.sendall(b"\x05\x01\x02")
            if s.recv(2) != b"\x05\x02":
                return -1
            user, password = login
            s.sendall(bytes((1, len(user))) + user + bytes((len(password),)) + password)
            if s.recv(2) != b"\x01\x00":
                return -2
        else:
            s.sendall(b"\x05\x01\x00")
            if s.recv(2) != b"\x05\x00":
                return -1
        s.sendall(b"\x05\x01\x00\x03" + bytes((len(host),)) + host + p16(dport))
        reply = s.recv(4)
        return reply[1] if len(reply) == 4 else -3


def hooks_done(server, count: int) -> None:
    # An idle worker reaps its hooks when it next wakes: clients wake them.
    def done():
        with contextlib.suppress(OSError):
            socks5(server.port, 9, b"localhost")
        return len(server.lines(r"hook done -- |hook failed -- ")) >= count
    wait_until(done, 30, f"{count} hooks done")


def test_hostile_userids_and_host_names_run_nothing(sockd, echo_server, hook_dir, tmp_path,
                                                   relay_mode):
    canary = tmp_path / "pwned"
    server = sockd(rules=hook_rules(hook_dir), args=relay_args(relay_mode))
    sent = 0
    with FakeIdentd(send(b"USERID : UNIX : honest"), port=113):
        for value in hostile_values(canary):
            raw = value.encode()[:255]
            socks4(server.port, echo_server, raw.replace(b"\0", b""))            # USERID
            socks4(server.port, echo_server, b"u", raw.replace(b"\0", b""))      # 4a name
            socks5(server.port, echo_server, raw)                                 # 5 name
            sent += 3
        hooks_done(server, 1)

        def permitted_hook_ran() -> bool:
            # A permitted request's hook is skipped while 4 hooks run (with both CPUs busy,
            # the #BAD_ID ones can take that long): ask again until one has run.
            with contextlib.suppress(OSError):
                socks5(server.port, 9, b"localhost")
            return any(p.name.startswith("u-") for p in (hook_dir / "hooks").glob("*"))
        wait_until(permitted_hook_ran, 30, "the hook of a permitted request")
    time.sleep(0.5)
    assert_confined(hook_dir, canary)
    wait_until(lambda: len(server.lines(r"hook started -- ")) >= len(HOSTILE), 10,
               "a hook started for every hostile value")


def test_hostile_ident_answers_run_nothing(sockd, echo_server, hook_dir, tmp_path, relay_mode):
    canary = tmp_path / "pwned"
    server = sockd(rules=hook_rules(hook_dir), args=relay_args(relay_mode))
    for value in hostile_values(canary):
        answer = value.replace("\n", "\\n").encode()[:200]
        with FakeIdentd(send(b"USERID : UNIX : " + answer), port=113):
            socks4(server.port, echo_server, b"alice")                 # #BAD_ID with %U
            socks4(server.port, echo_server, answer.replace(b"\0", b""))  # %u and %U agree
    hooks_done(server, len(HOSTILE))
    created = assert_confined(hook_dir, canary)
    assert any(p.name.startswith("badid-alice-") for p in created)


def test_hostile_rfc1929_user_names_run_nothing(sockd, echo_server, hook_dir, tmp_path,
                                               relay_mode):
    """Names the password file can hold (no ':' or control byte), hostile all the same."""
    canary = tmp_path / "pwned"
    names = [v for v in hostile_values(canary) if ":" not in v and "\n" not in v
             and not v.startswith("#")]
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(f"{n}:{ScryptHash.make(b'pw', 1, 1, 1)}\n" for n in names))
    server = sockd(rules=hook_rules(hook_dir).replace("permit ?=i", "permit ?=n auth=password"),
                   args=["--passwd", str(passwd), *relay_args(relay_mode)])
    with FakeIdentd(send(b"USERID : UNIX : honest"), port=113):
        for name in names:
            assert socks5(server.port, echo_server, b"127.0.0.1", (name.encode(), b"pw")) == 0
        # a failed login runs nothing either (one: failures from an address wait longer)
        assert socks5(server.port, echo_server, b"127.0.0.1", (names[0].encode(), b"no")) == -2
        hooks_done(server, len(names))
    created = assert_confined(hook_dir, canary)
    assert len([p for p in created if p.name.startswith("u-")]) >= len(names) - 3
