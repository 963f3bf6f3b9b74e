"""PAM through a real PAM stack, leaving the system unchanged.

Each test builds a throwaway /etc/pam.d (services using Debian's pam_pwdfile with a file of
crypt(3) hashes made by mkpasswd, and pam_exec for a stack that never answers), and runs a small
Python program in a private mount namespace of its own (`unshare --mount`) where that directory
is bind-mounted on /etc/pam.d.  The program drops to nobody, as a worker does, and prints the
verdicts of `sockd.auth.Authenticator.check` as JSON.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK_RULES, ROOT, require
from sockd import passwords

pytestmark = pytest.mark.integration

SERVICE = "sockd-test"
HANG_SECONDS = "31.25"          # a sleep no other test runs: how the hanging stack is found


def crypt_hash(password: str) -> str:
    done = subprocess.run([require("mkpasswd"), "-m", "sha-512", "-s"], input=password + "\n",
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


@pytest.fixture
def pam_dir(tmp_path):
    """The directory to mount on /etc/pam.d: the sockd-test and sockd-hang services."""
    assert os.geteuid() == 0, "the PAM tests mount a private /etc/pam.d: run them as root"
    require("unshare")
    require("mount")
    assert Path("/lib/x86_64-linux-gnu/security/pam_pwdfile.so").exists() or \
        list(Path("/lib").glob("*/security/pam_pwdfile.so")), \
        "pam_pwdfile is not installed: run `make test` (scripts/install-deps test)"
    directory = tmp_path / "pam.d"
    directory.mkdir()
    directory.chmod(0o755)                      # read by nobody through the mount
    pwdfile = directory / f"{SERVICE}.pwd"
    pwdfile.write_text(f"alice:{crypt_hash('pam-right')}\n"
                       f"listed:{crypt_hash('pam-password')}\n")
    pwdfile.chmod(0o644)
    (directory / SERVICE).write_text(
        f"auth required pam_pwdfile.so pwdfile=/etc/pam.d/{SERVICE}.pwd nodelay\n"
        "account required pam_permit.so\n")
    (directory / "sockd-hang").write_text(
        f"auth required pam_exec.so /bin/sleep {HANG_SECONDS}\n"
        "account required pam_permit.so\n")
    yield directory
    assert not Path(f"/etc/pam.d/{SERVICE}").exists()          # the system is unchanged


def in_namespace(pam_dir: Path, argv: list[str], timeout: float = 60):
    """Run *argv* where *pam_dir* is /etc/pam.d (a private mount namespace)."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /etc/pam.d && exec "$@"', str(pam_dir), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))


CHECKER = textwrap.dedent("""\
    import json, os, sys, time
    from sockd import auth, passwords
    table = passwords.load(sys.argv[1]) if sys.argv[1] != "-" else None   # as root, as the master
    service, timeout = sys.argv[2], float(sys.argv[3])
    os.setgroups([]); os.setgid(65534); os.setuid(65534)                   # as a worker
    checker = auth.Authenticator(table, service, timeout)
    out = []
    for user, password in json.loads(sys.argv[4]):
        started = time.monotonic()
        result = checker.check(user.encode("latin-1"), password.encode("latin-1"))
        out.append([result.ok, result.reason, time.monotonic() - started])
    print(json.dumps(out))
""")


def check(pam_dir: Path, cases: list[tuple[str, str]], service: str = SERVICE,
          table: Path | None = None, timeout: float = 10) -> list[list]:
    done = in_namespace(pam_dir, [sys.executable, "-c", CHECKER, str(table or "-"), service,
                                  str(timeout), json.dumps(cases)])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_pam_alone_right_wrong_and_unknown(pam_dir):
    results = check(pam_dir, [("alice", "pam-right"), ("alice", "wrong"), ("carol", "pam-right")])
    assert [r[:2] for r in results] == [
        [True, "PAM sockd-test"],
        [False, "PAM sockd-test: Authentication failure"],
        [False, "PAM sockd-test: User not known to the underlying authentication module"],
    ]


def test_the_file_is_asked_first_and_its_no_is_final(pam_dir, tmp_path):
    table = tmp_path / "sockd.passwd"
    table.write_text(f"listed:{passwords.ScryptHash.make(b'file-password', ln=4)}\n")
    results = check(pam_dir, [("listed", "file-password"),
                              ("listed", "pam-password"),        # right for PAM: never asked
                              ("alice", "pam-right"),            # not in the file: PAM says yes
                              ("alice", "file-password")],
                    table=table)
    assert [r[:2] for r in results] == [
        [True, "password file"],
        [False, "wrong password (password file)"],
        [True, "PAM sockd-test"],
        [False, "PAM sockd-test: Authentication failure"],
    ]


def test_no_reason_holds_a_password(pam_dir):
    cases = [("alice", "pam-right"), ("alice", "secret-guess"), ("bob", "other-guess")]
    for _ok, reason, _ in check(pam_dir, cases):
        assert not any(password in reason for _, password in cases)


def test_a_stack_that_never_answers_is_cut_short_and_leaves_nothing_behind(pam_dir):
    started = time.monotonic()
    [[ok, reason, took]] = check(pam_dir, [("alice", "pam-right")], service="sockd-hang",
                                 timeout=1)
    assert (ok, reason) == (False, "PAM sockd-hang: no answer within 1 s, stopped")
    assert 1 <= took < 5
    assert time.monotonic() - started < 20
    # the module's own child (the sleep, in a session of its own: pam_exec calls setsid) was
    # killed with the helper
    leftovers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                 and _cmdline(p) == ["/bin/sleep", HANG_SECONDS]]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers


def _cmdline(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def test_an_unknown_service_and_nul_bytes_are_denied(pam_dir):
    [[ok, reason, _]] = check(pam_dir, [("alice", "pam-right")], service="no-such-service")
    assert not ok and reason.startswith("PAM no-such-service: ")
    [[ok, reason, _]] = check(pam_dir, [("alice", "pam-right\0")])
    assert (ok, reason) == (False, "PAM sockd-test: NUL byte in user name or password")


def test_sockd_check_names_a_missing_pam_service(pam_dir, tmp_path):
    conf = tmp_path / "sockd.conf"
    conf.write_text(LOOPBACK_RULES)
    sockd = [sys.executable, "-m", "sockd", "-t", "-c", str(conf)]
    done = in_namespace(pam_dir, [*sockd, "--pam", SERVICE])
    assert (done.returncode, done.stdout) == (0, "sockd: configuration OK\n"), done.stderr
    done = in_namespace(pam_dir, [*sockd, "--pam", "sockd-missing"])
    assert done.returncode == 1
    assert done.stderr == ("/etc/pam.d/sockd-missing: no such PAM service (PAM would use the "
                           "'other' stack); see the sample in share/sockd/init/pam.d/sockd\n")
