"""`trained_weights` over many data sets: how often honest training is refused, and how
often one epoch of three gets through, with the grader's rule and with the fixed floor.

    uv run python benchmarks/bench_training_refusals.py [--samples 100] [--data-sets 200]
        [--first-seed 900000] [FIXTURE ...]

The flagship only (the torch model whose training can be chaotic).  For each fresh data
set (image seed `first_seed + i`, its own labels), one untimed execution of the strict
reference (the oracle) and of each fixture of tests/candidates, in warm sandboxes.  Each
fixture's weights are judged as the grader judges them (`model_checks.same_training`):
against the oracle's run when its features are the original's bit for bit, else against
the reference's training replayed on its own features; where it lands beyond the 1e-3
floor, against the cloud of the grader's perturbed replays (its arithmetic perturbed in
the last bits: `spread_perturbations`, `oracle.Perturbation`).  Cheaper than whole gradings (no
timing, no side-by-side), so it reaches the hundreds of data sets a rate needs.
Default fixtures: four honest files and the one-epoch shortcut with forged counts.
Results: benchmarks/README.md, "False refusals".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from candidates.variants import write_candidate  # noqa: E402
from conftest import REFERENCE, scaled_copy  # noqa: E402

import sandbox  # noqa: E402
from problems.ml_training import model_checks  # noqa: E402
from problems.ml_training.fresh_inputs import make_dataset  # noqa: E402
from problems.ml_training.measurement import Executor  # noqa: E402
from problems.ml_training.task import (  # noqa: E402
    MORE_SPREAD,
    SPREAD,
    SPREAD_ROUNDS,
    complex_spec,
    spread_perturbations,
)
from problems.ml_training.task import MLTrainingOptimizationProblem as Problem  # noqa: E402

FLOOR = 1e-3
DEFAULT = ["honest_fast.py", "honest_float64_features.py", "honest_manual_cross_entropy.py",
           "honest_fused_adam.py", "cheat_one_epoch_forged_counts.py"]


async def main(samples: int, count: int, first: int, names: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    inst = Problem(complex_spec(n_samples=samples))._instrumentation()
    limits = sandbox.Limits(timeout=900)
    reference = scaled_copy(REFERENCE, work / "reference.py", samples)
    paths = {n: write_candidate(n, work / n, samples) for n in names}
    tally = {n: {"refused": 0, "floor_refused": 0, "replayed": 0, "worst": 0.0, "rounds": 0,
                 "margin": float("inf")} for n in names}
    started = time.monotonic()
    async with Executor(reference, inst, threads=1, limits=limits) as ref:
        runners = {n: Executor(p, inst, threads=1, limits=limits) for n, p in paths.items()}
        try:
            for i in range(count):
                ds = make_dataset(first + i, samples)
                original = (await ref.run(data=ds.job(), timed=False)).report
                for name, runner in runners.items():
                    run = await runner.run(data=ds.job(), timed=False)
                    t = tally[name]
                    if not run.ok:
                        t["refused"] += 1
                        t["floor_refused"] += 1
                        print(f"  seed {first + i} {name}: failed: {run.error}", flush=True)
                        continue
                    basis, features = original, original.features
                    replayed = not model_checks.same_features(run.report, original, exact=True)
                    if replayed:
                        features = run.report.features
                        again = await ref.run(data=dict(ds.job(), features=features.to_json()),
                                              timed=False)
                        basis = again.report
                    gap, _ = model_checks.weights_gap(model_checks.final_weights(run.report),
                                                      model_checks.final_weights(basis))
                    t["worst"] = max(t["worst"], gap)
                    replays = []
                    if gap > FLOOR:
                        t["floor_refused"] += 1
                        t["replayed"] += 1
                        have = model_checks.final_weights(run.report)
                        for round_ in range(SPREAD_ROUNDS):  # as the grader's rounds
                            (near, _), allowed, _ = model_checks.near_the_cloud(
                                have, [model_checks.final_weights(basis), *replays], FLOOR)
                            if near <= allowed:
                                break
                            t["rounds"] = max(t["rounds"], round_ + 1)
                            table = SPREAD if round_ == 0 else MORE_SPREAD
                            for p in spread_perturbations(101 * (first + i) + 31 * round_,
                                                          table):
                                r = await ref.run(data=dict(
                                    ds.job(), features=p.features(features).to_json(),
                                    **p.job()), timed=False)
                                if r.ok:
                                    replays.append(model_checks.final_weights(r.report))
                    check = model_checks.same_training(run.report, basis, name, FLOOR,
                                                       replayed=replayed, replays=replays)
                    if gap > FLOOR:  # the margin: how near the cloud, in tolerances
                        (near, _), allowed, _ = model_checks.near_the_cloud(
                            model_checks.final_weights(run.report),
                            [model_checks.final_weights(basis), *replays], FLOOR)
                        t["margin"] = min(t["margin"], near / allowed)
                    if not check.passed:
                        t["refused"] += 1
                    if gap > FLOOR and not name.startswith("cheat"):
                        print(f"  seed {first + i} {name}: {gap:.3g} from the basis; "
                              f"{'passed' if check.passed else 'REFUSED'}: {check.message}",
                              flush=True)
                if (i + 1) % 25 == 0:
                    print(f"  {i + 1} data sets, {time.monotonic() - started:.0f} s", flush=True)
        finally:
            for runner in runners.values():
                await runner.close()
    print(f"\n{samples} samples, {count} data sets (image seeds {first}..{first + count - 1}), "
          f"{time.monotonic() - started:.0f} s")
    print("| file | refused (the grader's rule) | refused by the 1e-3 floor alone | data sets "
          "replayed | most rounds of replays | largest distance from the basis | nearest "
          "approach to the cloud, in tolerances |")
    print("|---|---|---|---|---|---|---|")
    for name, t in tally.items():
        print(f"| {name} | {t['refused']}/{count} | {t['floor_refused']}/{count} | "
              f"{t['replayed']} | {t['rounds']} | {t['worst']:.3g} | {t['margin']:.3g} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--data-sets", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=900000)
    parser.add_argument("names", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.data_sets, args.first_seed, args.names))
