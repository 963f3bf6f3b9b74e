"""Every manual page of the distribution: its sections, its .TH line, lint-clean in mandoc
and groff, SEE ALSO naming only pages that exist, and every flag of its program's --help.

The pages are those under man/ (server and clients alike); a program is each console
script of setup.py, whose page has its name.
"""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sockd import __version__

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.name for p in (ROOT / "man").glob("*.[1-8]"))
STANDARD = {   # pages of Debian's standard system that SEE ALSO may name
    "passwd(1)", "ps(1)", "curl(1)", "ssh(1)", "nc(1)", "systemctl(1)", "syslog(3)",
    "crypt(3)", "getaddrinfo(3)", "mmap(2)", "services(5)", "networks(5)", "hosts(5)",
    "pam.d(5)", "inetd.conf(5)", "systemd.socket(5)", "systemd.service(5)", "pam(8)",
    "inetd(8)", "syslogd(8)", "rsyslogd(8)", "logrotate(8)", "identd(8)", "oidentd(8)",
    "proxychains(1)", "resolv.conf(5)", "environ(7)",
    # the programs the SOCKS clients stand in for (finger, whois, inetutils-telnet,
    # inetutils-telnetd, tnftp or inetutils-ftp: netrc.5 comes with the latter), and Python
    "finger(1)", "whois(1)", "telnet(1)", "telnetd(8)", "ftp(1)", "netrc(5)", "python3(1)",
}
# Pages of this distribution written on other branches, named here until they land.
PENDING: set[str] = set()


def page_text(page: str) -> str:
    return (ROOT / "man" / page).read_text(encoding="ascii")


def sections(page: str) -> list[str]:
    return [line[3:].strip().strip('"') for line in page_text(page).splitlines()
            if line.startswith(".SH ")]


def programs() -> dict[str, str]:
    """name -> "module:function" of every console script in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"[\w-]+ = [\w.]+:\w+", node.value):
            name, target = node.value.split(" = ")
            found[name] = target
    return found


def plain(text: str) -> str:
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", text)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


@pytest.mark.parametrize("page", PAGES)
def test_page_has_the_sections_of_its_kind(page):
    have = sections(page)
    want = ["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "EXAMPLES", "SEE ALSO"]
    name, section = page.rsplit(".", 1)
    if section in "18":
        want += ["EXIT STATUS"]
        if re.search(r"^\.(B|BR|BI) \\-", page_text(page), re.M):
            want += ["OPTIONS"]
    if name == "sockd":
        want += ["SIGNALS"]
    missing = [s for s in want if s not in have]
    assert not missing, f"{page} has no {missing}"
    assert have[:3] == ["NAME", "SYNOPSIS", "DESCRIPTION"]


@pytest.mark.parametrize("page", PAGES)
def test_th_has_a_date_and_the_version(page):
    th = next(line for line in page_text(page).splitlines() if line.startswith(".TH "))
    name, section = page.rsplit(".", 1)
    match = re.fullmatch(r'\.TH (\S+) (\d) (\d{4}-\d{2}-\d{2}) "sockd ([^"]+)" "[^"]+"', th)
    assert match, th
    assert match[1] == name.upper() and match[2] == section
    assert match[4] == __version__


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_is_clean(page):
    mandoc = shutil.which("mandoc")
    assert mandoc, "mandoc is needed: run `make test` (scripts/install-deps test)"
    # -W warning: warnings and errors; mandoc's STYLE notes (a log line format longer
    # than 80 bytes, which must stay one line to be matched) are advice.
    done = subprocess.run([mandoc, "-Tlint", "-W", "warning", str(ROOT / "man" / page)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@pytest.mark.parametrize("page", PAGES)
def test_groff_is_clean(page):
    groff = shutil.which("groff")
    assert groff, "groff is needed to check the pages"
    done = subprocess.run([groff, "-man", "-ww", "-z", str(ROOT / "man" / page)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("page", PAGES)
def test_see_also_names_only_known_pages(page):
    text = page_text(page).split("\n.SH SEE ALSO\n", 1)[1].split("\n.SH ", 1)[0]
    named = {f"{n}({s})" for n, s in re.findall(r"^\.BR? (\S+) \((\d)\)", text, re.M)}
    ours = {f"{p.rsplit('.', 1)[0]}({p.rsplit('.', 1)[1]})" for p in PAGES}
    assert named, f"{page}: SEE ALSO names no page"
    unknown = named - ours - STANDARD - PENDING
    assert not unknown, f"{page}: SEE ALSO names {unknown}"


@pytest.mark.parametrize("program", sorted(programs()))
def test_every_flag_of_help_is_in_the_page(program):
    target = programs()[program]
    pages = [p for p in PAGES if p.rsplit(".", 1)[0] == program]
    assert pages, f"{program} has no page in man/"
    module, function = target.split(":")
    code = (f"import sys; sys.argv = [{program!r}, '--help']; "
            f"from {module} import {function}; sys.exit({function}())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    shown = done.stdout + done.stderr   # test_sockd_conf answers with its usage, exit 2
    assert done.returncode in (0, 2) and "usage" in shown.lower(), shown
    flags = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", shown))
    # A usage that shows an option must yield flags here; one without any (socksify's:
    # everything after it is the program's command line) has none to look for.
    assert flags or "[-" not in shown, f"{program} --help shows no flag"
    text = plain(page_text(pages[0]))
    missing = sorted(f for f in flags
                     if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text))
    assert not missing, f"{pages[0]} does not name {missing} from {program} --help"
