#!/usr/bin/env python3
"""Fuzz every parser of sockd for a while (`make fuzz`): atheris, coverage-guided.

    scripts/fuzz.py [--seconds N] [--work DIR] [--keep] [TARGET...]

Each target of tests/fuzz/targets.py runs for N seconds (default $FUZZ_SECONDS, else 60),
starting from its corpus in tests/fuzz/corpus/TARGET.  What the fuzzer finds goes to a
scratch directory (--work, default a temporary one), not into the repository: the corpus
there stays small.  --keep merges the inputs that add coverage into the repository's corpus
(libFuzzer -merge=1, to be reviewed and committed by hand).

Prints one line per target (inputs run, coverage, new corpus entries) and exits 1 when a
target crashed: the input that did it is named (crash-*, in the work directory), to be
copied into tests/fuzz/corpus/TARGET once the bug is fixed, so that `make test` replays it.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
STAT = re.compile(r"stat::(\w+):\s*(\d+)")


def targets() -> list[str]:
    return sorted(p.name for p in (FUZZ / "corpus").iterdir() if p.is_dir())


def run(target: str, seconds: int, work: Path) -> dict:
    new = work / target
    new.mkdir(parents=True, exist_ok=True)
    seeds = FUZZ / "corpus" / target
    log = work / f"{target}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(
            [sys.executable, str(FUZZ / "harness.py"), target, f"-max_total_time={seconds}",
             "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096",
             f"-artifact_prefix={work}/{target}-", str(new), str(seeds)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=seconds + 300)
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in STAT.findall(text)}
    cov = re.findall(r"cov: (\d+)", text)
    crashes = sorted(str(p) for p in work.glob(f"{target}-*"))
    return {"target": target, "status": proc.returncode, "seconds": time.monotonic() - started,
            "runs": stats.get("number_of_executed_units", 0), "cov": int(cov[-1]) if cov else 0,
            "new": len(list(new.iterdir())), "crashes": crashes, "log": str(log)}


def keep(target: str, work: Path) -> None:
    seeds = FUZZ / "corpus" / target
    subprocess.run([sys.executable, str(FUZZ / "harness.py"), target, "-merge=1",
                    str(seeds), str(work / target)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)))
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("target", nargs="*", default=targets())
    args = parser.parse_args()
    unknown = set(args.target) - set(targets())
    if unknown:
        parser.error(f"no such target: {' '.join(sorted(unknown))}")
    work = args.work or Path(tempfile.mkdtemp(prefix="sockd-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing {len(args.target)} targets, {args.seconds} s each; work in {work}")
    failed = False
    total = 0
    for target in args.target:
        r = run(target, args.seconds, work)
        total += r["runs"]
        ok = r["status"] == 0 and not r["crashes"]
        failed |= not ok
        verdict = ("ok" if ok else f"CRASH: {' '.join(r['crashes'])} (log {r['log']})"
                   if r["crashes"] else f"FAILED with status {r['status']} (log {r['log']})")
        print(f"{target:14} {r['runs']:>10,} inputs in {r['seconds']:5.0f} s  "
              f"cov {r['cov']:>5}  {r['new']:>4} new  {verdict}")
        if args.keep and ok:
            keep(target, work)
    print(f"total: {total:,} inputs, {'crashes found' if failed else 'no crash'}")
    if not args.work and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
