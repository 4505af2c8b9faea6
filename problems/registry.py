"""Every problem the harness hosts, by the name ``--problem`` takes.

Each entry builds its problem from the CLI's settings.  A new ML-training problem is
one line here naming its declaration (``problems/ml_training/declarations/``); another
kind of problem adds its builder and its package under ``problems/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from problem import GradingChoices, Problem

DEFAULT_PROBLEM = "complex"


@dataclass(frozen=True)
class Settings:
    """What the CLI passes to every problem's builder (each takes what applies)."""

    include_profiler: bool = True
    include_intermediate_answer: bool = True
    grading: GradingChoices = field(default_factory=GradingChoices)
    progress: Callable[[str], None] | None = None


def _ml_training(declaration: str) -> Callable[[Settings], Problem]:
    """A builder for the ML-training problem declared in ``declaration`` (its module in
    ``problems/ml_training/declarations/`` and the name of its spec)."""

    def build(s: Settings) -> Problem:
        import importlib

        from problems.ml_training.spec import GradingOptions
        from problems.ml_training.task import MLTrainingTask

        module, spec = declaration.split(":")
        declared = getattr(importlib.import_module(
            f"problems.ml_training.declarations.{module}"), spec)
        return MLTrainingTask(declared, GradingOptions.of(s.grading),
                              include_profiler=s.include_profiler,
                              include_intermediate_answer=s.include_intermediate_answer,
                              progress=s.progress)

    return build


def _math(s: Settings) -> Problem:
    from problems.math_calculation import MathCalculationProblem

    return MathCalculationProblem()


BUILDERS: dict[str, Callable[[Settings], Problem]] = {
    "complex": _ml_training("complex_pipeline:COMPLEX_SPEC"),
    "numpy": _ml_training("numpy_pipeline:NUMPY_SPEC"),
    "pytorch": _ml_training("pytorch_pipeline:PYTORCH_SPEC"),
    "math": _math,
}


def names() -> list[str]:
    return list(BUILDERS)


def build(name: str, settings: Settings | None = None) -> Problem:
    """The problem called ``name``; an unknown name raises ``KeyError`` listing the valid
    ones."""
    if name not in BUILDERS:
        raise KeyError(f"unknown problem {name!r}; valid: {', '.join(BUILDERS)}")
    return BUILDERS[name](settings or Settings())
