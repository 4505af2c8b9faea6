"""Which strategy a graded candidate took: each of its components timed and compared
with the original's, after its grading (advisory: it never changes a verdict).

The components are the task's declared ones (``TaskSpec.probes``): the feature method,
the model's submodules (the activation), its eval forward and a few training steps; and,
found in the original's source, the feature class's families (its other ``extract_*``
methods) and its normalisation (a method named ``*normali*``).  Each file's components
are called in a sandbox of their own by ``timing/runner_components.py`` (never the
candidate's entry function), on images drawn as the grader draws them (one seed per
task, at the task's full size) and strict mode's probe inputs (``fresh_inputs``), a few
times each under a time limit, one analysis on the timing CPU at a time.  The
normalisation is given what the original's own feature method gives it.  The original's
results are measured once per task and kept (:class:`Strategist`).

What comes back is parsed here into checked records (:class:`ComponentRun`); a malformed
line is that component's error.  The times are the runner's clock in the candidate's
process, so a candidate could forge them: they are advice, never a verdict.
:func:`compare` then says, per component, how much faster it is and whether it computes
the original's function; a different normalisation (or features ending in one) is
matched against known alternatives (z-score, magnitude scaling, ..., and which
scikit-learn scaler it called).  The shape returned is ``records.RunRecord.strategy``'s;
rendering it is the summary's job.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import collections
import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import safe_files
import sandbox
from problems.ml_training import fresh_inputs
from problems.ml_training.execution_report import MalformedReport, PackedArray, loads, packed
from problems.ml_training.spec import GradingOptions, TaskSpec
from problems.ml_training.timing.slots import timing_slot

log = logging.getLogger(__name__)

RUNNER_SOURCE = (Path(__file__).parent / "timing" / "runner_components.py").read_text()
PRIVATE_WORKDIR = Path("/tmp/components")
MAX_SOURCE_BYTES = 8 * 1024**2
MAX_ELEMENTS = 2_000_000  # of one output (the runner refuses more)
MAX_ERROR = 300
MAX_KEPT_BYTES = 256 * 1024**2  # of control lines (each is at most 8 MiB: sandbox.py)
REPEATS = 3  # calls of a component at most: the fastest is its time
BUDGET = 1.0  # seconds of calls after which a component is not called again
FIXED = 2.0  # a component at least this much faster than the original's is "fixed"
RTOL = 1e-3  # same function: outputs this close to the original's (float32 arithmetic)


@dataclass(frozen=True)
class Limits:
    """How long one call and one file's whole analysis may take."""

    call: float
    total: float


ORIGINAL_LIMITS = Limits(call=300.0, total=900.0)  # once per task: the O(n^2) loops
# A candidate's call: at most SLOWER times the original's (and at least MIN_CALL seconds)
CANDIDATE_LIMITS = Limits(call=60.0, total=240.0)
SLOWER, MIN_CALL = 3.0, 5.0


@dataclass(frozen=True)
class Component:
    """One thing to call in a file: a feature-class ``method`` on the images (or, for
    the normalisation, on the original's raw features), a model's submodule, its eval
    forward, or ``steps`` training steps of ``batch`` rows (timed per step; its output
    is the model's eval logits afterwards)."""

    name: str
    kind: str  # "method", "submodule", "forward" or "train"
    cls: str
    method: str = ""  # the method, or the submodule's attribute
    input: str = "images"  # or "normalisation"
    capture: str = ""  # the normalisation method whose input the original's call keeps
    batch: int = 0
    steps: int = 0

    def job(self, limit: float | None = None) -> dict[str, Any]:
        """The runner's job for it; ``limit``: seconds for one call (default the file's)."""
        out = {"name": self.name, "kind": self.kind, "class": self.cls,
               "method": self.method, "part": self.method, "input": self.input,
               "capture": self.capture, "limit": limit}
        return out | ({"batch": self.batch, "steps": self.steps} if self.kind == "train"
                      else {})


def feature_methods(original: Path, cls: str, declared: str) -> tuple[list[str], str]:
    """The feature class's families (its ``extract_*`` methods other than ``declared``)
    and its normalisation ('' when it has none), read from the original's source."""
    tree = ast.parse(original.read_text())
    methods = [f.name for node in tree.body if isinstance(node, ast.ClassDef)
               and node.name == cls for f in node.body if isinstance(f, ast.FunctionDef)]
    norm = next((m for m in methods if "normali" in m), "")
    return [m for m in methods if m.startswith("extract_") and m != declared], norm


