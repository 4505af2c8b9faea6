"""Grader benchmark: noise of the reference's graded speedup, grader overhead, cache.

    uv run python benchmarks/bench_grader.py [--gradings 5]

Grades the reference solution N times against the real (cached) baseline and reports
the median speedup and its coefficient of variation across gradings, the grader's
overhead beyond the candidate's own executions (grade() wall time minus the summed
wall times of the child processes), and how many baseline executions a second
problem instance needed (0 when the cache works).  Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from problems.ml_training_optimization import (  # noqa: E402
    COMPLEX_SPEC,
    ComplexMLTrainingWithProfiler,
)


async def main(gradings: int) -> None:
    problem = ComplexMLTrainingWithProfiler(progress=lambda m: print("  " + m, flush=True))
    figures = await problem.figures()
    print(f"baseline median {figures.baseline.median:.2f} s {figures.baseline.times}, "
          f"accuracy {figures.baseline.accuracy:.4f}; reference speedup "
          f"{figures.reference_speedup:.1f}x; baseline executions this process: "
          f"{problem.baseline_executions}")
    speedups, overheads, medians = [], [], []
    for i in range(gradings):
        started = time.monotonic()
        result = await problem.grade(COMPLEX_SPEC.reference)
        wall = time.monotonic() - started
        overhead = wall - sum(result.details["execution_wall_times"])
        speedups.append(result.speedup)
        medians.append(result.candidate_time)
        overheads.append(overhead)
        print(f"grading {i + 1}: passed={result.passed} speedup {result.speedup:.2f}x "
              f"times {[round(t, 3) for t in result.candidate_times]} wall {wall:.2f} s "
              f"overhead {overhead:.3f} s", flush=True)
    cv = statistics.pstdev(speedups) / statistics.mean(speedups)
    print(f"\nmedian speedup {statistics.median(speedups):.2f}x over {gradings} gradings "
          f"(min {min(speedups):.2f}, max {max(speedups):.2f}); CV {cv:.2%} (goal <= 3 %)")
    print(f"candidate median time {statistics.median(medians):.3f} s")
    print(f"grader overhead per grading: median {statistics.median(overheads):.3f} s, "
          f"max {max(overheads):.3f} s (goal <= 1 s)")
    second = ComplexMLTrainingWithProfiler()
    await second.grade(COMPLEX_SPEC.reference)
    print(f"second problem instance: {second.baseline_executions} baseline executions "
          "(goal 0: cached)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gradings", type=int, default=5)
    asyncio.run(main(parser.parse_args().gradings))
