"""The manual pages and start-up files hold to the code.

sockd(8) must name every command-line option with its default, every log line
the code can write, every process title, signal and exit status; every page
under man/ must render without a warning; the shell scripts must parse; the
systemd units, the inetd line and the rc scripts must start the program where
`make install.server` puts it, with options sockd accepts.
"""

import argparse
import ast
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sockd import cli, master, rules
from sockd.log import escape
from sockd.rules import SourceVerdict
from sockd.settings import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
INIT = ROOT / "init"
SOCKD_8 = MAN / "sockd.8"
LOG_LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


# -- reading troff ------------------------------------------------------------------


def plain(line: str) -> str:
    """A troff source line as its text reads: no font changes, plain hyphens."""
    line = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", line)
    for escape_, text in (("\\-", "-"), ("\\&", ""), ("\\e", "\\"), ("\\ ", " "),
                          ("\\(aq", "'")):
        line = line.replace(escape_, text)
    return line


def page_lines() -> list[str]:
    return SOCKD_8.read_text(encoding="ascii").splitlines()


def section(name: str) -> list[str]:
    """The source lines of one .SH section of sockd(8)."""
    lines, inside = [], False
    for line in page_lines():
        if line.startswith(".SH"):
            inside = line[3:].strip().strip('"') == name
        elif inside:
            lines.append(line)
    assert lines, f"sockd(8) has no {name} section"
    return lines


def words(lines: list[str]) -> str:
    """Lines of a section as running text: macro names and quotes dropped."""
    text = []
    for line in lines:
        if line.startswith(".\\\""):
            continue
        if line.startswith("."):
            line = line.split(None, 1)[1] if " " in line else ""
        text.append(plain(line).replace('"', ""))
    return re.sub(r"\s+", " ", " ".join(text))


def option_items() -> dict[str, str]:
    """OPTIONS: the tag line of each .TP item, and the running text of its body."""
    items: dict[str, list[str]] = {}
    tag, want_tag = None, False
    for line in section("OPTIONS"):
        if line.startswith(".TP"):
            tag, want_tag = None, True
        elif want_tag:
            tag, want_tag = words([line]), False
            items[tag] = []
        elif line.startswith(".PP"):
            tag = None
        elif tag is not None:
            items[tag].append(line)
    return {tag: words(body) for tag, body in items.items()}


# -- reading the code ---------------------------------------------------------------


def pattern_of(node: ast.expr) -> str | None:
    """A regular expression for the text a %-format or an f-string produces."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        pieces = re.split(r"%(?:[-#0 +]*\d*(?:\.\d+)?[sdgfrx])", node.value)
        return "(.+)".join(re.escape(piece.replace("%%", "%")) for piece in pieces)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else "(.+)"
                       for v in node.values)
    return None


def sockd_modules():
    for path in sorted((ROOT / "sockd").glob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def is_logger(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("log", "logger")) or \
        (isinstance(node, ast.Attribute) and node.attr == "log")


def log_formats() -> list[tuple[str, str]]:
    """(where, pattern) of every log call in sockd/ whose format is a literal."""
    found = []
    for path, tree in sockd_modules():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LOG_LEVELS and is_logger(node.func.value)
                    and node.args):
                pattern = pattern_of(node.args[0])
                if pattern is not None:
                    found.append((f"{path.name}:{node.lineno}", pattern))
    return found


def story_pattern() -> str:
    """The shared part of every session line: what Session.story() returns."""
    for _, tree in sockd_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "story":
                # the f-string story() builds (returned at once or cached first)
                built = [n for n in ast.walk(node) if isinstance(n, ast.JoinedStr)]
                return pattern_of(max(built, key=lambda n: len(n.values)))
    pytest.fail("no story() in sockd/")


def title_formats() -> list[tuple[str, str]]:
    """(where, pattern) of every process title the code sets."""
    found = []
    for path, tree in sockd_modules():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            assigned = {t.id: n.value for n in ast.walk(function) if isinstance(n, ast.Assign)
                        for t in n.targets if isinstance(t, ast.Name)}
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "set_title" and node.args):
                    arg = node.args[0]
                    if isinstance(arg, ast.Name):
                        arg = assigned.get(arg.id, arg)
                    pattern = pattern_of(arg)
                    if pattern is not None:
                        found.append((f"{path.name}:{node.lineno}", pattern))
    return found


def installed_sockd() -> str:
    """Where `make install.server` puts sockd by default: a link in $(SBINDIR), which is
    $(BINDIR), $(PREFIX)/bin."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    prefix = re.search(r"^PREFIX\s*\?=\s*(\S+)", makefile, re.M).group(1)
    assert re.search(r"^BINDIR\s*\?=\s*\$\(PREFIX\)/bin$", makefile, re.M), \
        "BINDIR is no longer $(PREFIX)/bin"
    assert re.search(r"^SBINDIR\s*\?=\s*\$\(BINDIR\)(#|$)", makefile, re.M), \
        "SBINDIR is no longer $(BINDIR)"
    recipe = makefile.split("\ninstall.server:", 1)[1].split("\n\n", 1)[0]
    assert "$(DESTDIR)$(SBINDIR)/sockd" in recipe, "install.server no longer links $(SBINDIR)/sockd"
    return f"{prefix}/bin/sockd"