def components_of(spec: TaskSpec) -> tuple[Component, ...]:
    """The task's components, in the order they are called (the features first: the
    original's call keeps the normalisation's input)."""
    found: list[Component] = []
    feature = spec.features
    if feature is not None:
        families, norm = feature_methods(spec.baseline, feature.cls, feature.method)
        found.append(Component("features", "method", feature.cls, feature.method,
                               capture=norm))
        found += [Component(m.removeprefix("extract_").removesuffix("_features"), "method",
                            feature.cls, m) for m in families]
        if norm:
            found.append(Component("normalisation", "method", feature.cls, norm,
                                   input="normalisation"))
    model = spec.model
    if model is not None:
        found += [Component(part, "submodule", model.cls, part) for part in model.submodules]
        batch = max(model.batches, key=lambda size: model.batches[size])
        found += [Component("forward", "forward", model.cls),
                  Component("training step", "train", model.cls, batch=batch,
                            steps=max(4, 32 // batch))]
    return tuple(found)


# ---- what crosses back from the sandbox ---------------------------------------------------
@dataclass(frozen=True)
class ComponentRun:
    """One component of one file, as the runner reported it (parsed, every field
    checked): its best time (None on error), its output and what it was given."""

    name: str
    seconds: float | None = None
    output: np.ndarray | None = field(default=None, repr=False)
    error: str = ""
    scalers: tuple[str, ...] = ()
    captured: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FileRun:
    """One file's analysis: why it could not be done at all ('' when it could), and each
    component's run by name."""

    error: str = ""
    runs: dict[str, ComponentRun] = field(default_factory=dict)


def _array(value: Any, where: str) -> np.ndarray | None:
    return None if value is None else packed(value, where).array()


def parse_component(raw: Any, names: set[str], repeats: int) -> ComponentRun:
    """A ``COMPONENT`` line's JSON as a checked record; MalformedReport otherwise."""
    keys = {"name", "seconds", "output", "error", "scalers", "captured"}
    if type(raw) is not dict or set(raw) != keys:
        raise MalformedReport("component", "not the fields the runner writes")
    name = raw["name"]
    if name not in names:
        raise MalformedReport("component.name", "not a component of the job")
    seconds, error, scalers = raw["seconds"], raw["error"], raw["scalers"]
    if type(seconds) is not list or len(seconds) > repeats or not all(
            type(s) in (int, float) and math.isfinite(s) and 0 <= s < 1e5 for s in seconds):
        raise MalformedReport("component.seconds", f"expected up to {repeats} times")
    if type(error) is not str or len(error) > MAX_ERROR:
        raise MalformedReport("component.error", "expected a short text")
    if type(scalers) is not list or len(scalers) > 10 or not all(
            type(s) is str and len(s) <= 40 for s in scalers):
        raise MalformedReport("component.scalers", "expected up to 10 short names")
    output = _array(raw["output"], "component.output")
    if not error and (output is None or not seconds):
        raise MalformedReport("component", "neither an output and a time nor an error")
    return ComponentRun(name, min(seconds) if seconds and not error else None,
                        None if error else output, error, tuple(scalers),
                        _array(raw["captured"], "component.captured"))


def parse_lines(lines: list[str], components: tuple[Component, ...], repeats: int,
                failure: str) -> FileRun:
    """The runner's control lines as a :class:`FileRun` (the last line for each
    component counts: what the runner writes after the call, not what the call wrote
    during it; code the candidate left to run later, an ``atexit`` hook say, can still
    write after the runner, which is why the analysis is only advisory).
    ``failure`` says why the process ended early, for the components it never reported."""
    names = {c.name for c in components}
    loaded, runs = None, {}
    for line in lines:
        kind, _, payload = line.partition(" ")
        try:
            if kind == "LOADED":
                raw = loads(payload, "loaded")
                if type(raw) is dict and type(raw.get("error")) is str:
                    loaded = raw["error"][:MAX_ERROR]
            elif kind == "COMPONENT":
                raw = loads(payload, "component")
                name = raw.get("name") if type(raw) is dict else None
                try:
                    run = parse_component(raw, names, repeats)
                except MalformedReport as exc:
                    if name not in names:
                        raise
                    run = ComponentRun(name, error=f"its report is malformed ({exc})")
                runs[run.name] = run
        except MalformedReport as exc:
            log.info("a malformed line from the component runner: %s", exc)
    if loaded is None:
        return FileRun(error=f"the file could not be analysed ({failure or 'no report'})")
    if loaded:
        return FileRun(error=loaded)
    why = f"not reached: the analysis {failure or 'ended early'}"
    return FileRun(runs={c.name: runs.get(c.name, ComponentRun(c.name, error=why))
                         for c in components})


async def run_components(path: Path, components: tuple[Component, ...],
                         inputs: dict[str, Any], opts: GradingOptions, limits: Limits,
                         call_limits: dict[str, float] | None = None) -> FileRun:
    """Call ``components`` of the file at ``path`` in a sandbox of their own (the runner),
    one analysis on the timing CPU at a time; a call is stopped after ``limits.call``
    seconds, or its component's ``call_limits``.  Never raises for what the file does."""
    try:  # never following a link at the name nor waiting on a FIFO there
        source = safe_files.read_bytes(path.parent, path.name, MAX_SOURCE_BYTES)
    except OSError as exc:
        return FileRun(error=f"the file could not be read ({exc.strerror or exc})")
    isolation = sandbox.best_isolation()
    own = isolation != "none"
    workdir = PRIVATE_WORKDIR if own else Path(tempfile.mkdtemp(prefix="hp-components-"))
    job = {**inputs, "source": base64.b64encode(source).decode(), "workdir": str(workdir),
           "components": [c.job((call_limits or {}).get(c.name)) for c in components],
           "repeats": REPEATS,
           "budget": BUDGET, "call_limit": limits.call, "threads": opts.threads}
    kept = _LastLines(MAX_KEPT_BYTES)
    try:
        async with timing_slot(f"analysing {path.name}"):
            result = await sandbox.run_python(
                ["-P", "-c", RUNNER_SOURCE], visibility=sandbox.Visibility(
                    workdir, private=own), isolation=isolation, threads=opts.threads,
                limits=sandbox.Limits(timeout=limits.total, memory_bytes=opts.memory_bytes),
                stdin_data=json.dumps(job).encode(), timed=True,
                on_control=lambda _, line: kept.add(line))
    finally:
        if not own:
            await asyncio.to_thread(safe_files.remove_tree, workdir)
    if not result.ok:
        log.info("the component runner for %s: %s %s", path.name, result.failure(),
                 result.stderr[-500:])
    return parse_lines(list(kept.lines), components, REPEATS, result.failure())


class _LastLines:
    """The control lines as they arrive, the oldest dropped past ``limit`` bytes: the
    last line of each component is the one that counts, and a candidate that floods
    the channel costs the harness no more memory than this."""

    def __init__(self, limit: int):
        self.lines: collections.deque[str] = collections.deque()
        self.limit, self.size = limit, 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line)
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft())


# ---- judging ---------------------------------------------------------------------------
def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)


