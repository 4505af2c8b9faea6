"""Drift benchmark: a candidate's graded speedup while the machine is deliberately slowed.

    uv run python -m benchmarks.bench_drift [--rounds 3] [--candidate FILE]

Grades one file (default: tests/candidates/honest_fast.py, full size) in rounds of
three conditions: an idle machine, a CPU hog on the other core (a process streaming
through 256 MB of memory, so it competes for caches and memory bandwidth), and a hog on
the timing core itself (the timed execution then gets about half of its CPU).  For each
grading it prints the verdict's speedup, measured side by side with the strict tier and
chained with the calibration's baseline-to-strict ratio, next to what comparing the
candidate's seconds with the cached baseline's seconds would have said.  The baseline
and tiers come from the cache (measured first if missing, on the idle machine).
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sandbox
from benchmarks.candidates import CANDIDATES
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask

HOG = """
import numpy as np
a = np.ones(2**25)  # 256 MB: far beyond any cache
b = np.empty_like(a)
while True:
    np.copyto(b, a)
    np.copyto(a, b)
"""


def start_hog(cpu: int | None, settle: float = 1.0) -> subprocess.Popen:
    """A process streaming through memory, pinned to ``cpu`` (None: wherever the kernel
    puts it), given ``settle`` seconds to allocate and start streaming."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen([sys.executable, "-c", HOG], preexec_fn=pin)
    time.sleep(settle)
    return proc


async def main(rounds: int, candidate: Path) -> None:
    problem = MLTrainingTask(COMPLEX_SPEC, options=GradingOptions(),
                             progress=lambda m: print("  " + m, flush=True))
    figures = await problem.figures()
    timing_cpu = sandbox.default_cpu(True)
    other_cpu = sandbox.default_cpu(False)
    print(f"baseline {figures.baseline.median:.2f} s = "
          f"{statistics.median(figures.ladder.baseline_units):.1f} strict-tier times; "
          f"timing CPU {timing_cpu}, other CPU {other_cpu}", flush=True)
    conditions = {"idle": None, "hog on the other core": other_cpu,
                  "hog on the timing core": timing_cpu}
    found: dict[str, list[tuple[float, float, float]]] = {c: [] for c in conditions}
    for r in range(rounds):
        for name, cpu in conditions.items():
            hog = start_hog(cpu) if cpu is not None else None
            try:
                result = await problem.grade(candidate)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            seconds = figures.baseline.median / result.candidate_time
            anchor = statistics.median(
                t for group in result.details["side_by_side"]["anchor_times"] for t in group)
            found[name].append((result.speedup, seconds, anchor))
            ci = result.speedup_ci95 or (float("nan"), float("nan"))
            print(f"round {r + 1}, {name}: passed={result.passed} side by side "
                  f"{result.speedup:.1f}x [{ci[0]:.1f}, {ci[1]:.1f}], seconds against the "
                  f"cached baseline {seconds:.1f}x; candidate median "
                  f"{result.candidate_time:.3f} s, strict tier beside it {anchor:.3f} s, "
                  f"{len(result.candidate_times)} executions", flush=True)
    idle = statistics.median(s for s, _, _ in found["idle"])
    idle_seconds = statistics.median(s for _, s, _ in found["idle"])
    print("\n| condition | side by side (median) | vs idle | seconds vs cached baseline "
          "(median) | vs idle | strict tier's time |")
    print("|---|---|---|---|---|---|")
    for name, rows in found.items():
        side = statistics.median(s for s, _, _ in rows)
        secs = statistics.median(s for _, s, _ in rows)
        anchor = statistics.median(a for _, _, a in rows)
        print(f"| {name} | {side:.1f}x | {side / idle - 1:+.1%} | {secs:.1f}x | "
              f"{secs / idle_seconds - 1:+.1%} | {anchor:.3f} s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidate", type=Path,
                        default=CANDIDATES / "honest_fast.py")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.candidate))
