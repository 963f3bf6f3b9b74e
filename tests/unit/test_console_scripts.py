"""Every console script of setup.py is installed and starts: --help prints its usage and
exits without a traceback (STYLE.md: every console script is smoke-tested)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def console_scripts() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == "console_scripts" for k in node.keys):
            entries = node.values[[k.value for k in node.keys].index("console_scripts")]
            return [ast.literal_eval(e).split("=")[0].strip() for e in entries.elts]
    raise AssertionError("setup.py has no console_scripts")


def test_the_list_is_complete():
    assert {"sockd", "test_sockd_conf", "sockpasswd", "socksify", "test_socks_conf",
            "rfinger", "rwhois", "rtelnet", "rftp"} <= set(console_scripts())


@pytest.mark.parametrize("name", console_scripts())
def test_each_script_starts_and_shows_its_usage(name):
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: run `make venv`"
    done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode in (0, 2), output
    assert "usage" in output.lower() and "Traceback" not in output, output
