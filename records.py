"""The harness's records of a batch: their file names and their shapes.

:class:`RunRecord` is one run's record (``run_N/run.json``; its entry in ``results.json``
is a part of it) and :class:`BatchResults` is ``results.json`` as a whole.  Each has
``to_json()``, which gives the keys in the order the files have always had them, and
``from_json()``, which reads what any earlier batch wrote: a key an older record lacks
takes its default, a key this one does not know is ignored.

:func:`manifest_error` checks the shape of the output directory's manifest, read by
``output_dir``.  Only the shapes are here.  Filling a record in (running, grading,
costing) is ``batch``'s, the figures over the runs are ``summary``'s, and writing the
files safely is ``safe_files``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# At the top of the output directory: the results, the summary and its plot.
RESULTS = "results.json"
BATCH_RECORDS = (RESULTS, "run_summary.md", "summary.png")
RUN_RECORDS = ("run.json", "grade.json", "transcript.jsonl")  # in each run_N/

# The keys of a run's entry in results.json, in the file's order: what the summary reads.
RESULTS_ENTRY_KEYS = (
    "run_id", "status", "error_cause", "steps", "speedup", "speedup_ci95", "score",
    "accuracy", "baseline_accuracy", "reason", "submitted", "found_by", "failed_checks",
    "tool_calls", "intermediate", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd", "stream_retries",
    "wall_time", "attempts", "record_error", "strategy")
# Keys run.json holds only when they apply (never as null).
_WHEN_SET = frozenset({"budget", "candidate", "traceback", "record_error", "strategy"})


@dataclass(frozen=True)
class RunRecord:
    """One run, as ``run.json`` records it; the fields are in the file's order."""

    run_id: int
    status: str  # pass | fail | error
    error_cause: str | None = None  # for an error: api | budget | grader | harness
    submitted: bool = False  # the agent submitted an answer
    found_by: str | None = None  # how the graded file was found: submitted | fallback
    # The grader's figures (None unless the run was graded).
    speedup: float | None = None
    speedup_ci95: tuple[float, float] | None = None
    score: float | None = None
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    reason: str = ""  # why it did not pass ("" when it did)
    failed_checks: list[str] = field(default_factory=list)
    budget: str | None = None  # which cost limit stopped it
    candidate: str | None = None  # the graded file, relative to the run directory
    traceback: str | None = None  # of a grader or harness error
    # What the agent did, and what it cost.
    steps: int = 0
    ended_by: str = ""  # submitted | no_tool_calls | max_steps | api_error | budget | ...
    tool_calls: dict[str, int] = field(default_factory=dict)
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float | None = None  # None: the model's prices are unknown
    stream_retries: int = 0
    refusal: dict[str, Any] | None = None
    intermediate: list[dict[str, Any]] = field(default_factory=list)
    tampering: list[dict[str, Any]] = field(default_factory=list)
    isolation: str | None = None
    wall_time: float = 0.0  # seconds
    attempts: int = 1  # how many times the run was started (--resume retries API errors)
    # Which strategy the graded candidate took (``Problem.strategy``; advisory): either
    # {"error": why} or {"components": [{"name", "candidate_s", "original_s", "ratio",
    # "function": same|different|error, "approach": str|None}, ...]}.
    strategy: dict[str, Any] | None = None
    record_error: str | None = None  # why run.json is missing (results.json only)

    def to_json(self) -> dict[str, Any]:
        """``run.json``: every field, less those of ``_WHEN_SET`` that do not apply."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if not (f.name in _WHEN_SET and getattr(self, f.name) is None)}

    def to_results_json(self) -> dict[str, Any]:
        """The run's entry in ``results.json``: ``RESULTS_ENTRY_KEYS``, null included."""
        return {name: _plain(getattr(self, name)) for name in RESULTS_ENTRY_KEYS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """Read a ``run.json`` or a ``results.json`` entry of any batch.  A null or missing
        key takes its default: records older than ``error_cause`` have None there, which
        the summary reads as an error of unknown cause."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names and v is not None}
        if "speedup_ci95" in values:
            values["speedup_ci95"] = tuple(values["speedup_ci95"])
        return cls(**values)


def _plain(value: Any) -> Any:
    """A tuple as the list JSON reads it back as (so a record equals its file's JSON)."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class BatchResults:
    """``results.json``: the batch's configuration and baseline, each finished run's
    entry, the totals over them (``summary.batch_figures``) and whether it was
    interrupted."""

    config: dict[str, Any]
    baseline: dict[str, Any]
    runs: list[RunRecord]  # in run_id order
    totals: dict[str, Any]
    interrupted: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)  # see ``provenance``

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "baseline": self.baseline,
                "runs": [r.to_results_json() for r in self.runs], "totals": self.totals,
                "interrupted": self.interrupted, "provenance": self.provenance}

    @classmethod
    def read(cls, directory: Path) -> BatchResults:
        """The results.json of the batch in ``directory``, read without following a link;
        ValueError (why, in one line) when there is none or it is not a batch's."""
        import json

        import safe_files

        try:
            data = json.loads(safe_files.read_bytes(directory, RESULTS, 256 << 20))
            if why := results_error(data):
                raise ValueError(why)
            return cls.from_json(data)
        except OSError as exc:
            raise ValueError(f"cannot read {directory / RESULTS}: {exc.strerror or exc}"
                             ) from None
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise ValueError(f"{directory / RESULTS} is not a batch's results: {exc}"
                             ) from None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchResults:
        return cls(config=data.get("config") or {}, baseline=data.get("baseline") or {},
                   runs=[RunRecord.from_json(r) for r in data.get("runs") or []],
                   totals=data.get("totals") or {},
                   interrupted=bool(data.get("interrupted")),
                   provenance=data.get("provenance") or {})


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "list": (list,), "dict": (dict,), "tuple": (list,), "Any": (object,)}


