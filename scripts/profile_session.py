#!/usr/bin/env python3
"""Where a session's time goes: one sockd worker under cProfile, driven by the benchmark's
sequential SOCKS5 load (scripts/bench.py's benchtool: greeting, CONNECT, a 32-byte echo).

Prints the Python calls per session (the figure to cut, see doc/benchmarks.md), the
worker's user and system CPU per session and the master's, measured in a second run
without the profiler, and the functions that cost most under the profiler.  Like the
benchmark, it runs as root inside a private network namespace where only loopback
exists (`make profile`), talks to 127.0.0.1 only, and stops its servers by process group.

Usage: scripts/profile_session.py [--seconds S] [--top N] [--cpu-only] [--save FILE]
       [SOCKD OPTION ...]
e.g. --cpu-only --min-spare 2 --max-spare 2 --max-workers 2 (CPU of every worker counted)
"""

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the benchmark's load generator and helpers

# The worker's accept_one() under cProfile, dumped after the number of sessions named in
# SOCKD_PROFILE_SESSIONS to the file named in SOCKD_PROFILE_OUT; then sockd's own main().
WRAPPER = """\
import cProfile, os, sys
sys.path.insert(0, sys.argv.pop(1))
from sockd import worker
from sockd.cli import main
wanted, out = int(os.environ["SOCKD_PROFILE_SESSIONS"]), os.environ["SOCKD_PROFILE_OUT"]
profile, seen, accept_one = cProfile.Profile(), [0], worker.Worker.accept_one
def profiled(self, fd):
    profile.enable()
    try:
        return accept_one(self, fd)
    finally:
        profile.disable()
        seen[0] += 1
        if seen[0] == wanted:
            profile.dump_stats(out)
worker.Worker.accept_one = profiled
sys.exit(main())
"""


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """User and system clock ticks of *pids*, added up."""
    stats = [bench._read_stat(pid) or [0] * 13 for pid in pids]
    return sum(int(f[11]) for f in stats), sum(int(f[12]) for f in stats)


def run_load(workdir: Path, tool: Path, echo: int, seconds: float, options: list[str],
             profile_to: Path | None, sessions: int) -> dict[str, float]:
    """One sockd (a pool of one worker, unless *options* say otherwise), the sequential
    load through it.  The profile, when asked for, is of the first worker to serve
    *sessions* sessions."""
    conf = workdir / "sockd.conf"
    conf.write_text(bench.SOCKD_RULES)
    port = bench.free_port()
    head = [bench.PYTHON, "-c", WRAPPER, str(bench.ROOT)] if profile_to else \
        [bench.PYTHON, "-m", "sockd"]
    env = dict(os.environ, SOCKD_PROFILE_SESSIONS=str(sessions),
               SOCKD_PROFILE_OUT=str(profile_to or ""))
    proc = subprocess.Popen([*head, "-f", "-l", f"{bench.LOOPBACK}:{port}", "-c", str(conf),
                             "--log", str(workdir / "sockd.log"), "--min-spare", "1",
                             "--max-spare", "1", "--max-workers", "1", "--max-requests",
                             "1000000", *options],
                            cwd=str(bench.ROOT), env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not bench.socks5_connect_ok(port, echo):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("profile_session: sockd did not start")
            time.sleep(0.2)
        workers = [pid for pid in bench.tree(proc.pid)
                   if (bench._read_stat(pid) or ["", ""])[1] == str(proc.pid)]
        before = cpu_ticks(workers), cpu_ticks([proc.pid])
        result = bench.run_tool(tool, ["seq", str(port), str(echo), "0.5", str(seconds)],
                                seconds + 60)
        after = cpu_ticks(workers), cpu_ticks([proc.pid])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    per = 1e6 / bench.CLK_TCK / max(result["total"], 1)
    result.update(user=(after[0][0] - before[0][0]) * per, sys=(after[0][1] - before[0][1]) * per,
                  master=sum(after[1]) * per - sum(before[1]) * per)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load (6)")
    p.add_argument("--top", type=int, default=25, help="functions to list (25)")
    p.add_argument("--cpu-only", action="store_true",
                   help="the run without the profiler only (to compare pools or options)")
    p.add_argument("--save", metavar="FILE", help="keep the profile (pstats) in FILE")
    args, options = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="sockd-profile.") as tmp:
        workdir = Path(tmp)
        tool = bench.build_tool(workdir)
        servers = subprocess.Popen([str(tool), "serve", "1", str(bench.LIFETIME)],
                                   stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                   start_new_session=True)
        try:
            echo = int(servers.stdout.readline().split()[1])
            plain = run_load(workdir, tool, echo, args.seconds, options, None, 0)
            if args.cpu_only:
                print(f"sequential: {plain['rate']:.0f} sessions/s; per session: workers "
                      f"{plain['user']:.0f} us user + {plain['sys']:.0f} us system, master "
                      f"{plain['master']:.0f} us")
                return 0
            sessions = max(100, int(plain["total"] // 3))
            out = workdir / "worker.prof"
            profiled = run_load(workdir, tool, echo, args.seconds, options, out, sessions)
        finally:
            os.killpg(servers.pid, signal.SIGKILL)
            servers.wait()
        if not out.exists():
            raise SystemExit(f"profile_session: fewer than {sessions} sessions under the "
                             f"profiler ({profiled['total']:.0f})")
        stats = pstats.Stats(str(out))
        if args.save:
            stats.dump_stats(args.save)
        print(f"sequential: {plain['rate']:.0f} sessions/s; per session: workers "
              f"{plain['user']:.0f} us user + {plain['sys']:.0f} us system, master "
              f"{plain['master']:.0f} us; {stats.total_calls / sessions:.0f} Python calls "
              f"(cProfile, {sessions} sessions)")
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
