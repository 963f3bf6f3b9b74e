"""`make install.server DESTDIR=...`: a staged tree that works once it is at `/`.

The tree is staged for PREFIX=/opt/sockd (not the default: every start-up file must follow
PREFIX), then bind-mounted at /opt/sockd in a private mount namespace, where the installed
program checks its files and serves a curl through loopback, and systemd-analyze verifies
the installed unit.  The host's /opt is never touched.  Installing needs no network: the
dependencies come from build/wheels (`make wheels`, which `make test` runs first).
"""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import LOOPBACK_RULES, ROOT, free_port, require, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PREFIX = "/opt/sockd"
WHEELS = ROOT / "build" / "wheels"


def make(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """make in the project, offline (the wheels), its output kept for the failure message."""
    assert any(WHEELS.glob("python_daemon-*.whl")), \
        "no wheels in build/wheels: run `make wheels` (make test does) where there is a network"
    done = subprocess.run([require("make"), "-s", "-C", str(ROOT), *args,
                           f"PIP_OPTS=--no-index --find-links {WHEELS}"],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    stage = tmp_path_factory.mktemp("stage")
    make("install.server", f"DESTDIR={stage}", f"PREFIX={PREFIX}")
    return stage


def in_namespace(stage: Path, argv: list[str], **kwargs) -> subprocess.Popen:
    """Run *argv* in a private mount namespace where the staged PREFIX is at PREFIX (over a
    tmpfs at /opt, which hides the host's /opt from it only)."""
    script = ('mount -t tmpfs sockd-test /opt && mkdir -p "$1" && '
              'mount --bind "$2$1" "$1" && shift 2 && exec "$@"')
    return subprocess.Popen([require("unshare"), "--mount", "--propagation", "private",
                             "sh", "-c", script, "sh", PREFIX, str(stage), *argv], **kwargs)


def run_in_namespace(stage: Path, argv: list[str], env=None) -> subprocess.CompletedProcess:
    proc = in_namespace(stage, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=env)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_the_staged_tree_never_names_the_staging_directory(staged):
    named = subprocess.run(["grep", "-rlF", str(staged), str(staged)], capture_output=True,
                           text=True, timeout=120).stdout
    assert named == ""
    script = (staged / PREFIX.lstrip("/") / "lib/sockd/bin/sockd").read_text()
    assert script.startswith(f"#!{PREFIX}/lib/sockd/bin/python\n")
    assert os.readlink(staged / PREFIX.lstrip("/") / "bin/sockd") == f"{PREFIX}/lib/sockd/bin/sockd"


def test_start_up_files_are_made_for_the_prefix(staged):
    init = staged / PREFIX.lstrip("/") / "share/sockd/init"
    for name in ("sockd.service", "sockd.rc", "rc.local", "inetd.conf", "default"):
        text = (init / name).read_text()
        assert not re.search(r"@[A-Z_]+@", text), f"{name}: a placeholder is left"
        assert "/usr/local" not in text, name
    assert f"SOCKD={PREFIX}/bin/sockd" in (init / "sockd.rc").read_text()
    assert f"ExecStart={PREFIX}/bin/sockd " in (init / "sockd.service").read_text()
    assert f"nobody  {PREFIX}/bin/sockd  sockd" in (init / "inetd.conf").read_text()
    assert os.access(init / "sockd.rc", os.X_OK)
    assert (init / "sockd.conf").exists() and (init / "pam.d/sockd").exists()
    pages = {p.name for p in (staged / PREFIX.lstrip("/") / "share/man").rglob("*.[1-8]")}
    assert pages == {p.name for p in (ROOT / "man").glob("*.[1-8]")}


def test_the_installed_sockd_checks_and_serves(staged, tmp_path, http_server):
    conf = tmp_path / "sockd.conf"
    conf.write_text(LOOPBACK_RULES)
    sockd = f"{PREFIX}/bin/sockd"
    checked = run_in_namespace(staged, [sockd, "-t", "-c", str(conf)])
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "sockd: configuration OK\n"
    sample = run_in_namespace(staged, [sockd, "-t", "-c", f"{PREFIX}/share/sockd/init/sockd.conf"])
    assert sample.returncode == 0, sample.stderr
    port, log = free_port(), tmp_path / "sockd.log"
    server = in_namespace(staged, [sockd, "-f", "--log", str(log), "-l", f"127.0.0.1:{port}",
                                   "-c", str(conf), "--min-spare", "1", "--max-spare", "2"],
                          start_new_session=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "started -- sockd" in (log.read_text() if log.exists() else ""), 30,
                   "the installed sockd to start")
        assert Path(f"/proc/{server.pid}/comm").read_text().strip() == "sockd"
        got = subprocess.run([require("curl"), "-sS", "--max-time", "20", "--socks5",
                              f"127.0.0.1:{port}", f"http://127.0.0.1:{http_server}/hello.txt"],
                             capture_output=True, text=True, timeout=30)
        assert got.returncode == 0, got.stderr
        assert got.stdout == "hello through socks\n"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert "terminated -- Connect" in log.read_text()


def test_systemd_analyze_verifies_the_installed_units(staged):
    analyze = require("systemd-analyze")
    init = f"{PREFIX}/share/sockd/init"
    env = dict(os.environ, MANPATH=f"{PREFIX}/share/man:")   # Documentation=man:... is checked
    done = run_in_namespace(staged, [analyze, "verify", f"{init}/sockd.service",
                                     f"{init}/sockd.socket"], env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_uninstall_removes_what_install_put_there(staged, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(staged, copy, symlinks=True)
    make("uninstall", f"DESTDIR={copy}", f"PREFIX={PREFIX}")
    left = [str(p.relative_to(copy)) for p in copy.rglob("*") if not p.is_dir()]
    assert left == []
