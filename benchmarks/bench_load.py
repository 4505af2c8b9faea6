"""Timing under load and across processes (issue 29): the figures a busy machine gives.

    uv run python -m benchmarks.bench_load hogs [--gradings 5] [--hogs 2] [--pin]
    uv run python -m benchmarks.bench_load concurrent [--rounds 1]
    uv run python -m benchmarks.bench_load calibrations [--together]

``hogs``: grades the strict reference N times in one process while K CPU hogs (each a
process streaming through 256 MB of memory, not pinned: the kernel spreads them over
every CPU, the timing CPU included) run the whole time, and gives the CV of the
verdicts' speedups on the wall clock (what the verdict uses) and, from the same
executions, on the CPU-time clock (the sandbox's cgroup), with how many executions the
grader set aside because something else ran on the timing CPU.  With ``--pin`` every hog
is pinned to the timing CPU (the executions then share it, whatever the grader does).

``concurrent``: one ``main.py grade --json`` of the strict reference alone, then two at
once (separate processes, coordinated only by the machine's timing slots), and how far
the two concurrent speedups are from the one alone.

``calibrations``: two ``main.py calibrate --json --no-cache`` in separate processes with
caches of their own (one after the other, or ``--together``), and how far apart their
tiers' speedups are, with each ladder's quality.

The baseline comes from the cache (``HELLO_PY_CACHE_DIR``), measured first if missing.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import sandbox
from benchmarks.bench_drift import start_hog
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = COMPLEX_SPEC.reference


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def apart(a: float, b: float) -> float:
    return abs(a - b) / min(a, b)


def start_hogs(count: int, cpu: int | None = None) -> list[subprocess.Popen]:
    hogs = [start_hog(cpu, settle=0.0) for _ in range(count)]
    time.sleep(1.0)  # let them allocate and start streaming
    return hogs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


async def hogs(gradings: int, count: int, pin: bool) -> None:
    problem = MLTrainingTask(COMPLEX_SPEC, options=GradingOptions(),
                             progress=lambda m: print("  " + m, flush=True))
    await problem.figures()  # before the hogs start (cached, or measured on a quiet machine)
    wall, cpu, set_aside, kept = [], [], [], []
    running = start_hogs(count, sandbox.timing_cpus()[0] if pin else None)
    try:
        for i in range(gradings):
            result = await problem.grade(REFERENCE)
            busy = result.details["side_by_side"]["contention"]
            wall.append(result.details["speedup_wall_clock"])
            cpu.append(result.details["speedup_cpu_clock"])
            set_aside.append(len(busy["set_aside"]))
            kept.append(busy["contended_kept"])
            on_cpu = [x for x in busy["on_cpu"] if x is not None]
            print(f"grading {i + 1}: passed={result.passed} wall clock {wall[-1]:.1f}x, "
                  f"CPU clock {cpu[-1]:.1f}x; {len(result.candidate_times)} executions, on "
                  f"the CPU {statistics.median(on_cpu):.0%} of their wall time (median), "
                  f"{set_aside[-1]} set aside, {kept[-1]} contended kept; load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        stop(running)
    where = "pinned to the timing CPU" if pin else "not pinned"
    print(f"\n{count} hogs ({where}), {gradings} gradings of the strict reference "
          f"(the verdict's clock: {problem.calibration_used()['clock']}):")
    print(f"  wall clock: median {statistics.median(wall):.1f}x "
          f"({min(wall):.1f}-{max(wall):.1f}), CV {cv(wall):.2%} (goal <= 3 %)")
    print(f"  CPU clock:  median {statistics.median(cpu):.1f}x "
          f"({min(cpu):.1f}-{max(cpu):.1f}), CV {cv(cpu):.2%}")
    print(f"  executions set aside {sum(set_aside)}, contended kept {sum(kept)}")


def grade_process(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(["uv", "run", "main.py", "grade", str(REFERENCE), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def verdict(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def concurrent(rounds: int) -> None:
    env = dict(os.environ)
    alone, together = [], []
    for r in range(rounds):
        one = verdict(grade_process(env))
        alone.append(one["speedup"])
        pair = [grade_process(env), grade_process(env)]
        two = [verdict(p) for p in pair]
        together += [v["speedup"] for v in two]
        print(f"round {r + 1}: alone {one['speedup']:.1f}x; together "
              f"{two[0]['speedup']:.1f}x and {two[1]['speedup']:.1f}x", flush=True)
    single = statistics.median(alone)
    worst = max(apart(s, single) for s in together)
    print(f"\nalone median {single:.1f}x; concurrent {[round(s, 1) for s in together]}: "
          f"at most {worst:.1%} from alone (goal <= 3 %)")


def calibrations(together: bool) -> None:
    runs = []
    for i in range(2):
        env = {**os.environ, "HELLO_PY_CACHE_DIR": tempfile.mkdtemp(prefix=f"hp-cal{i}-")}
        print(f"calibration {i + 1}: its cache is {env['HELLO_PY_CACHE_DIR']}", flush=True)
        cmd = ["uv", "run", "main.py", "calibrate", "--json", "--no-cache"]
        runs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     text=True))
        if not together:
            runs[-1].wait()
    found = [verdict(p) for p in runs]
    for i, data in enumerate(found):
        tiers = {t["name"]: round(t["speedup"], 1) for t in data["tiers"]}
        print(f"calibration {i + 1}: baseline {data['baseline_time']:.1f} s "
              f"({len(data['baseline_times'])} executions), tiers {tiers}; quality "
              f"{data['calibration']['quality']}", flush=True)
    for name in (t["name"] for t in found[0]["tiers"]):
        a, b = (next(t["speedup"] for t in d["tiers"] if t["name"] == name) for d in found)
        print(f"{name}: {a:.1f}x and {b:.1f}x, {apart(a, b):.1%} apart (goal <= 3 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("hogs")
    h.add_argument("--gradings", type=int, default=5)
    h.add_argument("--hogs", type=int, default=2)
    h.add_argument("--pin", action="store_true")
    c = sub.add_parser("concurrent")
    c.add_argument("--rounds", type=int, default=1)
    k = sub.add_parser("calibrations")
    k.add_argument("--together", action="store_true")
    args = parser.parse_args()
    if args.mode == "hogs":
        asyncio.run(hogs(args.gradings, args.hogs, args.pin))
    elif args.mode == "concurrent":
        concurrent(args.rounds)
    else:
        calibrations(args.together)
