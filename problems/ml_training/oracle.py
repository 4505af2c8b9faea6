"""What the original pipeline does on a fresh data set, without running the original.

The slow pipeline takes minutes, so it cannot run once per data set.  The strict
reference solution makes the same random draws and computes the same functions, so on
any data set it gives the original's predictions (shown by ``tests/test_fresh_inputs.py``
on several seeds at small size, and by every baseline measurement: the harness compares
the baseline's predictions with the oracle's on the baseline's own seeds).

:func:`answer` reads the original's behaviour off a run of the reference on a data set:
the grader takes those runs from the strict-tier executions it times beside the
candidate (``SideBySide`` in ``timing.executor``), so they cost almost nothing
extra.  :func:`replay` runs it with another pipeline's features in place of its own: the
original's training on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sandbox
from problems.ml_training.execution_report import ExecutionReport, PackedArray, ProbeOutputs
from problems.ml_training.fresh_inputs import DataSet
from problems.ml_training.timing.executor import Execution, Executor, Instrumentation, measure


class OracleError(RuntimeError):
    """The reference could not be run on a data set (the harness's fault)."""


@dataclass
class OracleAnswer:
    """The original's behaviour on one data set."""

    dataset: DataSet
    predictions: list[int]
    accuracy: float
    probes: ProbeOutputs = field(default_factory=ProbeOutputs)
    # its weights and inputs
    report: ExecutionReport = field(default_factory=ExecutionReport, repr=False)


@dataclass(frozen=True)
class Perturbation:
    """Honest arithmetic, imitated in a replay: the features moved by ``feature_ulps``
    units in their last place (another order of sums in the extractor, float64 on the
    way), and each output of the model in training moved by up to ``output_ulps`` (another
    order of sums in the training: fused kernels, batched matrix products, a loss written
    out), from draws of their own seeded by ``seed`` (the run's own draws untouched)."""

    seed: int
    feature_ulps: int = 0
    output_ulps: int = 0

    def features(self, packed: PackedArray) -> PackedArray:
        return (perturbed(packed, self.seed, self.feature_ulps) if self.feature_ulps
                else packed)

    def job(self) -> dict[str, Any]:
        """What the runner's job carries for the training outputs (nothing when they
        are left alone)."""
        return ({"output_jitter": {"seed": self.seed, "ulps": self.output_ulps}}
                if self.output_ulps else {})


async def replay(reference: Path, inst: Instrumentation,
                 jobs: list[tuple[DataSet, PackedArray]], *,
                 threads: int, limits: sandbox.Limits, read_only: tuple[Path, ...],
                 executor: Executor | None = None,
                 train_rows_limit: int | None = None,
                 perturbations: Sequence[Perturbation] | None = None) -> list[Execution]:
    """The original's training replayed on other features: for each (data set,
    features), the reference is run on the data set with the features (packed as the
    runner packs them) in place of its own extractor's output, so its trained weights
    are what the original's training, with the original's random draws, makes of them.
    With ``train_rows_limit``, a shortcut of it: training has no effect after that many
    rows (the runner cuts the model's training outputs from its parameters), every draw
    as the original makes it.  With ``perturbations`` (one per job), each replay's
    arithmetic is perturbed so (:class:`Perturbation`).  The executions, in the order of
    ``jobs``."""
    if not jobs:
        return []
    if perturbations is not None and len(perturbations) != len(jobs):
        raise ValueError(f"{len(perturbations)} perturbations for {len(jobs)} replays")
    limit = {} if train_rows_limit is None else {"train_rows_limit": train_rows_limit}
    data = []
    for k, (ds, packed) in enumerate(jobs):
        p = perturbations[k] if perturbations is not None else Perturbation(0)
        data.append(dict(ds.job(), features=p.features(packed).to_json(), **p.job(),
                         **limit))
    result = await measure(reference, inst, repeats=len(jobs), threads=threads,
                           limits=limits, read_only=read_only, keep_going=lambda e: True,
                           data=data, executor=executor)
    return list(result.executions)


def perturbed(packed: PackedArray, seed: int, ulps: int = 1) -> PackedArray:
    """The same features with every element moved by ``ulps`` units in its last place,
    up or down at random: what honest arithmetic (another order of sums, float64 on the
    way) changes in them.  Training on them shows how far honest training can land from
    the replay on this data set."""
    moved = np.frombuffer(packed.data, dtype=np.float32).reshape(packed.shape)
    up = np.random.RandomState(seed % 2**32).rand(*moved.shape) < 0.5
    toward = np.where(up, np.float32(np.inf), np.float32(-np.inf))
    for _ in range(ulps):
        moved = np.nextafter(moved, toward)
    return PackedArray.of(moved)


def answer(ds: DataSet, run: Execution) -> OracleAnswer:
    predictions = list(run.report.eval_predictions) if run.report else []
    accuracy = ds.accuracy(predictions)
    if not run.ok or accuracy is None:
        raise OracleError(f"the reference solution failed on a fresh data set: "
                          f"{run.error or 'its predictions do not cover the test rows'}\n"
                          f"{run.stderr_tail[-1500:]}")
    return OracleAnswer(ds, predictions, accuracy, run.probes or ProbeOutputs(),
                        run.report or ExecutionReport())


def agreement(a: list[int], b: list[int]) -> float:
    """The fraction of test rows on which two sets of predictions agree."""
    if not a or len(a) != len(b):
        return 0.0
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
