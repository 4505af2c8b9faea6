"""What an ML-training task is, and how a grading of it is set: :class:`TaskSpec` and
:class:`GradingOptions`.

A problem of the family is one :class:`TaskSpec` value (``declarations/``): its files, the
names it must keep, its output contract, the probes the runner watches and how its
data is drawn.  :class:`GradingOptions` are how a grading measures and judges; the
user's choices leave the task's own defaults (its target rule and its accuracy
tolerance) as ``None``, and :meth:`GradingOptions.resolved` fills them in, the one
place where that happens.  Measuring and judging are the other modules' jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import sandbox
from problem import GraderError, GradingChoices
from problems.ml_training import calibration, fresh_inputs, probes
from problems.ml_training.timing.executor import Instrumentation

PROJECT_ROOT = sandbox.PROJECT_ROOT
PROBLEM_DATA = PROJECT_ROOT / "problem_data"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
ORACLE_TIMEOUT = 300.0  # seconds for the reference on one data set (it needs about 4)
SEMANTICS = ("seed", "strict")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TaskSpec:
    """One ML-training task: its files, the names it must keep, its output contract,
    the components the runner watches (``probes``), how its data is drawn and split
    (``recipe``) and its defaults."""

    name: str
    summary: str  # one line for `main.py problems`
    baseline: Path
    required_imports: tuple[str, ...]
    required_classes: tuple[str, ...]
    entry: str
    output_patterns: tuple[str, ...]
    probes: tuple[probes.Probe, ...]
    reference: Path  # the strict reference: the oracle, the strict tier, the ceiling's basis
    n_samples: int = 3000
    recipe: fresh_inputs.Recipe = fresh_inputs.COMPLEX_RECIPE
    optimized_name: str = "optimized_ml_training.py"
    extra_tiers: tuple[tuple[str, Path], ...] = ()  # calibration tiers below strict
    preload: tuple[str, ...] = ()  # imported before the timed region, beside the probes'
    default_target: str = calibration.DEFAULT_TARGET_RULE
    accuracy_tolerance: float = 0.05
    # what seed mode keeps of the training, in the prompt's words
    training: str = ""

    @property
    def tiers(self) -> dict[str, Path]:
        """The calibration ladder's reference solutions, slowest first."""
        return {**dict(self.extra_tiers), calibration.STRICT_TIER: self.reference}

    @property
    def data(self) -> probes.DataFunction:
        return probes.of_kind(self.probes, probes.DataFunction)

    @property
    def features(self) -> probes.RowsThrough:
        return probes.of_kind(self.probes, probes.RowsThrough)

    @property
    def model(self) -> probes.TorchModule | None:
        return probes.of_kind(self.probes, probes.TorchModule)

    @property
    def estimator(self) -> probes.Estimator | None:
        return probes.of_kind(self.probes, probes.Estimator)

    @property
    def scored(self) -> probes.EvalPredictions:
        return probes.of_kind(self.probes, probes.EvalPredictions)

    @property
    def predictor(self) -> str:
        """The class whose eval predictions are scored."""
        return self.scored.source

    @property
    def data_function(self) -> str:
        return self.data.name

    def instrumentation(self) -> Instrumentation:
        """What the runner wraps in each execution, derived from the probes."""
        return probes.instrumentation(self.entry, self.probes, self.preload)

    def probe_job(self, seed: int) -> dict[str, Any]:
        """Strict mode's inputs for each declared component."""
        return fresh_inputs.probe_job(seed, self.model, self.recipe.image_shape)


def training_batches(train_rows: int, epochs: int, batch_size: int) -> dict[int, int]:
    """A training loop's optimisation steps, by batch size, over all epochs."""
    full, rest = divmod(train_rows, batch_size)
    batches = {batch_size: full * epochs} if full else {}
    if rest:
        batches[rest] = epochs
    return batches


@dataclass(frozen=True)
class GradingOptions(GradingChoices):
    """How a grading measures and judges: the user's choices (``problem.GradingChoices``,
    whose defaults are stated there) and the grader's own settings.  ``None`` is the
    task's own default (its target rule, its accuracy tolerance): :meth:`resolved`
    fills it in."""

    accuracy_tolerance: float | None = None  # below the original's accuracy on the same data
    accuracy_upper_margin: float = 0.3  # above it: implausible (reading the answers)
    strict_rtol: float = 1e-4  # strict mode: component outputs against the original's
    strict_atol: float = 1e-5
    weights_tolerance: float = 1e-3  # trained weights, of each tensor's scale
    timeout: float = 600.0
    memory_bytes: int = 6 * sandbox.GIB
    plausibility_factor: float = 3.0  # ceiling = factor x the reference's speedup
    max_repeats: int = 20  # executions at most (short runs, a straddling interval)
    min_timed_seconds: float = 4.0  # a fast candidate's executions add up to this much
    # The ladder measures until each tier's interval is within ±ladder_width (when at
    # least 3 executions were asked for), the baseline up to ladder_max_repeats times.
    ladder_width: float = 0.03
    ladder_max_repeats: int = 9

    @classmethod
    def of(cls, choices: GradingChoices | None) -> GradingOptions:
        """The grader's settings with the user's ``choices``."""
        given = choices or GradingChoices()
        return cls(**{f.name: getattr(given, f.name) for f in fields(GradingChoices)})

    def resolved(self, spec: TaskSpec) -> GradingOptions:
        """These options with the task's own defaults where they say ``None``."""
        return replace(
            self,
            target=spec.default_target if self.target is None else self.target,
            accuracy_tolerance=(spec.accuracy_tolerance if self.accuracy_tolerance is None
                                else self.accuracy_tolerance))

    @property
    def strict(self) -> bool:
        return self.semantics == "strict"

    def limits(self, timeout: float | None = None) -> sandbox.Limits:
        """A candidate execution's limits (``timeout``: default the options')."""
        return sandbox.Limits(timeout=self.timeout if timeout is None else timeout,
                              memory_bytes=self.memory_bytes)

    def oracle_limits(self) -> sandbox.Limits:
        """The reference's limits: never shorter than it needs, whatever the candidate
        is given."""
        return self.limits(max(self.timeout, ORACLE_TIMEOUT))



def check_isolation(opts: GradingOptions) -> str:
    """The isolation gradings run under; refuses 'none' unless the user allowed it."""
    isolation = sandbox.best_isolation()
    if isolation == "none" and not opts.allow_unsandboxed:
        raise GraderError(sandbox.REFUSAL)
    return isolation
