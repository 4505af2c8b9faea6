"""An ML-training task as a :class:`problem.Problem`: what the batch, the tools and the
CLI see of it.

:class:`MLTrainingTask` is generic over a :class:`spec.TaskSpec` (one per problem, in
``declarations/``).  It offers the tools, writes the prompt (``prompt``), measures the
machine's figures on first need (``ladder.Bench``, cached) and grades a candidate
(``grading.grade``: static gate, figures, session, verdict).  Progress goes to an
optional callback; nothing here prints.
"""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath
from typing import Any

import safe_files
from problem import GradeResult, Knob, Problem, RuleError, TargetRule
from problems.ml_training import calibration, grading, prompt, strategy
from problems.ml_training.ladder import Bench, Figures
from problems.ml_training.spec import (
    PROBLEM_DATA,
    GradingOptions,
    Progress,
    TaskSpec,
    check_isolation,
)
from problems.ml_training.timing import slots
from problems.ml_training.timing.cache import BaselineCache


class MLTrainingTask(Problem):
    """One ML-training problem: its declaration (``spec``) and the user's grading
    options, resolved against the declaration's defaults."""

    data_dir = PROBLEM_DATA

    def __init__(self, spec: TaskSpec, options: GradingOptions | None = None, *,
                 include_profiler: bool = True, include_intermediate_answer: bool = True,
                 cache: BaselineCache | None = None, progress: Progress | None = None):
        self.spec = spec
        self.name, self.summary = spec.name, spec.summary
        self.options = (options or GradingOptions()).resolved(spec)
        self.include_profiler = include_profiler
        self.include_intermediate_answer = include_intermediate_answer
        self.cache = cache or BaselineCache()
        self.progress = progress or (lambda message: None)
        self.bench = Bench(spec, self.cache, self.progress)
        self._figures: Figures | None = None  # of the task's own options
        self._last_figures: Figures | None = None  # the figures last used, any options
        self._measuring = asyncio.Lock()
        # each grading's data sets (a seam: tests pin them)
        self.draw_datasets = lambda count: grading.fresh_datasets(spec, count)
        self.strategist = strategy.Strategist(spec, self.options)  # measures on first need

    @property
    def baseline_executions(self) -> int:
        """How many times this task ran the baseline."""
        return self.bench.baseline_executions

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

    def target_error(self, rule: str) -> str | None:
        try:
            TargetRule.parse(rule, self.tier_names())
        except RuleError as exc:
            return str(exc)
        return None

    def target_rule(self, opts: GradingOptions | None = None) -> TargetRule:
        opts = self._options(opts)
        return TargetRule.parse(opts.rule_text(), self.tier_names())

    async def calibrate(self) -> dict[str, Any]:
        figures = await self.figures()
        ladder = figures.ladder
        tiers, default, in_use = ladder.names(), self.default_target(), self.target_rule().text
        rules = dict.fromkeys([default, in_use, "33", *tiers, *(f"0.9*{t}" for t in tiers)])
        resolved = {r: TargetRule.parse(r, tiers).resolve(ladder) for r in rules}
        return {"problem": self.name, **ladder.to_json(),
                "default_target_rule": default, "default_target": resolved[default],
                "target_rule": in_use, "target": resolved[in_use], "rules": resolved,
                "scores": {t.name: ladder.score(t.speedup, True) for t in ladder.tiers},
                "calibration": figures.calibration()}

    async def check_calibration(self) -> dict[str, Any]:
        """Whether the cached ladder still holds on this machine now (``Bench.check``)."""
        return await self.bench.check(self.options)

    async def prepare(self) -> dict[str, Any]:
        figures = await self.figures()
        return {"time_median_s": round(figures.baseline.median, 3),
                "times_s": [round(t, 3) for t in figures.baseline.times],
                "accuracy": figures.baseline.accuracy,
                "oracle_agreement": figures.baseline.oracle_agreement,
                "reference_speedup": figures.reference_speedup,
                "target": figures.target, "target_rule": figures.rule,
                "speedup_ceiling": figures.ceiling,
                "ladder": figures.ladder.to_json() if figures.ladder else None,
                "calibration": figures.calibration()}

    def calibration_used(self) -> dict[str, Any] | None:
        """The figures last used (``Figures.calibration``: where they came from and when
        they were measured); None before any were measured or loaded."""
        return self._last_figures.calibration() if self._last_figures else None

    def cached_baseline_time(self) -> float | None:
        opts = self.options
        key = self.bench.cache_key(self.spec.baseline, "baseline", opts)
        found = self.cache.load(key, min_runs=opts.baseline_repeats).found
        return found.median if found else None

    def scripted_turns(self, tool_names: set[str], draft: bool = False
                       ) -> list[list[dict[str, Any]]]:
        return prompt.scripted_turns(self.spec, tool_names, draft)

    # ---- what the agent sees -------------------------------------------------------
    def tool_names(self) -> list[str]:
        names = ["read_file", "write_file", "python_expression"]
        if self.include_profiler:
            names.append("profile_tool")
        if self.include_intermediate_answer:
            names.append("submit_intermediate_answer")
        return names + ["submit_answer"]

    def prompt(self, workspace: Path) -> str:
        target = (f"at least {self._figures.target:.1f}x faster" if self._figures is not None
                  else f"as fast as the target ({self.target_rule().text}) requires")
        return prompt.prompt(self.spec, self.options, workspace, target=target,
                             profiler=self.include_profiler,
                             intermediate=self.include_intermediate_answer)

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

    # ---- measuring and grading -------------------------------------------------------
    def _options(self, opts: GradingOptions | None) -> GradingOptions:
        return self.options if opts is None else opts.resolved(self.spec)

    async def ladder(self, opts: GradingOptions | None = None) -> calibration.Ladder:
        """The baseline and every tier on this machine (``ladder.Bench``)."""
        return await self.bench.ladder(self._options(opts))

    async def figures(self, opts: GradingOptions | None = None) -> Figures:
        """Baseline, tiers and the resolved target, measured on first need."""
        opts = self._options(opts)
        async with self._measuring:  # concurrent gradings measure once, then share
            if self._figures is not None and opts == self.options:
                figures = self._figures
            else:
                figures = await self.bench.figures(opts, self.target_rule(opts))
        if opts == self.options:
            self._figures = figures
        self._last_figures = figures
        return figures

    async def grade(self, candidate: Path, *, options: GradingOptions | None = None,
                    progress: Progress | None = None, **_: Any) -> GradeResult:
        """Grade ``candidate``; ``progress`` (default: the problem's) sees each execution."""
        opts = self._options(options)
        check_isolation(opts)
        with slots.recording() as intervals:
            result = await grading.grade(self.spec, opts, Path(candidate),
                                         figures=self.figures, datasets=self.draw_datasets,
                                         say=progress or self.progress)
        # every timing slot it held (its baseline's too, when measured now): the proof
        # that its timed executions never overlapped another on a timing CPU
        if result.details.get("executed"):
            result.details["timed_intervals"] = intervals
            result.details["calibration"] = (result.details.get("calibration")
                                             or self.calibration_used())
        return result

    async def strategy(self, candidate: Path) -> dict[str, Any] | None:
        """Each component of a graded candidate timed and compared with the original's
        (``strategy.Strategist``; advisory, after the verdict)."""
        return await self.strategist.analyse(Path(candidate))
