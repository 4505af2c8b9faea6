"""Side-by-side benchmark: which estimator of a speedup is stable from one grading to the next.

    uv run python -m benchmarks.bench_side_by_side [--rounds 6] [--pairs 20] [A B]
        [--out FILE] [--report FILE]

Each round starts two new warm sandboxes, one per file (default: the strict reference
twice, so the true ratio is 1), and alternates their timed executions, A B A B, on fresh
data sets.  Over rounds it reports the coefficient of variation of A's own estimate (what
comparing with a time cached earlier would rest on) and of the ratio A/B measured in the
same round, for several estimators (median, mean, 20 % trimmed mean, minimum, lower
quartile, median of the paired ratios) and numbers of pairs.  Raw times go to
``--out`` (JSON) so the report can be redone with ``--report FILE``.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from problems.ml_training import fresh_inputs
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.spec import PROBLEM_DATA, GradingOptions
from problems.ml_training.timing.executor import Executor
from problems.ml_training.timing.slots import timing_slot

ESTIMATORS = {"median": np.median, "mean": np.mean,
              "trim20": lambda x: stats.trim_mean(x, 0.2), "min": np.min,
              "q25": lambda x: np.quantile(x, 0.25)}


async def measure(a: Path, b: Path, rounds: int, pairs: int) -> list[tuple[list, list]]:
    inst, limits = COMPLEX_SPEC.instrumentation(), GradingOptions().limits(600)
    data = []
    for r in range(rounds):
        async with (Executor(a, inst, threads=1, limits=limits,
                             read_only=(PROBLEM_DATA,)) as ea,
                    Executor(b, inst, threads=1, limits=limits,
                             read_only=(PROBLEM_DATA,)) as eb):
            await asyncio.gather(ea.ready(), eb.ready())
            ta: list[float] = []
            tb: list[float] = []
            for _ in range(pairs):
                ds = fresh_inputs.make_dataset(fresh_inputs.draw_seed(),
                                               COMPLEX_SPEC.n_samples)
                for executor, times in ((ea, ta), (eb, tb)):
                    async with timing_slot():
                        times.append((await executor.run(data=ds.job())).time)
        data.append((ta, tb))
        print(f"round {r + 1}: A median {np.median(ta):.3f} s, B median {np.median(tb):.3f} s",
              flush=True)
    return data


def report(data: list[tuple[list, list]]) -> None:
    def cv(values: list[float]) -> float:
        return 100 * float(np.std(values, ddof=1) / np.mean(values))

    n_max = min(len(a) for a, _ in data)
    print(f"\nCV over {len(data)} rounds (A alone | the ratio A/B measured side by side)")
    for k in (3, 6, 12, 20, 30):
        if k > n_max:
            continue
        cells = []
        for name, f in ESTIMATORS.items():
            alone = [f(np.array(a[:k])) for a, _ in data]
            ratio = [f(np.array(a[:k])) / f(np.array(b[:k])) for a, b in data]
            cells.append(f"{name} {cv(alone):4.1f} | {cv(ratio):4.1f}")
        paired = [np.median(np.array(a[:k]) / np.array(b[:k])) for a, b in data]
        cells.append(f"median of pair ratios {cv(paired):4.1f}")
        print(f"n={k:2d}: " + ";  ".join(cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, help="report on saved times instead")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        sys.exit(0)
    a, b = (args.files + [COMPLEX_SPEC.reference] * 2)[:2]
    found = asyncio.run(measure(a, b, args.rounds, args.pairs))
    if args.out:
        args.out.write_text(json.dumps(found))
    report(found)
