"""What the runner watches in a candidate's process: a small vocabulary each problem
declares its probes from.

A problem lists the components its task requires (``TaskSpec.probes``); each probe
says what the runner (the runner) must wrap in the execution and
brings its own check of what it recorded.  The instrumentation is derived from the
declaration (:func:`instrumentation`), never written out by hand, so the runner, the
checks and the prompt cannot disagree about which names are watched.

- :class:`DataFunction`: the pipeline's data function, replaced by the grader's fresh
  data (``problems.ml_training.fresh_inputs``), with the original's random draws;
- :class:`RowsThrough`: rows through a named method (the feature extractor); its
  outputs, every call's in call order, are kept as evidence;
- :class:`TorchModule`: a ``torch.nn.Module`` class: instances, rows trained on with
  gradients flowing back (and the optimisation steps, by batch size), eval-mode rows,
  inputs and weights (so the grader computes the predictions itself);
- :class:`Estimator`: a scikit-learn estimator class: ``fit`` rows, ``predict`` rows,
  its parameters at fit time, and the inputs and outputs of ``predict``;
- :class:`EvalPredictions`: which component's eval-mode predictions are scored, on how
  many rows.

Everything recorded is the candidate's to forge (it runs in its process): the checks
name a shortcut when they see one, and what cannot be faked is judged elsewhere, the
accuracy on hidden labels and the grader's own clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from problem import Check
from problems.ml_training import model_checks
from problems.ml_training.execution_report import ExecutionReport
from problems.ml_training.timing.executor import Instrumentation


@dataclass(frozen=True)
class DataFunction:
    """The data function the grader replaces.  Its replacement makes the original's
    draws for the grader's seed: ``np.random.seed``, ``torch.manual_seed`` when
    ``seeds_torch``, ``np.random.rand(n, *image_shape)`` as float32, then the original's
    random label draw when it makes one (``label_draw`` classes), so that every later
    draw follows the original's stream."""

    name: str = "generate_synthetic_data"
    image_shape: tuple[int, int] = (28, 28)
    label_draw: int | None = 10
    seeds_torch: bool = True
    kind: str = field(default="data", init=False)

    def job(self) -> dict[str, Any]:
        return {"kind": self.kind, "function": self.name, "image_shape": list(self.image_shape),
                "label_draw": self.label_draw, "seeds_torch": self.seeds_torch}


@dataclass(frozen=True)
class RowsThrough:
    """Rows through ``cls.method`` (its first argument after ``self``): at least
    ``rows`` in all, in one call or in chunks.  The outputs of every call are joined in
    call order and the last ``rows`` of them kept (the features the model is fed)."""

    cls: str
    method: str
    rows: int
    kind: str = field(default="rows", init=False)

    @property
    def label(self) -> str:
        return f"{self.cls}.{self.method}"

    def job(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": self.cls, "method": self.method,
                "rows": self.rows}

    @property
    def chunking(self) -> str:
        """What the prompt says the pipeline may do with it."""
        return (f"call `{self.label}` on the images in chunks or batches (the grader joins "
                "the outputs of every call, in call order, one row per image)")

    def shortfalls(self, report: ExecutionReport) -> list[str]:
        seen = report.feature_rows
        return ([] if seen >= self.rows else
                [f"{self.label} processed {seen} images (needs {self.rows})"])

    def done(self, report: ExecutionReport) -> str:
        return f"features for {report.feature_rows} images"


