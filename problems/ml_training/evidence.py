"""The evidence a trained model is judged on: for each data set, what the original's
training gives on the candidate's features, and where honest training lands.

:func:`training_basis` runs the original's training (the strict reference, through
``oracle.replay``) on the candidate's own features where they differ from the
original's; where the candidate's weights land beyond the fixed floor, it measures the
spread of honest training with perturbed replays (:data:`SPREAD`), and it replays a
shortcut (one epoch of three) to see whether the data set can tell them apart.
Judging the weights against this evidence is ``model_checks``' and the verdict's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from problems.ml_training import fresh_inputs, model_checks, oracle, training_checks
from problems.ml_training.execution_report import ExecutionReport, PackedArray
from problems.ml_training.fresh_inputs import DataSet
from problems.ml_training.spec import PROBLEM_DATA, GradingOptions, TaskSpec
from problems.ml_training.timing.executor import Execution, Executor, Measurement

# The perturbed replays that show where honest training lands on a data set: (feature
# units, training-output units) in the last place (``oracle.Perturbation``).  A chaotic
# training turns on a few discrete events (a unit crossing zero) that a small
# perturbation triggers only sometimes, and it lands on one of a few branches: several
# sizes and both kinds, so that the replays visit the branches an honest file can take.
# Perturbed features alone stayed on the original's branch on a full-size data set where
# an honest float64 file took another (benchmarks/README.md); perturbed training
# outputs of 16 to 64 units reached it.
# Where the candidate lies beyond every point's tolerance after them, more rounds of
# ``MORE_SPREAD`` (the sizes that reached that branch most often: 16 to 32 units, about
# one replay in four).
SPREAD = ((1, 0), (1, 0), (2, 0), (4, 0), (8, 0), (16, 0),
          (0, 16), (0, 16), (0, 32), (0, 32), (0, 64), (0, 64), (0, 128), (0, 128))
MORE_SPREAD = ((0, 16), (0, 24), (0, 32), (0, 48)) * 4
SPREAD_ROUNDS = 3


def spread_perturbations(seed: int, table: tuple[tuple[int, int], ...] = SPREAD
                         ) -> list[oracle.Perturbation]:
    """The perturbed replays' arithmetic (``table``: feature units, output units), each
    from its own seed."""
    return [oracle.Perturbation(seed + k, feature_ulps=f, output_ulps=o)
            for k, (f, o) in enumerate(table)]

SHORTCUT_FRACTION = 1 / 3  # the shortcut replay's training: one epoch of the original's three


@dataclass
class TrainingBasis:
    """What a data set's trained model is compared with: the original's run or its
    replay (``report``, None with ``why`` when there is none), the features it was
    trained on, and honest replays around it."""

    report: ExecutionReport | None
    replayed: bool
    features: PackedArray | None = None
    why: str = ""
    # the weights of the original's training on those features, its arithmetic perturbed
    # in the last bits (measured only where the candidate lands beyond the floor)
    replays: list[dict[str, Any]] = field(default_factory=list)
    # the weights of the same training with no effect after a third of it (None: none)
    shortcut: dict[str, Any] | None = None


def training_spread(training: dict[tuple[int, int], TrainingBasis]) -> dict[str, float]:
    """The record of how far apart the honest replays landed, by data set."""
    return {f"{seed}/{labelling}": round(training_checks.honest_spread(
                [training_checks.final_weights(b.report), *b.replays]), 6)
            for (seed, labelling), b in training.items() if b.replays}


async def training_basis(spec: TaskSpec, result: Measurement, datasets: list[DataSet],
                         answers: dict[tuple[int, int], oracle.OracleAnswer],
                         opts: GradingOptions, say: Callable[[str], None], label: str,
                         executor: Executor | None = None
                         ) -> dict[tuple[int, int], TrainingBasis]:
    """For each data set, what the candidate's trained model must match: the
    oracle's run, when the candidate's features are the original's bit for bit, or
    else the original's training replayed by the harness on the candidate's own
    features (honest vectorised features differ in the last bits, and training can
    carry that to a few per cent of a weight).  Strict mode replays only features
    within its tolerance of the original's; others are held to the oracle's run.

    For a torch model whose weights land beyond the fixed floor from that basis, the
    harness measures where honest training lands on this data set: it replays the
    original's training again on the same features with its arithmetic perturbed in
    the last bits (``oracle.Perturbation``, ``SPREAD``; ``training_checks.same_training``
    uses them)."""
    basis: dict[tuple[int, int], TrainingBasis] = {}
    if any(not e.ok for e in result.executions):
        return basis
    pending: dict[tuple[int, int], tuple[DataSet, PackedArray]] = {}
    for e, ds in zip(result.executions, datasets, strict=False):
        if ds.key in basis or ds.key in pending:
            continue
        original = answers[ds.key].report
        packed = e.report.features if e.report else None
        if model_checks.same_features(e.report, original, exact=True) or (
                opts.strict
                and not model_checks.same_features(e.report, original)):
            basis[ds.key] = TrainingBasis(original, replayed=False,
                                          features=original.features)
            continue
        if packed is None:
            try:
                model_checks.recorded_features(e.report, spec.features.label)
            except model_checks.EvidenceError as exc:
                basis[ds.key] = TrainingBasis(None, replayed=True, why=str(exc))
            continue
        if packed.shape[:1] != (ds.n_samples,) or packed.ndim != 2:
            basis[ds.key] = TrainingBasis(None, replayed=True, why=(
                f"the features have shape {list(packed.shape)}, not one row per image"))
            continue
        pending[ds.key] = (ds, packed)
    replay = functools.partial(
        oracle.replay, spec.reference, spec.instrumentation(),
        threads=opts.threads, limits=opts.oracle_limits(),
        read_only=(PROBLEM_DATA,), executor=executor)
    if pending:
        say(f"grading {label}: replaying the original's training on the candidate's "
            f"features ({len(pending)} data set(s))")
        runs = await replay(list(pending.values()))
        for (key, (_, packed)), run in zip(pending.items(), runs, strict=True):
            basis[key] = (TrainingBasis(run.report or ExecutionReport(), replayed=True,
                                        features=packed) if run.ok else
                          TrainingBasis(None, replayed=True, why=(
                              f"the original's training failed on these features "
                              f"({run.error})")))
    if spec.model is not None:
        await measure_spread(result, datasets, basis, opts, say, label, replay)
        await shortcut_replays(spec, basis, datasets, replay)
    return basis

async def shortcut_replays(spec: TaskSpec, basis: dict[tuple[int, int], TrainingBasis],
                           datasets: list[DataSet],
                           replay: Callable[..., Awaitable[list[Execution]]]) -> None:
    """Whether each data set can tell training from a shortcut: the original's
    training on the same features, with no effect after a third of it
    (``SHORTCUT_FRACTION``: one epoch of three).  On features that leave the model
    nothing to learn after that (saturated, say), the shortcut ends where the full
    training does, and the weights prove nothing (``training_checks.same_training``)."""
    keys = [(key, b) for key, b in basis.items() if b.report is not None
            and b.features is not None]
    if not keys:
        return
    by_key = {ds.key: ds for ds in datasets}
    limit = max(1, int(spec.model.train_rows * SHORTCUT_FRACTION))
    runs = await replay([(by_key[key], b.features) for key, b in keys],
                        train_rows_limit=limit)
    for (_, b), run in zip(keys, runs, strict=True):
        with contextlib.suppress(model_checks.EvidenceError):
            b.shortcut = training_checks.final_weights(run.report if run.ok else None)

async def measure_spread(result: Measurement, datasets: list[DataSet],
                         basis: dict[tuple[int, int], TrainingBasis],
                         opts: GradingOptions, say: Callable[[str], None], label: str,
                         replay: Callable[..., Awaitable[list[Execution]]]) -> None:
    """The perturbed replays of each data set whose candidate weights land beyond
    the floor (honest files almost never do: nothing is replayed for them), in
    rounds: ``SPREAD``, then up to ``SPREAD_ROUNDS - 1`` rounds of ``MORE_SPREAD``
    while the candidate lies beyond the tolerance of every point so far (the branch
    an honest file took can be one replay in five)."""
    landed: dict[tuple[int, int], tuple[DataSet, dict[str, Any]]] = {}
    for e, ds in zip(result.executions, datasets, strict=False):
        b = basis.get(ds.key)
        if b is None or b.report is None or b.features is None or ds.key in landed:
            continue
        try:
            have = training_checks.final_weights(e.report)
            gap, _ = training_checks.weights_gap(have, training_checks.final_weights(b.report))
        except model_checks.EvidenceError:
            continue
        if gap > opts.weights_tolerance:
            landed[ds.key] = (ds, have)

    def apart(key: tuple[int, int]) -> bool:
        b = basis[key]
        cloud = [training_checks.final_weights(b.report), *b.replays]
        (nearest, _), allowed, _ = training_checks.near_the_cloud(
            landed[key][1], cloud, opts.weights_tolerance)
        return nearest > allowed

    for round_ in range(SPREAD_ROUNDS):
        pending = [key for key in landed if apart(key)]
        if not pending:
            return
        table = SPREAD if round_ == 0 else MORE_SPREAD
        wanted = [(key, p) for key in pending
                  for p in spread_perturbations(fresh_inputs.draw_seed(), table)]
        say(f"grading {label}: measuring how far honest training lands on "
            f"{len(pending)} data set(s) (the original's training with its arithmetic "
            f"perturbed in the last bits; round {round_ + 1} of at most {SPREAD_ROUNDS})")
        runs = await replay([(landed[key][0], basis[key].features) for key, _ in wanted],
                            perturbations=[p for _, p in wanted])
        for (key, _), run in zip(wanted, runs, strict=True):
            with contextlib.suppress(model_checks.EvidenceError):  # a failed one: nothing
                basis[key].replays.append(
                    training_checks.final_weights(run.report if run.ok else None))
