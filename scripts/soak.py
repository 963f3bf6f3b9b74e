#!/usr/bin/env python3
"""The reliability campaign at full length (`make soak`): the reliability tests of `make test`
with their long figures, in every relay mode, and a summary of what they did.

    scripts/soak.py [pytest arguments]

The figures are set by environment variables (tests/integration/reliability.py, `scale`):
SOCKD_SOAK=1 picks the long ones (10,000 verified transfers per relay mode, 300 kill -9,
30 s of HUPs every 100 ms, 20,000 fuzzed connections); SOCKD_SOAK_TRANSFERS=1000 and the like
override one.  Run it where only loopback exists (the Makefile wraps it in a private network
namespace, as for `make test`).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^(integrity|kill -9|HUP|live fuzz|never-read) \(.*$", re.M)


def main() -> int:
    env = {**os.environ, "SOCKD_SOAK": "1", "PYTHONPATH": str(ROOT)}
    tests = sorted(str(p.relative_to(ROOT)) for p in
                   (ROOT / "tests" / "integration").glob("test_reliability_*.py"))
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
            "-o", "timeout=7200", *tests, *sys.argv[1:]]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    print(f"\nsoak summary ({time.monotonic() - started:.0f} s, pytest status {proc.returncode}):")
    for line in SUMMARY.finditer(proc.stdout):
        print("  " + line.group(0))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
