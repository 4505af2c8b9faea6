"""`trained_weights` over many data sets: how often honest training is refused, and how
often one epoch of three gets through, with the grader's rule and with the fixed floor.

    uv run python -m benchmarks.bench_training_refusals [--samples 100] [--data-sets 200]
        [--first-seed 900000] [FIXTURE ...]

The flagship only (the torch model whose training can be chaotic).  For each fresh data
set (image seed `first_seed + i`, its own labels), one untimed execution of the strict
reference (the oracle) and of each fixture of tests/candidates, in warm sandboxes.  Each
fixture's weights are judged by the grader's own code: its evidence
(`evidence.training_basis`: the oracle's run when the features are the original's bit for
bit, else the reference's training replayed on the fixture's own features; where the
weights land beyond the 1e-3 floor, the rounds of perturbed replays of
`evidence.measure_spread`; the shortcut replay) and its check (`verdict.trained_weights`).
The perturbed replays' seeds, which the grader draws at random, are pinned to the data
set (`101 * seed + 31 * round`) so that a run can be repeated.  Cheaper than whole
gradings (no timing, no side-by-side), so it reaches the hundreds of data sets a rate
needs.  Default fixtures: four honest files and the one-epoch shortcut with forged counts.
Results: benchmarks/README.md, "False refusals".
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.candidates import scaled_copy, write_candidate
from problems.ml_training import fresh_inputs, model_checks, oracle, training_checks, verdict
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC, complex_spec
from problems.ml_training.evidence import TrainingBasis, training_basis
from problems.ml_training.execution_report import ExecutionReport
from problems.ml_training.spec import GradingOptions
from problems.ml_training.timing.executor import Executor, Measurement

OPTIONS = GradingOptions(timeout=900)  # seed mode; weights_tolerance is the 1e-3 floor
FLOOR = OPTIONS.weights_tolerance
DEFAULT = ["honest_fast.py", "honest_float64_features.py", "honest_manual_cross_entropy.py",
           "honest_fused_adam.py", "cheat_one_epoch_forged_counts.py"]


class RoundSeeds:
    """``fresh_inputs.draw_seed`` while one fixture's evidence is gathered on one data
    set: ``measure_spread`` draws one seed per round of perturbed replays, so these are
    the rounds' seeds, pinned, and ``rounds`` counts the rounds that ran."""

    def __init__(self, data_seed: int):
        self.base, self.rounds = 101 * data_seed, 0

    def __call__(self) -> int:
        self.rounds += 1
        return self.base + 31 * (self.rounds - 1)


def cloud(basis: TrainingBasis) -> list[dict]:
    """The honest outcomes the grader measures the weights against: the basis, then the
    perturbed replays."""
    return [training_checks.final_weights(basis.report), *basis.replays]


def distance(report: ExecutionReport | None, basis: TrainingBasis | None) -> float:
    """How far the weights land from the basis, of each tensor's scale (infinite when
    there is nothing to compare)."""
    if basis is None:
        return float("inf")
    try:
        have = training_checks.final_weights(report)
        return training_checks.weights_gap(have, cloud(basis)[0])[0]
    except model_checks.EvidenceError:
        return float("inf")


async def main(samples: int, count: int, first: int, names: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    reference = scaled_copy(COMPLEX_SPEC.reference, work / "reference.py", samples)
    spec = complex_spec(n_samples=samples, reference=reference)
    inst = spec.instrumentation()
    paths = {n: write_candidate(n, work / n, samples) for n in names}
    tally = {n: {"refused": 0, "floor_refused": 0, "replayed": 0, "worst": 0.0, "rounds": 0,
                 "margin": float("inf"), "undecided": 0} for n in names}
    started = time.monotonic()
    draw_seed = fresh_inputs.draw_seed
    async with Executor(reference, inst, threads=1, limits=OPTIONS.oracle_limits()) as ref:
        runners = {n: Executor(p, inst, threads=1, limits=OPTIONS.limits())
                   for n, p in paths.items()}
        try:
            for i in range(count):
                ds = fresh_inputs.make_dataset(first + i, samples)
                answers = {ds.key: oracle.answer(ds, await ref.run(data=ds.job(), timed=False))}
                for name, runner in runners.items():
                    run = await runner.run(data=ds.job(), timed=False)
                    t = tally[name]
                    if not run.ok:
                        t["refused"] += 1
                        t["floor_refused"] += 1
                        print(f"  seed {first + i} {name}: failed: {run.error}", flush=True)
                        continue
                    seeds = RoundSeeds(first + i)
                    fresh_inputs.draw_seed = seeds
                    evidence = await training_basis(spec, Measurement([run]), [ds], answers,
                                                    OPTIONS, lambda message: None, name,
                                                    executor=ref)
                    basis = evidence.get(ds.key)
                    check = verdict.trained_weights(spec, run.report, basis, OPTIONS)
                    gap = distance(run.report, basis)
                    t["worst"] = max(t["worst"], gap)
                    if gap > FLOOR:
                        t["floor_refused"] += 1
                        t["replayed"] += 1
                        t["rounds"] = max(t["rounds"], seeds.rounds)
                    if FLOOR < gap < float("inf"):  # the margin: in tolerances
                        (near, _), allowed, _ = training_checks.near_the_cloud(
                            training_checks.final_weights(run.report), cloud(basis), FLOOR)
                        t["margin"] = min(t["margin"], near / allowed)
                    if check.skipped:
                        t["undecided"] += 1
                    elif not check.passed:
                        t["refused"] += 1
                    if check.skipped or (gap > FLOOR and not name.startswith("cheat")):
                        verdict_word = ("undecided" if check.skipped else
                                        "passed" if check.passed else "REFUSED")
                        print(f"  seed {first + i} {name}: {gap:.3g} from the basis; "
                              f"{verdict_word}: {check.message}", flush=True)
                if (i + 1) % 25 == 0:
                    print(f"  {i + 1} data sets, {time.monotonic() - started:.0f} s", flush=True)
        finally:
            fresh_inputs.draw_seed = draw_seed
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
    for name, t in tally.items():
        if t["undecided"]:
            print(f"{name}: {t['undecided']}/{count} data sets undecided (a third of the "
                  "training ends where the whole does: the grader skips them)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--data-sets", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=900000)
    parser.add_argument("names", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.data_sets, args.first_seed, args.names))
