"""The execution's report and strict mode's probe outputs, parsed once where they cross
from the candidate's process into the harness.

The runner (``timing_runner.py``) writes both as JSON from inside the execution,
so both are the candidate's to forge.  :func:`parse_report` and :func:`parse_probes` turn
the decoded JSON (:func:`loads`) into frozen records and check every field for its
type (a bool is not a number), its range (counts are non-negative, floats finite) and
its size (lists, names, texts and arrays are bounded).  Anything else, a missing field or
an unknown one included, is a :class:`MalformedReport` naming the field:
``timing.executor`` makes that a failed execution, never an exception in the
harness.  Packed arrays stay packed (:class:`PackedArray`: a shape and its float32
bytes, their size checked against the shape) until a check unpacks them.

Whether a well-formed report tells the truth is not decided here: the checks
(``probes``, ``model_checks``, ``runtime_checks``) judge what
it says against what the harness knows.  The contents of packed arrays are not checked
either (a diverging model has NaN weights, and the checks handle them).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

MAX_COUNT = 2**63 - 1  # a counter, an int parameter or a prediction: an int64
MAX_ELEMENTS = 10_000_000  # of one array (the control channel carries 8 MiB anyway)
MAX_DIMS = 8
MAX_PREDICTIONS = 1_000_000
MAX_BATCH_SIZES = 10_000  # distinct batch sizes in train_batches
MAX_FITS = 4_096  # fit_params entries
MAX_PARAMS = 256  # parameters of one fit
MAX_REPLACED = 100  # estimator_replaced entries (the runner keeps 10)
MAX_SEGMENTS = 10_000  # eval_weights segments (each covers at least one row)
MAX_TENSORS = 1_024  # weights in one segment
MAX_COMPONENTS = 64  # strict mode's probe outputs and errors
MAX_NAME = 200  # characters of a name: a parameter, a weight, a component, a method
MAX_TEXT = 10_000  # characters of a parameter's value (its repr) or a component's error

Param = bool | int | float | str | None


class MalformedReport(ValueError):
    """A record from the execution that is not what the runner writes: ``field`` names
    where (``eval_weights[0].weights['fc1.weight'].b64``), ``why`` says what is wrong."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field, self.why = field, why


@dataclass(frozen=True)
class PackedArray:
    """A float32 array as the runner packs it (``{"shape": [...], "b64": "..."}``): its
    shape, and its bytes in the machine's order, ``4 * prod(shape)`` of them."""

    shape: tuple[int, ...]
    data: bytes = field(repr=False)

    @classmethod
    def of(cls, array: Any) -> PackedArray:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return cls(tuple(int(n) for n in array.shape), array.tobytes())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def array(self) -> np.ndarray:
        """The array as float64 (a copy: the checks compute in double precision)."""
        return np.frombuffer(self.data, dtype=np.float32).reshape(self.shape).astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "b64": base64.b64encode(self.data).decode()}


def pack(array: Any) -> dict[str, Any]:
    """An array in the runner's JSON form (the harness makes records for tests, and
    hands features back to the runner for a replay)."""
    return PackedArray.of(array).to_json()


@dataclass(frozen=True)
class WeightSegment:
    """``rows`` consecutive eval-mode rows and the model's floating-point weights when
    it was called on them."""

    rows: int
    weights: Mapping[str, PackedArray]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "weights": {k: v.to_json() for k, v in self.weights.items()}}


