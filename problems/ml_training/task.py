"""The ML-training optimisation problem: make a slow pipeline fast without changing it.

:class:`MLTrainingOptimizationProblem` is generic over a :class:`TaskSpec` (baseline
file, required names, output contract, workload); :class:`ComplexMLTrainingWithProfiler`
is the flagship configuration over ``problem_data/slow_ml_training_complex.py``.

``grade`` applies the static checks, then measures baseline and candidate with the
same protocol (``problems.ml_training.measurement``) and judges every figure it measured itself.
Progress goes to an optional callback; nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import math
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import safe_files
import sandbox
from problem import Check, DataGuard, GraderError, GradeResult, Knob, Problem
from problems.ml_training import (
    calibration,
    fresh_inputs,
    model_checks,
    oracle,
    probes,
    runtime_checks,
    static_checks,
)
from problems.ml_training.execution_report import ExecutionReport, PackedArray
from problems.ml_training.fresh_inputs import DataSet
from problems.ml_training.measurement import (
    BaselineCache,
    CachedMeasurement,
    Execution,
    Executor,
    Instrumentation,
    Lookup,
    Measurement,
    SideBySide,
)
from problems.ml_training.runtime_checks import ACCURACY_RE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROBLEM_DATA = PROJECT_ROOT / "problem_data"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
MAX_CANDIDATE_BYTES = 1_000_000
# strict-tier executions before and after each baseline execution (they are short, it is
# long: several spread the snapshot of the machine's speed they take)
BASELINE_ANCHORS = 4
# a tier is measured once per machine and cached: it gets this many times a grading's
# timed work (the vectorized tier: about 10 executions instead of 3)
TIER_TIMED_FACTOR = 4
ORACLE_TIMEOUT = 300.0  # seconds for the reference on one data set (it needs about 4)

Progress = Callable[[str], None]


def options_for(spec: TaskSpec, grading: dict[str, Any] | None = None) -> GradingOptions:
    """Grading options with the task's own defaults (its target rule and accuracy
    tolerance) under what the user set (``grading``: GradingOptions' fields)."""
    return GradingOptions(**{"target": spec.default_target,
                             "accuracy_tolerance": spec.accuracy_tolerance, **(grading or {})})


def check_isolation(opts: GradingOptions) -> str:
    """The isolation gradings run under; refuses 'none' unless the user allowed it."""
    isolation = sandbox.best_isolation()
    if isolation == "none" and not opts.allow_unsandboxed:
        raise GraderError("no sandbox is available on this machine (bubblewrap, or root "
                          "with unshare and setpriv): candidates would run with the harness's "
                          "privileges. Install bubblewrap (apt-get install bubblewrap), or "
                          "pass --unsafe-no-sandbox to grade anyway.")
    return isolation


@dataclass(frozen=True)
class TaskSpec:
    """One ML-training task: its files, the names it must keep, its output contract,
    the components the runner watches (``probes``, from ``problems.ml_training.probes``), how its
    data is drawn and split (``recipe``) and its defaults."""

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


def training_batches(train_rows: int, epochs: int, batch_size: int) -> dict[int, int]:
    """A training loop's optimisation steps, by batch size, over all epochs."""
    full, rest = divmod(train_rows, batch_size)
    batches = {batch_size: full * epochs} if full else {}
    if rest:
        batches[rest] = epochs
    return batches


@dataclass(frozen=True)
class GradingOptions:
    """How a grading measures and judges.  Defaults are the seed's."""

    target: str | float = calibration.DEFAULT_TARGET_RULE  # a rule: 33, vectorized, 0.9*strict
    relative_target: float | None = None  # another spelling of the rule F*strict
    semantics: str = "seed"  # or "strict": every component computes the original's function
    accuracy_tolerance: float = 0.05  # below the original's accuracy on the same data
    accuracy_upper_margin: float = 0.3  # above it: implausible (reading the answers)
    strict_rtol: float = 1e-4  # strict mode: component outputs against the original's
    strict_atol: float = 1e-5
    weights_tolerance: float = 1e-3  # trained weights, of each tensor's scale
    repeats: int = 3
    baseline_repeats: int = 3
    threads: int = 1
    timeout: float = 600.0
    memory_bytes: int = 6 * sandbox.GIB
    plausibility_factor: float = 3.0  # ceiling = factor x the reference's speedup
    max_repeats: int = 20  # executions at most (short runs, a straddling interval)
    min_timed_seconds: float = 4.0  # a fast candidate's executions add up to this much
    use_cache: bool = True
    allow_unsandboxed: bool = False  # grade even where no isolation is available


@dataclass
class _Figures:
    baseline: CachedMeasurement
    reference_speedup: float  # the strict tier's
    target: float
    ceiling: float
    ladder: calibration.Ladder | None = None
    rule: str = ""


SEMANTICS = ("seed", "strict")
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


# What the prompt says of compiled training (issue 25's torch.compile variant: compiled
# kernels draw their dropout masks from a generator of their own by default).
COMPILED_DRAWS = ("Compiled code must draw as eager PyTorch does: torch.compile draws "
                  "dropout masks its own way unless `torch._inductor.config.fallback_random "
                  "= True`.")


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


_BULKY_REPORT_KEYS = ("eval_predictions", "eval_inputs", "eval_weights", "features",
                      "eval_logits", "model_probe_votes")


def _first_failure(checks: list[Check]) -> Check:
    """One check over every execution: the first that failed, else the first."""
    return next((c for c in checks if not c.passed), checks[0])


HEARTBEAT_SECONDS = 30.0  # a progress line this often while one execution runs


@contextlib.asynccontextmanager
async def _heartbeat(say: Progress, text: str,
                     every: float | None = None) -> AsyncIterator[None]:
    """Say ``text`` with the time so far every ``every`` seconds until the block ends
    (a 2-minute baseline execution is otherwise silent)."""
    started = time.monotonic()
    every = HEARTBEAT_SECONDS if every is None else every

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            say(f"{text} ({time.monotonic() - started:.0f} s so far)")

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _short_run_count(seconds: float, repeats: int, opts: GradingOptions,
                     budget: float | None = None) -> int:
    """How many executions a file whose runs take ``seconds`` gets: at least ``repeats``,
    more until about ``budget`` (default ``opts.min_timed_seconds``) of timed work, at
    most ``max_repeats``."""
    budget = opts.min_timed_seconds if budget is None else budget
    if seconds <= 0 or budget <= 0:
        return repeats
    return max(repeats, min(opts.max_repeats, math.ceil(budget / seconds)))


class MLTrainingOptimizationProblem(Problem):
    name = "ml_training_optimization"
    data_dir = PROBLEM_DATA

    def __init__(self, spec: TaskSpec, options: GradingOptions = GradingOptions(), *,
                 include_profiler: bool = True, include_intermediate_answer: bool = True,
                 cache: BaselineCache | None = None, progress: Progress | None = None):
        self.spec = spec
        self.options = options
        self.include_profiler = include_profiler
        self.include_intermediate_answer = include_intermediate_answer
        self.cache = cache or BaselineCache()
        self.progress = progress or (lambda message: None)
        self._figures: _Figures | None = None
        self.baseline_executions = 0  # how many times this instance ran the baseline

    # ---- the contract ----------------------------------------------------------------
    def knobs(self) -> list[Knob]:
        return [Knob("n_samples", self.spec.n_samples, "images in the data set"),
                Knob("target", self.spec.default_target,
                     "what passes: a speedup, a tier or a fraction of one"),
                Knob("accuracy_tolerance", self.spec.accuracy_tolerance,
                     "how far below the original's accuracy on the same data still passes"),
                Knob("max_steps", self.max_steps, "model calls per run"),
                Knob("tools", ", ".join(self.tool_names()),
                     "--no-profiler and --no-intermediate remove two")]

    def tier_names(self) -> list[str]:
        return list(self.spec.tiers)

    def default_target(self) -> str:
        return self.spec.default_target

    async def prepare(self) -> dict[str, Any]:
        figures = await self.figures()
        return {"time_median_s": round(figures.baseline.median, 3),
                "times_s": [round(t, 3) for t in figures.baseline.times],
                "accuracy": figures.baseline.accuracy,
                "oracle_agreement": figures.baseline.oracle_agreement,
                "reference_speedup": figures.reference_speedup,
                "target": figures.target, "target_rule": figures.rule,
                "speedup_ceiling": figures.ceiling,
                "ladder": figures.ladder.to_json() if figures.ladder else None}

    def cached_baseline_time(self) -> float | None:
        opts = self.options
        key = self._cache_key(self.spec.baseline, "baseline", opts)
        found = self.cache.load(key, min_runs=opts.baseline_repeats).found
        return found.median if found else None

    def scripted_turns(self, tool_names: set[str]) -> list[list[dict[str, Any]]]:
        baseline = (self.spec.baseline.relative_to(PROJECT_ROOT)
                    if self.spec.baseline.is_relative_to(PROJECT_ROOT) else self.spec.baseline)
        name = self.spec.optimized_name

        def turn(text: str, tool: str, **arguments: Any) -> list[dict[str, Any]]:
            return [{"type": "text", "text": text},
                    {"type": "tool_use", "name": tool, "input": arguments}]

        turns = [turn("Let me read the pipeline first.", "read_file", path=str(baseline)),
                 turn("The Python loops are the obvious costs. Writing a vectorised version "
                      "that keeps the semantics.", "write_file", path=name,
                      content=self.spec.reference.read_text())]
        if "profile_tool" in tool_names:
            turns.append(turn("Profiling the new version.", "profile_tool", path=name))
        if "submit_intermediate_answer" in tool_names:
            turns.append(turn("Checking it against the grader.", "submit_intermediate_answer",
                              path=name))
        return turns + [turn("Submitting.", "submit_answer", path=name)]

    # ---- what the agent sees -------------------------------------------------------
    def tool_names(self) -> list[str]:
        names = ["read_file", "write_file", "python_expression"]
        if self.include_profiler:
            names.append("profile_tool")
        if self.include_intermediate_answer:
            names.append("submit_intermediate_answer")
        return names + ["submit_answer"]

    def prompt(self, workspace: Path) -> str:
        spec, opts = self.spec, self.options
        rel = workspace.relative_to(PROJECT_ROOT) if workspace.is_relative_to(
            PROJECT_ROOT) else workspace
        baseline = (spec.baseline.relative_to(PROJECT_ROOT)
                    if spec.baseline.is_relative_to(PROJECT_ROOT) else spec.baseline)
        target = (f"at least {self._figures.target:.1f}x faster" if self._figures is not None
                  else f"as fast as the target ({self.target_rule(opts).text}) requires")
        steps = [
            f"1. Read `{baseline}` (read_file) to understand the pipeline.",
        ]
        if self.include_profiler:
            steps.append(f"{len(steps) + 1}. Profile it (profile_tool) to find the real "
                         "bottlenecks; the full slow pipeline takes minutes under the profiler.")
        steps.append(f"{len(steps) + 1}. Write your optimised version to `{rel}/"
                     f"{spec.optimized_name}` (write_file). You may run code with "
                     "python_expression.")
        if self.include_intermediate_answer:
            steps.append(f"{len(steps) + 1}. Check it with submit_intermediate_answer: it is "
                         "graded exactly like a final answer and you get the figures and any "
                         "failing checks back, without ending the task.")
        steps.append(f"{len(steps) + 1}. Submit the file with submit_answer. This ends the "
                     "task.")
        watched, semantics = self._rules(opts)
        return "\n".join([
            f"Optimise the training pipeline in `{baseline}` so that it runs {target} "
            "than the original, with the same model quality.",
            "",
            "Rules the grader enforces:",
            f"- Keep the names `{'`, `'.join(spec.required_classes)}`, `{spec.data_function}()` "
            f"and the entry function `{spec.entry}()`, defined at module top level; import "
            f"{', '.join(spec.required_imports)}.",
            f"- Fresh data: every execution gets a new data set of the same shape through "
            f"`{spec.data_function}()` (the grader replaces it), with labels that depend on "
            "the images; the model is scored on test labels your code never sees. Nothing "
            "about the data can be computed ahead of time. Call it exactly as the original "
            "does.",
            *watched,
            *semantics,
            "- Same split; keep the printed lines (feature shape, split sizes, "
            "`Test accuracy: x.xxxx`, `FINAL_TIME: s`). Results must be deterministic.",
            "- Each execution runs sandboxed in a fresh process: one CPU (extra threads or "
            "worker processes add no speed), no network, and a private scratch directory "
            "that is discarded afterwards, so nothing can be cached between executions. "
            "The grader's clock runs outside your process. Only your .py file is graded: "
            "compiled extensions and files beside it are not available to it.",
            "",
            "Suggested steps:",
            *steps,
            "",
            f"Your working directory is `{rel}`.",
        ])

    def _rules(self, opts: GradingOptions) -> tuple[list[str], list[str]]:
        """The prompt's rules about the watched components and the semantics mode, in
        the words of the declared probes."""
        spec = self.spec
        feat, model, est = spec.features, spec.model, spec.estimator
        n_test = spec.scored.rows
        if model is not None:
            layers = sorted({k.split(".")[0] for k in model.weights})
            work = (f"`{model.cls}` must be trained on {model.train_rows} rows in total (all "
                    "epochs, gradients flowing back through its output) and, in eval mode, "
                    f"called on the {n_test} test rows in their original order.")
            scored = (f"- The grader computes the model's test predictions itself, from the "
                      f"weights `{model.cls}` has in eval mode and the inputs it is called on: "
                      f"keep its layers (`{'`, `'.join(layers)}`) and architecture, and call it "
                      f"in eval mode on the features `{feat.method}` computed for the test "
                      "images. Features must depend on the images alone.")
        else:
            params = ", ".join(f"{k}={v!r}" for k, v in est.params.items())
            work = (f"`{est.cls}` (scikit-learn) must be fitted on the {est.fit_rows} "
                    f"training rows and predict the {n_test} test rows in their original "
                    "order.")
            scored = (f"- The test predictions scored are what `{est.cls}.predict` returns "
                      f"on the features `{feat.method}` computed for the test images; keep "
                      f"the estimator as the original configures it ({params}). Features "
                      "must depend on the images alone. Inside the pipeline's first `predict` "
                      "after each fit, the grader also asks the fitted estimator about rows "
                      "of its own across the data's range: its answers must be the original "
                      "model's, fitted in full on the same rows.")
        watched = [f"- The grader times `{spec.entry}()` itself in a fresh process and watches "
                   f"the work: `{feat.label}` must process all {feat.rows} images, and {work}",
                   scored, probes.calls_rule(spec.probes)]
        if opts.semantics == "strict":
            parts = [f"`{feat.cls}().{feat.method}` (normalisation included)"]
            if model is not None:
                parts += [f"`{model.cls}`'s `{name}`" for name in model.submodules]
                parts.append(f"its forward pass with weights it loads into "
                             f"`{'`, `'.join(sorted({k.split('.')[0] for k in model.weights}))}`")
            text = ("- Semantics: strict. Each component must compute the same function as "
                    f"the original: the grader calls {', '.join(parts)} on inputs of its own, "
                    "and compares the outputs with the original's (relative tolerance "
                    f"{opts.strict_rtol:g}); it also compares what the pipeline itself "
                    "computed in the timed run (the features of its images"
                    + (", the model's eval-mode outputs" if model is not None else "")
                    + ") with the original's function of the same inputs. ")
            if model is not None:
                text += ("Training must make the same random draws in the same order, so that "
                         "the trained weights match the original's on the same data (within "
                         f"{opts.weights_tolerance:g} of each tensor's scale, or as far as the "
                         "grader's own replays with the last bits perturbed land apart). "
                         + COMPILED_DRAWS + " ")
            semantics = [text + "Make the same computation fast; do not change the algorithm."]
        else:
            text = ("- Semantics: seed. You may change how a component computes (a different "
                    "normalisation, say) as long as the model's quality holds: its accuracy "
                    f"on fresh data must stay within {opts.accuracy_tolerance:g} of what the "
                    "original reaches on the same data. ")
            if model is not None:
                text += (f"The model and its training must stay the original's: "
                         f"{spec.training}, with the same random draws in the same order. The "
                         "grader replays the original's training on your features and your "
                         f"trained weights must match it (within {opts.weights_tolerance:g} "
                         "of each tensor's scale, or as far as the grader's own replays with "
                         "the last bits perturbed land apart): make the training fast, do "
                         "not change what it computes. " + COMPILED_DRAWS)
            else:
                text += (f"The model must stay the original's: {spec.training}, with every "
                         "other parameter as the original leaves it, fitted on the same "
                         "training rows. The grader fits the original's estimator on your "
                         "features and your test predictions must be its predictions.")
            semantics = [text]
        return watched, semantics

    def fallback_candidates(self, workspace: Path) -> list[Path]:
        """Regular .py files of the run directory, the expected name first, then the
        latest changed.  Listed without following a link (``safe_files.walk``: the
        agent's code can plant one pointing at a file it cannot read); the batch reads
        the one it grades the same way."""
        entries, _ = safe_files.walk(workspace)
        files = [e for e in entries if e.is_file and e.rel.suffix == ".py"]
        preferred = [e for e in files if e.rel == PurePosixPath(self.spec.optimized_name)]
        others = sorted((e for e in files if e not in preferred), key=lambda e: e.mtime,
                        reverse=True)
        return [workspace / e.rel for e in preferred + others]

    # ---- measurement -----------------------------------------------------------------
    def _instrumentation(self) -> Instrumentation:
        return probes.instrumentation(self.spec.entry, self.spec.probes, self.spec.preload)

    def probe_job(self, seed: int) -> dict[str, Any]:
        """Strict mode's inputs for each declared component."""
        return fresh_inputs.probe_job(seed, self.spec.model, self.spec.recipe.image_shape)

    def _limits(self, timeout: float) -> sandbox.Limits:
        return sandbox.Limits(timeout=timeout, memory_bytes=self.options.memory_bytes)

    def _oracle_limits(self, opts: GradingOptions) -> sandbox.Limits:
        return self._limits(max(opts.timeout, ORACLE_TIMEOUT))  # not the candidate's

    def _datasets(self, count: int) -> list[DataSet]:
        """Fresh data sets for ``count`` executions, in a random order.  With two or
        more, one data set is used twice, so that determinism can be judged; with three
        or more, its images are used once more under other labels, so that the features
        can be shown to depend on the images alone.  Every further execution gets fresh
        images.  No execution can tell which one it is."""
        n, recipe = self.spec.n_samples, self.spec.recipe
        first = fresh_inputs.make_dataset(fresh_inputs.draw_seed(), n, recipe=recipe)
        datasets = [first, first,
                    fresh_inputs.make_dataset(first.seed, n, labelling=1, recipe=recipe)]
        datasets += [fresh_inputs.make_dataset(fresh_inputs.draw_seed(), n, recipe=recipe)
                     for _ in range(count - len(datasets))]
        datasets = datasets[:max(0, count)]
        random.SystemRandom().shuffle(datasets)
        return datasets

    def _cache_key(self, path: Path, label: str, opts: GradingOptions) -> dict[str, Any]:
        """Where ``path``'s measurement beside the strict tier is cached."""
        return self.cache.key(path, threads=opts.threads, label=label,
                              anchor=self.spec.reference)

    async def _measure_beside(self, path: Path, label: str, repeats: int,
                              opts: GradingOptions, *, around: int,
                              short_runs: bool = False) -> CachedMeasurement:
        """``path``'s executions side by side with the strict tier's (the anchor: A P A P
        ... A, ``around`` anchor executions in each gap), on fresh data sets, cached.
        With ``short_runs``, a fast file gets more executions, up to
        ``opts.min_timed_seconds`` of timed work (at most ``opts.max_repeats``)."""
        anchor = self.spec.reference
        key = self._cache_key(path, label, opts)
        found, refused = self.cache.load(key, min_runs=repeats) if opts.use_cache else Lookup()
        if refused:
            self.progress(f"{label}: the cached measurement was refused ({refused}); "
                          "measuring again")
        if found is not None:
            self.progress(f"{label}: cached, median {found.median:.2f} s "
                          f"({len(found.times)} runs beside the strict tier)")
            return found
        self.progress(f"{label}: measuring {path.name} ({repeats} timed runs, each between "
                      f"runs of the strict tier)...")
        if label == "baseline":
            self.baseline_executions += repeats
        inst = self._instrumentation()
        datasets: list[DataSet] = []
        wanted = repeats
        async with (Executor(anchor, inst, threads=opts.threads,
                             limits=self._oracle_limits(opts),
                             read_only=(PROBLEM_DATA,)) as strict,
                    Executor(path, inst, threads=opts.threads,
                             limits=self._limits(opts.timeout),
                             read_only=(PROBLEM_DATA,)) as own):
            pairs = SideBySide(own, strict, around=around)
            while len(pairs.subject) < wanted:
                datasets.append(fresh_inputs.make_dataset(
                    fresh_inputs.draw_seed(), self.spec.n_samples, recipe=self.spec.recipe))
                async with _heartbeat(self.progress, f"{label}: timed execution "
                                      f"{len(pairs.subject) + 1}/{wanted} running"):
                    e = await pairs.step(datasets[-1].job())
                shown = f"{e.time:.2f} s" if e.ok else e.error
                self.progress(f"{label}: timed execution {len(pairs.subject)}/{wanted}: "
                              f"{shown}")
                if not e.ok:
                    break
                if short_runs and len(pairs.subject) == 1 and e.time:
                    wanted = _short_run_count(e.time, repeats, opts,
                                              TIER_TIMED_FACTOR * opts.min_timed_seconds)
            await pairs.close(datasets[-1].job())
        executions = pairs.subject
        failed = [e for e in executions + pairs.anchor_runs() if not e.ok]
        predictions = [list(e.report.eval_predictions) if e.report else None
                       for e in executions]
        accuracies = [ds.accuracy(p) for ds, p in zip(datasets, predictions, strict=True)]
        if failed or None in accuracies:
            detail = failed[0].error + "\n" + failed[0].stderr_tail if failed else (
                "its predictions do not cover the test rows")
            raise GraderError(f"the {label} ({path}) could not be measured beside the "
                              f"strict tier: {detail}")
        agreement: list[float] = []
        if label == "baseline":
            # Every baseline measurement checks the oracle: on the baseline's own data sets
            # the reference (the anchor runs just before each) must predict exactly what
            # the original predicted.
            answers = self._answers(pairs, datasets)
            agreement = [oracle.agreement(answers[ds.key].predictions, p)
                         for ds, p in zip(datasets, predictions, strict=True)]
            if min(agreement) < 1.0:
                self.progress(f"[yellow]warning[/yellow]: the oracle agrees with the original "
                              f"on only {min(agreement):.1%} of test predictions")
        found = CachedMeasurement(
            times=[e.time for e in executions], accuracy=statistics.mean(accuracies),
            key=key, oracle_agreement=agreement, units=pairs.units(),
            anchor_times=[t for group in pairs.anchor_times() for t in group])
        self.cache.store(found)
        return found

    @staticmethod
    def _answers(pairs: SideBySide, datasets: list[DataSet]
                 ) -> dict[tuple[int, int], oracle.OracleAnswer]:
        """The oracle's answers, from the anchor runs (each ran on a data set of
        ``datasets``; the first on each is kept, and the very first carries strict
        mode's probes).  An anchor that failed is the harness's fault: a GraderError."""
        by_key = {ds.key: ds for ds in datasets}
        answers: dict[tuple[int, int], oracle.OracleAnswer] = {}
        try:
            for run in pairs.anchor_runs():
                ds = by_key[(run.seed, run.labelling)]
                answers.setdefault(ds.key, oracle.answer(ds, run))
        except oracle.OracleError as exc:
            raise GraderError(str(exc)) from exc
        return answers

    def target_rule(self, opts: GradingOptions | None = None) -> calibration.TargetRule:
        opts = opts or self.options
        text = f"{opts.relative_target:g}*strict" if opts.relative_target else str(opts.target)
        return calibration.TargetRule.parse(text, list(self.spec.tiers))

    async def _measure_baseline(self, opts: GradingOptions) -> CachedMeasurement:
        return await self._measure_beside(self.spec.baseline, "baseline",
                                          opts.baseline_repeats, opts,
                                          around=BASELINE_ANCHORS)

    async def ladder(self, opts: GradingOptions | None = None,
                     baseline: CachedMeasurement | None = None) -> calibration.Ladder:
        """The baseline and every tier, each measured side by side with the strict tier
        on first need (cached): speedups are chained ratios (``calibration.Ladder``)."""
        opts = opts or self.options
        check_isolation(opts)
        if baseline is None:
            baseline = await self._measure_baseline(opts)
        ladder = calibration.Ladder(baseline.times, baseline.units)
        for name, path in self.spec.tiers.items():
            if name == calibration.STRICT_TIER:
                # the anchor itself: one unit by definition; its seconds as measured
                # beside the baseline
                ladder.add(name, baseline.anchor_times, [1.0] * len(baseline.anchor_times))
                continue
            tier = await self._measure_beside(path, f"tier-{name}", opts.repeats, opts,
                                              around=1, short_runs=True)
            ladder.add(name, tier.times, tier.units)
        return ladder

    async def figures(self, opts: GradingOptions | None = None) -> _Figures:
        """Baseline, tiers and the resolved target, measured on first need."""
        opts = opts or self.options
        if self._figures is not None and opts == self.options:
            return self._figures
        rule = self.target_rule(opts)
        check_isolation(opts)
        baseline = await self._measure_baseline(opts)
        ladder = await self.ladder(opts, baseline)
        reference_speedup = ladder.speedup(calibration.STRICT_TIER)
        figures = _Figures(baseline, reference_speedup, rule.resolve(ladder),
                           opts.plausibility_factor * reference_speedup, ladder, rule.text)
        if opts == self.options:
            self._figures = figures
        return figures

    # ---- grading ---------------------------------------------------------------------
    def _static(self, candidate: Path) -> tuple[list[Check], bool]:
        try:  # the file itself is not followed if it is a link, nor waited on if a FIFO
            data = safe_files.read_bytes(candidate.parent, candidate.name,
                                         MAX_CANDIDATE_BYTES)
        except FileNotFoundError:
            return [Check("candidate_readable", False, f"no file at {candidate}")], False
        except OSError as exc:
            why = (f"the file is larger than {MAX_CANDIDATE_BYTES} bytes"
                   if exc.errno == errno.EFBIG else f"cannot read it: {exc.strerror or exc}")
            return [Check("candidate_readable", False, why)], False
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [Check("candidate_readable", False,
                          f"the file is not UTF-8 text ({type(exc).__name__})")], False
        checks = [Check("candidate_readable", True, "the file is readable text")]
        tree, parsed = static_checks.parse(source, candidate.name)
        checks.append(parsed)
        if tree is None:
            return checks, False
        s = self.spec
        checks += [
            static_checks.required_imports(tree, s.required_imports),
            static_checks.required_definitions(tree, s.required_classes,
                                               [s.entry, s.data_function]),
            static_checks.advisories(tree),
        ]
        return checks, not any(c.decisive_failure for c in checks)

    async def grade(self, candidate: Path, *, options: GradingOptions | None = None,
                    progress: Progress | None = None, **_: Any) -> GradeResult:
        """Grade ``candidate``; ``progress`` (default: the problem's) sees each execution."""
        opts = options or self.options
        say = progress or self.progress
        check_isolation(opts)
        checks, runnable = self._static(Path(candidate))
        if not runnable:
            return GradeResult(passed=False, checks=checks, details={"executed": False})
        figures = await self.figures(opts)
        base = figures.baseline
        guard = DataGuard(PROBLEM_DATA)
        tampered: list[str] = []

        def after_each() -> None:
            tampered.extend(guard.restore())

        def keep_going(e: Execution, units: list[float]) -> bool:
            """Not when it crashed or runs far below the target: side by side when the
            ladder has units (a slow spell of the machine is not the candidate's)."""
            if not e.ok or e.time is None:
                return False
            lad = figures.ladder
            if lad is not None and lad.baseline_units and units:
                speedup = statistics.median(lad.baseline_units) / units[-1]
            else:
                speedup = base.median / e.time
            return speedup >= figures.target / 2

        def report(i: int, n: int, e: Execution) -> None:
            shown = f"{e.time:.3f} s" if e.ok else e.error
            say(f"grading {Path(candidate).name}: timed execution {i}/{n}: {shown}")

        datasets = self._datasets(opts.repeats)
        strict_probes = (self.probe_job(fresh_inputs.draw_seed())
                         if opts.semantics == "strict" else None)
        say(f"grading {Path(candidate).name}: {len(datasets)} timed execution(s) on "
            f"{len({d.key for d in datasets})} fresh data set(s), each beside the strict "
            "tier (which gives the original's results too)")
        timeout = min(opts.timeout, max(60.0, 2 * base.median))
        inst, limits = self._instrumentation(), self._limits(timeout)
        # One warm sandbox for the strict tier and one for the candidate, for the whole
        # grading (each execution a fresh fork, wiped away after it), in alternation:
        # strict, candidate, strict, ..., strict.  The strict tier's runs are the oracle
        # and the anchor the candidate's speed is measured against, side by side.
        async with (Executor(self.spec.reference, inst, threads=opts.threads,
                             limits=self._oracle_limits(opts),
                             read_only=(PROBLEM_DATA,)) as reference,
                    Executor(Path(candidate), inst, threads=opts.threads, limits=limits,
                             read_only=(PROBLEM_DATA,)) as own):
            pairs = SideBySide(own, reference, around=1, anchor_probes=strict_probes)
            started = time.monotonic()

            async def one_more(ds: DataSet) -> Measurement:
                e = await pairs.step(ds.job(), probes=strict_probes)
                after_each()
                report(len(pairs.subject), max(len(datasets), len(pairs.subject)), e)
                return Measurement([e])

            result = Measurement([])
            for ds in datasets:
                result.executions.extend((await one_more(ds)).executions)
                if not keep_going(result.executions[-1], pairs.units()):
                    break
            adaptive = await self._decide(
                result, figures, opts, datasets, one_more, units=pairs.units,
                stopped_early=len(result.executions) < len(datasets))
            await pairs.close(datasets[len(pairs.subject) - 1].job())
            side_wall = time.monotonic() - started
            answers = self._answers(pairs, datasets)
            training = await self._training_basis(result, datasets, answers, opts, say,
                                                  Path(candidate).name, reference)
        graded = self._judge(checks, result, figures, opts, tampered, datasets, answers,
                             training, units=pairs.units())
        graded.details["side_by_side"] = {
            "anchor": calibration.STRICT_TIER,
            "anchor_times": pairs.anchor_times(),
            "candidate_units": pairs.units(),
            "baseline_units": figures.ladder.baseline_units if figures.ladder else [],
            "wall_time": round(side_wall, 3)}
        graded.details["adaptive"] = adaptive
        # The data sets on which the original's training was rerun on the candidate's features.
        graded.details["training_replays"] = sum(
            b.replayed and b.report is not None for b in training.values())
        graded.details["training_spread"] = {
            f"{seed}/{labelling}": round(model_checks.honest_spread(
                [model_checks.final_weights(b.report), *b.replays]), 6)
            for (seed, labelling), b in training.items() if b.replays}
        return graded

    async def _training_basis(self, result: Measurement, datasets: list[DataSet],
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
        the last bits (``oracle.Perturbation``, ``SPREAD``; ``model_checks.same_training``
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
                    opts.semantics == "strict"
                    and not model_checks.same_features(e.report, original)):
                basis[ds.key] = TrainingBasis(original, replayed=False,
                                              features=original.features)
                continue
            if packed is None:
                try:
                    model_checks.recorded_features(e.report, self.spec.features.label)
                except model_checks.EvidenceError as exc:
                    basis[ds.key] = TrainingBasis(None, replayed=True, why=str(exc))
                continue
            if packed.shape[:1] != (ds.n_samples,) or packed.ndim != 2:
                basis[ds.key] = TrainingBasis(None, replayed=True, why=(
                    f"the features have shape {list(packed.shape)}, not one row per image"))
                continue
            pending[ds.key] = (ds, packed)
        replay = functools.partial(
            oracle.replay, self.spec.reference, self._instrumentation(),
            threads=opts.threads, limits=self._oracle_limits(opts),
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
        if self.spec.model is not None:
            await self._measure_spread(result, datasets, basis, opts, say, label, replay)
            await self._shortcut_replays(basis, datasets, replay)
        return basis

    async def _shortcut_replays(self, basis: dict[tuple[int, int], TrainingBasis],
                                datasets: list[DataSet],
                                replay: Callable[..., Awaitable[list[Execution]]]) -> None:
        """Whether each data set can tell training from a shortcut: the original's
        training on the same features, with no effect after a third of it
        (``SHORTCUT_FRACTION``: one epoch of three).  On features that leave the model
        nothing to learn after that (saturated, say), the shortcut ends where the full
        training does, and the weights prove nothing (``model_checks.same_training``)."""
        keys = [(key, b) for key, b in basis.items() if b.report is not None
                and b.features is not None]
        if not keys:
            return
        by_key = {ds.key: ds for ds in datasets}
        limit = max(1, int(self.spec.model.train_rows * SHORTCUT_FRACTION))
        runs = await replay([(by_key[key], b.features) for key, b in keys],
                            train_rows_limit=limit)
        for (_, b), run in zip(keys, runs, strict=True):
            with contextlib.suppress(model_checks.EvidenceError):
                b.shortcut = model_checks.final_weights(run.report if run.ok else None)

    async def _measure_spread(self, result: Measurement, datasets: list[DataSet],
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
                have = model_checks.final_weights(e.report)
                gap, _ = model_checks.weights_gap(have, model_checks.final_weights(b.report))
            except model_checks.EvidenceError:
                continue
            if gap > opts.weights_tolerance:
                landed[ds.key] = (ds, have)

        def apart(key: tuple[int, int]) -> bool:
            b = basis[key]
            cloud = [model_checks.final_weights(b.report), *b.replays]
            (nearest, _), allowed, _ = model_checks.near_the_cloud(
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
                        model_checks.final_weights(run.report if run.ok else None))

    @staticmethod
    async def _decide(result: Measurement, fig: _Figures, opts: GradingOptions,
                      datasets: list[DataSet],
                      one_more: Callable[[DataSet], Awaitable[Measurement]],
                      units: Callable[[], list[float]] | None = None,
                      stopped_early: bool = False) -> dict[str, Any]:
        """More executions, in two steps.  Short runs first: a fast candidate gets
        executions until its timed work reaches ``opts.min_timed_seconds`` (single runs
        of a fraction of a second vary by about 10 % here).  Then, up to
        ``max_repeats``, while the speedup's 95 % interval straddles the target.  The
        extra executions reuse the grading's data sets in turn (their oracle answers are
        known); ``datasets`` grows to match.  ``units`` gives the candidate's times in
        the anchor's units (side by side), else seconds are used."""
        added, short, reason = 0, 0, "decided with the requested executions"
        own = list(datasets)

        def interval() -> tuple[float, float] | None:
            if fig.ladder is None:
                return calibration.speedup_interval(fig.baseline.times, result.times)
            return fig.ladder.candidate_speedup(result.times,
                                                units() if units else [])[1]

        async def add() -> None:
            ds = own[len(result.executions) % len(own)]
            result.executions.extend((await one_more(ds)).executions)
            datasets.append(ds)

        def complete() -> bool:
            return (not stopped_early and bool(result.times)
                    and len(result.times) == len(result.executions))

        if complete():
            wanted = _short_run_count(statistics.median(result.times),
                                      len(result.executions), opts)
            while complete() and len(result.executions) < wanted:
                await add()
                short += 1
        while True:
            if not complete():
                reason = "not adaptive: an execution failed or stopped early"
                break
            ci = interval()
            if ci is None:
                reason = "not adaptive: too few executions for an interval"
                break
            if not ci[0] < fig.target < ci[1]:
                if added:
                    reason = (f"the 95 % interval [{ci[0]:.1f}x, {ci[1]:.1f}x] no longer "
                              f"contains the target {fig.target:.1f}x")
                break
            if len(result.executions) >= opts.max_repeats:
                reason = (f"the interval [{ci[0]:.1f}x, {ci[1]:.1f}x] still contains the "
                          f"target {fig.target:.1f}x at the cap of {opts.max_repeats} "
                          "executions: decided on the median")
                break
            await add()
            added += 1
        return {"added_executions": added, "short_run_executions": short,
                "min_timed_seconds": opts.min_timed_seconds, "reason": reason}

    def _judge(self, checks: list[Check], result: Measurement, fig: _Figures,
               opts: GradingOptions, tampered: list[str], datasets: list[DataSet],
               answers: dict[tuple[int, int], oracle.OracleAnswer],
               training: dict[tuple[int, int], TrainingBasis],
               units: list[float] | None = None) -> GradeResult:
        execs = result.executions
        first = execs[0]
        times = result.times
        median = result.median
        if fig.ladder is not None:  # chained: baseline to strict, strict to the candidate
            speedup, ci = fig.ladder.candidate_speedup(times, units or [])
        else:
            speedup = fig.baseline.median / median if median else None
            ci = calibration.speedup_interval(fig.baseline.times, times)
        s = self.spec
        feat, model, predictor = s.features, s.model, s.predictor
        if model is not None:
            # The model's predictions as the grader computes them from its weights and
            # inputs: what is scored, whatever the execution reported.
            computed = [model_checks.model_outputs(
                e.report, model.forward, model.cls, shapes=model.weights or None,
                width=model.inputs or None, max_rows=model.eval_rows or None)
                for e in execs]
        else:
            # A fitted forest is not the grader's to recompute: what its predict returned
            # is scored, and its inputs must be the test images' features (model_inputs).
            computed = [(Check("model_outputs", True, f"{predictor}.predict's output is "
                               "scored (the grader cannot recompute this estimator)",
                               skipped=True),
                         list(e.report.eval_predictions) if e.report else None)
                        for e in execs]
        pairs = [(ds.accuracy(mine), answers[ds.key].accuracy)
                 for (_, mine), ds in zip(computed, datasets, strict=False)]
        measured = [a for a, _ in pairs if a is not None]
        out = GradeResult(passed=False, checks=checks, speedup=speedup,
                          baseline_time=fig.baseline.median, candidate_time=median,
                          candidate_times=times,
                          accuracy=statistics.mean(measured) if measured else None,
                          baseline_accuracy=statistics.mean(o for _, o in pairs),
                          target=fig.target, target_rule=fig.rule, speedup_ci95=ci)
        out.details = {
            "executed": True, "semantics": opts.semantics, "executions": len(execs),
            "repeats_requested": opts.repeats, "baseline_times": fig.baseline.times,
            "reference_speedup": fig.reference_speedup, "speedup_ceiling": fig.ceiling,
            "time_min": min(times) if times else None,
            "time_max": max(times) if times else None, "tampered_files": tampered,
            "per_execution": [
                {"seed": ds.seed, "labelling": ds.labelling, "time": e.time,
                 "observed_time": e.observed_time, "cpu_time": e.cpu_time,
                 "wall_time": round(e.wall_time, 3), "accuracy": acc,
                 "original_accuracy": orig}
                for e, ds, (acc, orig) in zip(execs, datasets, pairs, strict=False)],
            "isolation": first.isolation, "cpu_limit": first.cpu_limit,
            "report": first.report.to_json(omit=_BULKY_REPORT_KEYS) if first.report else None,
            "stdout_tail": first.stdout[-4000:], "stderr_tail": first.stderr_tail,
        }
        crashed = any(not e.ok for e in execs)
        checks += [runtime_checks.runs_cleanly(execs), runtime_checks.baseline_integrity(tampered)]
        if crashed:
            out.details["skipped_after_crash"] = True
            out.score = 0.0
            return out
        visible = datasets[0].visible_accuracy(list(first.report.eval_predictions)
                                               if first.report else None)
        setup = model.setup if model is not None else s.estimator.setup
        checks += [
            runtime_checks.output_patterns(first.stdout, s.output_patterns),
            probes.components_exercised(first.report, s.probes),
            setup(first.report),
            runtime_checks.fresh_inputs(execs, s.data_function),
            _first_failure([check for check, _ in computed]),
            _first_failure([model_checks.inputs_are_features(
                e.report, ds.test_rows, feat.label, predictor)
                for e, ds in zip(execs, datasets, strict=False)]),
            model_checks.features_from_images(
                [(ds.seed, ds.labelling, e.report) for e, ds in zip(execs, datasets,
                                                                     strict=False)],
                feat.label),
            runtime_checks.accuracy_measured(first.stdout, visible),
            runtime_checks.determinism(execs, opts.repeats),
            runtime_checks.accuracy(pairs, opts.accuracy_tolerance, opts.accuracy_upper_margin),
        ]
        if model is not None:
            checks.append(model_checks.decided([
                self._trained_weights(e.report, training.get(ds.key), opts)
                for e, ds in zip(execs, datasets, strict=False)]))
        else:
            checks.append(model_checks.decided([
                self._fitted_model(e.report, training.get(ds.key))
                for e, ds in zip(execs, datasets, strict=False)]))
        if opts.semantics == "strict":
            want = answers[datasets[0].key].probes
            components = [("features", feat.label)]
            if model is not None:
                components += [(name, f"{model.cls}.{name}") for name in model.submodules]
                components.append(("logits", f"{model.cls}.forward (same weights)"))
            for name, label in components:
                checks.append(runtime_checks.strict_component(
                    name, label, first.probes, want, opts.strict_rtol, opts.strict_atol))
            # and on what the pipeline itself computed in the timed run
            checks.append(_first_failure([model_checks.pipeline_features(
                e.report, answers[ds.key].report, feat.label, opts.strict_rtol,
                opts.strict_atol) for e, ds in zip(execs, datasets, strict=False)]))
            if model is not None:
                checks.append(_first_failure([model_checks.pipeline_logits(
                    e.report, model.forward, model.cls, opts.strict_rtol, opts.strict_atol,
                    shapes=model.weights or None, width=model.inputs or None,
                    max_rows=model.eval_rows or None) for e in execs]))
        checks += [
            runtime_checks.self_reported_time(first.stdout, first.time),
            runtime_checks.speedup_plausible(speedup, fig.ceiling, fig.reference_speedup),
            runtime_checks.speedup_target(speedup, fig.target, len(times), fig.rule, ci),
        ]
        if len(execs) < min(opts.repeats, len(datasets)) and checks[-1].passed:
            # stopped early for running far below the target, then judged above it (the
            # closing strict-tier run moved its ratio): fewer executions than requested
            # never pass
            checks[-1] = Check("speedup_target", False,
                               f"{checks[-1].message}, but only {len(execs)} of "
                               f"{opts.repeats} requested executions ran: the grader "
                               "stopped when the first ran far below the target")
        out.passed = not any(c.decisive_failure for c in checks)
        out.score = fig.ladder.score(speedup, out.passed) if fig.ladder else None
        return out


    def _fitted_model(self, report: ExecutionReport | None,
                      basis: TrainingBasis | None) -> Check:
        est = self.spec.estimator.cls
        if basis is None or basis.report is None:
            why = basis.why if basis else "no run of the original to compare with"
            return Check("fitted_model", False, f"{est}'s predictions could not be checked: "
                                                f"{why}")
        return model_checks.same_predictions(report, basis.report, est,
                                             replayed=basis.replayed)

    def _trained_weights(self, report: ExecutionReport | None,
                         basis: TrainingBasis | None, opts: GradingOptions) -> Check:
        model = self.spec.model.cls
        if basis is None or basis.report is None:
            why = basis.why if basis else "no run of the original to compare with"
            return Check("trained_weights", False, f"{model}'s trained weights could not be "
                                                   f"checked: {why}")
        return model_checks.same_training(report, basis.report, model,
                                          opts.weights_tolerance, replayed=basis.replayed,
                                          replays=basis.replays, shortcut=basis.shortcut)


def complex_spec(baseline: Path = PROBLEM_DATA / "slow_ml_training_complex.py",
                 n_samples: int = 3000,
                 reference: Path = REFERENCE_DIR / "ml_training_reference.py",
                 vectorized: Path | None = REFERENCE_DIR / "ml_training_vectorized.py"
                 ) -> TaskSpec:
    """The flagship's contract; tests use it with scaled-down copies (``n_samples``), and
    without the ``vectorized`` tier unless they scale that too."""
    if n_samples != 3000 and vectorized == REFERENCE_DIR / "ml_training_vectorized.py":
        vectorized = None  # the full-size tier cannot calibrate a scaled-down problem
    n_train = int(0.8 * n_samples)
    n_test = n_samples - n_train
    epochs, batch_size = 3, 8
    hidden, n_classes = 128, fresh_inputs.N_CLASSES
    return TaskSpec(
        baseline=baseline,
        required_imports=("torch", "torch.nn", "numpy"),
        required_classes=("ComplexNN", "ComplexFeatureExtractor"),
        entry="run_complex_training_pipeline",
        output_patterns=(rf"Feature shape: \({n_samples}, 13\)",
                         rf"Training set size: {n_train}",
                         rf"Test set size: {n_test}", ACCURACY_RE.pattern),
        probes=(
            probes.DataFunction("generate_synthetic_data", label_draw=n_classes),
            probes.RowsThrough("ComplexFeatureExtractor", "extract_all_features", n_samples),
            probes.TorchModule(
                "ComplexNN", train_rows=epochs * n_train, eval_rows=n_test,
                batches=training_batches(n_train, epochs, batch_size),
                forward=model_checks.complex_nn_forward, inputs=13,
                init={"input_size": 13, "hidden_size": hidden, "num_classes": n_classes},
                weights={"fc1.weight": (hidden, 13), "fc1.bias": (hidden,),
                         "fc2.weight": (64, hidden), "fc2.bias": (64,),
                         "fc3.weight": (n_classes, 64), "fc3.bias": (n_classes,)},
                submodules={"activation": hidden}),
            probes.EvalPredictions("ComplexNN", n_test),
        ),
        reference=reference,
        n_samples=n_samples,
        extra_tiers=(("vectorized", vectorized),) if vectorized is not None else (),
        training=(f"{epochs} epochs of optimiser steps on batches of {batch_size} (shuffle, "
                  "noise, initial weights and dropout drawn as the original draws them)"),
    )


COMPLEX_SPEC = complex_spec()


class ComplexMLTrainingWithProfiler(MLTrainingOptimizationProblem):
    """The flagship: the slow complex pipeline; target: the ``vectorized`` tier here."""

    name = "complex"
    summary = ("the flagship: make a slow PyTorch/NumPy training pipeline (3,000 images) "
               "much faster with the same model quality")

    def __init__(self, include_profiler: bool = True, include_intermediate_answer: bool = True,
                 options: GradingOptions = GradingOptions(), spec: TaskSpec = COMPLEX_SPEC,
                 **kwargs: Any):
        super().__init__(spec, options, include_profiler=include_profiler,
                         include_intermediate_answer=include_intermediate_answer, **kwargs)


