"""sockpasswd driven as a program: add, passwd, del, list, convert; passwords from a pipe and
from a terminal (no echo); exit statuses; the file rewritten atomically, mode 0600, every other
line kept; and sockd -t reading what it wrote."""

import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import LOOPBACK_RULES, ROOT
from sockd import passwords

pytestmark = pytest.mark.integration

SOCKPASSWD = [sys.executable, "-m", "sockd.sockpasswd"]


def sockpasswd(*args, stdin: bytes = b"", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKPASSWD, *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=60, **kw)


def twice(password: bytes) -> bytes:
    return password + b"\n" + password + b"\n"


def only_file(path) -> None:
    """The directory holds the password file and nothing else: no temporary file is left."""
    assert sorted(os.listdir(path.parent)) == [path.name]


@pytest.fixture
def pwfile(tmp_path):
    directory = tmp_path / "etc"
    directory.mkdir()
    return directory / "sockd.passwd"


def test_add_list_passwd_del(pwfile):
    done = sockpasswd("--file", pwfile, "add", "alice", stdin=twice(b"first"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"sockpasswd: {pwfile}: user 'alice' added\n"
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    assert passwords.load(str(pwfile)).verify(b"alice", b"first") is True
    assert sockpasswd("--file", pwfile, "add", "bob", stdin=twice(b"b")).returncode == 0
    assert sockpasswd("--file", pwfile, "list").stdout == b"alice\nbob\n"

    done = sockpasswd("--file", pwfile, "passwd", "alice", stdin=twice(b"second"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"sockpasswd: {pwfile}: password of user 'alice' changed\n"
    table = passwords.load(str(pwfile))
    assert table.verify(b"alice", b"second") is True
    assert table.verify(b"alice", b"first") is False
    assert table.verify(b"bob", b"b") is True

    done = sockpasswd("--file", pwfile, "del", "alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"sockpasswd: {pwfile}: user 'alice' deleted\n"
    assert sockpasswd("--file", pwfile, "list").stdout == b"bob\n"
    only_file(pwfile)


def test_other_lines_and_comments_are_kept_byte_for_byte(pwfile):
    keep = ("# sockd users\n\n   # indented, with odd bytes: \xff\xfe\n"
            f"carol:{passwords.ScryptHash.make(b'c', ln=4)}\r\n").encode("latin-1")
    pwfile.write_bytes(keep)
    assert sockpasswd("--file", pwfile, "add", "dave", stdin=twice(b"d")).returncode == 0
    data = pwfile.read_bytes()
    assert data.startswith(keep)
    assert data[len(keep):].startswith(b"dave:$scrypt$ln=14,r=8,p=1$")
    assert sockpasswd("--file", pwfile, "del", "dave").returncode == 0
    assert pwfile.read_bytes() == keep
    # a file whose last line has no newline gets one before the next line
    pwfile.write_bytes(keep.rstrip(b"\n"))
    assert sockpasswd("--file", pwfile, "add", "dave", stdin=twice(b"d")).returncode == 0
    assert pwfile.read_bytes().startswith(keep)


def test_a_non_ascii_name_and_password_are_stored_as_utf_8(pwfile):
    done = sockpasswd("--file", pwfile, "add", "jürgen", stdin=twice("grüße".encode()))
    assert done.returncode == 0, done.stderr
    assert pwfile.read_bytes().startswith("jürgen:$scrypt$".encode())
    table = passwords.load(str(pwfile))
    assert table.verify("jürgen".encode(), "grüße".encode()) is True
    assert sockpasswd("--file", pwfile, "list").stdout == "jürgen\n".encode()


@pytest.mark.parametrize("args, stdin, reason", [
    (["add", "alice"], b"one\ntwo\n", "sockpasswd: the two passwords do not match"),
    (["add", "alice"], b"only one\n", "sockpasswd: expected the new password twice on "
                                      "standard input, one a line"),
    (["add", "alice"], b"", "sockpasswd: expected the new password twice on standard input, "
                            "one a line"),
    (["add", "alice"], b"\n\n", "sockpasswd: empty password"),
    (["add", "alice"], twice(b"x" * 256), "sockpasswd: password longer than 255 bytes "
                                          "(the RFC 1929 limit)"),
    (["add", "alice"], twice(b"x" * 2000), "sockpasswd: password longer than 255 bytes "
                                           "(the RFC 1929 limit)"),
    (["add", "a:b"], twice(b"x"), "sockpasswd: ':' in user name: a:b"),
    (["add", "a\x1bb"], twice(b"x"), "sockpasswd: control character in user name: a\\x1bb"),
    (["add", ""], twice(b"x"), "sockpasswd: empty user name: "),
    (["add", "#x"], twice(b"x"), "sockpasswd: user name starts with '#': #x"),
    (["passwd", "nobody"], twice(b"x"), "sockpasswd: {file}: no user 'nobody'"),
    (["del", "nobody"], b"", "sockpasswd: {file}: no user 'nobody'"),
])
def test_refusals_exit_1_with_one_line_and_leave_the_file_alone(pwfile, args, stdin, reason):
    sockpasswd("--file", pwfile, "add", "bob", stdin=twice(b"b"))
    before = pwfile.read_bytes()
    done = sockpasswd("--file", pwfile, *args, stdin=stdin)
    assert done.returncode == 1
    assert done.stderr.decode() == reason.format(file=pwfile) + "\n"
    assert done.stdout == b""
    assert pwfile.read_bytes() == before
    only_file(pwfile)


def test_add_refuses_an_existing_user(pwfile):
    sockpasswd("--file", pwfile, "add", "bob", stdin=twice(b"b"))
    done = sockpasswd("--file", pwfile, "add", "bob", stdin=twice(b"c"))
    assert done.returncode == 1
    assert done.stderr.decode() == \
        f"sockpasswd: {pwfile}: user 'bob' already exists (use passwd to change it)\n"
    assert passwords.load(str(pwfile)).verify("bob", "b") is True


def test_an_unreadable_file(tmp_path):
    missing = tmp_path / "missing"
    done = sockpasswd("--file", missing, "list")
    assert done.returncode == 1
    assert done.stderr.decode() == \
        f"sockpasswd: {missing}: cannot read: No such file or directory\n"
    done = sockpasswd("--file", tmp_path, "del", "x")
    assert done.returncode == 1
    assert done.stderr.decode() == f"sockpasswd: {tmp_path}: not a regular file (a directory)\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = sockpasswd("--file", fifo, "list")
    assert done.returncode == 1 and b"not a regular file (a FIFO)" in done.stderr


@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["add"], ["passwd"], ["del"], ["list", "alice"], ["convert", "x"],
    ["add", "a", "b"], ["--file"],
])
def test_usage_errors_exit_2(pwfile, args):
    done = sockpasswd("--file", pwfile, *args)
    assert done.returncode == 2
    assert b"usage: sockpasswd" in done.stderr
    assert not pwfile.exists()


def test_the_password_never_appears_in_the_command_line_or_the_output(pwfile):
    proc = subprocess.Popen([*SOCKPASSWD, "--file", str(pwfile), "add", "alice"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read()
        out, err = proc.communicate(twice(b"hunter2-secret"), timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
    assert b"hunter2" not in cmdline + out + err + pwfile.read_bytes()


def test_a_symbolic_link_stays_a_link(pwfile):
    real = pwfile.parent / "real.passwd"
    real.write_text("")
    pwfile.symlink_to(real)
    assert sockpasswd("--file", pwfile, "add", "alice", stdin=twice(b"a")).returncode == 0
    assert pwfile.is_symlink()
    assert passwords.load(str(real)).verify("alice", "a") is True


# -- convert --------------------------------------------------------------------------------------


def test_convert_hashes_plain_text_in_place_and_sockd_then_accepts_the_file(pwfile):
    hashed = str(passwords.ScryptHash.make(b"h", ln=4))
    pwfile.write_bytes(b"# old file\nalice:secret\nbob:pa:ss w\xc3\xb6rd\n"
                       + f"carol:{hashed}\n".encode())
    conf = pwfile.parent.parent / "sockd.conf"
    conf.write_text(LOOPBACK_RULES)
    sockd_check = [sys.executable, "-m", "sockd", "-t", "-c", str(conf), "--passwd", str(pwfile)]
    check = subprocess.run(sockd_check, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert f"{pwfile}:2: user 'alice': not a scrypt hash (a plain-text password?): convert " \
        f"the file with 'sockpasswd --file {pwfile} convert'" in check.stderr

    done = sockpasswd("--file", pwfile, "convert")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"sockpasswd: {pwfile}: 2 plain-text passwords converted\n"
    lines = pwfile.read_bytes().split(b"\n")
    assert lines[0] == b"# old file" and lines[3] == f"carol:{hashed}".encode()
    assert b"secret" not in pwfile.read_bytes()
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    table = passwords.load(str(pwfile))
    assert table.verify(b"alice", b"secret") is True
    assert table.verify(b"bob", "pa:ss wörd".encode()) is True
    assert table.verify(b"carol", b"h") is True
    only_file(pwfile)
    check = subprocess.run(sockd_check, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stdout) == (0, "sockd: configuration OK\n"), check.stderr

    done = sockpasswd("--file", pwfile, "convert")
    assert done.returncode == 0
    assert done.stdout.decode() == f"sockpasswd: {pwfile}: 0 plain-text passwords converted\n"


def test_convert_refuses_a_file_it_cannot_make_good(pwfile):
    before = b"alice:secret\njust a line\n"
    pwfile.write_bytes(before)
    done = sockpasswd("--file", pwfile, "convert")
    assert done.returncode == 1
    assert done.stderr.decode() == (f"sockpasswd: {pwfile}:2: expected user:$scrypt$... "
                                    "(see sockpasswd(8)) (nothing converted)\n")
    assert pwfile.read_bytes() == before
    only_file(pwfile)


# -- from a terminal ------------------------------------------------------------------------------


def run_on_a_terminal(argv: list[str], typed: list[bytes],
                      timeout: float = 60) -> tuple[int, bytes]:
    """Run *argv* with a pseudo-terminal as its controlling terminal, type one of *typed* at
    each "...password: " prompt; (exit status, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:                                                    # the child
        try:
            os.chdir(ROOT)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    shown, deadline, to_type = b"", time.monotonic() + timeout, list(typed)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:                                     # EIO: the child is gone
                    break
                if not chunk:
                    break
                shown += chunk
                # one answer for each prompt shown so far
                while to_type and len(typed) - len(to_type) < shown.count(b"password: "):
                    os.write(fd, to_type.pop(0) + b"\n")
        else:
            raise AssertionError(f"timed out; the terminal showed {shown!r}")
    finally:
        os.close(fd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown


def test_on_a_terminal_the_password_is_asked_twice_without_echo(pwfile):
    code, shown = run_on_a_terminal([*SOCKPASSWD, "--file", str(pwfile), "add", "alice"],
                                    [b"typed-secret", b"typed-secret"])
    assert code == 0, shown
    assert b"New password: " in shown and b"Retype new password: " in shown
    assert b"typed-secret" not in shown
    assert passwords.load(str(pwfile)).verify(b"alice", b"typed-secret") is True

    code, shown = run_on_a_terminal([*SOCKPASSWD, "--file", str(pwfile), "passwd", "alice"],
                                    [b"one", b"two"])
    assert code == 1
    assert shown.endswith(b"sockpasswd: the two passwords do not match\r\n")
    assert passwords.load(str(pwfile)).verify(b"alice", b"typed-secret") is True


def test_the_console_script_answers(pwfile):
    script = os.path.join(os.path.dirname(sys.executable), "sockpasswd")
    assert os.path.exists(script), "no sockpasswd console script: run `make venv` (setup.py)"
    done = subprocess.run([script, "--file", str(pwfile), "add", "alice"], input=twice(b"a"),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([script], capture_output=True, timeout=60).returncode == 2