@pytest.fixture(scope="module")
def init_files(tmp_path_factory) -> Path:
    """The start-up files as `make install.server` generates them for the default PREFIX
    (`make initfiles`), with the files that are installed as they are."""
    out = tmp_path_factory.mktemp("init")
    make = shutil.which("make")
    assert make, "make is needed to generate the start-up files"
    done = subprocess.run([make, "-s", "-C", str(ROOT), "initfiles", f"INITOUT={out}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("sockd.socket", "services", "sockd.conf"):
        shutil.copy(INIT / name, out / name)
    return out


# -- sockd(8) and the command line ----------------------------------------------------


def test_every_option_of_the_parser_is_in_sockd_8():
    text = plain(SOCKD_8.read_text(encoding="ascii"))
    synopsis = words(section("SYNOPSIS"))
    def names(option: str, where: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", where) is not None

    actions = [action.option_strings for action in cli.build_parser()._actions]
    assert ["--grace"] in actions
    for strings in actions + [["-ver"]]:
        for option in strings:
            assert names(option, text), f"{option} is not in sockd(8)"
        assert any(names(option, synopsis) for option in strings), \
            f"{strings} is not in the SYNOPSIS of sockd(8)"


def test_every_option_has_an_item_naming_its_default():
    items = option_items()
    for action in cli.build_parser()._actions:
        names = set(action.option_strings)
        matching = [body for tag, body in items.items() if names & set(re.split(r"[ ,]+", tag))]
        assert matching, f"no OPTIONS item for {action.option_strings}"
        takes_value = not isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction,
                                              argparse._HelpAction))
        if not takes_value or action.default in (None, []):
            continue
        default = f"{action.default:g}" if isinstance(action.default, int | float) \
            else str(action.default)
        assert re.search(rf"Default: {re.escape(default)}\b", matching[0]), \
            f"{action.option_strings}: sockd(8) does not say 'Default: {default}'"
    config = next(body for tag, body in items.items() if "--config" in tag)
    assert f"Default: {DEFAULT_CONFIG}" in config


def test_every_log_line_of_the_code_has_a_pattern_in_sockd_8():
    lines = [plain(line).strip() for line in section("LOG LINES")
             if not line.startswith(".")]
    assert any(re.fullmatch(story_pattern(), line) for line in lines), \
        "the STORY of session lines is not documented as Session.story() writes it"
    formats = log_formats()
    assert len(formats) > 30
    missing = [where for where, pattern in formats
               if not any(re.fullmatch(pattern, line) for line in lines)]
    assert not missing, f"log lines with no pattern in sockd(8), LOG LINES: {missing}"


def test_every_process_title_is_in_sockd_8():
    lines = [plain(line).strip() for line in section("PROCESS TITLES")
             if not line.startswith(".")]
    titles = title_formats()
    assert len(titles) >= 4
    missing = [where for where, pattern in titles
               if not any(re.fullmatch(pattern, line) for line in lines)]
    assert not missing, f"process titles missing from sockd(8): {missing}"


def test_escaping_is_documented_as_log_escape_does_it():
    text = words(section("LOG LINES"))
    for character, written in ((" ", "\\x20"), ("\n", "\\x0a"), ("\\", "\\x5c")):
        assert escape(character) == written
        assert written in text
    assert len(escape("a" * 300)) == 255 and "255 characters" in text


def test_signals_and_exit_statuses_are_in_sockd_8():
    signals = words(section("SIGNALS"))
    for signum in master._SIGNALS:
        if signum.name != "SIGCHLD":
            assert signum.name in signals
    statuses = section("EXIT STATUS")
    for code in (0, cli.EXIT_CONFIG, cli.EXIT_USAGE, cli.EXIT_LISTEN,
                 master.EXIT_WORKERS_FAILED):
        assert f".B {code}" in statuses, code


@pytest.mark.parametrize("page", sorted(p.name for p in MAN.glob("*.[1-8]")))
def test_man_page_renders_without_warnings(page):
    assert shutil.which("man"), "man(1) is needed to check the manual pages"
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    done = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "NAME" in done.stdout


def test_sockd_8_is_among_the_pages():
    assert SOCKD_8.exists()


# -- start-up files -------------------------------------------------------------------


@pytest.mark.parametrize("script", ["rc.local", "sockd.rc", "default"])
def test_shell_scripts_parse(script, init_files):
    sh = shutil.which("sh")
    assert sh, "sh is needed to check the scripts"
    done = subprocess.run([sh, "-n", str(init_files / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", ["rc.local", "sockd.rc"])
def test_shell_scripts_start_the_installed_program_by_pid_only(script, init_files):
    text = (init_files / script).read_text(encoding="ascii")
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert f"SOCKD={installed_sockd()}" in code
    assert "pkill" not in code and "killall" not in code
    if script == "sockd.rc":
        for verb in ("start", "stop", "reload", "restart", "status"):
            assert re.search(rf"^{verb}\b.*\)$", code, re.M), verb
        assert 'kill -TERM "$pid"' in code and 'kill -HUP "$pid"' in code
        assert ". /etc/default/sockd" in code and '--user "$SOCKD_USER"' in code


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values, in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text(encoding="ascii").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_service_unit(init_files):
    service = {key: values[-1] for key, values in
               unit(init_files / "sockd.service")["Service"].items()}
    environment = dict(word.split("=", 1) for word in shlex.split(service["Environment"]))
    assert environment["SOCKD_USER"] == "nobody"
    assert service["EnvironmentFile"] == "-/etc/default/sockd"
    command = service["ExecStart"]
    for name, value in environment.items():
        command = command.replace(f"${{{name}}}", value).replace(f"${name}", value)
    argv = shlex.split(command)
    assert argv[0] == installed_sockd()
    settings, args = cli.parse_settings(argv[1:])
    assert settings.foreground and settings.user == "nobody" and settings.log == "syslog"
    assert settings.pidfile
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    reload = unit(init_files / "sockd.service")["Service"]["ExecReload"]
    assert reload == [f"{installed_sockd()} -t $SOCKD_OPTS", "/bin/kill -HUP $MAINPID"]
    assert service["KillMode"] == "mixed"
    assert service["RuntimeDirectory"] == "sockd"
    assert float(service["TimeoutStopSec"]) > settings.grace + 1
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                      "CapabilityBoundingSet", "SystemCallFilter", "RestrictAddressFamilies"):
        assert hardening in service, hardening
    assert "WantedBy" in unit(init_files / "sockd.service")["Install"]


def test_default_file_sets_what_the_unit_and_the_script_read(init_files):
    assigned = dict(line.split("=", 1) for line in
                    (init_files / "default").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert set(assigned) == {"SOCKD_USER", "GRACE", "SOCKD_OPTS"}
    assert assigned["SOCKD_USER"] == "nobody"


def test_socket_unit(init_files):
    sections = unit(init_files / "sockd.socket")
    assert sections["Socket"]["ListenStream"] == ["1080"]
    assert sections["Socket"].get("Accept", ["no"]) == ["no"]
    assert sections["Install"]["WantedBy"] == ["sockets.target"]


def test_inetd_and_services_lines(init_files):
    entries = [line.split() for line in (init_files / "inetd.conf").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries == [["socks", "stream", "tcp", "nowait", "nobody", installed_sockd(), "sockd"]]
    services = [line.split("#", 1)[0].split()
                for line in (init_files / "services").read_text().splitlines()]
    assert ["socks", "1080/tcp"] in services


def test_the_sample_configuration_is_as_safe_as_the_default(init_files, tmp_path):
    """The sample (the package's /etc/sockd.conf) checks clean, lets only loopback clients
    in, and its examples check clean once uncommented."""
    sample = init_files / "sockd.conf"
    ruleset = rules.load(str(sample))
    for client in ("127.0.0.1", "::1"):
        assert ruleset.source_verdict(ipaddress.ip_address(client)) is not SourceVerdict.NEVER
    for client in ("192.168.1.5", "10.0.0.1", "2001:db8::1", "8.8.8.8"):
        assert ruleset.source_verdict(ipaddress.ip_address(client)) is SourceVerdict.NEVER
    uncommented = tmp_path / "examples.conf"
    text = re.sub(r"^#(?=(deny|allow|permit) |#NO_IDENTD:|#BAD_ID:)", "",
                  sample.read_text(), flags=re.M)
    assert text.count("192.168.0.0") >= 4 and "?=I" in text
    uncommented.write_text(text)
    assert rules.check(str(uncommented)) == []
