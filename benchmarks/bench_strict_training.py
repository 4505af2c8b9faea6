"""`trained_weights` (strict mode's `strict_training` when this was written): how close
honest versions' trained weights come to the oracle's on the same data, and how far a
shortcut lands.

    uv run python -m benchmarks.bench_strict_training [--samples 1000] [--seed 114365524]
        [FIXTURE ...]

Runs the strict reference (the oracle) and then each named file on one fresh data set,
through the grader's own timed execution, and prints, for each: its time, the largest
difference of a trained weight from the oracle's relative to that tensor's largest
element (what `strict_training` compares with its tolerance, 1e-3), the largest
difference of its eval inputs, and its accuracy on the hidden labels.  Names are
fixtures of tests/candidates (e.g. honest_fast.py, cheat_one_epoch.py) or `vectorized`.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import sandbox
from benchmarks.candidates import scaled_copy, write_candidate
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC, complex_spec
from problems.ml_training.execution_report import ExecutionReport
from problems.ml_training.fresh_inputs import make_dataset
from problems.ml_training.model_checks import same_features, unpack
from problems.ml_training.timing.executor import execute
from problems.ml_training.training_checks import final_weights


async def main(samples: int, seed: int, names: list[str]) -> None:
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="bench-strict-"))
    inst = complex_spec(n_samples=samples).instrumentation()
    ds = make_dataset(seed, samples)
    files = {"reference": scaled_copy(COMPLEX_SPEC.reference, work / "reference.py", samples),
             "vectorized": scaled_copy(COMPLEX_SPEC.tiers["vectorized"],
                                       work / "vectorized.py", samples)}
    original = None
    print(f"{samples} samples, data seed {seed}")
    print("| file | time (s) | trained weights vs oracle | vs the replay on its features "
          "| eval inputs vs oracle | accuracy |")
    print("|---|---|---|---|---|---|")
    for name in ["reference", *names]:
        path = files.get(name) or write_candidate(name, work / name, samples)
        run = await execute(path, inst, threads=1, limits=sandbox.Limits(timeout=900),
                            data=ds.job())
        if not run.ok:
            print(f"| {name} | failed: {run.error} | | | |")
            continue
        original = original or run.report
        def gap(report: ExecutionReport, against: ExecutionReport) -> float:
            have, want = final_weights(report), final_weights(against)
            return max(float(np.max(np.abs(have[k] - want[k])) / np.max(np.abs(want[k])))
                       for k in want)

        replayed = "(same features)"
        if not same_features(run.report, original, exact=True):  # as the grader does
            again = await execute(files["reference"], inst, threads=1,
                                  limits=sandbox.Limits(timeout=900), timed=False,
                                  data=dict(ds.job(), features=run.report.features.to_json()))
            replayed = f"{gap(run.report, again.report):.2e}" if again.ok else again.error
        inputs = float(np.max(np.abs(unpack(run.report.eval_inputs, "x")
                                     - unpack(original.eval_inputs, "x"))))
        print(f"| {name} | {run.time:.2f} | {gap(run.report, original):.2e} | {replayed} | "
              f"{inputs:.2e} | "
              f"{ds.accuracy(list(run.report.eval_predictions)):.3f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=114365524)
    parser.add_argument("names", nargs="*", default=[
        "vectorized", "honest_fast.py", "seed_zscore.py", "seed_standard_scaler.py",
        "cheat_one_epoch.py", "cheat_zscore_one_epoch_forged_counts.py"])
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.seed, args.names))