def results_error(data: Any) -> str | None:
    """What makes ``data`` no batch's results.json (None: nothing): each section of the
    right kind, and each run's every field of its type (``RunRecord``'s annotations),
    numbers finite, so that a file edited by hand or damaged is one clear refusal, never
    a traceback or a NaN in a report."""
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        return "no list of runs"
    for key in ("config", "baseline", "totals", "provenance"):
        if not isinstance(data.get(key) or {}, dict):
            return f"{key} is not an object"
    kinds = {f.name: f.type for f in fields(RunRecord)}
    for i, run in enumerate(data["runs"], 1):
        if not isinstance(run, dict) or run.get("status") not in ("pass", "fail", "error"):
            return f"run entry {i} has no status pass, fail or error"
        for name, value in run.items():
            if name not in kinds or value is None:
                continue
            allowed = tuple(t for word in kinds[name].split("|")
                            for t in _KINDS.get(word.strip().split("[")[0], ()))
            if name == "speedup_ci95":  # a pair of numbers
                ok = isinstance(value, list) and len(value) == 2 and all(
                    _number(v) for v in value)
            else:
                ok = (isinstance(value, allowed) and isinstance(value, bool) == (bool in allowed)
                      and (not isinstance(value, float) or math.isfinite(value)))
            if not ok:
                return f"run entry {i}: {name} is not a {kinds[name]}: {str(value)[:40]!r}"
    return None


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def manifest_error(data: Any, version: int) -> str | None:
    """What is wrong with the shape of an output directory's manifest (``output_dir``)
    of format ``version`` (None: nothing); every field the harness reads is checked, so
    a hand-edited file is one clear refusal, never a traceback."""
    if not isinstance(data, dict) or data.get("format") != version:
        return f"not format {version}"
    if not _names(data.get("entries", [])):
        return "entries is not a list of names"
    batch = data.get("batch")
    if batch is not None and not (isinstance(batch, dict)
                                  and isinstance(batch.get("config", {}), dict)
                                  and isinstance(batch.get("resumed", []), list)):
        return "batch is not a batch"
    attempts = data.get("attempts", {})
    if not (isinstance(attempts, dict) and all(type(v) is int for v in attempts.values())):
        return "attempts is not a count per run"
    finished = data.get("finished", {})
    if not (isinstance(finished, dict) and all(
            isinstance(r, dict) and isinstance(r.get("status"), str)
            and isinstance(r.get("run_id"), int) for r in finished.values())):
        return "finished is not a record per run"
    try:
        [RunRecord.from_json(r) for r in finished.values()]
    except (TypeError, ValueError) as exc:
        return f"a finished run's record: {exc}"
    previous = data.get("previous")
    if previous is not None and not (isinstance(previous, dict)
                                     and _names(previous.get("entries", []))):
        return "previous is not a batch held back"
    return None


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in value)