def _min_max(x: np.ndarray) -> np.ndarray:
    return (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0) + 1e-12)


# Known normalisations, as the seed's analysis named them (its "strategies"), and others.
ALTERNATIVES: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("z-score", _zscore),
    ("magnitude scaling", lambda x: x / (np.median(np.linalg.norm(x, axis=1)) + 1e-8)),
    ("min-max scaling", _min_max),
    ("max-abs scaling", lambda x: x / (np.abs(x).max(axis=0) + 1e-12)),
    ("unit-norm rows", lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)),
    ("no normalisation", lambda x: x),
)
# A scikit-learn scaler seen in the call, and the alternative it computes.
SCALERS = {"StandardScaler": "z-score", "MinMaxScaler": "min-max scaling",
           "MaxAbsScaler": "max-abs scaling", "Normalizer": "unit-norm rows"}


def same(output: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> bool:
    """The same function: the same shape and values within float32 arithmetic's reach."""
    if output.shape != expected.shape:
        return False
    if not expected.size:
        return True
    # each column against its own scale: (x - mean) / std in float32 loses digits where
    # a column's spread is small beside its values
    with np.errstate(all="ignore"):
        scale = np.nan_to_num(np.nanmax(np.abs(expected), axis=0, keepdims=True)
                              if expected.ndim > 1 else np.nanmax(np.abs(expected)))
    return bool(np.allclose(output, expected, rtol=rtol, atol=1e-4 * scale + 1e-7,
                            equal_nan=True))


def alternative(output: np.ndarray, given: np.ndarray, scalers: tuple[str, ...]) -> str | None:
    """Which known normalisation of ``given`` the output is (None: none of them)."""
    with np.errstate(all="ignore"):
        for label, fn in ALTERNATIVES:
            if same(output, fn(given.astype(np.float64))):
                used = [s for s in scalers if SCALERS.get(s) == label]
                return f"scikit-learn {used[0]}" if used else label
    return f"scikit-learn {scalers[0]}" if scalers else None


def _figure(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def compare(component: Component, mine: ComponentRun, original: ComponentRun,
            given: np.ndarray | None) -> dict[str, Any]:
    """One row of the strategy: times, their ratio, and whether the candidate's
    component computes the original's function (and, if not, which known one; for an
    error, ``approach`` says what went wrong)."""
    row: dict[str, Any] = {"name": component.name, "candidate_s": _figure(mine.seconds),
                           "original_s": _figure(original.seconds), "ratio": None,
                           "function": "error", "approach": None}
    if mine.seconds and original.seconds:
        row["ratio"] = _figure(original.seconds / mine.seconds)
    if mine.error or mine.output is None:
        row["approach"] = mine.error or "no output"
    elif original.output is None:
        row["approach"] = f"the original's could not be run ({original.error})"[:MAX_ERROR]
    elif same(mine.output, original.output):
        row["function"] = "same"
        if component.input == "normalisation":
            row["approach"] = "the original's algorithm"
    else:
        row["function"] = "different"
        # the normalisation, or the features it ends (another one, or none at all)
        if given is not None and component.name in ("normalisation", "features"):
            row["approach"] = alternative(mine.output, given, mine.scalers)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The record: the rows, the components made at least ``FIXED`` times faster, and a
    line on the normalisation (the seed's question: kept or replaced, and by what)."""
    fixed = [r["name"] for r in rows if (r["ratio"] or 0) >= FIXED and r["function"] != "error"]
    out: dict[str, Any] = {"components": rows, "fixed": fixed}
    by_name = {r["name"]: r for r in rows}
    norm, features = by_name.get("normalisation"), by_name.get("features", {})
    if norm is None:
        return out
    if norm["function"] == "different":
        out["note"] = "replaced the normalisation: " + (norm["approach"] or "another function")
    elif norm["function"] == "same" and features.get("function") == "different":
        out["note"] = ("its normalisation method is the original's, but its features are "
                       "not: " + (features["approach"] or "another function"))
    elif norm["function"] == "same":
        faster = f", {norm['ratio']:g}x faster" if norm["ratio"] else ""
        out["note"] = f"kept the original's normalisation algorithm{faster}"
    return out


class Strategist:
    """A task's strategy analysis: its inputs' seed (drawn once) and the original's
    results, measured on first need and kept for every later candidate."""

    def __init__(self, spec: TaskSpec, opts: GradingOptions):
        self.spec, self.opts = spec, opts
        self.seed = fresh_inputs.draw_seed()
        self._components: tuple[Component, ...] | None = None
        self._original: FileRun | None = None
        self._lock = asyncio.Lock()

    @property
    def components(self) -> tuple[Component, ...]:
        if self._components is None:  # read from the original's source on first need
            self._components = components_of(self.spec)
        return self._components

    def inputs(self) -> dict[str, Any]:
        uses_torch = self.spec.model is not None or self.spec.data.seeds_torch
        return {"seed": self.seed, "n_images": self.spec.n_samples, "torch": uses_torch,
                "probes": fresh_inputs.probe_job(self.seed, self.spec.model,
                                                 self.spec.recipe.image_shape)}

    async def original(self) -> FileRun:
        async with self._lock:
            if self._original is None:
                self._original = await run_components(
                    self.spec.baseline, self.components, self.inputs(), self.opts,
                    ORIGINAL_LIMITS)
            return self._original

    async def analyse(self, candidate: Path) -> dict[str, Any]:
        """The candidate's strategy (``records.RunRecord.strategy``'s shape)."""
        if not self.components:
            return {"error": "the task declares no components to analyse"}
        if sandbox.best_isolation() == "none" and not self.opts.allow_unsandboxed:
            return {"error": "no sandbox on this machine: the candidate is not run"}
        original = await self.original()
        if original.error:
            return {"error": f"the original: {original.error}"[:MAX_ERROR]}
        features = original.runs.get("features")
        given = features.captured if features is not None else None
        inputs = self.inputs()
        if given is not None:
            inputs["normalisation_input"] = PackedArray.of(given).to_json()
        limits = CANDIDATE_LIMITS
        calls = {name: min(limits.call, max(MIN_CALL, SLOWER * run.seconds))
                 for name, run in original.runs.items() if run.seconds is not None}
        mine = await run_components(candidate, self.components, inputs, self.opts,
                                    limits, calls)
        if mine.error:
            return {"error": mine.error}
        return summarise([compare(c, mine.runs[c.name], original.runs[c.name], given)
                          for c in self.components])