@dataclass(frozen=True)
class ExecutionReport:
    """What the runner saw in one execution, one field per key it writes (see
    ``_execute`` in the runner and ``probes``).  The
    defaults are an execution that did nothing; ``estimator_replaced``, ``features``,
    ``eval_inputs`` and ``eval_weights`` are written only when there is something to say.
    ``features`` are the feature method's outputs of every call joined in call order (its
    last rows, one per image), absent when ``feature_widths_differ``."""

    feature_calls: int = 0
    feature_rows: int = 0
    # the shape of every call's output joined along rows; None when they cannot be joined
    feature_output_shape: tuple[int, ...] | None = None
    feature_widths_differ: bool = False  # the calls returned rows of different widths
    model_instances: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    data_calls: int = 0
    train_batches: Mapping[int, int] = field(default_factory=dict)  # batch size -> steps
    fit_calls: int = 0
    fit_rows: int = 0
    fit_params: tuple[Mapping[str, Param] | None, ...] = ()  # None: unreadable
    estimator_replaced: tuple[str, ...] = ()
    eval_checksum: float = 0.0
    eval_predictions: tuple[int, ...] = ()
    returned: float | None = None
    features: PackedArray | None = None
    eval_inputs: PackedArray | None = None  # rows x width
    eval_weights: tuple[WeightSegment, ...] = ()
    eval_logits: PackedArray | None = None  # a torch model's eval outputs, rows x classes
    # a fitted estimator asked, inside the pipeline's first predict, about the grader's
    # probe rows (drawn from its fit's rows): their digest, its class probabilities on
    # them, or why it could not answer
    model_probe_rows: str | None = None
    model_probe_votes: PackedArray | None = None
    model_probe_error: str | None = None

    def to_json(self, omit: Collection[str] = ()) -> dict[str, Any]:
        """The report as the runner writes it (``parse_report`` reads it back), without
        the fields in ``omit``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in omit or (f.name in OPTIONAL_FIELDS and value is None):
                continue
            if isinstance(value, PackedArray):
                value = value.to_json()
            elif f.name == "train_batches":
                value = {str(k): v for k, v in value.items()}
            elif f.name == "fit_params":
                value = [dict(p) if p is not None else None for p in value]
            elif f.name == "eval_weights":
                value = [segment.to_json() for segment in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, eq=False)
class ProbeOutputs:
    """Strict mode's component outputs on the grader's inputs (``_probe`` in the runner):
    each component's output (float64, read-only), or why it could not be run."""

    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


# ---- parsing ---------------------------------------------------------------------------
def loads(text: str, what: str) -> Any:
    """The JSON value in ``text`` as the runner sent it (None when it sent nothing).
    Text that is not JSON, nested too deeply for the decoder or holding an integer of
    thousands of digits, is a MalformedReport naming ``what``."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedReport(what, f"not JSON ({type(exc).__name__})") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _key(name: Any) -> str:
    """A name from the record, shown bounded in a field's path."""
    if not isinstance(name, str):
        return f"{name!r:.40}"
    return repr(name[:40] + "..." if len(name) > 40 else name)


def _shown(value: Any) -> str:
    """What was found instead: its kind, or for an int out of range, the int (bounded)."""
    return f"{value!r:.24}" if type(value) is int else _kind(value)


