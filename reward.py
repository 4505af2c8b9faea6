"""The entry point for RL trainers: one candidate's source in, its reward out.

    from reward import grade_source, grade_source_sync

    reward = await grade_source(source, "complex")            # on this machine
    reward = grade_source_sync(source, "complex", cluster="10.0.0.5:6379")  # on a node
    reward.score, reward.passed, reward.speedup, reward.checks

:func:`grade_source` grades ``source`` (the text of a candidate file) on a problem of
the registry (``main.py problems``) and returns a :class:`Reward`.  Locally it takes
the path ``main.py grade`` takes: the problem built from the same settings, graded in a
sandbox against this machine's calibration (measured on first need, then cached, as
for a batch).  With ``cluster=ADDRESS`` the grading runs on a node of that Ray cluster,
against the node's own calibration (``cluster``).  Calls may run concurrently: the
timing slots keep each timed execution alone on its CPU, so concurrent gradings report
the speedups sequential ones would; the work around the timings overlaps.

A candidate that cannot be graded (the harness failed, a node died) is a Reward with
``error`` set and a score of 0, never an exception; a bad problem name or grading
choice raises ValueError, and a cluster that cannot be reached ``cluster.ClusterError``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import flags
from problem import GradeResult, GradingChoices, RuleError, TargetRule

log = logging.getLogger(__name__)
CANDIDATE_NAME = "candidate.py"
# Per event loop, the problems already built: one measured calibration serves them all.
_built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Reward:
    """A grading as a reward: ``score`` is 0 at the baseline (or for a failed or
    ungraded candidate) and 1 at the problem's strict tier, on a log scale; ``checks``
    maps each named check to (passed, message)."""

    passed: bool
    score: float
    speedup: float | None = None
    target: float | None = None
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    node: str = "local"  # the Ray node that graded it, or "local"
    error: str | None = None  # why it could not be graded (then score 0, not passed)
    verdict: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def grading_choices(problem: str, target: str | None = None, **choices: Any
                    ) -> GradingChoices:
    """``choices`` checked as the CLI checks its flags; ValueError (why) when one is not
    acceptable or ``problem`` is not in the registry."""
    from problems import registry

    if problem not in registry.names():
        raise ValueError(f"unknown problem {problem!r}; valid: {', '.join(registry.names())}")
    known = [f.name for f in fields(GradingChoices) if f.name != "target"]
    if unknown := sorted(set(choices) - set(known)):
        raise ValueError(f"unknown grading choice {unknown[0]!r}; valid: target, "
                         f"{', '.join(known)}")
    for name, value in choices.items():
        if name in flags.BOUNDS and (why := flags.bound_error(name, value)):
            raise ValueError(f"{name} {why}")
    for name in ("use_cache", "allow_unsandboxed"):  # "no" would be true
        if name in choices and not isinstance(choices[name], bool):
            raise ValueError(f"{name} must be True or False, got {choices[name]!r}")
    if choices.get("semantics", "seed") not in ("seed", "strict"):
        raise ValueError(f"semantics must be seed or strict, got {choices['semantics']!r}")
    relative = choices.get("relative_target")
    if relative is not None and not (isinstance(relative, int | float) and 0 < relative <= 2):
        raise ValueError(f"relative_target must be a fraction of the strict tier's speedup "
                         f"(above 0, at most 2), got {relative!r}")
    made = GradingChoices(target=None if target is None else str(target), **choices)
    if (rule := made.rule_text()) is not None:
        try:
            TargetRule.parse(rule)
        except RuleError as exc:
            raise ValueError(f"target: {exc}") from None
        if why := registry.build(problem).target_error(rule):  # builds only
            raise ValueError(f"target: {why}")
    return made


def _problem(name: str, choices: GradingChoices, cluster: str | None) -> Any:
    """The problem as ``main.py grade`` builds it, once per event loop and settings."""
    import cluster as ray_cluster
    from problems import registry

    key = (name, choices, cluster)
    built = _built.setdefault(asyncio.get_running_loop(), {})
    if key not in built:
        settings = registry.Settings(grading=choices)
        built[key] = ray_cluster.build(cluster, name, settings)
    return built[key]


def as_reward(result: GradeResult) -> Reward:
    """A verdict as a reward (a verdict without a score scores 0)."""
    node = (result.details.get("node") or {}).get("id", "local")
    return Reward(passed=result.passed, score=float(result.score or 0.0),
                  speedup=result.speedup, target=result.target,
                  checks={c.name: (c.passed, c.message) for c in result.checks},
                  node=node, verdict=result.to_dict())


async def grade_source(source: str | bytes, problem: str = "complex", *,
                       cluster: str | None = None, target: str | None = None,
                       **choices: Any) -> Reward:
    """Grade the candidate ``source`` on ``problem`` and return its :class:`Reward`.

    Args:
        source: The candidate file's text (bytes are taken as they are).
        problem: A problem of the registry: complex, numpy, pytorch, math.
        cluster: A Ray cluster's address (``host:port``): grade on one of its nodes,
            with that node's calibration.  None: on this machine.
        target: What passes: a speedup (33), a tier (strict) or a fraction of one
            (0.9*strict); None: the problem's own target.
        **choices: The other grading choices of ``problem.GradingChoices`` (repeats,
            semantics, threads, use_cache, allow_unsandboxed, ...).

    Raises ValueError for an unknown problem or a bad choice, and
    ``cluster.ClusterError`` when the cluster cannot be reached; a candidate that could
    not be graded is a Reward with ``error`` set and a score of 0.
    """
    if not isinstance(source, str | bytes):
        raise ValueError(f"source must be the candidate's text (str or bytes), got "
                         f"{type(source).__name__}")
    made = grading_choices(problem, target, **choices)
    graded = _problem(problem, made, cluster)
    if cluster is not None:  # unreachable: the caller's mistake, raised
        import cluster as ray_cluster

        await asyncio.to_thread(ray_cluster.connect, cluster)
    data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    with tempfile.TemporaryDirectory(prefix="hp-reward-") as directory:  # mode 0700
        path = Path(directory) / CANDIDATE_NAME
        await asyncio.to_thread(path.write_bytes, data)
        try:
            result = await graded.grade(path)
        except Exception as exc:  # noqa: BLE001 (the harness's fault: a reward of 0)
            log.warning("a candidate could not be graded", exc_info=True)
            return Reward(passed=False, score=0.0, error=f"{type(exc).__name__}: {exc}")
    return as_reward(result)


def grade_source_sync(source: str | bytes, problem: str = "complex", *,
                      cluster: str | None = None, target: str | None = None,
                      **choices: Any) -> Reward:
    """:func:`grade_source` from code that has no event loop running (it starts one)."""
    return asyncio.run(grade_source(source, problem, cluster=cluster, target=target,
                                    **choices))
