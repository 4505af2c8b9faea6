"""How often honest files are refused, and by which check: each honest variant graded on
many fresh data sets, in both semantics modes, through the grader's own `grade`.

    uv run python -m benchmarks.bench_false_refusals [--samples 100] [--gradings 20]
        [--first-seed 700000] [--modes seed,strict] [--only NAME ...] [--json FILE]

Every grading is the problem's own (`repeats=3`: one image set, twice under its labels
and once relabelled), with two differences that leave the correctness checks as they
are: the speed target is 1.0x (speed is not what is measured here) and the baseline is
measured once, at the given size.  Grading g of every variant uses the image seed
`first_seed + g`, so all variants meet the same data sets.  A refusal is a grading with
a decisive failure of any check but the speed checks (`speedup_target`,
`speedup_plausible`); the table gives, per variant and mode, the refused gradings and the
checks that refused them, and how many data sets needed the harness's perturbed replays
(`trained_weights` beyond its floor).  Results: benchmarks/README.md, "False refusals".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.candidates import scaled_copy, write_candidate
from problems.ml_training import fresh_inputs
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.declarations.numpy_pipeline import numpy_spec
from problems.ml_training.declarations.pytorch_pipeline import pytorch_spec
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache

SPEED = {"speedup_target", "speedup_plausible"}
# each problem's spec builder; its default spec names its full-size files
PROBLEMS = {"numpy": numpy_spec, "pytorch": pytorch_spec, "complex": complex_spec}
NUMPY_CHUNKS = [
    ("    features = extractor.extract_features(images)\n",
     "    features = np.concatenate([extractor.extract_features(part)\n"
     "                               for part in np.array_split(images, 4)])\n"),
    ("    predictions = model.predict(X_test)\n",
     "    predictions = np.concatenate([model.predict(part)\n"
     "                                  for part in np.array_split(X_test, 4)])\n"),
]
NUMPY_FLOAT64 = [("    features = extractor.extract_features(images)\n",
                  "    features = extractor.extract_features(images).astype(np.float64)\n")]
# name: (problem, a fixture of tests/candidates or None for the reference, edits of the
# reference, the modes it is honest in)
VARIANTS = {
    "complex/reference": ("complex", None, [], ("seed", "strict")),
    "complex/honest_fast": ("complex", "honest_fast.py", [], ("seed", "strict")),
    "complex/float64_features": ("complex", "honest_float64_features.py", [],
                                 ("seed", "strict")),
    "complex/manual_cross_entropy": ("complex", "honest_manual_cross_entropy.py", [],
                                     ("seed", "strict")),
    "complex/fused_adam": ("complex", "honest_fused_adam.py", [], ("seed", "strict")),
    "complex/torch_compile": ("complex", "honest_torch_compile.py", [], ("seed", "strict")),
    "complex/eval_one_batch": ("complex", "honest_eval_one_batch.py", [],
                               ("seed", "strict")),
    "complex/zscore": ("complex", "seed_zscore.py", [], ("seed",)),
    "numpy/reference": ("numpy", None, [], ("seed", "strict")),
    "numpy/chunks": ("numpy", None, NUMPY_CHUNKS, ("seed", "strict")),
    "numpy/float64_features": ("numpy", None, NUMPY_FLOAT64, ("seed", "strict")),
    "pytorch/reference": ("pytorch", None, [], ("seed", "strict")),
}


async def main(args: argparse.Namespace) -> dict[str, dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-refusals-"))
    modes = args.modes.split(",")
    chosen = [v for v in VARIANTS if not args.only or v in args.only]
    results: dict[str, dict] = {}
    print(f"{args.samples} samples, {args.gradings} gradings per variant and mode, image "
          f"seeds {args.first_seed}..{args.first_seed + args.gradings - 1}", flush=True)
    for name in chosen:
        problem_name, fixture, edits, honest_modes = VARIANTS[name]
        spec_of = PROBLEMS[problem_name]
        full = spec_of()
        d = work / name.replace("/", "_")
        d.mkdir()
        baseline = scaled_copy(full.baseline, d / "slow.py", args.samples, full.n_samples)
        ref = scaled_copy(full.reference, d / "reference.py", args.samples, full.n_samples)
        if fixture is not None:
            path = write_candidate(fixture, d / fixture, args.samples)
        else:
            path = scaled_copy(full.reference, d / "candidate.py", args.samples,
                               full.n_samples, edits)
        spec = spec_of(baseline, args.samples, reference=ref)
        for mode in (m for m in modes if m in honest_modes):
            opts = GradingOptions(repeats=3, baseline_repeats=1, target=1.0,
                                  min_timed_seconds=0, semantics=mode,
                                  accuracy_tolerance=spec.accuracy_tolerance)
            problem = MLTrainingTask(spec, opts, cache=BaselineCache(work / "cache"))
            refused, by_check, replayed, started = 0, Counter(), 0, time.monotonic()
            for g in range(args.gradings):
                seed = args.first_seed + g
                counter = iter(range(10**6))
                # the image seed of this grading; other draws (probes, perturbations) follow
                fresh_inputs.draw_seed = lambda s=seed, c=counter: s + 7919 * next(c)
                result = await problem.grade(path)
                bad = sorted(c.name for c in result.checks
                             if c.decisive_failure and c.name not in SPEED)
                replayed += len(result.details.get("training_spread") or {})
                if bad:
                    refused += 1
                    by_check.update(bad)
                    print(f"  {name} {mode} seed {seed}: refused by {', '.join(bad)}: "
                          f"{result.reason[:300]}", flush=True)
            results[f"{name} {mode}"] = {
                "gradings": args.gradings, "refused": refused, "by_check": dict(by_check),
                "data_sets_with_replays": replayed,
                "seconds": round(time.monotonic() - started, 1)}
            print(f"| {name} | {mode} | {refused}/{args.gradings} | "
                  f"{', '.join(f'{k} {v}' for k, v in by_check.items()) or '-'} | "
                  f"{replayed} | {time.monotonic() - started:.0f} s |", flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--gradings", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=700000)
    parser.add_argument("--modes", default="seed,strict")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--json", default="")
    arguments = parser.parse_args()
    found = asyncio.run(main(arguments))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(found, indent=1))