def _flag(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise MalformedReport(where, f"expected true or false, got {_kind(value)}")
    return value


def _count(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:  # bool is not an int here
        raise MalformedReport(where, f"expected a non-negative int, got {_shown(value)}")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or not -MAX_COUNT <= value <= MAX_COUNT:
        raise MalformedReport(where, f"expected an int, got {_shown(value)}")
    return value


def _float(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise MalformedReport(where, f"expected a finite number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MalformedReport(where, f"expected a finite number, got {value!r:.40}")
    return number


def _text(value: Any, where: str, limit: int = MAX_NAME) -> str:
    if type(value) is not str:
        raise MalformedReport(where, f"expected a string, got {_kind(value)}")
    if len(value) > limit:
        raise MalformedReport(where, f"longer than {limit} characters")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if type(value) is not list:
        raise MalformedReport(where, f"expected a list, got {_kind(value)}")
    if len(value) > limit:
        raise MalformedReport(where, f"more than {limit} entries")
    return value


def _object(value: Any, where: str, limit: int) -> dict[str, Any]:
    if type(value) is not dict:
        raise MalformedReport(where, f"expected an object, got {_kind(value)}")
    if len(value) > limit:
        raise MalformedReport(where, f"more than {limit} entries")
    for key in value:
        _text(key, f"{where}[{_key(key)}]")
    return value


def _exact(value: Any, where: str, required: Collection[str],
           optional: Collection[str] = ()) -> dict[str, Any]:
    """An object with exactly these keys: an unknown key is a forgery, not noise."""
    if type(value) is not dict:
        raise MalformedReport(where or "report", f"expected an object, got {_kind(value)}")
    prefix = f"{where}." if where else ""
    known = {*required, *optional}
    if extra := [k for k in value if k not in known]:
        raise MalformedReport(f"{prefix}{_key(min(extra, key=str))}",
                              "not a field the runner writes")
    if missing := [k for k in required if k not in value]:
        raise MalformedReport(f"{prefix}{missing[0]}", "missing")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    dims = _list(value, where, MAX_DIMS)
    return tuple(_count(n, f"{where}[{i}]") for i, n in enumerate(dims))


def _optional_shape(value: Any, where: str) -> tuple[int, ...] | None:
    return None if value is None else _shape(value, where)


def packed(value: Any, where: str, ndim: int | None = None) -> PackedArray:
    data = _exact(value, where, ("shape", "b64"))
    shape = _shape(data["shape"], f"{where}.shape")
    if ndim is not None and len(shape) != ndim:
        raise MalformedReport(f"{where}.shape", f"expected {ndim} dimensions, got {len(shape)}")
    size = math.prod(shape)
    if size > MAX_ELEMENTS:
        raise MalformedReport(f"{where}.shape", f"more than {MAX_ELEMENTS} elements")
    text = data["b64"]
    if type(text) is not str:
        raise MalformedReport(f"{where}.b64", f"expected a string, got {_kind(text)}")
    if len(text) != 4 * ((4 * size + 2) // 3):  # checked before anything is decoded
        raise MalformedReport(f"{where}.b64", f"{len(text)} characters do not encode "
                                              f"{size} float32 values (shape {list(shape)})")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedReport(f"{where}.b64", "not base64") from None
    if len(raw) != 4 * size:
        raise MalformedReport(f"{where}.b64", f"{len(raw)} bytes for shape {list(shape)}")
    return PackedArray(shape, raw)


def _rows_packed(value: Any, where: str) -> PackedArray:
    return packed(value, where, ndim=2)


def _train_batches(value: Any, where: str) -> dict[int, int]:
    data = _object(value, where, MAX_BATCH_SIZES)
    out = {}
    for key, steps in data.items():
        # JSON keys are strings: the runner's int batch sizes arrive as decimal digits
        if not (key.isascii() and key.isdigit() and len(key) <= 18):
            raise MalformedReport(f"{where}[{_key(key)}]", "expected a batch size (digits)")
        out[int(key)] = _count(steps, f"{where}[{_key(key)}]")
    return out


def _fit_params(value: Any, where: str) -> tuple[dict[str, Param] | None, ...]:
    out: list[dict[str, Param] | None] = []
    for i, params in enumerate(_list(value, where, MAX_FITS)):
        if params is None:  # the runner could not read the estimator's parameters
            out.append(None)
            continue
        data = _object(params, f"{where}[{i}]", MAX_PARAMS)
        out.append({k: _param(v, f"{where}[{i}][{_key(k)}]") for k, v in data.items()})
    return tuple(out)


def _param(value: Any, where: str) -> Param:
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        return _int(value, where)
    if type(value) is float:
        return _float(value, where)
    if type(value) is str:
        return _text(value, where, MAX_TEXT)
    raise MalformedReport(where, f"expected a plain value, got {_kind(value)}")


def _names(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_text(v, f"{where}[{i}]")
                 for i, v in enumerate(_list(value, where, MAX_REPLACED)))


def _predictions(value: Any, where: str) -> tuple[int, ...]:
    return tuple(_int(v, f"{where}[{i}]")
                 for i, v in enumerate(_list(value, where, MAX_PREDICTIONS)))


def _returned(value: Any, where: str) -> float | None:
    return None if value is None else _float(value, where)


def _digest(value: Any, where: str) -> str:
    text = _text(value, where, 64)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise MalformedReport(where, "expected a sha256 digest in hex")
    return text


def _message(value: Any, where: str) -> str:
    return _text(value, where, MAX_TEXT)


def _eval_weights(value: Any, where: str) -> tuple[WeightSegment, ...]:
    out = []
    for i, segment in enumerate(_list(value, where, MAX_SEGMENTS)):
        at = f"{where}[{i}]"
        data = _exact(segment, at, ("rows", "weights"))
        weights = _object(data["weights"], f"{at}.weights", MAX_TENSORS)
        out.append(WeightSegment(
            _count(data["rows"], f"{at}.rows"),
            {k: packed(v, f"{at}.weights[{_key(k)}]") for k, v in weights.items()}))
    return tuple(out)


# How each field of the report is read: every field of ExecutionReport, and nothing else.
_READERS: dict[str, Callable[[Any, str], Any]] = {
    "feature_calls": _count, "feature_rows": _count, "feature_output_shape": _optional_shape,
    "feature_widths_differ": _flag,
    "model_instances": _count, "train_rows": _count, "eval_rows": _count,
    "data_calls": _count, "train_batches": _train_batches, "fit_calls": _count,
    "fit_rows": _count, "fit_params": _fit_params, "estimator_replaced": _names,
    "eval_checksum": _float, "eval_predictions": _predictions, "returned": _returned,
    "features": packed, "eval_inputs": _rows_packed, "eval_weights": _eval_weights,
    "eval_logits": _rows_packed, "model_probe_rows": _digest, "model_probe_votes": _rows_packed,
    "model_probe_error": _message,
}
OPTIONAL_FIELDS = frozenset({"estimator_replaced", "features", "eval_inputs", "eval_weights",
                             "eval_logits", "model_probe_rows", "model_probe_votes",
                             "model_probe_error"})
REQUIRED_FIELDS = tuple(f.name for f in fields(ExecutionReport) if f.name not in OPTIONAL_FIELDS)
MISSING_ENTRY = {"missing_entry": True}  # the runner's whole report when there is no entry


def is_missing_entry(raw: Any) -> bool:
    """The runner's report that the entry function is not defined."""
    return type(raw) is dict and raw.keys() == MISSING_ENTRY.keys() and raw[
        "missing_entry"] is True


def parse_report(raw: Any) -> ExecutionReport:
    """The runner's report (decoded JSON), every field checked; raises MalformedReport."""
    data = _exact(raw, "", REQUIRED_FIELDS, OPTIONAL_FIELDS)
    return ExecutionReport(**{name: _READERS[name](data[name], name)
                              for name in _READERS if name in data})


def parse_probes(raw: Any) -> ProbeOutputs:
    """Strict mode's probe outputs (decoded JSON): ``NAME`` a number or a rectangular
    list of finite numbers, ``NAME_error`` a text; raises MalformedReport."""
    data = _object(raw, "probes", MAX_COMPONENTS)
    outputs, errors = {}, {}
    for key, value in data.items():
        where = f"probes[{_key(key)}]"
        if key.endswith("_error"):
            errors[key.removesuffix("_error")] = _text(value, where, MAX_TEXT)
        else:
            outputs[key] = _numbers(value, where)
    return ProbeOutputs(outputs, errors)


def _numbers(value: Any, where: str) -> np.ndarray:
    """A number, or nested lists of numbers of one shape, as a read-only float64 array;
    walked level by level, never deeper than MAX_DIMS, never past MAX_ELEMENTS."""
    level, shape = [value], []
    while level and type(level[0]) is list:
        if len(shape) == MAX_DIMS:
            raise MalformedReport(where, f"more than {MAX_DIMS} dimensions")
        width = len(level[0])
        if any(type(item) is not list or len(item) != width for item in level):
            raise MalformedReport(where, "not a rectangular array of numbers")
        shape.append(width)
        if math.prod(shape) > MAX_ELEMENTS:
            raise MalformedReport(where, f"more than {MAX_ELEMENTS} elements")
        level = [x for item in level for x in item]
    if any(type(x) not in (int, float) for x in level):
        odd = next(x for x in level if type(x) not in (int, float))
        raise MalformedReport(where, f"expected numbers, got {_kind(odd)}")
    try:
        array = np.array(level, dtype=np.float64).reshape(shape)
    except OverflowError:
        raise MalformedReport(where, "a number out of range") from None
    if not np.isfinite(array).all():
        raise MalformedReport(where, "expected finite numbers")
    array.flags.writeable = False
    return array