@dataclass(frozen=True)
class TorchModule:
    """A ``torch.nn.Module`` class: instantiated, trained on ``train_rows`` rows in all
    with gradients flowing back through its output, in ``batches`` optimisation steps
    (batch size -> steps), and called in eval mode on ``eval_rows`` rows.  ``forward``
    is the original's eval-mode function in numpy (the grader's own computation of the
    predictions); ``init`` are the constructor's arguments and ``weights`` the shapes of
    its parameters (strict mode loads weights of its own); ``submodules`` are the named
    parts strict mode also probes, with the width of their input."""

    cls: str
    train_rows: int
    eval_rows: int
    batches: Mapping[int, int]
    forward: model_checks.Forward
    inputs: int = 0  # the width of the model's input rows
    init: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    submodules: Mapping[str, int] = field(default_factory=dict)
    kind: str = field(default="torch_module", init=False)

    def job(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": self.cls}

    @property
    def chunking(self) -> str:
        return f"call `{self.cls}` in eval mode on the test rows in batches"

    def shortfalls(self, report: ExecutionReport) -> list[str]:
        found = []
        if not report.model_instances:
            found.append(f"{self.cls} was never instantiated")
        if report.train_rows < self.train_rows:
            found.append(f"{self.cls} was trained on {report.train_rows} rows with "
                         f"gradients flowing back (needs {self.train_rows})")
        if report.eval_rows < self.eval_rows:
            found.append(f"{self.cls} saw {report.eval_rows} rows in eval mode "
                         f"(needs {self.eval_rows})")
        return found

    def done(self, report: ExecutionReport) -> str:
        return f"{report.train_rows} training rows, {report.eval_rows} eval rows"

    def setup(self, report: ExecutionReport | None) -> Check:
        """The original's training set-up: as many optimisation steps, of the same batch
        sizes (so the same epochs)."""
        expected = dict(self.batches)
        seen = dict(report.train_batches) if report is not None else {}
        if seen == expected:
            return Check("training_setup", True, f"{sum(expected.values())} training steps "
                                                 "of the original's batch sizes")

        def describe(batches: dict[int, int]) -> str:
            if not batches:
                return "no training step"
            return ", ".join(f"{n} of {size} rows" for size, n in
                             sorted(batches.items(), key=lambda kv: -kv[1]))

        return Check("training_setup", False,
                     f"{self.cls} was trained in {describe(seen)} (the original: "
                     f"{describe(expected)}; keep the batch size, the number of epochs and "
                     "one step per batch)")


@dataclass(frozen=True)
class Estimator:
    """A scikit-learn estimator class (``module.cls``, wrapped where it is defined, so
    every name it is imported under is watched): fitted on ``fit_rows`` rows, asked to
    predict ``predict_rows`` rows, with ``params`` as the original sets them."""

    module: str
    cls: str
    fit_rows: int
    predict_rows: int
    params: Mapping[str, Any] = field(default_factory=dict)
    # parameters that change how it runs, not what it computes (one CPU either way)
    free: tuple[str, ...] = ("n_jobs", "verbose")
    kind: str = field(default="estimator", init=False)

    def all_params(self) -> dict[str, Any]:
        """Every parameter of the estimator as the original constructs it (its defaults
        and ``params``), as the runner records them (``get_params(deep=False)``, values
        that are not plain kept as their ``repr``)."""
        import importlib

        cls = getattr(importlib.import_module(self.module), self.cls)
        plain = (bool, int, float, str, type(None))
        return {k: v if isinstance(v, plain) else repr(v)
                for k, v in cls(**self.params).get_params(deep=False).items()}

    def job(self) -> dict[str, Any]:
        return {"kind": self.kind, "module": self.module, "class": self.cls}

    @property
    def chunking(self) -> str:
        return f"call `{self.cls}.predict` on the test rows in batches"

    def shortfalls(self, report: ExecutionReport) -> list[str]:
        found = []
        if report.fit_rows < self.fit_rows:
            found.append(f"{self.cls}.fit saw {report.fit_rows} rows (needs {self.fit_rows})")
        if report.eval_rows < self.predict_rows:
            found.append(f"{self.cls}.predict saw {report.eval_rows} rows "
                         f"(needs {self.predict_rows})")
        return found

    def done(self, report: ExecutionReport) -> str:
        return f"{report.fit_rows} rows fitted, {report.eval_rows} rows predicted"

    def setup(self, report: ExecutionReport | None) -> Check:
        """The estimator as the original configures it: every parameter as the original
        has it, in every fit (fewer trees, a shallower forest or another seed is another
        model), but for those that only change how it runs (``free``)."""
        fits = report.fit_params if report is not None else ()
        if not fits:
            return Check("estimator_setup", False, f"{self.cls}.fit was never called")
        if replaced := report.estimator_replaced:
            return Check("estimator_setup", False,
                         f"the library's estimator was altered: {', '.join(replaced)} "
                         "replaced; use scikit-learn's own")
        expected = self.all_params()
        for params in fits:
            if params is None:
                return Check("estimator_setup", False,
                             f"the record of {self.cls}'s parameters is unreadable")
            wrong = {k: params.get(k, "unset") for k, v in expected.items()
                     if k not in self.free and params.get(k, "unset") != v}
            if wrong:
                shown = ", ".join(f"{k}={v!r} (the original: {expected[k]!r})"
                                  for k, v in wrong.items())
                return Check("estimator_setup", False,
                             f"{self.cls} was fitted with {shown}: keep the original's model")
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return Check("estimator_setup", True, f"{self.cls} fitted as the original fits it "
                                              f"({shown})")


@dataclass(frozen=True)
class EvalPredictions:
    """The eval-mode predictions that are scored: the last ``rows`` of those ``source``
    (a :class:`TorchModule` or :class:`Estimator` class name) made."""

    source: str
    rows: int
    kind: str = field(default="eval_predictions", init=False)

    def job(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "rows": self.rows}


Probe = DataFunction | RowsThrough | TorchModule | Estimator | EvalPredictions


def of_kind(probes: tuple[Probe, ...], kind: type) -> Any:
    """The probe of that kind (None when the problem declares none)."""
    return next((p for p in probes if isinstance(p, kind)), None)


def calls_rule(probes: tuple[Probe, ...]) -> str:
    """The prompt's rule on how the watched components may be called, from their
    declarations: in chunks or batches, yes; another function or model in their place,
    no (the checks see only what passes through them)."""
    feature = of_kind(probes, RowsThrough)
    models = [p for p in probes if isinstance(p, TorchModule | Estimator)]
    allowed = [p.chunking for p in (feature, *models) if p is not None]
    replaced = ([f"features computed by another function than `{feature.label}`"]
                if feature else [])
    replaced += [f"predictions made by another model than `{p.cls}` (a cheaper one included)"
                 for p in models]
    return (f"- You may {' and '.join(allowed)}: how often they are called is yours to "
            f"choose. Which they are is not: {', or '.join(replaced)}, fail.")


def components_exercised(report: ExecutionReport | None, probes: tuple[Probe, ...]
                         ) -> Check:
    """The work was done: each declared component's own count against its need."""
    r = report if report is not None else ExecutionReport()
    watched = [p for p in probes if isinstance(p, RowsThrough | TorchModule | Estimator)]
    found = [problem for p in watched for problem in p.shortfalls(r)]
    if found:
        return Check("components_exercised", False, "; ".join(found))
    return Check("components_exercised", True, ", ".join(p.done(r) for p in watched))



# What the timer imports before any timed region when the task uses torch (optimizers
# import torch._dynamo lazily: not the candidate's cost either).
TORCH_PRELOAD = ("torch", "torch._dynamo", "torch.nn", "torch.nn.functional", "torch.optim",
                 "torch.utils.data")


def instrumentation(entry: str, probes: tuple[Probe, ...],
                    preload: tuple[str, ...] = ()) -> Instrumentation:
    """The runner's instrumentation, derived from the declared probes: what it watches,
    how many eval predictions it keeps, and what its timer imports untimed (torch for a
    torch model or a torch-seeded data function, the estimator's module, and
    ``preload``)."""
    uses_torch = any(isinstance(p, TorchModule) or (isinstance(p, DataFunction)
                                                    and p.seeds_torch) for p in probes)
    modules = (TORCH_PRELOAD if uses_torch else ()) + tuple(
        p.module for p in probes if isinstance(p, Estimator)) + preload
    return Instrumentation(entry=entry, watch=tuple(p.job() for p in probes),
                           preload=tuple(dict.fromkeys(modules)))
