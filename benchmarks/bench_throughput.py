"""Throughput benchmark: gradings per hour of the strict reference, and their floor.

    uv run --extra ray python -m benchmarks.bench_throughput [--gradings 6]
        [--concurrent 2] [--samples N] [--no-cluster]

Grades the strict reference (the reference solution, the complex problem's strict
tier) through the reward function (``reward.grade_source``), after one warm-up grading
that measures or loads the calibration and is not counted:

1. locally, one grading after another;
2. locally, ``--concurrent`` gradings at once (the timing slots still time one
   execution per timing CPU; what overlaps is the work around the timings);
3. through a local Ray cluster: a head and two nodes with one timing slot each, each
   node on a CPU of its own with its own timing locks (two one-CPU machines), sharing
   this machine's calibration cache; ``--concurrent`` gradings in flight.

Then the floor: the seconds a grading holds a timing slot (the sum of its
``timed_intervals``: candidate and anchor executions), the timed work a grading needs
by design, so that one timing CPU grades at most 3600/floor strict references an hour.
``--samples N`` grades a scaled-down copy of the problem (target 0.5*strict) for a
quick run.  Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cluster
import reward
from benchmarks.candidates import scaled_copy
from problems import registry
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC, complex_spec
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask

SMALL = "complex_scaled"  # the registry's name of the scaled-down problem (--samples)
MIB = 1024**2


def scaled_problem(samples: int, baseline: Path, ref: Path, settings: registry.Settings
                   ) -> Any:
    """The complex problem on scaled-down copies of its files (a registry entry; Ray's
    nodes import it from here)."""
    options = replace(GradingOptions.of(settings.grading),
                      target=settings.grading.target or "0.5*strict")
    return MLTrainingTask(complex_spec(baseline, samples, reference=ref), options)


async def gradings(source: str, problem: str, count: int, at_once: int,
                   address: str | None = None) -> tuple[float, list[reward.Reward]]:
    """``count`` gradings, ``at_once`` in flight: the wall time and the rewards."""
    slots = asyncio.Semaphore(at_once)

    async def one() -> reward.Reward:
        async with slots:
            return await reward.grade_source(source, problem, cluster=address)

    started = time.monotonic()
    got = await asyncio.gather(*(one() for _ in range(count)))
    return time.monotonic() - started, list(got)


def slot_seconds(got: reward.Reward) -> float:
    """The seconds its timing slots were held (one per timed execution)."""
    intervals = got.verdict.get("details", {}).get("timed_intervals") or []
    return sum(i["end"] - i["start"] for i in intervals)


def clock_seconds(got: reward.Reward) -> tuple[float, int]:
    """The seconds its timed executions took by the grader's clock, and how many:
    the candidate's and the strict tier's beside them."""
    details = got.verdict.get("details", {})
    times = [e["time"] for e in details.get("per_execution") or [] if e.get("time")]
    times += [t for run in (details.get("side_by_side") or {}).get("anchor_times") or []
              for t in run]
    return sum(times), len(times)


def report(label: str, wall: float, got: list[reward.Reward]) -> None:
    passed = sum(r.passed for r in got)
    errors = [r.error for r in got if r.error]
    speedups = [r.speedup for r in got if r.speedup]
    nodes = sorted({r.node[:8] for r in got})
    speedup = f"{statistics.median(speedups):.1f}x" if speedups else "-"
    print(f"| {label} | {len(got)} | {wall:.1f} s | **{3600 * len(got) / wall:.0f}** | "
          f"{passed}/{len(got)} | {speedup} | {', '.join(nodes)} |"
          + (f" errors: {errors}" if errors else ""), flush=True)


def start_cluster(root: Path) -> Any:
    """A head without timing slots and two nodes with one each, each on a CPU of its own
    with its own timing locks."""
    ray = cluster.import_ray()
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * MIB}
    made = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cpus = sorted(os.sched_getaffinity(0))
    for i in range(2):
        (root / f"node{i}").mkdir()
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[-1 - i % len(cpus)]})  # its processes inherit it
        try:
            made.add_node(**node, resources={cluster.RESOURCE: 1},
                          env_vars={"HELLO_PY_TIMING_DIR": str(root / f"node{i}")})
        finally:
            os.sched_setaffinity(0, before)
    made.wait_for_nodes()
    return ray, made


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    problem, source = "complex", COMPLEX_SPEC.reference.read_text()
    if args.samples:
        problem = SMALL
        baseline = scaled_copy(COMPLEX_SPEC.baseline, work / "slow.py", args.samples)
        ref = scaled_copy(COMPLEX_SPEC.reference, work / "reference.py", args.samples)
        registry.BUILDERS[SMALL] = functools.partial(scaled_problem, args.samples, baseline,
                                                     ref)
        source = ref.read_text()
    print(f"problem {problem} ({args.samples or COMPLEX_SPEC.n_samples} samples), "
          f"{os.cpu_count()} CPUs; warm-up grading (the calibration, not counted)...",
          flush=True)
    _, [warm] = await gradings(source, problem, 1, 1)
    print(f"warm-up: passed={warm.passed} speedup {warm.speedup}x error {warm.error}\n")
    print("| how | gradings | wall | gradings/hour | passed | median speedup | nodes |")
    print("|---|---|---|---|---|---|---|")
    runs = [("local, one at a time", await gradings(source, problem, args.gradings, 1)),
            (f"local, {args.concurrent} at once",
             await gradings(source, problem, args.gradings, args.concurrent))]
    for label, (wall, got) in runs:
        report(label, wall, got)
    if not args.no_cluster:
        ray, made = start_cluster(work)
        try:
            address = made.address
            await gradings(source, problem, 2, 2, address)  # each node's worker started
            wall, got = await gradings(source, problem, args.gradings, args.concurrent,
                                       address)
            report(f"Ray cluster, 2 nodes, {args.concurrent} in flight", wall, got)
        finally:
            ray.shutdown()
            made.shutdown()
    graded = [r for _, (_, got) in runs for r in got if not r.error] or [warm]
    held = statistics.median(slot_seconds(r) for r in graded)
    clock, count = min((clock_seconds(r) for r in graded), key=lambda c: c[0])
    print(f"\nfloor: a timing slot held {held:.2f} s per grading (median of "
          f"{len(graded)}) -> at most {3600 / held:.0f} gradings/hour per timing CPU; of "
          f"which {count} timed executions (candidate and strict tier) took {clock:.2f} s "
          "by the grader's clock")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gradings", type=int, default=6, help="counted gradings per way")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--samples", type=int, default=None,
                        help="a scaled-down problem (e.g. 300) for a quick run")
    parser.add_argument("--no-cluster", action="store_true")
    asyncio.run(main(parser.parse_args()))
