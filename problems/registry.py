"""Every problem the harness hosts, by the name ``--problem`` takes.

Each entry builds its problem from the CLI's settings; a new problem adds one entry
here, its package under ``problems/``, its files under ``problem_data/`` and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from problem import Problem

DEFAULT_PROBLEM = "complex"


@dataclass(frozen=True)
class Settings:
    """What the CLI passes to every problem's builder (each takes what applies)."""

    include_profiler: bool = True
    include_intermediate_answer: bool = True
    grading: dict[str, Any] = field(default_factory=dict)  # GradingOptions' fields
    progress: Callable[[str], None] | None = None


def _complex(s: Settings) -> Problem:
    from problems.ml_training.task import (
        COMPLEX_SPEC,
        ComplexMLTrainingWithProfiler,
        options_for,
    )

    return ComplexMLTrainingWithProfiler(
        include_profiler=s.include_profiler,
        include_intermediate_answer=s.include_intermediate_answer,
        options=options_for(COMPLEX_SPEC, s.grading), progress=s.progress)


def _numpy(s: Settings) -> Problem:
    from problems.ml_training.declarations.numpy_pipeline import NUMPY_SPEC, NumpyTrainingProblem
    from problems.ml_training.task import options_for

    return NumpyTrainingProblem(
        include_profiler=s.include_profiler,
        include_intermediate_answer=s.include_intermediate_answer,
        options=options_for(NUMPY_SPEC, s.grading), progress=s.progress)


def _pytorch(s: Settings) -> Problem:
    from problems.ml_training.declarations.pytorch_pipeline import (
        PYTORCH_SPEC,
        PytorchTrainingProblem,
    )
    from problems.ml_training.task import options_for

    return PytorchTrainingProblem(
        include_profiler=s.include_profiler,
        include_intermediate_answer=s.include_intermediate_answer,
        options=options_for(PYTORCH_SPEC, s.grading), progress=s.progress)


def _math(s: Settings) -> Problem:
    from problems.math_calculation import MathCalculationProblem

    return MathCalculationProblem()


BUILDERS: dict[str, Callable[[Settings], Problem]] = {
    "complex": _complex, "numpy": _numpy, "pytorch": _pytorch, "math": _math}


def names() -> list[str]:
    return list(BUILDERS)


def build(name: str, settings: Settings | None = None) -> Problem:
    """The problem called ``name``; an unknown name raises ``KeyError`` listing the valid
    ones."""
    if name not in BUILDERS:
        raise KeyError(f"unknown problem {name!r}; valid: {', '.join(BUILDERS)}")
    return BUILDERS[name](settings or Settings())
