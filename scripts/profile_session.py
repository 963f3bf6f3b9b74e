#!/usr/bin/env python3
"""Where a session's time goes: one sockd worker under cProfile, driven by the benchmark's
sequential SOCKS5 load (scripts/bench.py's benchtool: greeting, CONNECT, a 32-byte echo).

Prints the Python calls per session (the figure to cut, see doc/benchmarks.md), the
worker's user and system CPU per session and the master's, measured in a second run
without the profiler, and the functions that cost most under the profiler.  Like the
benchmark, it runs as root inside a private network namespace where only loopback
exists (`make profile`), talks to 127.0.0.1 only, and stops its servers by process group.

With --clients N the load is the benchmark's concurrent one (N clients at once) and only
the CPU figures are given: how a worker's cost per session grows with the number of workers
busy at once (doc/benchmarks.md, "Why the concurrent figure lags").  With --floor N the
same load goes to scripts/floor_socks.py's prefork model of N processes instead of sockd.

Usage: scripts/profile_session.py [--seconds S] [--top N] [--cpu-only] [--clients N]
       [--floor N] [--save FILE] [SOCKD OPTION ...]
e.g. --cpu-only --min-spare 2 --max-spare 2 --max-workers 2 (CPU of every worker counted)
     --clients 50 --min-spare 8 --max-spare 8 --max-workers 8
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
             profile_to: Path | None, sessions: int, clients: int = 0) -> dict[str, float]:
    """One sockd (a pool of one worker, unless *options* say otherwise), the sequential
    load through it, or the concurrent one of *clients* clients.  The profile, when asked
    for, is of the first worker to serve *sessions* sessions.  The CPU counted is that of
    the workers there were when the load began: give a fixed pool (--min-spare, --max-spare
    and --max-workers alike) for a load that could make the master start more."""
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
        spare = int(options[options.index("--min-spare") + 1]) \
            if "--min-spare" in options[:-1] else 1
        while not bench.socks5_connect_ok(port, echo) or \
                len(bench.idle_workers(proc.pid)) < spare:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("profile_session: sockd did not start")
            time.sleep(0.2)
        workers = [pid for pid in bench.tree(proc.pid)
                   if (bench._read_stat(pid) or ["", ""])[1] == str(proc.pid)]
        before = cpu_ticks(workers), cpu_ticks([proc.pid])
        load = ["conc", str(port), str(echo), "0.5", str(seconds), str(clients)] if clients \
            else ["seq", str(port), str(echo), "0.5", str(seconds)]
        result = bench.run_tool(tool, load, seconds + 60)
        after = cpu_ticks(workers), cpu_ticks([proc.pid])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    per = 1e6 / bench.CLK_TCK / max(result["total"], 1)
    result.update(user=(after[0][0] - before[0][0]) * per, sys=(after[0][1] - before[0][1]) * per,
                  master=sum(after[1]) * per - sum(before[1]) * per)
    return result


def run_floor(tool: Path, echo: int, seconds: float, clients: int,
              processes: int) -> dict[str, float]:
    """The same load through the Python floor's prefork model; the CPU of all its
    processes (none is started during the load)."""
    port = bench.free_port()
    proc = subprocess.Popen(["timeout", str(bench.LIFETIME), bench.PYTHON,
                             str(bench.ROOT / "scripts" / "floor_socks.py"), "prefork",
                             str(port), str(processes)],
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not bench.socks5_connect_ok(port, echo) or len(bench.tree(proc.pid)) < processes:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("profile_session: the floor did not start")
            time.sleep(0.2)
        pids = bench.tree(proc.pid)
        before = cpu_ticks(pids)
        load = ["conc", str(port), str(echo), "0.5", str(seconds), str(clients)] if clients \
            else ["seq", str(port), str(echo), "0.5", str(seconds)]
        result = bench.run_tool(tool, load, seconds + 60)
        after = cpu_ticks(pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    per = 1e6 / bench.CLK_TCK / max(result["total"], 1)
    result.update(user=(after[0] - before[0]) * per, sys=(after[1] - before[1]) * per)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load (6)")
    p.add_argument("--top", type=int, default=25, help="functions to list (25)")
    p.add_argument("--cpu-only", action="store_true",
                   help="the run without the profiler only (to compare pools or options)")
    p.add_argument("--clients", type=int, default=0, metavar="N",
                   help="the concurrent load of N clients at once (CPU figures only)")
    p.add_argument("--floor", type=int, default=0, metavar="N",
                   help="load the floor's prefork model of N processes, not sockd")
    p.add_argument("--save", metavar="FILE", help="keep the profile (pstats) in FILE")
    args, options = p.parse_known_args(argv)
    if not 0 <= args.clients <= 1000 or not 0 <= args.floor <= 200:
        p.error("--clients: 0 to 1000; --floor: 0 to 200")
    with tempfile.TemporaryDirectory(prefix="sockd-profile.") as tmp:
        workdir = Path(tmp)
        tool = bench.build_tool(workdir)
        servers = subprocess.Popen([str(tool), "serve", "1", str(bench.LIFETIME)],
                                   stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                   start_new_session=True)
        try:
            echo = int(servers.stdout.readline().split()[1])
            load = f"{args.clients} clients at once" if args.clients else "sequential"
            if args.clients:
                load += " (p99 {:.1f} ms)"
            if args.floor:
                floor = run_floor(tool, echo, args.seconds, args.clients, args.floor)
                print(f"{load.format(floor['p99_ms'])}, floor of {args.floor} processes: "
                      f"{floor['rate']:.0f} "
                      f"sessions/s; per session: {floor['user']:.0f} us user + "
                      f"{floor['sys']:.0f} us system")
                return 0
            plain = run_load(workdir, tool, echo, args.seconds, options, None, 0, args.clients)
            if args.cpu_only or args.clients:
                print(f"{load.format(plain.get('p99_ms', 0))}: {plain['rate']:.0f} sessions/s; "
                      f"per session: workers "
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
